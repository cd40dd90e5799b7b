//! User operations shared by the CLI, the admin API and the console: one
//! implementation of each. Credit changes write their ledger row in the same
//! transaction.

pub mod import;
pub mod keys;

use std::fmt;

use chrono::{DateTime, Utc};
use mysql::prelude::Queryable;
use mysql::TxOpts;
use serde::Serialize;

use crate::auth::token;
use crate::billing::ledger::{self, Event, Reason};
use crate::db::{DbError, Pool};
use crate::model::{Credit, Email, ImportedToken, Period, RateLimit, RefillDay, Username};

#[derive(Debug)]
pub struct NewUser {
    pub username: Username,
    pub credit: Option<Credit>,
    pub monthly_credit: Option<Credit>,
    pub refill_day: RefillDay,
    pub email: Option<Email>,
    /// An existing token to import; `None` makes a new one.
    pub token: Option<ImportedToken>,
    pub rate_limit: Option<RateLimit>,
    pub low_credit: Option<Credit>,
}

/// A user as shown to operators: never the token or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub username: String,
    pub token_prefix: String,
    /// The balance, held credit included.
    pub credit: i64,
    /// Reserved by open holds; `credit - held` may be spent.
    pub held: i64,
    pub monthly_credit: Option<i64>,
    pub refill_day: u32,
    pub credit_period: Option<String>,
    pub email: Option<String>,
    pub disabled: bool,
    pub created_at: String,
    pub rate_limit: Option<RateLimit>,
    pub low_credit: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditChange {
    /// May be negative; the result may not.
    Add(i64),
    Set(Credit),
}

#[derive(Debug)]
pub enum UserError {
    Exists(String),
    Unknown(String),
    /// A change would leave the balance below 0 or beyond i64.
    InvalidCredit(String),
    Db(DbError),
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserError::Exists(u) => write!(f, "user {u:?} already exists"),
            UserError::Unknown(u) => write!(f, "no user {u:?}"),
            UserError::InvalidCredit(m) => f.write_str(m),
            UserError::Db(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for UserError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UserError::Db(e) => Some(e),
            _ => None,
        }
    }
}

impl crate::db::Retryable for UserError {
    fn is_conflict(&self) -> bool {
        matches!(self, UserError::Db(DbError::Conflict(_)))
    }
}

impl From<DbError> for UserError {
    fn from(e: DbError) -> Self {
        UserError::Db(e)
    }
}

// Statements and checkouts fail as `DbError`s, classified in `db.rs`.
impl From<mysql::Error> for UserError {
    fn from(e: mysql::Error) -> Self {
        UserError::Db(e.into())
    }
}

impl From<r2d2::Error> for UserError {
    fn from(e: r2d2::Error) -> Self {
        UserError::Db(e.into())
    }
}

/// `token_prefix` is the prefix of the user's newest key that is not revoked.
const USER_COLUMNS: &str = "username, \
     COALESCE((SELECT k.prefix FROM api_keys k WHERE k.user_id = users.id AND k.revoked_at IS NULL \
               ORDER BY k.id DESC LIMIT 1), ''), \
     credit, monthly_credit, refill_day, credit_period, email, \
     disabled, DATE_FORMAT(created_at, '%Y-%m-%dT%H:%i:%sZ'), rate_quota, rate_window_secs, low_credit, \
     held";

/// A row of `USER_COLUMNS` (more columns than `FromRow` takes as a tuple).
type UserRow = mysql::Row;

fn from_row(r: UserRow) -> User {
    let quota: Option<u32> = r.get(9).flatten();
    let window: Option<u32> = r.get(10).flatten();
    User {
        username: r.get(0).unwrap_or_default(),
        token_prefix: r.get(1).unwrap_or_default(),
        credit: r.get(2).unwrap_or(0),
        monthly_credit: r.get(3).flatten(),
        refill_day: r.get(4).unwrap_or(1),
        credit_period: r.get(5).flatten(),
        email: r.get(6).flatten(),
        disabled: r.get(7).unwrap_or(false),
        created_at: r.get(8).unwrap_or_default(),
        rate_limit: quota
            .zip(window)
            .map(|(quota, window_secs)| RateLimit { quota, window_secs }),
        low_credit: r.get(11).flatten(),
        held: r.get(12).unwrap_or(0),
    }
}

/// Creates a user and returns it with its token, which is shown this once.
/// Without `credit` the user starts with `monthly_credit` (if any), and that
/// first allowance counts as this month's refill.
pub fn create(
    pool: &Pool,
    new: NewUser,
    reason: Reason,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(User, String), UserError> {
    pool.retrying(|| create_once(pool, &new, reason, actor, now))
}

fn create_once(
    pool: &Pool,
    new: &NewUser,
    reason: Reason,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(User, String), UserError> {
    let token = match &new.token {
        Some(t) => t.expose().to_string(),
        None => token::generate(),
    };
    let credit = new.credit.or(new.monthly_credit).unwrap_or_default().get();
    let monthly_credit = new.monthly_credit.map(Credit::get);
    let period = new
        .monthly_credit
        .map(|_| Period::of(now.date_naive()).to_string());

    let mut conn = pool.get()?;
    let mut tx = conn.start_transaction(TxOpts::default())?;
    let inserted = tx.exec_drop(
        "INSERT INTO users (username, credit, monthly_credit, refill_day, credit_period, email, \
         rate_quota, rate_window_secs, low_credit) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            new.username.as_str(),
            credit,
            monthly_credit,
            new.refill_day.get(),
            &period,
            new.email.as_ref().map(Email::as_str),
            new.rate_limit.map(|r| r.quota),
            new.rate_limit.map(|r| r.window_secs),
            new.low_credit.map(Credit::get),
        ),
    );
    match inserted.map_err(DbError::from) {
        Err(DbError::Duplicate(_)) => return Err(UserError::Exists(new.username.to_string())),
        other => other?,
    }
    let user_id = tx.last_insert_id().expect("insert has an id");
    keys::insert(&mut tx, user_id, Some("first"), None, &token)?;
    ledger::record(
        &mut tx,
        &Event {
            user_id,
            delta: credit,
            balance_after: credit,
            reason,
            period,
            actor,
        },
    )?;
    let user = fetch(&mut tx, &new.username)?;
    tx.commit().map_err(crate::db::commit_failed)?;
    Ok((user, token))
}

fn fetch(conn: &mut impl Queryable, username: &Username) -> Result<User, UserError> {
    let row: Option<UserRow> = conn.exec_first(
        format!("SELECT {USER_COLUMNS} FROM users WHERE username = ?"),
        (username.as_str(),),
    )?;
    row.map(from_row)
        .ok_or_else(|| UserError::Unknown(username.to_string()))
}

pub fn show(pool: &Pool, username: &Username) -> Result<User, UserError> {
    fetch(&mut **pool.get()?, username)
}

pub fn list(pool: &Pool) -> Result<Vec<User>, UserError> {
    let rows: Vec<UserRow> = pool.get()?.query(format!(
        "SELECT {USER_COLUMNS} FROM users ORDER BY username"
    ))?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// Users whose name contains `needle` (ASCII case ignored; empty: every
/// user), by name, at most `limit` of them.
pub fn search(pool: &Pool, needle: &str, limit: u32) -> Result<Vec<User>, UserError> {
    let pattern = format!("%{}%", like_escape(&needle.to_ascii_lowercase()));
    let rows: Vec<UserRow> = pool.get()?.exec(
        format!(
            "SELECT {USER_COLUMNS} FROM users WHERE LOWER(username) LIKE ? \
             ORDER BY username LIMIT ?"
        ),
        (pattern, limit),
    )?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// `s` as a literal inside a LIKE pattern (`\` is MariaDB's escape).
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Users with a monthly allowance whose available credit (`credit - held`)
/// is below `percent` % of it,
/// lowest share first. Compared as decimals: `credit * 100` could overflow
/// a BIGINT.
pub fn below_allowance(pool: &Pool, percent: u32) -> Result<Vec<User>, UserError> {
    let rows: Vec<UserRow> = pool.get()?.exec(
        format!(
            "SELECT {USER_COLUMNS} FROM users \
             WHERE monthly_credit > 0 \
               AND CAST(credit - held AS DECIMAL(30, 0)) * 100 < CAST(monthly_credit AS DECIMAL(30, 0)) * ? \
             ORDER BY CAST(credit - held AS DECIMAL(30, 0)) / monthly_credit, username"
        ),
        (percent,),
    )?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// Adds to or sets a user's credit. A result below 0 (or beyond i64) is
/// refused and changes nothing. Run again when the database rolled it back.
pub fn change_credit(
    pool: &Pool,
    username: &Username,
    change: CreditChange,
    actor: &str,
) -> Result<User, UserError> {
    pool.retrying(|| change_credit_once(pool, username, change, actor))
}

fn change_credit_once(
    pool: &Pool,
    username: &Username,
    change: CreditChange,
    actor: &str,
) -> Result<User, UserError> {
    let mut conn = pool.get()?;
    let mut tx = conn.start_transaction(TxOpts::default())?;
    let row: Option<(u64, i64, i64)> = tx.exec_first(
        "SELECT id, credit, held FROM users WHERE username = ? FOR UPDATE",
        (username.as_str(),),
    )?;
    let (user_id, old, held) = row.ok_or_else(|| UserError::Unknown(username.to_string()))?;
    let (new, reason) = match change {
        CreditChange::Add(n) => (old.checked_add(n), Reason::TopUp),
        CreditChange::Set(n) => (Some(n.get()), Reason::Set),
    };
    let new = match new {
        Some(n) if n >= held => n,
        // Held credit is promised to open holds: it cannot be taken away
        // under them (release the holds, or wait for them to settle).
        Some(n) if n >= 0 => {
            return Err(UserError::InvalidCredit(format!(
                "credit would be {n}, below the {held} held by open holds"
            )))
        }
        Some(n) => {
            return Err(UserError::InvalidCredit(format!(
                "credit would be {n}; it cannot go below 0"
            )))
        }
        None => return Err(UserError::InvalidCredit("credit would overflow".into())),
    };
    // Relative, so that the change is what the ledger row says it is.
    tx.exec_drop(
        format!(
            "UPDATE users SET credit = credit + ?, {} WHERE id = ?",
            crate::billing::account::REARM_LOW_CREDIT
        ),
        (new - old, user_id),
    )?;
    ledger::record(
        &mut tx,
        &Event {
            user_id,
            delta: new - old,
            balance_after: new,
            reason,
            period: None,
            actor,
        },
    )?;
    let user = fetch(&mut tx, username)?;
    tx.commit().map_err(crate::db::commit_failed)?;
    Ok(user)
}

pub fn set_disabled(pool: &Pool, username: &Username, disabled: bool) -> Result<User, UserError> {
    pool.retrying(|| set_disabled_once(pool, username, disabled))
}

fn set_disabled_once(pool: &Pool, username: &Username, disabled: bool) -> Result<User, UserError> {
    let mut conn = pool.get()?;
    // affected_rows is 0 when nothing changes, so existence is read back.
    conn.exec_drop(
        "UPDATE users SET disabled = ? WHERE username = ?",
        (disabled, username.as_str()),
    )?;
    fetch(&mut **conn, username)
}

/// Sets or removes (`None`) a user's rate limit. A new limit starts with a
/// full bucket.
pub fn set_rate_limit(
    pool: &Pool,
    username: &Username,
    limit: Option<RateLimit>,
) -> Result<User, UserError> {
    pool.retrying(|| set_rate_limit_once(pool, username, limit))
}

fn set_rate_limit_once(
    pool: &Pool,
    username: &Username,
    limit: Option<RateLimit>,
) -> Result<User, UserError> {
    let mut conn = pool.get()?;
    conn.exec_drop(
        "UPDATE users SET rate_quota = ?, rate_window_secs = ?, rate_tat = NULL WHERE username = ?",
        (
            limit.map(|l| l.quota),
            limit.map(|l| l.window_secs),
            username.as_str(),
        ),
    )?;
    fetch(&mut **conn, username)
}

/// Sets or removes (`None`) a user's low-credit threshold; it is armed when
/// the credit is at or above it now.
pub fn set_low_credit(
    pool: &Pool,
    username: &Username,
    threshold: Option<Credit>,
) -> Result<User, UserError> {
    pool.retrying(|| set_low_credit_once(pool, username, threshold))
}

fn set_low_credit_once(
    pool: &Pool,
    username: &Username,
    threshold: Option<Credit>,
) -> Result<User, UserError> {
    let mut conn = pool.get()?;
    conn.exec_drop(
        "UPDATE users SET low_credit = ?, low_credit_notified = (? IS NOT NULL AND credit - held < ?) \
         WHERE username = ?",
        (
            threshold.map(Credit::get),
            threshold.map(Credit::get),
            threshold.map(Credit::get),
            username.as_str(),
        ),
    )?;
    fetch(&mut **conn, username)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_wildcards_in_a_search_are_taken_literally() {
        assert_eq!(like_escape("a_b%c\\d"), "a\\_b\\%c\\\\d");
        assert_eq!(like_escape("alice"), "alice");
    }
}
