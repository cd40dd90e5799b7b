//! `creditgate key …`, `user rotate --grace`, `user limit`, `user notify`:
//! the CLI face of `crate::users::keys` and the per-user limits. Tokens go to
//! stdout alone (`TOKEN=$(creditgate key add alice)`), the rest to stderr.

use chrono::{DateTime, Utc};
use clap::Subcommand;

use super::{table, CliError};
use crate::db::Pool;
use crate::model::{parse_label, parse_time, Credit, RateLimit, Span, Username};
use crate::users::keys::{self, Key, NewKey};
use crate::users::{self, User};

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Give a user another key; prints its token alone on stdout.
    Add {
        /// The username.
        name: String,
        /// A name for the key, up to 64 characters.
        #[arg(long)]
        label: Option<String>,
        /// When it stops working, RFC 3339 (2027-01-01T00:00:00Z).
        #[arg(long, conflicts_with = "ttl")]
        expires: Option<String>,
        /// How long it works: 45s, 90m, 12h, 30d.
        #[arg(long)]
        ttl: Option<String>,
    },
    /// List a user's keys (not the revoked ones).
    List {
        /// The username.
        name: String,
        /// Print {"keys":[…]} as the admin API does, not a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke one key: it stops working at once.
    Revoke {
        /// The username.
        name: String,
        /// The key's id, as `key list` shows it.
        key_id: u64,
    },
}

pub fn run(pool: &Pool, cmd: KeyCommand) -> Result<(), CliError> {
    match cmd {
        KeyCommand::Add {
            name,
            label,
            expires,
            ttl,
        } => {
            let new = NewKey {
                label: label.as_deref().map(parse_label).transpose()?,
                expires_at: expiry(expires.as_deref(), ttl.as_deref())?,
            };
            let (key, token) = keys::create(pool, &Username::parse(&name)?, &new, None)?;
            println!("{token}");
            eprintln!(
                "added key {} ({}…) for {name}{}; the token is shown this once",
                key.id,
                key.prefix,
                key.expires_at
                    .map(|t| format!(", expires {t}"))
                    .unwrap_or_default()
            );
        }
        KeyCommand::List { name, json } => {
            let list = keys::list(pool, &Username::parse(&name)?)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "keys": list }))
                        .expect("keys serialise")
                );
            } else {
                print!("{}", key_table(&list));
            }
        }
        KeyCommand::Revoke { name, key_id } => {
            let key = keys::revoke(pool, &Username::parse(&name)?, key_id)?;
            eprintln!("revoked key {} ({}…) of {name}", key.id, key.prefix);
        }
    }
    Ok(())
}

fn expiry(expires: Option<&str>, ttl: Option<&str>) -> Result<Option<DateTime<Utc>>, CliError> {
    if let Some(t) = expires {
        return parse_time(t)
            .map(Some)
            .map_err(|_| CliError::flag("--expires", format!("an RFC 3339 time, not {t:?}")));
    }
    let Some(ttl) = ttl else { return Ok(None) };
    let span = Span::parse(ttl).map_err(|e| CliError::flag("--ttl", e))?;
    let span = chrono::Duration::from_std(span.get()).expect("at most ten years");
    Ok(Some(Utc::now() + span))
}

fn key_table(list: &[Key]) -> String {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|k| {
            vec![
                k.id.to_string(),
                dash(&k.label),
                k.prefix.clone(),
                k.created_at.clone(),
                dash(&k.expires_at),
                dash(&k.last_used_at),
            ]
        })
        .collect();
    table(
        &["ID", "LABEL", "PREFIX", "CREATED", "EXPIRES", "LAST_USED"],
        &rows,
    )
}

/// `user rotate NAME [--grace 24h]`.
pub fn rotate(pool: &Pool, name: &str, grace: &str) -> Result<(), CliError> {
    let grace = Span::parse(grace).map_err(|e| CliError::flag("--grace", e))?;
    let token = keys::rotate(pool, &Username::parse(name)?, grace)?;
    println!("{token}");
    if grace.get().is_zero() {
        eprintln!("rotated the key of {name}; the old ones no longer work");
    } else {
        eprintln!(
            "rotated the key of {name}; the old ones work for {} s more",
            grace.get().as_secs()
        );
    }
    Ok(())
}

/// `user limit NAME --rate 600/min|off`.
pub fn limit(pool: &Pool, name: &str, rate: &str) -> Result<User, CliError> {
    let limit = match rate.trim() {
        "off" => None,
        r => Some(RateLimit::parse(r)?),
    };
    Ok(users::set_rate_limit(pool, &Username::parse(name)?, limit)?)
}

/// `user notify NAME --low-credit N|off`.
pub fn notify(pool: &Pool, name: &str, low_credit: &str) -> Result<User, CliError> {
    let threshold = match low_credit.trim() {
        "off" => None,
        n => Some(Credit::parse(n).map_err(|e| CliError::flag("--low-credit", e))?),
    };
    Ok(users::set_low_credit(
        pool,
        &Username::parse(name)?,
        threshold,
    )?)
}
