//! Daily usage per user, API key and endpoint: written inside the request
//! transaction (so it always agrees with the credit), read back as a report,
//! as daily totals for the console's charts, and as the export (`export`).
//! The key is the one that authenticated the call; 0 stands for no key (a
//! user named by a service, and rows from before keys were counted).

use std::collections::HashMap;
use std::sync::OnceLock;

use chrono::NaiveDate;
use mysql::prelude::Queryable;
use serde::Serialize;

use crate::db::{DbError, Pool, Statements};
use crate::model::{Day, Username};

/// Counts one paid call. Must run inside the charge's transaction.
/// A paid call counted (`record`).
pub const RECORD: &str =
    "INSERT INTO usage_daily (user_id, key_id, day, endpoint, calls, credits) VALUES (?, ?, ?, ?, 1, ?) \
     ON DUPLICATE KEY UPDATE calls = calls + 1, credits = credits + VALUES(credits)";

pub fn record(
    tx: &mut impl Queryable,
    sql: &Statements,
    user_id: u64,
    key_id: u64,
    day: NaiveDate,
    endpoint: &str,
    credits: i64,
) -> Result<(), DbError> {
    Ok(tx.exec_drop(
        sql.get(RECORD),
        (
            user_id,
            key_id,
            day.format("%Y-%m-%d").to_string(),
            endpoint,
            credits,
        ),
    )?)
}

/// Counts `calls` paid calls at once (a coalesced batch). Must run inside
/// the charge's transaction.
/// `calls` paid calls counted at once (`record_many`).
pub const RECORD_MANY: &str =
    "INSERT INTO usage_daily (user_id, key_id, day, endpoint, calls, credits) VALUES (?, ?, ?, ?, ?, ?) \
     ON DUPLICATE KEY UPDATE calls = calls + VALUES(calls), credits = credits + VALUES(credits)";

// One argument per column of the row: a struct would only rename them.
#[allow(clippy::too_many_arguments)]
pub fn record_many(
    tx: &mut impl Queryable,
    sql: &Statements,
    user_id: u64,
    key_id: u64,
    day: NaiveDate,
    endpoint: &str,
    calls: u64,
    credits: i64,
) -> Result<(), DbError> {
    Ok(tx.exec_drop(
        sql.get(RECORD_MANY),
        (
            user_id,
            key_id,
            day.format("%Y-%m-%d").to_string(),
            endpoint,
            calls,
            credits,
        ),
    )?)
}

/// One usage row's counts, as a coalesced batch adds them.
pub struct Row<'a> {
    pub user_id: u64,
    pub key_id: u64,
    pub day: NaiveDate,
    pub endpoint: &'a str,
    pub calls: u64,
    pub credits: i64,
}

/// Counts a coalesced batch's calls, every user's, in one statement (one
/// row alone takes `record_many`'s prepared one). The list is padded to a
/// power of two with rows that add nothing (0 calls, 0 credits to the
/// last row), so that a connection prepares a handful of statements, not
/// one per batch size. Must run inside the charge's transaction.
pub fn record_rows(
    tx: &mut impl Queryable,
    sql: &Statements,
    rows: &[Row<'_>],
) -> Result<(), DbError> {
    let Some(last) = rows.last() else {
        return Ok(());
    };
    if let [r] = rows {
        let (user, key, day, endpoint) = (r.user_id, r.key_id, r.day, r.endpoint);
        return record_many(tx, sql, user, key, day, endpoint, r.calls, r.credits);
    }
    let n = rows.len().next_power_of_two();
    let mut params: Vec<mysql::Value> = Vec::with_capacity(n * 6);
    for i in 0..n {
        let (r, counts) = match rows.get(i) {
            Some(r) => (r, (r.calls, r.credits)),
            None => (last, (0, 0)),
        };
        params.push(r.user_id.into());
        params.push(r.key_id.into());
        params.push(r.day.format("%Y-%m-%d").to_string().into());
        params.push(r.endpoint.into());
        params.push(counts.0.into());
        params.push(counts.1.into());
    }
    Ok(tx.exec_drop(sql.get(rows_sql(n)), params)?)
}

/// `record_rows`'s statement for `n` rows (a power of two, 2 to 64).
pub(crate) fn rows_sql(n: usize) -> &'static str {
    static T: OnceLock<Vec<&'static str>> = OnceLock::new();
    crate::billing::account::sized(&T, n, |n| {
        let values = vec!["(?, ?, ?, ?, ?, ?)"; n].join(", ");
        format!(
            "INSERT INTO usage_daily (user_id, key_id, day, endpoint, calls, credits) \
             VALUES {values} ON DUPLICATE KEY UPDATE calls = calls + VALUES(calls), \
             credits = credits + VALUES(credits)"
        )
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    pub username: String,
    pub day: String,
    pub endpoint: String,
    pub calls: u64,
    pub credits: u64,
}

#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub user: Option<Username>,
    pub from: Option<Day>,
    pub to: Option<Day>,
}

/// Usage rows in the filter's range (both ends included), by day then user.
pub fn report(pool: &Pool, filter: &Filter) -> Result<Vec<UsageRow>, DbError> {
    let rows: Vec<(String, String, String, u64, u64)> = pool.get()?.exec(
        // Summed over keys: the report is per user, day and endpoint (the
        // export has the keys).
        "SELECT u.username, DATE_FORMAT(d.day, '%Y-%m-%d'), d.endpoint, \
                CAST(SUM(d.calls) AS UNSIGNED), CAST(SUM(d.credits) AS UNSIGNED) \
         FROM usage_daily d JOIN users u ON u.id = d.user_id \
         WHERE (? IS NULL OR u.username = ?) AND (? IS NULL OR d.day >= ?) AND (? IS NULL OR d.day <= ?) \
         GROUP BY d.day, u.username, d.endpoint \
         ORDER BY d.day, u.username, d.endpoint",
        {
            let user = filter.user.as_ref().map(|u| u.as_str().to_string());
            let from = filter.from.map(|d| d.to_string());
            let to = filter.to.map(|d| d.to_string());
            (user.clone(), user, from.clone(), from, to.clone(), to)
        },
    )?;
    Ok(rows
        .into_iter()
        .map(|(username, day, endpoint, calls, credits)| UsageRow {
            username,
            day,
            endpoint,
            calls,
            credits,
        })
        .collect())
}

/// Calls and credits of one day, summed over endpoints (and users).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayTotal {
    pub day: NaiveDate,
    pub calls: u64,
    pub credits: u64,
}

/// The day `n` days after 1970-01-01: dates cross the wire as day numbers
/// (`DATEDIFF`), so there is no text to parse and no parse error to carry.
fn epoch_day(n: u64) -> NaiveDate {
    NaiveDate::default()
        .checked_add_days(chrono::Days::new(n))
        .expect("a DATE column holds a day chrono can represent")
}

/// Per-day totals from `from` to `to` (both included), of one user or of
/// everyone; days without usage are absent (the caller fills the gaps).
pub fn daily_totals(
    pool: &Pool,
    from: NaiveDate,
    to: NaiveDate,
    user: Option<&Username>,
) -> Result<Vec<DayTotal>, DbError> {
    let user = user.map(|u| u.as_str().to_string());
    let rows: Vec<(u64, u64, u64)> = pool.get()?.exec(
        "SELECT DATEDIFF(d.day, '1970-01-01'), CAST(SUM(d.calls) AS UNSIGNED), \
                CAST(SUM(d.credits) AS UNSIGNED) \
         FROM usage_daily d \
         WHERE d.day BETWEEN ? AND ? \
           AND (? IS NULL OR d.user_id = (SELECT id FROM users WHERE username = ?)) \
         GROUP BY d.day ORDER BY d.day",
        (
            from.format("%Y-%m-%d").to_string(),
            to.format("%Y-%m-%d").to_string(),
            user.clone(),
            user,
        ),
    )?;
    Ok(rows
        .into_iter()
        .map(|(day, calls, credits)| DayTotal {
            day: epoch_day(day),
            calls,
            credits,
        })
        .collect())
}

/// The last day each of these users made a paid call; users who never did
/// are absent. Day-exact: usage is kept per day.
pub fn last_used(pool: &Pool, users: &[Username]) -> Result<HashMap<String, NaiveDate>, DbError> {
    if users.is_empty() {
        return Ok(HashMap::new());
    }
    let marks = vec!["?"; users.len()].join(", ");
    let names: Vec<mysql::Value> = users.iter().map(|u| u.as_str().into()).collect();
    // The primary key (user_id, day, …) answers MAX(day) per user from the
    // index alone.
    let rows: Vec<(String, u64)> = pool.get()?.exec(
        format!(
            "SELECT u.username, DATEDIFF(MAX(d.day), '1970-01-01') \
             FROM users u JOIN usage_daily d ON d.user_id = u.id \
             WHERE u.username IN ({marks}) GROUP BY u.id, u.username"
        ),
        names,
    )?;
    Ok(rows
        .into_iter()
        .map(|(name, day)| (name, epoch_day(day)))
        .collect())
}
