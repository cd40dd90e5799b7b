//! The priced resources: bank records served by the paid route, each with its
//! own cost per request.

use std::fmt;

use mysql::prelude::Queryable;
use serde::{Deserialize, Serialize};

use crate::db::{DbError, Pool, Statements};
use crate::model::{BankCode, Credit};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bank {
    pub code: String,
    pub name: String,
    pub country: Option<String>,
    pub bic: Option<String>,
    pub cost: i64,
    pub data: serde_json::Value,
}

#[derive(Debug)]
pub struct NewBank {
    pub code: BankCode,
    pub name: String,
    pub country: Option<String>,
    pub bic: Option<String>,
    pub cost: Credit,
    pub data: serde_json::Value,
}

#[derive(Debug)]
pub enum BankError {
    Exists(String),
    Invalid(String),
    Db(DbError),
}

impl fmt::Display for BankError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BankError::Exists(c) => write!(f, "bank {c} already exists"),
            BankError::Invalid(m) => f.write_str(m),
            BankError::Db(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BankError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BankError::Db(e) => Some(e),
            _ => None,
        }
    }
}

impl From<DbError> for BankError {
    fn from(e: DbError) -> Self {
        BankError::Db(e)
    }
}

type BankRow = (String, String, Option<String>, Option<String>, i64, String);

/// The bank with this code, read through any connection or transaction.
/// The bank lookup of a paid request.
pub const FIND: &str = "SELECT code, name, country, bic, cost, data FROM banks WHERE code = ?";

pub fn find(
    conn: &mut impl Queryable,
    sql: &Statements,
    code: &BankCode,
) -> Result<Option<Bank>, DbError> {
    let row: Option<BankRow> = conn.exec_first(sql.get(FIND), (code.as_str(),))?;
    Ok(row.map(|(code, name, country, bic, cost, data)| Bank {
        code,
        name,
        country,
        bic,
        cost,
        // The column has a JSON_VALID check, so this cannot fail on our rows.
        data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
    }))
}

pub fn add(pool: &Pool, new: NewBank) -> Result<Bank, BankError> {
    if new.name.trim().is_empty() || new.name.len() > 200 {
        return Err(BankError::Invalid(
            "a bank name is 1 to 200 characters".into(),
        ));
    }
    if let Some(c) = &new.country {
        if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(BankError::Invalid(format!(
                "a country is two letters (ISO 3166), not {c:?}"
            )));
        }
    }
    if let Some(b) = &new.bic {
        if !(b.len() == 8 || b.len() == 11) || !b.bytes().all(|x| x.is_ascii_alphanumeric()) {
            return Err(BankError::Invalid(format!(
                "a BIC is 8 or 11 letters and digits, not {b:?}"
            )));
        }
    }
    let mut conn = pool.get().map_err(DbError::from)?;
    let inserted = conn.exec_drop(
        "INSERT INTO banks (code, name, country, bic, cost, data) VALUES (?, ?, ?, ?, ?, ?)",
        (
            new.code.as_str(),
            &new.name,
            new.country.as_ref().map(|c| c.to_ascii_uppercase()),
            new.bic.as_ref().map(|b| b.to_ascii_uppercase()),
            new.cost.get(),
            new.data.to_string(),
        ),
    );
    match inserted.map_err(DbError::from) {
        Err(DbError::Duplicate(_)) => return Err(BankError::Exists(new.code.to_string())),
        other => other?,
    }
    Ok(find(&mut **conn, &Statements::default(), &new.code)?.expect("just inserted"))
}
