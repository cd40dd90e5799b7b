//! Money on a gateway route: the charge, committed *before* the request is
//! forwarded, and the refund, in its own transaction, when the upstream's
//! answer is not billable. Both lock the user's row like the bank route's
//! charge (`billing::account::lock`), and the charge is decided by the one
//! money decision (`billing::decide`) and written by `account::apply`, so
//! one user's charges and refunds are serialised and exact across instances.
//!
//! A refund gives the cost back through the call's usage
//! (`billing::account::give_back`), so that
//! `credit = Σ credit_events.delta − Σ usage_daily.credits` holds.
//!
//! `Idempotency-Key` on a route (`idempotency`): the key's row says
//! `route_pending` (with a deadline) while the first request is in flight,
//! `route_billed` once its answer was billable (while its body still
//! streams, with a deadline too), and holds the stored answer once the body
//! is whole; a refund deletes it, so a retry of a refunded request is a new
//! request. A retry
//! of a billed one is answered from the stored answer and never forwarded
//! again; a key reused with another request is refused (422), as the IETF
//! Idempotency-Key draft says.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use mysql::prelude::Queryable;
use mysql::TxOpts;

use crate::auth::token::Credentials;
use crate::billing::account::{self, AuthFailure, LowCredit, RateState};
use crate::billing::holds::{self, Settle, Settled};
use crate::billing::{decide, Outcome, Verdict};
use crate::db::{self, DbError, Pool};
use crate::idempotency::store;
use crate::idempotency::{self, key, Claim, KeyAnswer, StoredAnswer};
use crate::model::IdempotencyKey;

use super::GatewayError;

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
    /// A route priced by its upstream: hold this much (for `in_flight_for`
    /// and a margin) instead of charging `cost`.
    pub max_cost: Option<i64>,
    /// A refund may follow (the gateway; not forward-auth, whose charge is
    /// final): the charge is recorded as unsettled until the answer says.
    pub refundable: bool,
}

/// What the charge decided.
#[derive(Debug)]
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
    /// Not forwarded: unauthorized, a key in flight, reused or without a
    /// stored answer, rate limited, or insufficient credit (the last one
    /// committed: the request still counts against the limit).
    Refused(GatewayError),
}

/// A forwarded request's claim on the money: what to settle or refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub user_id: u64,
    /// The key that authenticated the request: a refund comes out of its
    /// usage row.
    key_id: u64,
    /// What was taken.
    pub charged: i64,
    pub credit_remaining: i64,
    /// The user's rate limit, for the answer's headers.
    pub rate: Option<RateState>,
    /// The charge crossed the user's low-credit threshold.
    pub low_credit: Option<LowCredit>,
    day: NaiveDate,
    endpoint: String,
    /// The request's hold on its key's row (with an Idempotency-Key).
    key: Option<Claim>,
    /// A route priced by its upstream: the credit hold placed for the
    /// request (`charged` is 0 until it is captured).
    pub hold: Option<u64>,
    /// A fixed-price charge's `route_charges` row: deleted when the answer
    /// was billable (`Confirmations`) or refunded; refunded by the
    /// refund-unsettled job if it is still there at its expiry.
    pub unsettled: Option<u64>,
}

impl Ticket {
    /// The request carried an Idempotency-Key (its answer is recorded).
    pub fn keyed(&self) -> bool {
        self.key.is_some()
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
        Err(why) => return Ok(Charged::Refused(GatewayError::Unauthorized(why))),
    };
    let mut conn = pool.get()?;
    let sql = conn.prepared(account::PER_REQUEST)?;
    let mut tx = conn.start_transaction(TxOpts::default())?;
    let account = match account::lock(&mut tx, &sql, &name, &req.credentials.token, true)? {
        Ok(a) => a,
        Err(why) => return Ok(Charged::Refused(GatewayError::Unauthorized(why))),
    };
    let scoped_key = req.idempotency_key.map(|k| key::scoped(req.endpoint, k));
    let known = match &scoped_key {
        Some(key) => store::route_answer(
            &mut tx,
            account.id,
            key,
            req.fingerprint,
            req.now.timestamp(),
        )?,
        None => None,
    };
    let price = req.max_cost.unwrap_or(req.cost);
    let outcome = decide(&account, known, Some(price), req.now);
    match (&outcome, req.max_cost) {
        // Granted on a route priced by its upstream: a hold, not a debit.
        (
            Outcome::Counted {
                verdict: Verdict::Debited { .. },
                rate,
                ..
            },
            Some(_),
        ) => account::count(&mut tx, &account, rate.as_ref())?,
        _ => account::apply(&mut tx, &sql, &account, &outcome, req.endpoint, req.now)?,
    }
    let charged = match outcome {
        // Answered from the database: nothing forwarded, nothing charged,
        // not counted against the rate limit, nothing to commit.
        Outcome::Replayed { answer, rate } => {
            return Ok(from_key(answer, account.available(), rate))
        }
        Outcome::RateLimited(refused) => {
            return Ok(Charged::Refused(GatewayError::RateLimited(refused)))
        }
        // Committed: the request still counts against the limit.
        Outcome::Counted {
            verdict: Verdict::Insufficient(short),
            rate,
            ..
        } => Charged::Refused(GatewayError::Insufficient(short, rate)),
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
            let until = req.now.timestamp() + req.in_flight_for.as_secs().max(1) as i64;
            let key = scoped_key.map(|key| Claim::pending(key, req.fingerprint, until));
            if let Some(claim) = &key {
                store::claim(&mut tx, account.id, claim)?;
            }
            let hold = match req.max_cost {
                // Expires a minute after the request's own deadline: if
                // this instance dies before settling it, the expiry
                // releases it (never charged for an answer not billed).
                Some(max_cost) => Some(holds::place_for_route(
                    &mut tx,
                    &account,
                    max_cost,
                    req.in_flight_for.as_secs() as u32 + 60,
                    req.endpoint,
                )?),
                None => None,
            };
            let (charged, low_credit) = match hold {
                Some(_) => (0, None),
                None => (cost, low_credit),
            };
            let unsettled = match (hold, req.refundable && cost > 0) {
                (None, true) => Some(record_unsettled(
                    &mut tx,
                    account.id,
                    account.key().0,
                    cost,
                    req,
                    key.as_ref(),
                )?),
                _ => None,
            };
            Charged::Forward(Ticket {
                user_id: account.id,
                key_id: account.key().0,
                charged,
                credit_remaining,
                rate,
                low_credit,
                day: req.now.date_naive(),
                endpoint: req.endpoint.to_string(),
                key,
                hold,
                unsettled,
            })
        }
    };
    tx.commit().map_err(db::commit_failed)?;
    db::trust(&mut conn);
    Ok(charged)
}

/// What a key that was used before answers, as the route's charge says
/// it: `credit` and `rate` as they stand, for a replay's headers.
fn from_key(answer: KeyAnswer, credit: i64, rate: Option<RateState>) -> Charged {
    match answer {
        KeyAnswer::InProgress => Charged::Refused(GatewayError::InProgress),
        KeyAnswer::Reused => Charged::Refused(GatewayError::KeyReused),
        KeyAnswer::NotStored => Charged::Refused(GatewayError::AnswerNotStored),
        KeyAnswer::Stored(answer) => Charged::Replay {
            answer,
            credit_remaining: credit,
            rate,
        },
    }
}

/// The answer was billable: a retry with the same key now waits for its
/// body (until `streaming_for` has passed) and is then replayed. The
/// ticket keeps the new state, which `record_answer` expects.
pub fn settle(pool: &Pool, ticket: &mut Ticket, streaming_for: Duration) -> Result<(), DbError> {
    let Some(claim) = ticket.key.as_mut() else {
        return Ok(());
    };
    let until = chrono::Utc::now().timestamp() + streaming_for.as_secs().max(1) as i64;
    idempotency::store::settle(pool, ticket.user_id, claim, until)
}

/// The billed answer's body has ended: store it (`Some`) for replays, or
/// say that none is stored (too large, or cut short), so a retry is
/// answered 409 at once instead of waiting out the streaming deadline.
pub fn record_answer(
    pool: &Pool,
    ticket: &Ticket,
    answer: Option<&StoredAnswer>,
) -> Result<(), DbError> {
    match &ticket.key {
        Some(claim) => idempotency::store::record(pool, ticket.user_id, claim, answer),
        None => Ok(()),
    }
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
        ticket.key_id,
        ticket.charged,
        ticket.day,
        &ticket.endpoint,
        actor,
    )?;
    // Under the user's row lock (taken by `give_back`), as the
    // refund-unsettled job takes it: whichever comes second finds no row
    // and gives nothing back.
    if let Some(id) = ticket.unsettled {
        tx.exec_drop("DELETE FROM route_charges WHERE id = ?", (id,))?;
        if tx.affected_rows() != 1 {
            return Ok(ticket.credit_remaining + ticket.charged);
        }
    }
    if let Some(claim) = &ticket.key {
        idempotency::store::release(&mut tx, ticket.user_id, claim)?;
    }
    tx.commit().map_err(db::commit_failed)?;
    Ok(credit)
}

/// Captures a priced request's hold at `price` (the caller has capped it
/// at the route's `max_cost`): charges it and frees the rest, in one
/// transaction. The ticket then says what was charged and what remains.
/// A hold settled before (expired: its instance was too slow) charges
/// nothing more.
pub fn capture(pool: &Pool, ticket: &mut Ticket, price: i64) -> Result<(), DbError> {
    let Some(id) = ticket.hold else {
        return Ok(());
    };
    let settled = pool.retrying(|| settle_hold(pool, id, Settle::Capture(price), None))?;
    if let Settled::Done {
        hold,
        credit_remaining,
        low_credit,
    } = settled
    {
        ticket.charged = hold.captured.unwrap_or(0);
        ticket.credit_remaining = credit_remaining;
        ticket.low_credit = low_credit;
    }
    Ok(())
}

/// Releases a priced request's hold (the answer was not billable, or none
/// came), with its key, in one transaction. Returns the credit after it.
pub fn release(pool: &Pool, ticket: &Ticket) -> Result<i64, DbError> {
    let Some(id) = ticket.hold else {
        return Ok(ticket.credit_remaining);
    };
    let settled = pool.retrying(|| {
        settle_hold(
            pool,
            id,
            Settle::Release,
            ticket.key.as_ref().map(|k| (ticket.user_id, k)),
        )
    })?;
    Ok(match settled {
        Settled::Done {
            credit_remaining, ..
        }
        | Settled::Again {
            credit_remaining, ..
        } => credit_remaining,
        _ => ticket.credit_remaining,
    })
}

/// One settlement of a route's hold; `key`: a claim to give up with it.
fn settle_hold(
    pool: &Pool,
    id: u64,
    how: Settle,
    key: Option<(u64, &Claim)>,
) -> Result<Settled, DbError> {
    let mut conn = pool.get()?;
    let sql = conn.prepared(account::PER_REQUEST)?;
    let mut tx = conn.start_transaction(TxOpts::default())?;
    let settled = holds::settle_for_route(&mut tx, &sql, id, how, Utc::now())?;
    if let Some((user_id, claim)) = key {
        idempotency::store::release(&mut tx, user_id, claim)?;
    }
    tx.commit().map_err(db::commit_failed)?;
    db::trust(&mut conn);
    Ok(settled)
}

/// Whether a settlement that failed now can still be made: the hold is
/// still open (not expired, not settled by an earlier try that committed
/// after all).
pub fn hold_open(pool: &Pool, ticket: &Ticket) -> Result<bool, DbError> {
    let Some(id) = ticket.hold else {
        return Ok(false);
    };
    let open: Option<bool> = pool.get()?.exec_first(
        "SELECT state = 'open' AND expires_at > NOW(3) FROM holds WHERE id = ?",
        (id,),
    )?;
    Ok(open.unwrap_or(false))
}

/// A fixed-price charge's record, in the charge's transaction: until its
/// answer settles it, the database knows a refund may be owed. It expires a
/// minute after the request's own deadline.
fn record_unsettled(
    tx: &mut mysql::Transaction<'_>,
    user_id: u64,
    key_id: u64,
    amount: i64,
    req: &RouteCharge<'_>,
    key: Option<&Claim>,
) -> Result<u64, DbError> {
    let ttl = req.in_flight_for.as_secs() + 60;
    tx.exec_drop(
        "INSERT INTO route_charges (user_id, key_id, amount, day, endpoint, idem_key, expires_at) \
         VALUES (?, ?, ?, ?, ?, ?, NOW(3) + INTERVAL ? SECOND)",
        (
            user_id,
            key_id,
            amount,
            req.now.date_naive().format("%Y-%m-%d").to_string(),
            req.endpoint,
            key.map(|k| k.key.as_str()),
            ttl,
        ),
    )?;
    Ok(tx.last_insert_id().unwrap_or(0))
}

/// The answers found billable: their `route_charges` rows, deleted in
/// batches (one statement per batch, not one per request). A batch that
/// cannot be written stays for the next; one lost in a crash leaves rows
/// that the refund-unsettled job refunds: an under-charge, never more.
#[derive(Default)]
pub struct Confirmations {
    due: std::sync::Mutex<Vec<u64>>,
}

impl Confirmations {
    pub fn billed(&self, id: u64) {
        self.due.lock().unwrap_or_else(|e| e.into_inner()).push(id);
    }

    /// Writes what is due; on failure keeps it for the next time.
    pub fn flush(&self, pool: &Pool) -> Result<usize, DbError> {
        let batch: Vec<u64> =
            std::mem::take(&mut *self.due.lock().unwrap_or_else(|e| e.into_inner()));
        if batch.is_empty() {
            return Ok(0);
        }
        let ids: Vec<String> = batch.iter().map(u64::to_string).collect();
        let done = pool.get().map_err(DbError::from).and_then(|mut conn| {
            conn.query_drop(format!(
                "DELETE FROM route_charges WHERE id IN ({})",
                ids.join(",")
            ))
            .map_err(DbError::from)
        });
        match done {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                self.due
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(batch);
                Err(e)
            }
        }
    }
}

/// Refunds every `route_charges` row past its expiry: one transaction per
/// row, the user's row locked first and the record deleted under it, so a
/// late refund by its request and several instances running this at once
/// give back once. A pending Idempotency-Key claim of the request goes with
/// it (a retry is then a new request). Returns how many were refunded.
pub fn refund_unsettled(pool: &Pool) -> Result<u64, DbError> {
    let due: Vec<u64> = pool.get()?.query(
        "SELECT id FROM route_charges WHERE expires_at <= NOW(3) ORDER BY expires_at LIMIT 1000",
    )?;
    let mut refunded = 0;
    for id in due {
        if pool.retrying(|| refund_one_unsettled(pool, id))? {
            refunded += 1;
        }
    }
    Ok(refunded)
}

fn refund_one_unsettled(pool: &Pool, id: u64) -> Result<bool, DbError> {
    let mut conn = pool.get()?;
    let mut tx = conn.start_transaction(TxOpts::default())?;
    let row: Option<(u64, u64, i64, String, String, Option<String>)> = tx.exec_first(
        "SELECT user_id, key_id, amount, DATE_FORMAT(day, '%Y-%m-%d'), endpoint, idem_key \
         FROM route_charges WHERE id = ?",
        (id,),
    )?;
    let Some((user_id, key_id, amount, day, endpoint, idem_key)) = row else {
        return Ok(false);
    };
    let day = NaiveDate::parse_from_str(&day, "%Y-%m-%d").unwrap_or_default();
    account::give_back(
        &mut tx,
        user_id,
        key_id,
        amount,
        day,
        &endpoint,
        "job:refund-unsettled",
    )?;
    tx.exec_drop("DELETE FROM route_charges WHERE id = ?", (id,))?;
    if tx.affected_rows() != 1 {
        return Ok(false); // settled by its request meanwhile: roll back
    }
    if let Some(key) = idem_key {
        tx.exec_drop(
            "DELETE FROM idempotency_keys WHERE user_id = ? AND idem_key = ? \
             AND outcome LIKE '{\"outcome\":\"route_pending\"%'",
            (user_id, key),
        )?;
    }
    tx.commit().map_err(db::commit_failed)?;
    Ok(true)
}
