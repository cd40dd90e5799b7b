//! `creditgate import-legacy`: moves the Flask sample's users (a table with
//! USERNAME, TOKEN, CREDIT) over. Tokens are hashed on the way in, so the
//! sample's clients keep working and no token is stored in clear. Each user
//! is created in its own transaction, with its `import` ledger row; bad rows
//! are reported by name and skipped.

use std::io::{IsTerminal, Write};

use chrono::Utc;
use mysql::prelude::Queryable;
use mysql::Value;

use crate::cli::CliError;
use crate::db::{self, DbError, Pool};
use crate::ledger::Reason;
use crate::model::{RefillDay, Username};
use crate::users::{self, NewUser, UserError};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub imported: usize,
    pub existing: usize,
    pub invalid: usize,
}

pub fn run(pool: &Pool, from_url: &str, table: &str, actor: &str) -> Result<(), CliError> {
    let s = import(pool, from_url, table, actor)?;
    eprintln!(
        "imported {} user(s); skipped {} existing and {} invalid",
        s.imported, s.existing, s.invalid
    );
    Ok(())
}

pub fn import(pool: &Pool, from_url: &str, table: &str, actor: &str) -> Result<Summary, CliError> {
    if table.is_empty()
        || table.len() > 64
        || !table
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(CliError(format!(
            "--table takes a plain table name, not {table:?}"
        )));
    }
    let mut legacy = db::connect_once(from_url).map_err(|e| match e {
        DbError::BadUrl(m) => CliError(format!("--from: {m}")),
        DbError::Query(e) => CliError(format!("cannot connect to --from: {e}")),
        e => e.into(),
    })?;
    let rows: Vec<(Value, Value, Value)> = legacy
        .query(format!("SELECT USERNAME, TOKEN, CREDIT FROM `{table}`"))
        .map_err(|e| CliError(format!("cannot read table {table}: {e}")))?;

    let total = rows.len();
    let on_terminal = std::io::stderr().is_terminal();
    // Off a terminal (a log, a pipe) a line per tenth, at most every 1000 rows.
    let step = (total / 10).clamp(1, 1000);
    let mut summary = Summary::default();
    for (i, (name, token, credit)) in rows.into_iter().enumerate() {
        let shown = text(&name).unwrap_or_else(|| "(null)".into());
        match new_user(&name, &token, &credit) {
            Err(why) => {
                eprintln!("skipped {shown:?}: {why}");
                summary.invalid += 1;
            }
            Ok(new) => match users::create(pool, new, Reason::Import, actor, Utc::now()) {
                Ok(_) => summary.imported += 1,
                Err(UserError::Exists(_)) => {
                    eprintln!("skipped {shown:?}: already exists");
                    summary.existing += 1;
                }
                Err(UserError::Db(e)) => return Err(e.into()),
                Err(e) => {
                    eprintln!("skipped {shown:?}: {e}");
                    summary.invalid += 1;
                }
            },
        }
        let done = i + 1;
        if on_terminal {
            eprint!("\r{done}/{total} rows");
            let _ = std::io::stderr().flush();
            if done == total {
                eprintln!();
            }
        } else if done % step == 0 || done == total {
            eprintln!("{done}/{total} rows");
        }
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
    users::check_imported_token(&token).map_err(|e| e.to_string())?;
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
    if credit < 0 {
        return Err(format!("CREDIT is negative ({credit})"));
    }
    Ok(NewUser {
        username,
        credit: Some(credit),
        monthly_credit: None,
        refill_day: RefillDay::default(),
        email: None,
        token: Some(token),
    })
}
