//! The credit ledger: one `credit_events` row per credit change that is not a
//! request charge, written inside the caller's transaction so that the change
//! and its record commit together, and read back for operators.

use mysql::prelude::Queryable;
use serde::Serialize;

use crate::db::{DbError, Pool};
use crate::model::Username;

/// Why credit changed; stored as the row's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Create,
    TopUp,
    Set,
    MonthlyRefill,
    Import,
    Refund,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Create => "create",
            Reason::TopUp => "top-up",
            Reason::Set => "set",
            Reason::MonthlyRefill => "monthly-refill",
            Reason::Import => "import",
            Reason::Refund => "refund",
        }
    }
}

pub struct Event<'a> {
    pub user_id: u64,
    pub delta: i64,
    pub balance_after: i64,
    pub reason: Reason,
    pub period: Option<String>,
    pub actor: &'a str,
}

pub fn record(tx: &mut impl Queryable, e: &Event<'_>) -> Result<(), DbError> {
    Ok(tx.exec_drop(
        "INSERT INTO credit_events (user_id, delta, balance_after, reason, period, actor) VALUES (?, ?, ?, ?, ?, ?)",
        (e.user_id, e.delta, e.balance_after, e.reason.as_str(), &e.period, e.actor),
    )?)
}

/// A ledger row as operators read it (the console's user page, `creditgate
/// ledger`, `GET /admin/v1/users/<name>/ledger`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerRow {
    /// The row's id: what `before` takes to read the next page.
    pub id: u64,
    /// RFC 3339 UTC, to the second.
    pub at: String,
    pub delta: i64,
    pub balance_after: i64,
    pub reason: String,
    pub period: Option<String>,
    pub actor: String,
}

/// The user's latest `limit` ledger rows, newest first; none for an unknown
/// user. The `(user_id, created_at)` index serves the order and the limit.
pub fn recent(pool: &Pool, username: &Username, limit: u32) -> Result<Vec<LedgerRow>, DbError> {
    let Some(page) = page(pool, username, limit, None)? else {
        return Ok(Vec::new());
    };
    Ok(page.rows)
}

/// A row as MySQL hands it over: id, at, delta, balance, reason, period, actor.
type RawRow = (u64, String, i64, i64, String, Option<String>, String);

/// The most rows one page may ask for.
pub const MAX_PAGE: u32 = 1000;
/// Rows in a page when the caller names no limit.
pub const DEFAULT_PAGE: u32 = 100;

/// One page of a user's ledger, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerPage {
    pub username: String,
    pub rows: Vec<LedgerRow>,
    /// Pass as `before` to read the older rows; `None` on the last page.
    pub next_before: Option<u64>,
}

/// Up to `limit` (1..=MAX_PAGE) of the user's ledger rows older than the row
/// `before` (all rows when `None`), newest first; `None` for an unknown
/// user. Keyset paging over the `(user_id, created_at)` index (InnoDB keeps
/// the id in it), so a deep page costs what the first does and a row
/// written meanwhile neither repeats nor skips one.
pub fn page(
    pool: &Pool,
    username: &Username,
    limit: u32,
    before: Option<u64>,
) -> Result<Option<LedgerPage>, DbError> {
    let limit = limit.clamp(1, MAX_PAGE);
    let mut conn = pool.get()?;
    let Some(user_id) = conn.exec_first::<u64, _, _>(
        "SELECT id FROM users WHERE username = ?",
        (username.as_str(),),
    )?
    else {
        return Ok(None);
    };
    // One more than asked: whether there is a next page.
    let rows: Vec<RawRow> = conn.exec(
        "SELECT e.id, DATE_FORMAT(e.created_at, '%Y-%m-%dT%H:%i:%sZ'), e.delta, \
                e.balance_after, e.reason, e.period, e.actor \
         FROM credit_events e \
         WHERE e.user_id = ? AND (? IS NULL OR (e.created_at, e.id) < \
               (SELECT c.created_at, c.id FROM credit_events c WHERE c.id = ? AND c.user_id = ?)) \
         ORDER BY e.created_at DESC, e.id DESC LIMIT ?",
        (user_id, before, before, user_id, limit + 1),
    )?;
    let mut rows: Vec<LedgerRow> = rows
        .into_iter()
        .map(
            |(id, at, delta, balance_after, reason, period, actor)| LedgerRow {
                id,
                at,
                delta,
                balance_after,
                reason,
                period,
                actor,
            },
        )
        .collect();
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    Ok(Some(LedgerPage {
        username: username.as_str().to_string(),
        next_before: if more {
            rows.last().map(|r| r.id)
        } else {
            None
        },
        rows,
    }))
}
