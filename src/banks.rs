//! The priced resources: bank records served by the paid route, each with its
//! own cost per request.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use mysql::prelude::Queryable;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::db::{DbError, Pool, Statements};
use crate::model::{BankCode, Credit};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bank {
    pub code: String,
    pub name: String,
    pub country: Option<String>,
    pub bic: Option<String>,
    pub cost: i64,
    pub data: BankData,
}

/// A bank's `data` column, kept as the JSON text the database holds: every
/// paid answer carries it, and parsing it into a `Value` to print it again
/// cost ~8,000 instructions per request (callgrind), and a coalesced batch
/// also cloned and dropped the tree once per answer.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct BankData(Box<RawValue>);

impl BankData {
    /// `text` in compact form (key order kept), or `null` if it is not
    /// JSON (the column has a JSON_VALID check: not on our rows). Compact,
    /// so that an answer and its replay are the same bytes. Rows written by
    /// creditgate are compact already and are taken as they are.
    pub fn from_column(text: String) -> BankData {
        let compact = if text.bytes().any(|b| b.is_ascii_whitespace()) {
            compacted(&text)
        } else {
            Some(text)
        };
        compact
            .and_then(|t| RawValue::from_string(t).ok())
            .map(BankData)
            .unwrap_or_else(|| BankData::from_column("null".to_string()))
    }

    pub fn as_str(&self) -> &str {
        self.0.get()
    }
}

/// `text` re-printed compact, in its own key order; `None` if not JSON.
fn compacted(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut from = serde_json::Deserializer::from_str(text);
    serde_transcode::transcode(&mut from, &mut serde_json::Serializer::new(&mut out)).ok()?;
    from.end().ok()?;
    String::from_utf8(out).ok()
}

impl PartialEq for BankData {
    fn eq(&self, other: &BankData) -> bool {
        self.as_str() == other.as_str()
    }
}

/// Transcoded, not read as a `RawValue`: a stored idempotent answer is an
/// internally tagged enum, which serde buffers, and a `RawValue` cannot be
/// read back from that buffer (nor would a `Value` keep the key order).
/// Only replays take this path.
impl<'de> Deserialize<'de> for BankData {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<BankData, D::Error> {
        use serde::de::Error;
        let mut out = Vec::new();
        serde_transcode::transcode(d, &mut serde_json::Serializer::new(&mut out))
            .map_err(D::Error::custom)?;
        let text = String::from_utf8(out).map_err(D::Error::custom)?;
        RawValue::from_string(text)
            .map(BankData)
            .map_err(D::Error::custom)
    }
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
        data: BankData::from_column(data),
    }))
}

/// Every bank, read from the database: what `Cache::reload` keeps.
fn all(conn: &mut impl Queryable) -> Result<HashMap<String, Bank>, DbError> {
    let rows: Vec<BankRow> =
        conn.query("SELECT code, name, country, bic, cost, data FROM banks")?;
    Ok(rows
        .into_iter()
        .map(|(code, name, country, bic, cost, data)| {
            let bank = Bank {
                code: code.clone(),
                name,
                country,
                bic,
                cost,
                data: BankData::from_column(data),
            };
            (code, bank)
        })
        .collect())
}

/// The banks in memory, like the gateway's routes: a paid request read its
/// bank row from the database every time (one round trip of the five a
/// paid request made), although banks change a few times a year. Re-read
/// whole every `gateway::REFRESH` by the routes' thread, so a bank changed
/// in the database reaches every instance within it; a code not in memory
/// is read from the database at once (a bank added a moment ago is served
/// at once), and kept if it exists. Unknown codes are not kept: that would
/// let any caller fill the memory.
#[derive(Default)]
pub struct Cache {
    banks: RwLock<Arc<HashMap<String, Bank>>>,
}

impl Cache {
    pub fn new() -> Cache {
        Cache::default()
    }

    /// The bank with this code: from memory, else from the database.
    pub fn find(
        &self,
        conn: &mut impl Queryable,
        sql: &Statements,
        code: &BankCode,
    ) -> Result<Option<Bank>, DbError> {
        let banks = Arc::clone(&self.banks.read().unwrap_or_else(|e| e.into_inner()));
        if let Some(bank) = banks.get(code.as_str()) {
            return Ok(Some(bank.clone()));
        }
        let found = find(conn, sql, code)?;
        if let Some(bank) = &found {
            let mut banks = self.banks.write().unwrap_or_else(|e| e.into_inner());
            let mut more = HashMap::clone(&banks);
            more.insert(bank.code.clone(), bank.clone());
            *banks = Arc::new(more);
        }
        Ok(found)
    }

    /// Re-reads every bank; on failure the banks in memory stay.
    pub fn reload(&self, pool: &Pool) -> Result<(), DbError> {
        let fresh = Arc::new(all(&mut **pool.get()?)?);
        *self.banks.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::bank::Answer;

    fn bank(data: &str) -> Bank {
        Bank {
            code: "BOFA".into(),
            name: "Bank of America".into(),
            country: Some("US".into()),
            bic: None,
            cost: 1,
            data: BankData::from_column(data.to_string()),
        }
    }

    #[test]
    fn data_is_printed_as_the_column_holds_it() {
        let b = bank(r#"{"founded":1904,"tags":["a"]}"#);
        let printed = serde_json::to_string(&b).unwrap();
        assert!(
            printed.contains(r#""data":{"founded":1904,"tags":["a"]}"#),
            "{printed}"
        );
    }

    #[test]
    fn data_is_compacted_in_its_own_key_order() {
        let b = bank("{\"z\": 1,\n \"a\": [1, \"x y\"]}");
        assert_eq!(b.data.as_str(), r#"{"z":1,"a":[1,"x y"]}"#);
    }

    #[test]
    fn text_that_is_not_json_becomes_null() {
        assert_eq!(bank("{nope").data.as_str(), "null");
    }

    #[test]
    fn a_stored_answer_reads_back_equal() {
        // Answer is internally tagged: serde buffers it, which a RawValue
        // alone could not be read back from.
        let answer = Answer::Charged {
            bank: bank(r#"{"name":"x","founded":1904}"#),
            credit_remaining: 9,
        };
        let stored = serde_json::to_string(&answer).unwrap();
        let back: Answer = serde_json::from_str(&stored).unwrap();
        assert_eq!(back, answer);
    }
}
