//! Money on a gateway route: the charge, committed *before* the request is
//! forwarded, and the refund, in its own transaction, when the upstream's
//! answer is not billable. Both lock the user's row like the bank route's
//! charge (`credit::lock_account`, `credit::debit`), so one user's charges
//! and refunds are serialised and exact across instances.
//!
//! A refund gives the cost back (`credit += cost`), takes the call's usage
//! credits back (`usage_daily.credits -= cost`; the call itself stays
//! counted) and writes a `refund` ledger row with delta 0 and the balance
//! after: the credit returns through usage, so that
//! `credit = Σ credit_events.delta − Σ usage_daily.credits` holds.
//!
//! `Idempotency-Key` on a route: the key's row says `route_pending` (with a
//! deadline) while the first request is in flight, `route_billed` once its
//! answer was billable; a refund deletes it, so a retry of a refunded request
//! is a new request.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use mysql::prelude::Queryable;
use mysql::TxOpts;
use serde::{Deserialize, Serialize};

use crate::account::{self, AuthFailure, Debit, LowCredit, RateState};
use crate::db::{self, DbError, Pool};
use crate::ledger::{self, Event, Reason};
use crate::model::IdempotencyKey;
use crate::token::Credentials;

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
    Insufficient {
        cost: i64,
        credit_remaining: i64,
        next_refill: Option<i64>,
        rate: Option<RateState>,
    },
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
    /// What was taken; 0 for a replay, which charges nothing.
    pub charged: i64,
    pub credit_remaining: i64,
    pub replayed: bool,
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

/// The `idempotency_keys.outcome` of a keyed route request. `fp` is the
/// request's fingerprint (method, path, query, body): only the same request
/// is a retry; another one under the same key is a new request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum KeyState {
    RoutePending { until: i64, fp: String },
    RouteBilled { fp: String },
}

/// A gateway key's row is its own: scoped by the route's endpoint, so the
/// bank route and every route keep their answers apart. A TAB cannot occur
/// in a key (visible ASCII only).
fn scoped(endpoint: &str, key: &IdempotencyKey) -> String {
    format!("{endpoint}\t{}", key.as_str())
}

/// What a stored key state means for this request.
enum KeyCheck {
    New,
    InProgress,
    Replay,
}

fn check_key(state: Option<KeyState>, fp: &str, now: i64) -> KeyCheck {
    match state {
        Some(KeyState::RoutePending { until, fp: f }) if f == fp && now < until => {
            KeyCheck::InProgress
        }
        // A pending request past its deadline was charged and never
        // refunded (its instance died): it counts as billed.
        Some(KeyState::RoutePending { fp: f, .. }) | Some(KeyState::RouteBilled { fp: f })
            if f == fp =>
        {
            KeyCheck::Replay
        }
        _ => KeyCheck::New,
    }
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
    let mut ticket = Ticket {
        user_id: account.id,
        charged: 0,
        credit_remaining: account.credit,
        replayed: false,
        rate: account.rate_now(),
        low_credit: None,
        day: req.now.date_naive(),
        endpoint: req.endpoint.to_string(),
        key: None,
    };
    let scoped_key = req.idempotency_key.map(|k| scoped(req.endpoint, k));
    let check = match &scoped_key {
        Some(key) => check_key(
            crate::credit::stored_outcome(&mut tx, account.id, key)?,
            req.fingerprint,
            req.now.timestamp(),
        ),
        None => KeyCheck::New,
    };
    if let KeyCheck::InProgress = check {
        return Ok(Charged::InProgress);
    }
    // A replay is forwarded again, so it counts against the limit too.
    ticket.rate = match account.rate_check() {
        Ok(rate) => rate,
        Err(refused) => return Ok(Charged::RateLimited(refused)),
    };
    if let KeyCheck::Replay = check {
        account::save_rate(&mut tx, &account, ticket.rate.map(|r| r.decision.new_tat))?;
        tx.commit().map_err(db::commit_failed)?;
        ticket.replayed = true;
        return Ok(Charged::Forward(ticket));
    }
    account::touch_key(&mut tx, &account)?;
    let charged = match account::debit(
        &mut tx,
        &sql,
        &account,
        req.cost,
        req.endpoint,
        req.now,
        ticket.rate.as_ref(),
    )? {
        // Committed: the request still counts against the limit.
        Debit::Insufficient => Charged::Insufficient {
            cost: req.cost,
            credit_remaining: account.credit,
            next_refill: account.next_refill(req.now).map(|t| t.timestamp()),
            rate: ticket.rate,
        },
        Debit::Done {
            credit_remaining,
            low_credit,
        } => {
            ticket.charged = req.cost;
            ticket.credit_remaining = credit_remaining;
            ticket.low_credit = low_credit;
            if let Some(key) = scoped_key {
                let pending = KeyState::RoutePending {
                    until: req.now.timestamp() + req.in_flight_for.as_secs().max(1) as i64,
                    fp: req.fingerprint.to_string(),
                };
                let json = serde_json::to_string(&pending).expect("serialises");
                start_key(&mut tx, account.id, &key, &json)?;
                ticket.key = Some((key, json));
            }
            Charged::Forward(ticket)
        }
    };
    tx.commit().map_err(db::commit_failed)?;
    db::trust(&mut conn);
    Ok(charged)
}

/// The answer was billable: a retry with the same key is now a replay.
pub fn settle(pool: &Pool, ticket: &Ticket) -> Result<(), DbError> {
    let Some((key, pending)) = ticket.key.as_ref().filter(|_| !ticket.replayed) else {
        return Ok(());
    };
    let fp = match serde_json::from_str(pending) {
        Ok(KeyState::RoutePending { fp, .. }) => fp,
        _ => return Ok(()),
    };
    let json = serde_json::to_string(&KeyState::RouteBilled { fp }).expect("serialises");
    // Its 24 h count from the first request, so created_at stays.
    pool.get()?.exec_drop(
        "UPDATE idempotency_keys SET outcome = ? \
         WHERE user_id = ? AND idem_key = ? AND outcome = ?",
        (json, ticket.user_id, key, pending),
    )?;
    Ok(())
}

/// The answer was not billable: gives the charge back, once (the caller
/// calls this at most once per ticket). Returns the credit after it.
pub fn refund(pool: &Pool, ticket: &Ticket, actor: &str) -> Result<i64, DbError> {
    if ticket.replayed {
        // Nothing was taken, and the first request's billing stands.
        return Ok(ticket.credit_remaining);
    }
    // A conflict rolled the refund back, so running it again gives back once.
    pool.retrying(|| refund_once(pool, ticket, actor))
}

fn refund_once(pool: &Pool, ticket: &Ticket, actor: &str) -> Result<i64, DbError> {
    let mut conn = pool.get()?;
    let mut tx = conn.start_transaction(TxOpts::default())?;
    let credit: Option<i64> = tx.exec_first(
        "SELECT credit FROM users WHERE id = ? FOR UPDATE",
        (ticket.user_id,),
    )?;
    let credit = credit.unwrap_or(0) + ticket.charged;
    if ticket.charged > 0 {
        tx.exec_drop(
            format!(
                "UPDATE users SET credit = credit + ?, {} WHERE id = ?",
                crate::account::REARM_LOW_CREDIT
            ),
            (ticket.charged, ticket.user_id),
        )?;
        tx.exec_drop(
            "UPDATE usage_daily SET credits = credits - ? \
             WHERE user_id = ? AND day = ? AND endpoint = ?",
            (
                ticket.charged,
                ticket.user_id,
                ticket.day.format("%Y-%m-%d").to_string(),
                &ticket.endpoint,
            ),
        )?;
        ledger::record(
            &mut tx,
            &Event {
                user_id: ticket.user_id,
                delta: 0,
                balance_after: credit,
                reason: Reason::Refund,
                period: None,
                actor,
            },
        )?;
    }
    if let Some((key, pending)) = &ticket.key {
        tx.exec_drop(
            "DELETE FROM idempotency_keys WHERE user_id = ? AND idem_key = ? AND outcome = ?",
            (ticket.user_id, key, pending),
        )?;
    }
    tx.commit().map_err(db::commit_failed)?;
    Ok(credit)
}

/// A new keyed request: REPLACE takes over an expired row, or one of
/// another request under the same key, and starts its 24 h anew.
fn start_key(
    tx: &mut impl Queryable,
    user_id: u64,
    key: &str,
    pending_json: &str,
) -> Result<(), DbError> {
    tx.exec_drop(
        "REPLACE INTO idempotency_keys (user_id, idem_key, outcome) VALUES (?, ?, ?)",
        (user_id, key, pending_json),
    )?;
    Ok(())
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
        let s = serde_json::to_string(&pending).unwrap();
        assert_eq!(s, r#"{"outcome":"route_pending","until":5,"fp":"f"}"#);
        let back: KeyState = serde_json::from_str(&s).unwrap();
        assert_eq!(back, pending);
        assert!(serde_json::from_str::<KeyState>(r#"{"outcome":"unknown_bank"}"#).is_err());
    }

    #[test]
    fn only_the_same_request_is_a_retry() {
        let billed = || Some(KeyState::RouteBilled { fp: "a".into() });
        assert!(matches!(check_key(billed(), "a", 0), KeyCheck::Replay));
        assert!(matches!(check_key(billed(), "b", 0), KeyCheck::New));
        let pending = || {
            Some(KeyState::RoutePending {
                until: 10,
                fp: "a".into(),
            })
        };
        assert!(matches!(check_key(pending(), "a", 5), KeyCheck::InProgress));
        assert!(matches!(check_key(pending(), "a", 10), KeyCheck::Replay));
        assert!(matches!(check_key(pending(), "b", 5), KeyCheck::New));
        assert!(matches!(check_key(None, "a", 5), KeyCheck::New));
    }

    #[test]
    fn keys_are_scoped_by_route() {
        let k = IdempotencyKey::parse("order-1").unwrap();
        assert_ne!(scoped("route:/a", &k), scoped("route:/b", &k));
        assert_ne!(scoped("route:/a", &k), "order-1");
    }
}
