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

/// A ledger row as operators read it (the console's user page).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerRow {
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
    let rows: Vec<(String, i64, i64, String, Option<String>, String)> = pool.get()?.exec(
        "SELECT DATE_FORMAT(e.created_at, '%Y-%m-%dT%H:%i:%sZ'), e.delta, e.balance_after, \
                e.reason, e.period, e.actor \
         FROM credit_events e JOIN users u ON u.id = e.user_id \
         WHERE u.username = ? ORDER BY e.created_at DESC, e.id DESC LIMIT ?",
        (username.as_str(), limit),
    )?;
    Ok(rows
        .into_iter()
        .map(
            |(at, delta, balance_after, reason, period, actor)| LedgerRow {
                at,
                delta,
                balance_after,
                reason,
                period,
                actor,
            },
        )
        .collect())
}
