//! Exact rate limits: GCRA as a pure function of (state, now, policy). The
//! state is one number per user — the "theoretical arrival time" (TAT), in
//! microseconds of the database's clock — kept in the user's row and read
//! and written inside the charge's row-locked transaction, so any number of
//! instances enforce one limit exactly (no read-then-write race: the row
//! lock serialises them). With quota N per window W: the emission interval
//! T = W/N and the burst tolerance τ = W − T, so up to N requests pass at
//! once, then one every T.
//!
//! Headers: draft-ietf-httpapi-ratelimit-headers (the -11 draft's
//! structured-field Lists), `RateLimit-Policy: "user";q=N;w=W` and
//! `RateLimit: "user";r=<left now>;t=<seconds until r is back to N>`.

use crate::model::RateLimit;

/// What the limiter decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The state to store when allowed (a refused request leaves it as it was).
    pub new_tat: i64,
    /// Requests that would pass right now, after this one.
    pub remaining: u32,
    /// Whole seconds until `remaining` is back to the quota.
    pub reset_secs: u64,
    /// When refused: whole seconds (at least 1) until one passes.
    pub retry_after_secs: u64,
}

const MICROS: i64 = 1_000_000;

fn ceil_secs(micros: i64) -> u64 {
    (micros.max(0) as u64).div_ceil(MICROS as u64)
}

/// The GCRA decision for a request at `now` (µs) given the stored `tat`.
pub fn decide(tat: Option<i64>, now: i64, limit: RateLimit) -> Decision {
    let window = i64::from(limit.window_secs) * MICROS;
    let interval = window / i64::from(limit.quota);
    let tolerance = window - interval;
    let tat = tat.unwrap_or(now).max(now);
    if now < tat - tolerance {
        return Decision {
            allowed: false,
            new_tat: tat,
            remaining: 0,
            reset_secs: ceil_secs(tat - now),
            retry_after_secs: ceil_secs(tat - tolerance - now).max(1),
        };
    }
    let new_tat = tat + interval;
    Decision {
        allowed: true,
        new_tat,
        remaining: remaining(new_tat, now, interval, tolerance, limit.quota),
        reset_secs: ceil_secs(new_tat - now),
        retry_after_secs: 0,
    }
}

/// What `decide` would say without spending anything: for answers that are
/// not decided by the limiter (an idempotent replay).
pub fn peek(tat: Option<i64>, now: i64, limit: RateLimit) -> Decision {
    let window = i64::from(limit.window_secs) * MICROS;
    let interval = window / i64::from(limit.quota);
    let tolerance = window - interval;
    let tat = tat.unwrap_or(now).max(now);
    Decision {
        allowed: true,
        new_tat: tat,
        remaining: if tat == now {
            limit.quota
        } else {
            remaining(tat, now, interval, tolerance, limit.quota)
        },
        reset_secs: ceil_secs(tat - now),
        retry_after_secs: 0,
    }
}

/// The state after a request that counts whatever the limiter says: a
/// hold's capture (the limiter was asked when the hold was placed; the work
/// is done by now and its one count is due).
pub fn spend(tat: Option<i64>, now: i64, limit: RateLimit) -> i64 {
    let interval = i64::from(limit.window_secs) * MICROS / i64::from(limit.quota);
    tat.unwrap_or(now).max(now) + interval
}

fn remaining(tat: i64, now: i64, interval: i64, tolerance: i64, quota: u32) -> u32 {
    let left = tolerance - (tat - now);
    if left < 0 {
        return 0;
    }
    ((left / interval) + 1).clamp(0, i64::from(quota)) as u32
}

/// `RateLimit-Policy` and `RateLimit`, as RFC 8941 Lists.
pub fn headers(limit: RateLimit, d: &Decision) -> [(&'static str, String); 2] {
    [
        (
            "RateLimit-Policy",
            format!("\"user\";q={};w={}", limit.quota, limit.window_secs),
        ),
        (
            "RateLimit",
            format!("\"user\";r={};t={}", d.remaining, d.reset_secs),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000;

    #[test]
    fn a_spent_request_counts_like_an_allowed_one_even_over_the_limit() {
        let l = limit(2, 10);
        let allowed = decide(None, 0, l);
        assert_eq!(spend(None, 0, l), allowed.new_tat);
        // Over the limit it still moves the state on by one interval.
        let far = 100 * SEC;
        assert_eq!(spend(Some(far), 0, l), far + 5 * SEC);
    }

    fn limit(q: i64, w: i64) -> RateLimit {
        RateLimit::new(q, w).unwrap()
    }

    /// Runs `n` requests at `now` from `tat`; how many passed and the state.
    fn burst(mut tat: Option<i64>, now: i64, n: u32, l: RateLimit) -> (u32, Option<i64>) {
        let mut passed = 0;
        for _ in 0..n {
            let d = decide(tat, now, l);
            if d.allowed {
                passed += 1;
                tat = Some(d.new_tat);
            }
        }
        (passed, tat)
    }

    #[test]
    fn a_burst_of_the_quota_passes_and_no_more() {
        let l = limit(50, 60);
        let (passed, tat) = burst(None, 1000 * SEC, 300, l);
        assert_eq!(passed, 50);
        let d = decide(tat, 1000 * SEC, l);
        assert!(!d.allowed);
        assert_eq!(
            d.retry_after_secs, 2,
            "one more after W/N = 1.2 s, rounded up"
        );
    }

    #[test]
    fn after_one_interval_exactly_one_more_passes() {
        let l = limit(50, 60);
        let (_, tat) = burst(None, 0, 50, l);
        let (passed, _) = burst(tat, 1_200_000, 10, l);
        assert_eq!(passed, 1);
        let (passed, _) = burst(tat, 1_199_999, 10, l);
        assert_eq!(passed, 0);
    }

    #[test]
    fn remaining_counts_down_and_reset_says_when_it_is_full() {
        let l = limit(60, 60);
        let d = decide(None, 0, l);
        assert_eq!((d.remaining, d.reset_secs), (59, 1));
        let (_, tat) = burst(None, 0, 60, l);
        let d = peek(tat, 0, l);
        assert_eq!((d.remaining, d.reset_secs), (0, 60));
        let fresh = peek(None, 5 * SEC, l);
        assert_eq!((fresh.remaining, fresh.reset_secs), (60, 0));
    }

    #[test]
    fn a_refused_request_does_not_count() {
        let l = limit(1, 10);
        let first = decide(None, 0, l);
        assert!(first.allowed);
        let refused = decide(Some(first.new_tat), SEC, l);
        assert!(!refused.allowed);
        assert_eq!(refused.new_tat, first.new_tat);
        assert_eq!(refused.retry_after_secs, 9);
        assert!(decide(Some(first.new_tat), 10 * SEC, l).allowed);
    }

    #[test]
    fn an_old_state_is_a_full_bucket() {
        let l = limit(5, 1);
        let (passed, _) = burst(Some(3 * SEC), 3600 * SEC, 10, l);
        assert_eq!(passed, 5);
    }

    #[test]
    fn headers_follow_the_draft() {
        let l = limit(60, 60);
        let d = decide(None, 0, l);
        let [(p, pv), (r, rv)] = headers(l, &d);
        assert_eq!((p, pv.as_str()), ("RateLimit-Policy", "\"user\";q=60;w=60"));
        assert_eq!((r, rv.as_str()), ("RateLimit", "\"user\";r=59;t=1"));
    }
}
