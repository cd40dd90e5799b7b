//! Daily usage per user and endpoint: written inside the request transaction
//! (so it always agrees with the credit), read back as a report.

use chrono::NaiveDate;
use mysql::prelude::Queryable;
use serde::Serialize;

use crate::db::{DbError, Pool};
use crate::model::{Day, Username};

/// Counts one paid call. Must run inside the charge's transaction.
pub fn record(
    tx: &mut impl Queryable,
    user_id: u64,
    day: NaiveDate,
    endpoint: &str,
    credits: i64,
) -> Result<(), DbError> {
    Ok(tx.exec_drop(
        "INSERT INTO usage_daily (user_id, day, endpoint, calls, credits) VALUES (?, ?, ?, 1, ?) \
         ON DUPLICATE KEY UPDATE calls = calls + 1, credits = credits + VALUES(credits)",
        (
            user_id,
            day.format("%Y-%m-%d").to_string(),
            endpoint,
            credits,
        ),
    )?)
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
        "SELECT u.username, DATE_FORMAT(d.day, '%Y-%m-%d'), d.endpoint, d.calls, d.credits \
         FROM usage_daily d JOIN users u ON u.id = d.user_id \
         WHERE (? IS NULL OR u.username = ?) AND (? IS NULL OR d.day >= ?) AND (? IS NULL OR d.day <= ?) \
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
