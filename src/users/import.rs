//! `creditgate import-legacy`: moves the Flask sample's users (a table with
//! USERNAME, TOKEN, CREDIT) over. Tokens are hashed on the way in, so the
//! sample's clients keep working and no token is stored in clear. Each user
//! is created in its own transaction, with its `import` ledger row; bad rows
//! are reported by name and skipped. This module prints nothing: it tells
//! its caller (the CLI) what happened through `Progress`.

use std::fmt;

use chrono::Utc;
use mysql::prelude::Queryable;
use mysql::Value;

use crate::billing::ledger::Reason;
use crate::db::{self, DbError, Pool};
use crate::model::{Credit, ImportedToken, RefillDay, Username};
use crate::users::{self, NewUser, UserError};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub imported: usize,
    pub existing: usize,
    pub invalid: usize,
}

/// What the import reports while it runs.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress<'a> {
    /// A row was not imported; `name` is its USERNAME as text.
    Skipped { name: &'a str, why: String },
    /// `done` of `total` rows handled.
    Rows { done: usize, total: usize },
}

#[derive(Debug)]
pub enum ImportError {
    /// `--table` is not a plain table name.
    BadTable(String),
    /// The legacy database could not be reached.
    Connect(DbError),
    /// The legacy table could not be read.
    Read { table: String, source: DbError },
    /// Our own database failed.
    Db(DbError),
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportError::BadTable(t) => write!(f, "--table takes a plain table name, not {t:?}"),
            ImportError::Connect(DbError::BadUrl(m)) => write!(f, "--from: {m}"),
            ImportError::Connect(_) => f.write_str("cannot connect to --from"),
            ImportError::Read { table, .. } => write!(f, "cannot read table {table}"),
            ImportError::Db(_) => f.write_str("import stopped"),
        }
    }
}

impl std::error::Error for ImportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ImportError::BadTable(_) | ImportError::Connect(DbError::BadUrl(_)) => None,
            ImportError::Connect(e) | ImportError::Read { source: e, .. } | ImportError::Db(e) => {
                Some(e)
            }
        }
    }
}

/// Imports every row of `table` at `from_url`, telling `report` about each
/// skipped row and the progress.
pub fn import(
    pool: &Pool,
    from_url: &str,
    table: &str,
    actor: &str,
    report: &mut dyn FnMut(Progress<'_>),
) -> Result<Summary, ImportError> {
    if table.is_empty()
        || table.len() > 64
        || !table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(ImportError::BadTable(table.to_string()));
    }
    let mut legacy = db::connect_once(from_url).map_err(ImportError::Connect)?;
    let rows: Vec<(Value, Value, Value)> = legacy
        .query(format!("SELECT USERNAME, TOKEN, CREDIT FROM `{table}`"))
        .map_err(|e| ImportError::Read {
            table: table.to_string(),
            source: e.into(),
        })?;

    let total = rows.len();
    let mut summary = Summary::default();
    for (i, (name, token, credit)) in rows.into_iter().enumerate() {
        let shown = text(&name).unwrap_or_else(|| "(null)".into());
        let mut skip = |why: String| report(Progress::Skipped { name: &shown, why });
        match new_user(&name, &token, &credit) {
            Err(why) => {
                skip(why);
                summary.invalid += 1;
            }
            Ok(new) => match users::create(pool, new, Reason::Import, actor, Utc::now()) {
                Ok(_) => summary.imported += 1,
                Err(UserError::Exists(_)) => {
                    skip("already exists".into());
                    summary.existing += 1;
                }
                Err(UserError::Db(e)) => return Err(ImportError::Db(e)),
                Err(e) => {
                    skip(e.to_string());
                    summary.invalid += 1;
                }
            },
        }
        report(Progress::Rows { done: i + 1, total });
    }
    Ok(summary)
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::Int(n) => Some(n.to_string()),
        Value::UInt(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One legacy row as a user, or why it cannot be one.
fn new_user(name: &Value, token: &Value, credit: &Value) -> Result<NewUser, String> {
    let name = text(name).ok_or("no USERNAME")?;
    let username = Username::parse(&name).map_err(|e| e.to_string())?;
    let token = text(token).ok_or("no TOKEN")?;
    let token = ImportedToken::parse(&token).map_err(|e| e.to_string())?;
    let credit = match credit {
        Value::Int(n) => *n,
        Value::UInt(n) => i64::try_from(*n).map_err(|_| "CREDIT is too large")?,
        Value::Bytes(b) => String::from_utf8_lossy(b)
            .trim()
            .parse::<i64>()
            .map_err(|_| "CREDIT is not a whole number")?,
        Value::NULL => 0,
        _ => return Err("CREDIT is not a whole number".into()),
    };
    let credit = Credit::new(credit).map_err(|_| format!("CREDIT is negative ({credit})"))?;
    Ok(NewUser {
        username,
        credit: Some(credit),
        monthly_credit: None,
        refill_day: RefillDay::default(),
        email: None,
        token: Some(token),
        rate_limit: None,
        low_credit: None,
    })
}
