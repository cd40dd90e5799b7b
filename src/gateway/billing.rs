//! Money on a gateway route: the charge, committed *before* the request is
//! forwarded, and the refund, in its own transaction, when the upstream's
//! answer is not billable. Both lock the user's row like the bank route's
//! charge (`billing::account::lock`), and the charge is decided by the one
//! money decision (`billing::decide`) and written by `account::apply`, so
//! one user's charges and refunds are serialised and exact across instances.
//!
//! A refund gives the cost back (`credit += cost`), takes the call's usage
//! credits back (`usage_daily.credits -= cost`; the call itself stays
//! counted) and writes a `refund` ledger row with delta 0 and the balance
//! after: the credit returns through usage, so that
//! `credit = Σ credit_events.delta − Σ usage_daily.credits` holds.
//!
//! `Idempotency-Key` on a route: the key's row says `route_pending` (with a
//! deadline) while the first request is in flight, `route_billed` once its
//! answer was billable (while its body still streams, with a deadline too),
//! and holds the stored answer once the body is whole (`replay`); a refund
//! deletes it, so a retry of a refunded request is a new request. A retry
//! of a billed one is answered from the stored answer and never forwarded
//! again; a key reused with another request is refused (422), as the IETF
//! Idempotency-Key draft says.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use mysql::prelude::Queryable;
use mysql::TxOpts;
use serde::{Deserialize, Serialize};

use crate::billing::account::{self, AuthFailure, LowCredit, RateState};
use crate::billing::{decide, Insufficient, Outcome, Verdict};
use crate::db::{self, DbError, Pool};
use crate::model::IdempotencyKey;
use crate::token::Credentials;

use super::replay::StoredAnswer;

pub struct RouteCharge<'a> {
    pub credentials: &'a Credentials,
    /// `route:<prefix>`, the usage rows' endpoint.
    pub endpoint: &'a str,
    pub cost: i64,
    pub idempotency_key: Option<&'a IdempotencyKey>,
    pub now: DateTime<Utc>,
    /// The request's fingerprint (method, path, query, body), so that only
    /// the same request under a key is a retry; empty without a key.
    pub fingerprint: &'a str,
    /// How long a keyed request in flight makes its retries wait (409):
    /// the route's timeout and a margin. Past it, a crashed instance's
    /// request counts as billed, because no refund was written for it.
    pub in_flight_for: Duration,
}

/// What the charge decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charged {
    /// Forward the request.
    Forward(Ticket),
    /// A retry of a billed request: its stored first answer, not charged
    /// and not forwarded.
    Replay {
        answer: StoredAnswer,
        credit_remaining: i64,
        rate: Option<RateState>,
    },
    /// The key was used with another request: 422.
    KeyReused,
    /// A retry of a billed request whose answer was not stored: 409.
    AnswerNotStored,
    /// Not charged (the request still counts against the limit).
    Insufficient(Insufficient, Option<RateState>),
    /// The same key is still in flight.
    InProgress,
    /// Refused by the user's rate limit: nothing charged or counted.
    RateLimited(RateState),
    Unauthorized(AuthFailure),
}

/// A forwarded request's claim on the money: what to settle or refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub user_id: u64,
    /// What was taken.
    pub charged: i64,
    pub credit_remaining: i64,
    /// The user's rate limit, for the answer's headers.
    pub rate: Option<RateState>,
    /// The charge crossed the user's low-credit threshold.
    pub low_credit: Option<LowCredit>,
    day: NaiveDate,
    endpoint: String,
    /// The scoped key and the pending state its row holds for this request:
    /// settle and refund touch the row only while it is still this one's.
    key: Option<(String, String)>,
}

impl Ticket {
    /// The request carried an Idempotency-Key (its answer is recorded).
    pub fn keyed(&self) -> bool {
        self.key.is_some()
    }
}

/// The `idempotency_keys.outcome` of a keyed route request. `fp` is the
/// request's fingerprint (method, path, query, body): only the same request
/// is a retry; another one under the same key is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum KeyState {
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

    fn json(&self) -> String {
        serde_json::to_string(self).expect("serialises")
    }
}

/// A gateway key's row is its own: scoped by the route's endpoint, so the
/// bank route and every route keep their answers apart. A TAB cannot occur
/// in a key (visible ASCII only).
fn scoped(endpoint: &str, key: &IdempotencyKey) -> String {
    format!("{endpoint}\t{}", key.as_str())
}

/// What a stored key state means for this request.
#[derive(Debug, PartialEq, Eq)]
enum KeyCheck {
    New,
    InProgress,
    Replay,
    NotStored,
    Reused,
}

fn check_key(state: Option<&KeyState>, fp: &str, now: i64) -> KeyCheck {
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

/// Checks the credentials without locking or charging anything: a request
/// with a body is authenticated before its body is read, so that a client
/// without valid credentials cannot hold a thread by trickling a body.
/// (`charge` authenticates again under the row lock: a key revoked in
/// between is still refused.)
pub fn authenticate(
    pool: &Pool,
    credentials: &Credentials,
) -> Result<Result<(), AuthFailure>, DbError> {
    let name = match account::lookup_name(credentials) {
        Ok(name) => name,
        Err(why) => return Ok(Err(why)),
    };
    let mut conn = pool.get()?;
    let sql = conn.prepared(account::PER_REQUEST)?;
    Ok(account::lock(&mut **conn, &sql, &name, &credentials.token, false)?.map(|_| ()))
}

/// Authenticates, then charges the route's cost (or replays a billed key),
/// in one transaction that commits before anything is forwarded; run again
/// when the database rolled it back.
pub fn charge(pool: &Pool, req: &RouteCharge<'_>) -> Result<Charged, DbError> {
    pool.retrying(|| charge_once(pool, req))
}

fn charge_once(pool: &Pool, req: &RouteCharge<'_>) -> Result<Charged, DbError> {
    let name = match account::lookup_name(req.credentials) {
        Ok(name) => name,
        Err(why) => return Ok(Charged::Unauthorized(why)),
    };
    let mut conn = pool.get()?;
    let sql = conn.prepared(account::PER_REQUEST)?;
    let mut tx = conn.start_transaction(TxOpts::default())?;
    let account = match account::lock(&mut tx, &sql, &name, &req.credentials.token, true)? {
        Ok(a) => a,
        Err(why) => return Ok(Charged::Unauthorized(why)),
    };
    let scoped_key = req.idempotency_key.map(|k| scoped(req.endpoint, k));
    let known = match &scoped_key {
        Some(key) => key_answer(&mut tx, account.id, key, req)?,
        None => None,
    };
    let outcome = decide(&account, known, Some(req.cost), req.now);
    account::apply(&mut tx, &sql, &account, &outcome, req.endpoint, req.now)?;
    let charged = match outcome {
        // Answered from the database: nothing forwarded, nothing charged,
        // not counted against the rate limit, nothing to commit.
        Outcome::Replayed { answer, rate } => {
            return Ok(match answer {
                KeyAnswer::InProgress => Charged::InProgress,
                KeyAnswer::Reused => Charged::KeyReused,
                KeyAnswer::NotStored => Charged::AnswerNotStored,
                KeyAnswer::Stored(answer) => Charged::Replay {
                    answer,
                    credit_remaining: account.credit,
                    rate,
                },
            })
        }
        Outcome::RateLimited(refused) => return Ok(Charged::RateLimited(refused)),
        // Committed: the request still counts against the limit.
        Outcome::Counted {
            verdict: Verdict::Insufficient(short),
            rate,
            ..
        } => Charged::Insufficient(short, rate),
        Outcome::Counted {
            verdict: Verdict::Unpriced,
            ..
        } => unreachable!("a route always has a price"),
        Outcome::Counted {
            verdict:
                Verdict::Debited {
                    cost,
                    credit_remaining,
                    low_credit,
                },
            rate,
            ..
        } => {
            let key = match scoped_key {
                Some(key) => Some(start_key(&mut tx, account.id, key, req)?),
                None => None,
            };
            Charged::Forward(Ticket {
                user_id: account.id,
                charged: cost,
                credit_remaining,
                rate,
                low_credit,
                day: req.now.date_naive(),
                endpoint: req.endpoint.to_string(),
                key,
            })
        }
    };
    tx.commit().map_err(db::commit_failed)?;
    db::trust(&mut conn);
    Ok(charged)
}

/// What a keyed route request's earlier use answers, before anything is
/// charged: `None` for a new key (or an expired one).
fn key_answer(
    tx: &mut impl Queryable,
    user_id: u64,
    key: &str,
    req: &RouteCharge<'_>,
) -> Result<Option<KeyAnswer>, DbError> {
    let state: Option<KeyState> = crate::credit::stored_outcome(tx, user_id, key)?;
    Ok(
        match check_key(state.as_ref(), req.fingerprint, req.now.timestamp()) {
            KeyCheck::New => None,
            KeyCheck::InProgress => Some(KeyAnswer::InProgress),
            KeyCheck::Reused => Some(KeyAnswer::Reused),
            KeyCheck::NotStored => Some(KeyAnswer::NotStored),
            KeyCheck::Replay => Some(match stored_answer(tx, user_id, key)? {
                Some(answer) => KeyAnswer::Stored(answer),
                None => KeyAnswer::NotStored,
            }),
        },
    )
}

/// What a key that was used before answers a retry with.
#[derive(Debug)]
enum KeyAnswer {
    InProgress,
    Reused,
    NotStored,
    Stored(StoredAnswer),
}

/// The answer was billable: a retry with the same key now waits for its
/// body (until `streaming_for` has passed) and is then replayed. The
/// ticket keeps the new state, which `record_answer` expects.
pub fn settle(pool: &Pool, ticket: &mut Ticket, streaming_for: Duration) -> Result<(), DbError> {
    let Some((key, pending)) = ticket.key.as_mut() else {
        return Ok(());
    };
    let fp = match serde_json::from_str(pending) {
        Ok(KeyState::RoutePending { fp, .. }) => fp,
        _ => return Ok(()),
    };
    let billed = KeyState::RouteBilled {
        fp,
        stored: false,
        streaming_until: chrono::Utc::now().timestamp() + streaming_for.as_secs().max(1) as i64,
    };
    // Its 24 h count from the first request, so created_at stays.
    pool.get()?.exec_drop(
        "UPDATE idempotency_keys SET outcome = ? \
         WHERE user_id = ? AND idem_key = ? AND outcome = ?",
        (billed.json(), ticket.user_id, &*key, &*pending),
    )?;
    *pending = billed.json();
    Ok(())
}

/// The billed answer's body has ended: store it (`Some`) for replays, or
/// say that none is stored (too large, or cut short), so a retry is
/// answered 409 at once instead of waiting out the streaming deadline.
pub fn record_answer(
    pool: &Pool,
    ticket: &Ticket,
    answer: Option<&StoredAnswer>,
) -> Result<(), DbError> {
    let Some((key, settled)) = ticket.key.as_ref() else {
        return Ok(());
    };
    let fp = match serde_json::from_str(settled) {
        Ok(KeyState::RouteBilled { fp, .. }) => fp,
        _ => return Ok(()),
    };
    let done = KeyState::RouteBilled {
        fp,
        stored: answer.is_some(),
        streaming_until: 0,
    };
    pool.get()?.exec_drop(
        "UPDATE idempotency_keys SET outcome = ?, answer = ? \
         WHERE user_id = ? AND idem_key = ? AND outcome = ?",
        (
            done.json(),
            answer.map(StoredAnswer::encode),
            ticket.user_id,
            key,
            settled,
        ),
    )?;
    Ok(())
}

/// The stored first answer under a key, if it can be read.
fn stored_answer(
    tx: &mut impl Queryable,
    user_id: u64,
    key: &str,
) -> Result<Option<StoredAnswer>, DbError> {
    let bytes: Option<Option<Vec<u8>>> = tx.exec_first(
        "SELECT answer FROM idempotency_keys WHERE user_id = ? AND idem_key = ?",
        (user_id, key),
    )?;
    Ok(bytes.flatten().and_then(|b| StoredAnswer::decode(&b)))
}

/// The answer was not billable: gives the charge back, once (the caller
/// calls this at most once per ticket). Returns the credit after it.
pub fn refund(pool: &Pool, ticket: &Ticket, actor: &str) -> Result<i64, DbError> {
    // A conflict rolled the refund back, so running it again gives back once.
    pool.retrying(|| refund_once(pool, ticket, actor))
}

fn refund_once(pool: &Pool, ticket: &Ticket, actor: &str) -> Result<i64, DbError> {
    let mut conn = pool.get()?;
    let mut tx = conn.start_transaction(TxOpts::default())?;
    let credit = account::give_back(
        &mut tx,
        ticket.user_id,
        ticket.charged,
        ticket.day,
        &ticket.endpoint,
        actor,
    )?;
    if let Some((key, pending)) = &ticket.key {
        tx.exec_drop(
            "DELETE FROM idempotency_keys WHERE user_id = ? AND idem_key = ? AND outcome = ?",
            (ticket.user_id, key, pending),
        )?;
    }
    tx.commit().map_err(db::commit_failed)?;
    Ok(credit)
}

/// A new keyed request, charged: its row says "in flight" until the
/// route's deadline. REPLACE takes over an expired row, or one of another
/// request under the same key, and starts its 24 h anew. Returns the
/// scoped key and the state written, which the ticket keeps.
fn start_key(
    tx: &mut impl Queryable,
    user_id: u64,
    key: String,
    req: &RouteCharge<'_>,
) -> Result<(String, String), DbError> {
    let pending = KeyState::RoutePending {
        until: req.now.timestamp() + req.in_flight_for.as_secs().max(1) as i64,
        fp: req.fingerprint.to_string(),
    }
    .json();
    tx.exec_drop(
        "REPLACE INTO idempotency_keys (user_id, idem_key, outcome) VALUES (?, ?, ?)",
        (user_id, &key, &pending),
    )?;
    Ok((key, pending))
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
        assert_eq!(check_key(Some(&old), "a", 0), KeyCheck::NotStored);
    }

    #[test]
    fn only_the_same_request_is_a_retry_and_another_is_refused() {
        let billed = |stored, streaming_until| KeyState::RouteBilled {
            fp: "a".into(),
            stored,
            streaming_until,
        };
        assert_eq!(check_key(Some(&billed(true, 0)), "a", 0), KeyCheck::Replay);
        assert_eq!(check_key(Some(&billed(true, 0)), "b", 0), KeyCheck::Reused);
        assert_eq!(
            check_key(Some(&billed(false, 10)), "a", 5),
            KeyCheck::InProgress
        );
        assert_eq!(
            check_key(Some(&billed(false, 10)), "a", 10),
            KeyCheck::NotStored
        );
        assert_eq!(
            check_key(Some(&billed(false, 0)), "a", 5),
            KeyCheck::NotStored
        );
        let pending = KeyState::RoutePending {
            until: 10,
            fp: "a".into(),
        };
        assert_eq!(check_key(Some(&pending), "a", 5), KeyCheck::InProgress);
        assert_eq!(check_key(Some(&pending), "a", 10), KeyCheck::NotStored);
        assert_eq!(check_key(Some(&pending), "b", 5), KeyCheck::Reused);
        assert_eq!(check_key(None, "a", 5), KeyCheck::New);
    }

    #[test]
    fn keys_are_scoped_by_route() {
        let k = IdempotencyKey::parse("order-1").unwrap();
        assert_ne!(scoped("route:/a", &k), scoped("route:/b", &k));
        assert_ne!(scoped("route:/a", &k), "order-1");
    }
}
