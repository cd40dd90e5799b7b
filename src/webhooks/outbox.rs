//! The outbox: events written inside their cause's transaction, and the
//! queue the delivery thread works from. Writing costs nothing on a
//! request that crosses nothing: the checks are on values the charge has
//! in hand (`thresholds_crossed`, the low-credit crossing), and the
//! database is asked only when one is crossed. Fan-out happens at write
//! time, one row per subscribed endpoint (`INSERT … SELECT`), so an event
//! nobody subscribes to writes no row.

use chrono::Utc;
use mysql::prelude::Queryable;
use serde_json::{json, Value};

use super::events::{envelope, thresholds_crossed, EventType};
use crate::billing::account::{Account, LowCredit};
use crate::billing::decide::{Insufficient, Verdict};
use crate::db::{DbError, Pool};

/// Writes one event for each endpoint subscribed to `kind`, in the
/// caller's transaction.
pub fn emit(
    tx: &mut impl Queryable,
    user_id: u64,
    kind: EventType,
    data: Value,
) -> Result<(), DbError> {
    let body = envelope(kind, Utc::now(), data);
    tx.exec_drop(
        "INSERT INTO webhook_outbox (webhook_id, user_id, event_type, body) \
         SELECT id, ?, ?, ? FROM webhooks WHERE FIND_IN_SET(?, events)",
        (user_id, kind.as_str(), &body, kind.as_str()),
    )?;
    Ok(())
}

/// The events a decided request makes due, on its locked row: a debit's
/// low-credit and usage-threshold crossings, a refusal's exhaustion.
pub fn after_decision(
    tx: &mut mysql::Transaction<'_>,
    account: &Account,
    verdict: &Verdict,
) -> Result<(), DbError> {
    match verdict {
        Verdict::Debited {
            cost, low_credit, ..
        } => after_debit(tx, account, account.credit - cost, low_credit.as_ref()),
        Verdict::Insufficient(short) => after_refusal(tx, account, short),
        Verdict::Unpriced => Ok(()),
    }
}

/// A charge took the user's credit from `account.credit` to `credit_after`
/// (a debit, a capture): the low-credit notice it made due, and the usage
/// thresholds it crossed, each once per refill period (the key of
/// `usage_thresholds` decides, so several instances agree).
pub fn after_debit(
    tx: &mut mysql::Transaction<'_>,
    account: &Account,
    credit_after: i64,
    low: Option<&LowCredit>,
) -> Result<(), DbError> {
    if let Some(low) = low {
        let data = json!({
            "user": account.username,
            "credit_available": low.credit,
            "threshold": low.threshold,
        });
        emit(tx, account.id, EventType::CreditLow, data)?;
    }
    let Some(monthly) = account.monthly_credit else {
        return Ok(());
    };
    for percent in thresholds_crossed(monthly, account.credit, credit_after) {
        let period = account.credit_period().unwrap_or("");
        tx.exec_drop(
            "INSERT IGNORE INTO usage_thresholds (user_id, period, percent) VALUES (?, ?, ?)",
            (account.id, period, percent),
        )?;
        if tx.affected_rows() == 1 {
            let data = json!({
                "user": account.username,
                "percent": percent,
                "period": (!period.is_empty()).then_some(period),
                "monthly_credit": monthly,
                "used": monthly - credit_after,
                "credit_available": credit_after - account.held,
            });
            emit(tx, account.id, EventType::UsageThreshold, data)?;
        }
    }
    Ok(())
}

/// A charge or a hold refused for credit: `credit.exhausted`, once until
/// the credit comes back (`account::REARM_LOW_CREDIT` clears the flag).
/// The flag comes with the locked row, so a refused user's further
/// refusals cost nothing; the guarded UPDATE decides all the same (a
/// coalesced batch's row is read once for several requests).
pub fn after_refusal(
    tx: &mut mysql::Transaction<'_>,
    account: &Account,
    short: &Insufficient,
) -> Result<(), DbError> {
    if account.credit_exhausted() {
        return Ok(());
    }
    tx.exec_drop(
        "UPDATE users SET credit_exhausted = TRUE WHERE id = ? AND NOT credit_exhausted",
        (account.id,),
    )?;
    if tx.affected_rows() == 1 {
        let data = json!({
            "user": account.username,
            "cost": short.cost,
            "credit_available": short.credit_remaining,
        });
        emit(tx, account.id, EventType::CreditExhausted, data)?;
    }
    Ok(())
}

/// How long settled deliveries stay in the outbox for the operator to
/// read (the console's and `/metrics`' counts are of what is kept):
/// delivered a week, failed a month (a failure is what someone looks into).
pub const KEEP_DELIVERED_DAYS: u32 = 7;
pub const KEEP_FAILED_DAYS: u32 = 30;

/// Rows deleted per statement: short enough that the delete never holds
/// many locks, and the job runs again until none is left.
const PRUNE_BATCH: u32 = 5_000;

/// Deletes settled deliveries older than their keeping time (pending rows
/// are never touched); the `prune-webhook-outbox` job. Without it the
/// outbox would grow by every event forever.
pub fn prune(pool: &Pool) -> Result<u64, DbError> {
    let mut conn = pool.get()?;
    let mut deleted = 0;
    for (state, days) in [
        ("delivered", KEEP_DELIVERED_DAYS),
        ("failed", KEEP_FAILED_DAYS),
    ] {
        loop {
            conn.exec_drop(
                "DELETE FROM webhook_outbox WHERE state = ? \
                 AND settled_at < NOW(3) - INTERVAL ? DAY LIMIT ?",
                (state, days, PRUNE_BATCH),
            )?;
            let n = conn.affected_rows();
            deleted += n;
            if n < u64::from(PRUNE_BATCH) {
                break;
            }
        }
    }
    Ok(deleted)
}

/// Deliveries by state, over every instance: what the console and
/// `/metrics` show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
}

/// `counts` on a pooled connection.
pub fn counts_of(pool: &Pool) -> Result<Counts, DbError> {
    counts(&mut **pool.get()?)
}

pub fn counts(conn: &mut impl Queryable) -> Result<Counts, DbError> {
    let rows: Vec<(String, u64)> =
        conn.query("SELECT state, COUNT(*) FROM webhook_outbox GROUP BY state")?;
    let mut c = Counts::default();
    for (state, n) in rows {
        match state.as_str() {
            "pending" => c.pending = n,
            "delivered" => c.delivered = n,
            _ => c.failed = n,
        }
    }
    Ok(c)
}

/// One claimed delivery: what to send, and where.
#[derive(Debug, Clone)]
pub struct Due {
    pub id: u64,
    pub url: String,
    pub secret: String,
    pub body: String,
    pub attempts: u32,
    /// Seconds since the event was written, by the database's clock.
    pub age_secs: i64,
}

impl Due {
    /// The `webhook-id`: the row's id, the same on every retry.
    pub fn message_id(&self) -> String {
        format!("msg_{}", self.id)
    }
}

/// The heads of the queues that are due and not leased: per endpoint and
/// user only the oldest pending row, so a user's events arrive in order.
/// The heads come from `webhook_outbox_queue` by a loose index scan (one
/// step per queue, however long a queue grows while its receiver is down);
/// a plain read: the claim that follows decides (`claim`).
const HEADS: &str = "SELECT o.id, w.url, w.secret, o.body, o.attempts, \
     TIMESTAMPDIFF(SECOND, o.created_at, NOW(3)) \
     FROM (SELECT MIN(id) AS id FROM webhook_outbox WHERE state = 'pending' \
           GROUP BY webhook_id, user_id) h \
     JOIN webhook_outbox o ON o.id = h.id \
     JOIN webhooks w ON w.id = o.webhook_id \
     WHERE o.next_attempt_at <= NOW(3) \
     AND (o.locked_until IS NULL OR o.locked_until <= NOW(3)) \
     ORDER BY o.next_attempt_at, o.id LIMIT ?";

/// Up to `limit` deliveries that look due; each must still be `claim`ed.
pub fn due(conn: &mut impl Queryable, limit: u32) -> Result<Vec<Due>, DbError> {
    let rows: Vec<(u64, String, String, String, u32, i64)> = conn.exec(HEADS, (limit,))?;
    Ok(rows
        .into_iter()
        .map(|(id, url, secret, body, attempts, age_secs)| Due {
            id,
            url,
            secret,
            body,
            attempts,
            age_secs,
        })
        .collect())
}

/// Leases delivery `id` to `owner` for `lease_secs`, if it is still
/// pending, due and not leased: one guarded UPDATE, so of several
/// instances exactly one wins, and no lock is held while sending. A
/// killed owner's lease runs out and the row is claimed again (at least
/// once). A row is only a queue's head once the rows before it are
/// settled, and those were committed before it (the user's row lock
/// orders them), so a stale read never sends out of order.
pub fn claim(
    conn: &mut mysql::Conn,
    id: u64,
    owner: &str,
    lease_secs: u32,
) -> Result<bool, DbError> {
    conn.exec_drop(
        "UPDATE webhook_outbox SET locked_until = NOW(3) + INTERVAL ? SECOND, locked_by = ? \
         WHERE id = ? AND state = 'pending' AND next_attempt_at <= NOW(3) \
         AND (locked_until IS NULL OR locked_until <= NOW(3))",
        (lease_secs, owner, id),
    )?;
    Ok(conn.affected_rows() == 1)
}

/// Delivered: the receiver answered 2xx. Only the lease's owner settles.
pub fn delivered(conn: &mut impl Queryable, id: u64, owner: &str) -> Result<(), DbError> {
    conn.exec_drop(
        "UPDATE webhook_outbox SET state = 'delivered', attempts = attempts + 1, \
         locked_until = NULL, locked_by = NULL, last_error = NULL, settled_at = NOW(3) \
         WHERE id = ? AND state = 'pending' AND locked_by = ?",
        (id, owner),
    )?;
    Ok(())
}

/// Not delivered this time: tried again after `retry_in_ms`, or, with
/// `None`, failed for good.
pub fn not_delivered(
    conn: &mut impl Queryable,
    id: u64,
    owner: &str,
    error: &str,
    retry_in_ms: Option<u64>,
) -> Result<(), DbError> {
    let error: String = error.chars().take(255).collect();
    match retry_in_ms {
        Some(ms) => conn.exec_drop(
            "UPDATE webhook_outbox SET attempts = attempts + 1, last_error = ?, \
             next_attempt_at = NOW(3) + INTERVAL ? MICROSECOND, \
             locked_until = NULL, locked_by = NULL \
             WHERE id = ? AND state = 'pending' AND locked_by = ?",
            (&error, ms * 1000, id, owner),
        )?,
        None => conn.exec_drop(
            "UPDATE webhook_outbox SET state = 'failed', attempts = attempts + 1, \
             last_error = ?, locked_until = NULL, locked_by = NULL, settled_at = NOW(3) \
             WHERE id = ? AND state = 'pending' AND locked_by = ?",
            (&error, id, owner),
        )?,
    }
    Ok(())
}
