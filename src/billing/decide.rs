//! The one money decision, pure: what a paid request does to a locked
//! account. Every paid path asks it — the bank route, each request of a
//! coalesced batch, a gateway route — so that the order of the checks is
//! written once: a keyed retry is answered from what its key holds (not
//! counted, not charged), then the rate limiter may refuse (nothing
//! counted), then the credit decides between a debit and "insufficient"
//! (either way the request counts against the limit). Writing what it
//! decided is `account::apply`'s (one request) or the batch's (in memory).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::account::{Account, LowCredit, RateState, Running};

/// Not enough credit for the request: the one description of a 402,
/// whichever path refused. Serialisable because a bank lookup's refusal is
/// what its Idempotency-Key replays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Insufficient {
    pub cost: i64,
    pub credit_remaining: i64,
    /// When the monthly refill comes, seconds since the epoch; `None`
    /// without a monthly credit.
    pub next_refill: Option<i64>,
}

impl Insufficient {
    /// The seconds a client should wait for the refill, at least one.
    pub fn retry_after(&self, now: i64) -> Option<u64> {
        self.next_refill.map(|t| (t - now).max(1) as u64)
    }
}

/// What a request that passed the limiter does to the credit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to charge (a bank that does not exist): counted only.
    Unpriced,
    Insufficient(Insufficient),
    Debited {
        cost: i64,
        credit_remaining: i64,
        /// This debit crossed the user's low-credit threshold.
        low_credit: Option<LowCredit>,
    },
}

/// The decision. `R` is what a key's earlier use answers with: the bank
/// route's stored answer, or a gateway route's key check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<R> {
    /// Answered from the key: nothing charged, nothing counted. `rate` is
    /// the limiter's state as it stands, for the headers.
    Replayed { answer: R, rate: Option<RateState> },
    /// Refused by the user's rate limit: nothing charged, nothing counted.
    RateLimited(RateState),
    /// The request counts: `rate` is the limiter's allowing word (`None`
    /// without a limit), `after` the row once this request is written.
    Counted {
        verdict: Verdict,
        rate: Option<RateState>,
        after: Running,
    },
}

/// Decides one request against `account` (as locked, or as a batch has
/// left it so far). `replay`: what the request's key already answers, if
/// anything; `cost`: the price, `None` when there is nothing to sell.
pub fn decide<R>(
    account: &Account,
    replay: Option<R>,
    cost: Option<i64>,
    now: DateTime<Utc>,
) -> Outcome<R> {
    if let Some(answer) = replay {
        return Outcome::Replayed {
            answer,
            rate: account.rate_now(),
        };
    }
    let rate = match account.rate_check() {
        Ok(rate) => rate,
        Err(refused) => return Outcome::RateLimited(refused),
    };
    let mut after = account.running();
    if let Some(r) = &rate {
        after.rate_tat = Some(r.decision.new_tat);
    }
    let verdict = match cost.map(|cost| (cost, account.plan_debit(cost))) {
        None => Verdict::Unpriced,
        Some((cost, None)) => Verdict::Insufficient(Insufficient {
            cost,
            credit_remaining: account.available(),
            next_refill: account.next_refill(now).map(|t| t.timestamp()),
        }),
        Some((cost, Some((debited, low_credit)))) => {
            after.credit = debited.credit;
            after.low_credit_notified = debited.low_credit_notified;
            Verdict::Debited {
                cost,
                credit_remaining: debited.credit - account.held,
                low_credit,
            }
        }
    };
    Outcome::Counted {
        verdict,
        rate,
        after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RateLimit;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn counted(o: Outcome<&str>) -> (Verdict, Option<RateState>, Running) {
        match o {
            Outcome::Counted {
                verdict,
                rate,
                after,
            } => (verdict, rate, after),
            other => panic!("not counted: {other:?}"),
        }
    }

    #[test]
    fn a_replay_comes_first_and_touches_nothing() {
        let a = Account::for_test(0, None).with_limit(RateLimit {
            quota: 1,
            window_secs: 60,
        });
        // Even an account that is out of credit and over its limit
        // answers a keyed retry from the key.
        let exhausted = a.clone().with_running(Running {
            credit: 0,
            rate_tat: Some(a.running_now_us() + 120_000_000),
            low_credit_notified: false,
        });
        match decide(&exhausted, Some("first"), Some(5), at(0)) {
            Outcome::Replayed { answer, rate } => {
                assert_eq!(answer, "first");
                assert!(rate.is_some());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_limit_refuses_before_the_credit_is_looked_at() {
        let a = Account::for_test(0, None).with_limit(RateLimit {
            quota: 1,
            window_secs: 60,
        });
        let over = a.clone().with_running(Running {
            credit: 0,
            rate_tat: Some(a.running_now_us() + 120_000_000),
            low_credit_notified: false,
        });
        assert!(matches!(
            decide::<&str>(&over, None, Some(5), at(0)),
            Outcome::RateLimited(_)
        ));
        // Within the limit, the same empty account is told "insufficient",
        // and the request still counts against the limit.
        let (verdict, rate, after) = counted(decide(&a, None, Some(5), at(0)));
        assert!(matches!(verdict, Verdict::Insufficient(_)));
        let rate = rate.expect("a limited user's word");
        assert_eq!(after.rate_tat, Some(rate.decision.new_tat));
        assert_eq!(after.credit, 0);
    }

    #[test]
    fn insufficient_says_cost_credit_and_refill() {
        let a = Account::for_test(3, Some(10));
        let (verdict, rate, after) = counted(decide::<&str>(&a, None, Some(5), at(0)));
        let Verdict::Insufficient(short) = verdict else {
            panic!("{verdict:?}")
        };
        assert_eq!((short.cost, short.credit_remaining), (5, 3));
        assert!(short.next_refill.is_some());
        assert_eq!(short.retry_after(short.next_refill.unwrap() + 9), Some(1));
        assert_eq!(rate, None);
        assert_eq!(after, a.running());
        let none = Account::for_test(3, None);
        let (verdict, ..) = counted(decide::<&str>(&none, None, Some(5), at(0)));
        assert!(matches!(
            verdict,
            Verdict::Insufficient(Insufficient {
                next_refill: None,
                ..
            })
        ));
    }

    #[test]
    fn a_debit_takes_the_cost_and_an_unpriced_request_only_counts() {
        let a = Account::for_test(5, None);
        let (verdict, _, after) = counted(decide::<&str>(&a, None, Some(5), at(0)));
        assert_eq!(
            verdict,
            Verdict::Debited {
                cost: 5,
                credit_remaining: 0,
                low_credit: None
            }
        );
        assert_eq!(after.credit, 0);
        let (verdict, _, after) = counted(decide::<&str>(&a, None, None, at(0)));
        assert_eq!(verdict, Verdict::Unpriced);
        assert_eq!(after, a.running());
    }

    #[test]
    fn held_credit_cannot_be_spent_and_is_not_reported_as_remaining() {
        let a = Account::for_test(10, None).with_held(7);
        let (verdict, ..) = counted(decide::<&str>(&a, None, Some(4), at(0)));
        let Verdict::Insufficient(short) = verdict else {
            panic!("{verdict:?}")
        };
        assert_eq!(short.credit_remaining, 3);
        let (verdict, _, after) = counted(decide::<&str>(&a, None, Some(3), at(0)));
        assert!(matches!(
            verdict,
            Verdict::Debited {
                credit_remaining: 0,
                ..
            }
        ));
        // The row keeps the held credit: only the cost leaves it.
        assert_eq!(after.credit, 7);
    }

    #[test]
    fn crossing_the_threshold_makes_the_notice_due_once() {
        let a = Account::for_test(10, None).with_low_credit(5);
        let (verdict, _, after) = counted(decide::<&str>(&a, None, Some(6), at(0)));
        let Verdict::Debited { low_credit, .. } = verdict else {
            panic!("{verdict:?}")
        };
        assert_eq!(low_credit.map(|l| (l.credit, l.threshold)), Some((4, 5)));
        assert!(after.low_credit_notified);
        let again = a.with_running(after);
        let (verdict, ..) = counted(decide::<&str>(&again, None, Some(1), at(0)));
        assert!(matches!(
            verdict,
            Verdict::Debited {
                low_credit: None,
                ..
            }
        ));
    }
}
