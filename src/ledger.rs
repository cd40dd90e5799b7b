//! The credit ledger: one `credit_events` row per credit change that is not a
//! request charge, written inside the caller's transaction so that the change
//! and its record commit together.

use mysql::prelude::Queryable;

use crate::db::DbError;

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
