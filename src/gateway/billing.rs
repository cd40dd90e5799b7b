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
    key: Option<IdempotencyKey>,
}

/// The `idempotency_keys.outcome` of a keyed route request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum KeyState {
    RoutePending { until: i64 },
    RouteBilled,
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
    let mut tx = conn.start_transaction(TxOpts::default())?;
    let account = match account::lock(&mut tx, &name, &req.credentials.token, true)? {
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
        key: req.idempotency_key.cloned(),
    };
    if let Some(key) = req.idempotency_key {
        match key_state(&mut tx, account.id, key)? {
            Some(KeyState::RoutePending { until }) if req.now.timestamp() < until => {
                return Ok(Charged::InProgress);
            }
            Some(_) => {
                ticket.replayed = true;
                return Ok(Charged::Forward(ticket));
            }
            None => {}
        }
    }
    ticket.rate = match account.rate_check() {
        Ok(rate) => rate,
        Err(refused) => return Ok(Charged::RateLimited(refused)),
    };
    account::touch_key(&mut tx, &account)?;
    let charged = match account::debit(
        &mut tx,
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
            if let Some(key) = req.idempotency_key {
                let until = req.now.timestamp() + req.in_flight_for.as_secs().max(1) as i64;
                start_key(&mut tx, account.id, key, until)?;
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
    let Some(key) = ticket.key.as_ref().filter(|_| !ticket.replayed) else {
        return Ok(());
    };
    let json = serde_json::to_string(&KeyState::RouteBilled).expect("serialises");
    // Its 24 h count from the first request, so created_at stays.
    pool.get()?.exec_drop(
        "UPDATE idempotency_keys SET outcome = ? WHERE user_id = ? AND idem_key = ?",
        (json, ticket.user_id, key.as_str()),
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
    if let Some(key) = &ticket.key {
        tx.exec_drop(
            "DELETE FROM idempotency_keys WHERE user_id = ? AND idem_key = ?",
            (ticket.user_id, key.as_str()),
        )?;
    }
    tx.commit().map_err(db::commit_failed)?;
    Ok(credit)
}

fn key_state(
    tx: &mut impl Queryable,
    user_id: u64,
    key: &IdempotencyKey,
) -> Result<Option<KeyState>, DbError> {
    let stored: Option<String> = tx.exec_first(
        "SELECT outcome FROM idempotency_keys \
         WHERE user_id = ? AND idem_key = ? AND created_at > NOW(3) - INTERVAL 1 DAY",
        (user_id, key.as_str()),
    )?;
    // A key last used on the bank route holds another shape: a new request.
    Ok(stored.and_then(|json| serde_json::from_str(&json).ok()))
}

/// A new keyed request: REPLACE takes over an expired row, or one the bank
/// route left, and starts its 24 h anew.
fn start_key(
    tx: &mut impl Queryable,
    user_id: u64,
    key: &IdempotencyKey,
    until: i64,
) -> Result<(), DbError> {
    let json = serde_json::to_string(&KeyState::RoutePending { until }).expect("serialises");
    tx.exec_drop(
        "REPLACE INTO idempotency_keys (user_id, idem_key, outcome) VALUES (?, ?, ?)",
        (user_id, key.as_str(), json),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_states_round_trip_and_refuse_bank_answers() {
        let s = serde_json::to_string(&KeyState::RoutePending { until: 5 }).unwrap();
        assert_eq!(s, r#"{"outcome":"route_pending","until":5}"#);
        let back: KeyState = serde_json::from_str(&s).unwrap();
        assert_eq!(back, KeyState::RoutePending { until: 5 });
        assert!(serde_json::from_str::<KeyState>(r#"{"outcome":"unknown_bank"}"#).is_err());
    }
}
