//! Webhook endpoints: add (the secret is shown once), list and remove,
//! shared by the CLI, the admin API and the console.

use std::fmt;

use mysql::prelude::Queryable;
use mysql::TxOpts;
use serde::Serialize;

use super::events::EventType;
use super::sign;
use crate::db::{self, DbError, Pool};

/// The longest URL (`webhooks.url` is a VARCHAR(2048)).
pub const MAX_URL_LEN: usize = 2048;

/// An endpoint as shown to operators: never its secret, after `add`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Webhook {
    pub id: u64,
    pub url: String,
    pub events: Vec<String>,
    pub created_at: String,
}

#[derive(Debug)]
pub enum WebhookError {
    /// A URL or an event list that is refused; the text says why.
    Invalid(String),
    Unknown(String),
    Db(DbError),
}

impl fmt::Display for WebhookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebhookError::Invalid(m) => f.write_str(m),
            WebhookError::Unknown(id) => write!(f, "no webhook {id}"),
            WebhookError::Db(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for WebhookError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WebhookError::Db(e) => Some(e),
            _ => None,
        }
    }
}

impl From<DbError> for WebhookError {
    fn from(e: DbError) -> Self {
        WebhookError::Db(e)
    }
}

impl From<mysql::Error> for WebhookError {
    fn from(e: mysql::Error) -> Self {
        WebhookError::Db(e.into())
    }
}

impl From<r2d2::Error> for WebhookError {
    fn from(e: r2d2::Error) -> Self {
        WebhookError::Db(e.into())
    }
}

/// An endpoint's URL: `http://` or `https://` and a host, printable ASCII
/// without blanks, at most 2048 characters. Plain http is allowed because
/// receivers on a private network (and the tests) use it.
pub fn parse_url(s: &str) -> Result<&str, WebhookError> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    let ok = s.len() <= MAX_URL_LEN
        && s.bytes().all(|b| b.is_ascii_graphic())
        && rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'));
    if ok {
        Ok(s)
    } else {
        Err(WebhookError::Invalid(format!(
            "a webhook URL is http:// or https://, a host and a path, printable ASCII, \
             at most {MAX_URL_LEN} characters; not {s:?}"
        )))
    }
}

/// The parsed event list of `--events` / `"events"`.
pub fn parse_events(s: &str) -> Result<Vec<EventType>, WebhookError> {
    EventType::parse_list(s).map_err(WebhookError::Invalid)
}

const COLUMNS: &str = "id, url, events, DATE_FORMAT(created_at, '%Y-%m-%dT%H:%i:%sZ')";

type Row = (u64, String, String, String);

fn from_row((id, url, events, created_at): Row) -> Webhook {
    Webhook {
        id,
        url,
        events: events
            .split(',')
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect(),
        created_at,
    }
}

/// A new endpoint and its signing secret, which is shown this once.
pub fn add(
    pool: &Pool,
    url: &str,
    events: &[EventType],
) -> Result<(Webhook, String), WebhookError> {
    let url = parse_url(url)?;
    if events.is_empty() {
        return Err(WebhookError::Invalid("no event given".into()));
    }
    let names: Vec<&str> = events.iter().map(|e| e.as_str()).collect();
    let secret = sign::new_secret();
    let mut conn = pool.get()?;
    conn.exec_drop(
        "INSERT INTO webhooks (url, events, secret) VALUES (?, ?, ?)",
        (url, names.join(","), &secret),
    )?;
    let id = conn.last_insert_id();
    let row: Option<Row> = conn.exec_first(
        format!("SELECT {COLUMNS} FROM webhooks WHERE id = ?"),
        (id,),
    )?;
    let hook = row
        .map(from_row)
        .ok_or_else(|| WebhookError::Unknown(id.to_string()))?;
    Ok((hook, secret))
}

/// Every endpoint, oldest first.
pub fn list(pool: &Pool) -> Result<Vec<Webhook>, WebhookError> {
    let rows: Vec<Row> = pool
        .get()?
        .query(format!("SELECT {COLUMNS} FROM webhooks ORDER BY id"))?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// Removes endpoint `id` (as given: the CLI's and the URL's text) and marks
/// its undelivered events failed, in one transaction: nothing is sent to
/// it afterwards.
pub fn remove(pool: &Pool, id: &str) -> Result<Webhook, WebhookError> {
    let unknown = || WebhookError::Unknown(format!("{id:?}"));
    let n: u64 = id.parse().map_err(|_| unknown())?;
    let mut conn = pool.get()?;
    let mut tx = conn.start_transaction(TxOpts::default())?;
    let row: Option<Row> = tx.exec_first(
        format!("SELECT {COLUMNS} FROM webhooks WHERE id = ? FOR UPDATE"),
        (n,),
    )?;
    let hook = row.map(from_row).ok_or_else(unknown)?;
    tx.exec_drop("DELETE FROM webhooks WHERE id = ?", (n,))?;
    tx.exec_drop(
        "UPDATE webhook_outbox SET state = 'failed', last_error = 'webhook removed', \
         settled_at = NOW(3) WHERE webhook_id = ? AND state = 'pending'",
        (n,),
    )?;
    tx.commit().map_err(db::commit_failed)?;
    Ok(hook)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_need_a_scheme_and_a_host() {
        assert!(parse_url("https://hooks.example.com/creditgate").is_ok());
        assert!(parse_url("http://127.0.0.1:9000/").is_ok());
        assert!(parse_url("ftp://example.com/").is_err());
        assert!(parse_url("https://").is_err());
        assert!(parse_url("https:///path").is_err());
        assert!(parse_url("https://example.com/a b").is_err());
        assert!(parse_url(&format!("https://e.com/{}", "a".repeat(2048))).is_err());
    }
}
