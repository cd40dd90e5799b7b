//! A gateway key's state while its first request is on its way: pending
//! (charged, the upstream not yet answered, with a deadline), billed
//! (answered billably; its body may still stream, with a deadline too), or
//! billed with its answer stored. Pure: what a stored state means for a
//! retry (`check`), and which state follows which.

use serde::{Deserialize, Serialize};

use super::answer::StoredAnswer;

/// The `idempotency_keys.outcome` of a keyed route request. `fp` is the
/// request's fingerprint (method, path, query, body): only the same request
/// is a retry; another one under the same key is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub(crate) enum KeyState {
    RoutePending {
        until: i64,
        fp: String,
    },
    /// `stored`: the `answer` column holds the first answer. Until
    /// `streaming_until` its body may still be on its way (a retry waits).
    RouteBilled {
        fp: String,
        #[serde(default)]
        stored: bool,
        #[serde(default)]
        streaming_until: i64,
    },
}

impl KeyState {
    fn fp(&self) -> &str {
        match self {
            KeyState::RoutePending { fp, .. } | KeyState::RouteBilled { fp, .. } => fp,
        }
    }

    pub(crate) fn json(&self) -> String {
        serde_json::to_string(self).expect("serialises")
    }
}

/// What a stored key state means for this request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KeyCheck {
    New,
    InProgress,
    Replay,
    NotStored,
    Reused,
}

pub(crate) fn check(state: Option<&KeyState>, fp: &str, now: i64) -> KeyCheck {
    match state {
        None => KeyCheck::New,
        Some(s) if s.fp() != fp => KeyCheck::Reused,
        Some(KeyState::RoutePending { until, .. }) if now < *until => KeyCheck::InProgress,
        // A pending request past its deadline was charged and never
        // refunded (its instance died): it counts as billed, and its
        // answer was never stored.
        Some(KeyState::RoutePending { .. }) => KeyCheck::NotStored,
        Some(KeyState::RouteBilled { stored: true, .. }) => KeyCheck::Replay,
        Some(KeyState::RouteBilled {
            streaming_until, ..
        }) if now < *streaming_until => KeyCheck::InProgress,
        Some(KeyState::RouteBilled { .. }) => KeyCheck::NotStored,
    }
}

/// What a key that was used before answers a retry with: what the money
/// decision gets as its replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyAnswer {
    /// The first request is still in flight: 409, try again.
    InProgress,
    /// The key was used with another request: 422.
    Reused,
    /// Billed, but its answer was not stored: 409.
    NotStored,
    /// The first answer, to replay.
    Stored(StoredAnswer),
}

/// A charged, keyed request's hold on its key's row: the scoped key and the
/// state the row holds for it. Settling and releasing touch the row only
/// while it is still this one's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub(crate) key: String,
    pub(crate) state: String,
}

impl Claim {
    /// A new claim, in flight until `until` (seconds since the epoch).
    pub(crate) fn pending(key: String, fp: &str, until: i64) -> Claim {
        let state = KeyState::RoutePending {
            until,
            fp: fp.to_string(),
        };
        Claim {
            key,
            state: state.json(),
        }
    }

    /// The state that follows a pending claim once its answer was billable:
    /// billed, its body streaming until `streaming_until`. `None` when the
    /// claim is not pending.
    pub(crate) fn billed(&self, streaming_until: i64) -> Option<String> {
        match serde_json::from_str(&self.state) {
            Ok(KeyState::RoutePending { fp, .. }) => Some(
                KeyState::RouteBilled {
                    fp,
                    stored: false,
                    streaming_until,
                }
                .json(),
            ),
            _ => None,
        }
    }

    /// The state that follows a billed claim once its body has ended:
    /// `stored` says whether the answer was kept. `None` when not billed.
    pub(crate) fn done(&self, stored: bool) -> Option<String> {
        match serde_json::from_str(&self.state) {
            Ok(KeyState::RouteBilled { fp, .. }) => Some(
                KeyState::RouteBilled {
                    fp,
                    stored,
                    streaming_until: 0,
                }
                .json(),
            ),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_states_round_trip_and_refuse_bank_answers() {
        let pending = KeyState::RoutePending {
            until: 5,
            fp: "f".into(),
        };
        let s = pending.json();
        assert_eq!(s, r#"{"outcome":"route_pending","until":5,"fp":"f"}"#);
        let back: KeyState = serde_json::from_str(&s).unwrap();
        assert_eq!(back, pending);
        assert!(serde_json::from_str::<KeyState>(r#"{"outcome":"unknown_bank"}"#).is_err());
        // A row written before answers were stored reads as "not stored".
        let old: KeyState = serde_json::from_str(r#"{"outcome":"route_billed","fp":"a"}"#).unwrap();
        assert_eq!(check(Some(&old), "a", 0), KeyCheck::NotStored);
    }

    #[test]
    fn only_the_same_request_is_a_retry_and_another_is_refused() {
        let billed = |stored, streaming_until| KeyState::RouteBilled {
            fp: "a".into(),
            stored,
            streaming_until,
        };
        assert_eq!(check(Some(&billed(true, 0)), "a", 0), KeyCheck::Replay);
        assert_eq!(check(Some(&billed(true, 0)), "b", 0), KeyCheck::Reused);
        assert_eq!(
            check(Some(&billed(false, 10)), "a", 5),
            KeyCheck::InProgress
        );
        assert_eq!(
            check(Some(&billed(false, 10)), "a", 10),
            KeyCheck::NotStored
        );
        assert_eq!(check(Some(&billed(false, 0)), "a", 5), KeyCheck::NotStored);
        let pending = KeyState::RoutePending {
            until: 10,
            fp: "a".into(),
        };
        assert_eq!(check(Some(&pending), "a", 5), KeyCheck::InProgress);
        assert_eq!(check(Some(&pending), "a", 10), KeyCheck::NotStored);
        assert_eq!(check(Some(&pending), "b", 5), KeyCheck::Reused);
        assert_eq!(check(None, "a", 5), KeyCheck::New);
    }

    #[test]
    fn a_claim_moves_pending_then_billed_then_done() {
        let claim = Claim::pending("k".into(), "a", 10);
        assert_eq!(claim.done(true), None);
        let billed = Claim {
            key: "k".into(),
            state: claim.billed(20).unwrap(),
        };
        assert_eq!(billed.billed(30), None);
        let done: KeyState = serde_json::from_str(&billed.done(true).unwrap()).unwrap();
        assert_eq!(check(Some(&done), "a", 25), KeyCheck::Replay);
        let not: KeyState = serde_json::from_str(&billed.done(false).unwrap()).unwrap();
        assert_eq!(check(Some(&not), "a", 25), KeyCheck::NotStored);
    }
}
