//! API keys: a user has 1 to 20 (`api_keys`), and any key that is neither
//! revoked nor expired authenticates `<username>:<token>` (the lookup is in
//! `billing::account::lock`, by the token's hash, inside the charge). Here:
//! create, list, revoke, and rotate with a grace period, shared by the CLI,
//! the admin API and the console. A token is shown once, when it is made;
//! only its SHA-256 and a short prefix are stored.

use std::fmt;

use chrono::{DateTime, Utc};
use mysql::prelude::Queryable;
use mysql::TxOpts;
use serde::Serialize;

use crate::auth::token;
use crate::db::{self, DbError, Pool, Retryable};
use crate::model::{ImportedToken, Span, Username};

/// At most this many keys that still work, per user.
pub const MAX_KEYS: u64 = 20;

/// A key as shown to operators: never the token or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Key {
    pub id: u64,
    pub label: Option<String>,
    pub prefix: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    /// Exact to a minute: written at most once a minute per key.
    pub last_used_at: Option<String>,
}

#[derive(Debug, Default, Clone)]
pub struct NewKey {
    pub label: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug)]
pub enum KeyError {
    UnknownUser(String),
    UnknownKey(String),
    /// The user has `MAX_KEYS` working keys already.
    TooMany,
    Db(DbError),
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::UnknownUser(u) => write!(f, "no user {u:?}"),
            KeyError::UnknownKey(k) => write!(f, "no key {k} of this user"),
            KeyError::TooMany => write!(
                f,
                "a user has at most {MAX_KEYS} keys that work; revoke one first"
            ),
            KeyError::Db(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for KeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeyError::Db(e) => Some(e),
            _ => None,
        }
    }
}

impl From<DbError> for KeyError {
    fn from(e: DbError) -> Self {
        KeyError::Db(e)
    }
}

impl From<mysql::Error> for KeyError {
    fn from(e: mysql::Error) -> Self {
        KeyError::Db(e.into())
    }
}

impl From<r2d2::Error> for KeyError {
    fn from(e: r2d2::Error) -> Self {
        KeyError::Db(e.into())
    }
}

impl Retryable for KeyError {
    fn is_conflict(&self) -> bool {
        matches!(self, KeyError::Db(DbError::Conflict(_)))
    }
}

const KEY_COLUMNS: &str = "id, label, prefix, DATE_FORMAT(created_at, '%Y-%m-%dT%H:%i:%sZ'), \
     DATE_FORMAT(expires_at, '%Y-%m-%dT%H:%i:%sZ'), DATE_FORMAT(last_used_at, '%Y-%m-%dT%H:%i:%sZ')";

type KeyRow = (
    u64,
    Option<String>,
    String,
    String,
    Option<String>,
    Option<String>,
);

fn from_row(r: KeyRow) -> Key {
    Key {
        id: r.0,
        label: r.1,
        prefix: r.2,
        created_at: r.3,
        expires_at: r.4,
        last_used_at: r.5,
    }
}

/// A key "works": not revoked, not expired (by the database's clock).
const WORKS: &str = "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > NOW(3))";

/// Stores a key for `token` inside the caller's transaction; its id.
pub(crate) fn insert(
    tx: &mut impl Queryable,
    user_id: u64,
    label: Option<&str>,
    expires_at: Option<DateTime<Utc>>,
    token: &str,
) -> Result<u64, DbError> {
    tx.exec_drop(
        "INSERT INTO api_keys (user_id, label, token_hash, prefix, expires_at) VALUES (?, ?, ?, ?, ?)",
        (
            user_id,
            label,
            token::hash(token),
            token::prefix(token),
            expires_at.map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()),
        ),
    )?;
    let id: Option<u64> = tx.query_first("SELECT LAST_INSERT_ID()")?;
    Ok(id.unwrap_or(0))
}

/// `TooMany` when the locked user already has `MAX_KEYS` working keys.
fn refuse_if_full(tx: &mut impl Queryable, user_id: u64) -> Result<(), KeyError> {
    let working: Option<u64> = tx.exec_first(
        format!("SELECT COUNT(*) FROM api_keys WHERE user_id = ? AND {WORKS}"),
        (user_id,),
    )?;
    if working.unwrap_or(0) >= MAX_KEYS {
        return Err(KeyError::TooMany);
    }
    Ok(())
}

/// The locked user's id, or `UnknownUser`.
fn lock_user(tx: &mut impl Queryable, username: &Username) -> Result<u64, KeyError> {
    let id: Option<u64> = tx.exec_first(
        "SELECT id FROM users WHERE username = ? FOR UPDATE",
        (username.as_str(),),
    )?;
    id.ok_or_else(|| KeyError::UnknownUser(username.to_string()))
}

fn fetch(conn: &mut impl Queryable, key_id: u64) -> Result<Option<Key>, DbError> {
    let row: Option<KeyRow> = conn.exec_first(
        format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?"),
        (key_id,),
    )?;
    Ok(row.map(from_row))
}

/// A new key for `username` (at most `MAX_KEYS` that work); the key and
/// its token, shown this once. `import` keeps an existing token instead.
pub fn create(
    pool: &Pool,
    username: &Username,
    new: &NewKey,
    import: Option<&ImportedToken>,
) -> Result<(Key, String), KeyError> {
    pool.retrying(|| {
        let token = match import {
            Some(t) => t.expose().to_string(),
            None => token::generate(),
        };
        let mut conn = pool.get()?;
        let mut tx = conn.start_transaction(TxOpts::default())?;
        let user_id = lock_user(&mut tx, username)?;
        refuse_if_full(&mut tx, user_id)?;
        let id = insert(
            &mut tx,
            user_id,
            new.label.as_deref(),
            new.expires_at,
            &token,
        )?;
        let key = fetch(&mut tx, id)?.ok_or_else(|| KeyError::UnknownKey(id.to_string()))?;
        tx.commit().map_err(db::commit_failed)?;
        Ok((key, token))
    })
}

/// The user's keys that are not revoked (expired ones included, with their
/// `expires_at` in the past), oldest first.
pub fn list(pool: &Pool, username: &Username) -> Result<Vec<Key>, KeyError> {
    let mut conn = pool.get()?;
    let user: Option<u64> = conn.exec_first(
        "SELECT id FROM users WHERE username = ?",
        (username.as_str(),),
    )?;
    let user = user.ok_or_else(|| KeyError::UnknownUser(username.to_string()))?;
    let rows: Vec<KeyRow> = conn.exec(
        format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE user_id = ? AND revoked_at IS NULL ORDER BY id"),
        (user,),
    )?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// Revokes one key of the user: it stops working with the commit.
pub fn revoke(pool: &Pool, username: &Username, key_id: u64) -> Result<Key, KeyError> {
    pool.retrying(|| {
        let mut conn = pool.get()?;
        let mut tx = conn.start_transaction(TxOpts::default())?;
        let user_id = lock_user(&mut tx, username)?;
        let unknown = || KeyError::UnknownKey(key_id.to_string());
        let owner: Option<(u64, bool)> = tx.exec_first(
            "SELECT user_id, revoked_at IS NOT NULL FROM api_keys WHERE id = ?",
            (key_id,),
        )?;
        match owner {
            Some((owner, false)) if owner == user_id => {}
            _ => return Err(unknown()),
        }
        let key = fetch(&mut tx, key_id)?.ok_or_else(unknown)?;
        tx.exec_drop(
            "UPDATE api_keys SET revoked_at = NOW(3) WHERE id = ?",
            (key_id,),
        )?;
        tx.commit().map_err(db::commit_failed)?;
        Ok(key)
    })
}

/// A new key for the user (its token returned); every other key that
/// works now expires after `grace` (0: at once), or earlier if it already
/// would. Running clients move to the new token within the grace.
pub fn rotate(pool: &Pool, username: &Username, grace: Span) -> Result<String, KeyError> {
    pool.retrying(|| {
        let token = token::generate();
        let mut conn = pool.get()?;
        let mut tx = conn.start_transaction(TxOpts::default())?;
        let user_id = lock_user(&mut tx, username)?;
        // With a grace, the old keys still work beside the new one for a
        // while: the 20 must hold then too (without one they stop at once).
        if !grace.get().is_zero() {
            refuse_if_full(&mut tx, user_id)?;
        }
        let id = insert(&mut tx, user_id, Some("rotated"), None, &token)?;
        tx.exec_drop(
            format!(
                "UPDATE api_keys SET expires_at = LEAST(COALESCE(expires_at, '9999-12-31'), \
                 NOW(3) + INTERVAL ? MICROSECOND) WHERE user_id = ? AND id <> ? AND {WORKS}"
            ),
            (grace.get().as_micros() as u64, user_id, id),
        )?;
        tx.commit().map_err(db::commit_failed)?;
        Ok(token)
    })
}

/// How many keys of a user work now, and when one was last used: a row of
/// the console's users table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeySummary {
    pub working: u64,
    /// The latest `last_used_at` of any of the user's keys.
    pub last_used_at: Option<String>,
}

/// `KeySummary` for each of these users (users without keys are absent).
pub fn summary(
    pool: &Pool,
    users: &[Username],
) -> Result<std::collections::HashMap<String, KeySummary>, DbError> {
    if users.is_empty() {
        return Ok(Default::default());
    }
    let marks = vec!["?"; users.len()].join(", ");
    let names: Vec<mysql::Value> = users.iter().map(|u| u.as_str().into()).collect();
    let rows: Vec<(String, u64, Option<String>)> = pool.get()?.exec(
        format!(
            "SELECT u.username, \
                    CAST(SUM(k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > NOW(3))) AS UNSIGNED), \
                    DATE_FORMAT(MAX(k.last_used_at), '%Y-%m-%dT%H:%i:%sZ') \
             FROM users u JOIN api_keys k ON k.user_id = u.id \
             WHERE u.username IN ({marks}) GROUP BY u.id, u.username"
        ),
        names,
    )?;
    Ok(rows
        .into_iter()
        .map(|(name, working, last_used_at)| {
            (
                name,
                KeySummary {
                    working,
                    last_used_at,
                },
            )
        })
        .collect())
}
