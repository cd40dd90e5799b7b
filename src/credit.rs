//! Charging and refilling credit. A paid request is ONE transaction: lock the
//! user's row (`SELECT … FOR UPDATE`), check the token and the credit, charge,
//! count the usage, remember the idempotent answer, commit — or roll back and
//! charge nothing. No state is shared between requests but the pool.

use std::fmt;

use chrono::{DateTime, Utc};
use mysql::prelude::Queryable;
use mysql::TxOpts;
use serde::{Deserialize, Serialize};

use crate::banks::{self, Bank};
use crate::db::{self, DbError, Pool};
use crate::ledger::{self, Event, Reason};
use crate::model::{next_refill, BankCode, IdempotencyKey, Period, RefillDay, Username};
use crate::token::{self, Credentials};
use crate::usage;

/// The endpoint name that paid bank lookups are counted under.
pub const BANKS_ENDPOINT: &str = "banks_data";

pub struct Charge<'a> {
    pub credentials: &'a Credentials,
    pub bank: &'a BankCode,
    pub idempotency_key: Option<&'a IdempotencyKey>,
    pub now: DateTime<Utc>,
}

/// What an authenticated caller is told. Serialisable because it is what an
/// `Idempotency-Key` replays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Answer {
    Charged {
        bank: Bank,
        credit_remaining: i64,
    },
    InsufficientCredit {
        cost: i64,
        credit_remaining: i64,
        next_refill: Option<i64>,
    },
    UnknownBank,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChargeOutcome {
    Answered { answer: Answer, replayed: bool },
    Unauthorized(AuthFailure),
}

/// Why authentication failed: for the log only; clients all get one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    NoCredentials,
    UnknownUser,
    WrongToken,
    Disabled,
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthFailure::NoCredentials => "no or malformed credentials",
            AuthFailure::UnknownUser => "unknown user",
            AuthFailure::WrongToken => "wrong token",
            AuthFailure::Disabled => "user disabled",
        })
    }
}

/// The columns authentication and the credit check need.
pub(crate) struct Account {
    pub(crate) id: u64,
    token_hash: String,
    pub(crate) credit: i64,
    monthly_credit: Option<i64>,
    refill_day: u32,
    credit_period: Option<String>,
    disabled: bool,
}

type AccountRow = (u64, String, i64, Option<i64>, u32, Option<String>, bool);

const ACCOUNT_COLUMNS: &str =
    "id, token_hash, credit, monthly_credit, refill_day, credit_period, disabled";

impl Account {
    fn from_row(r: AccountRow) -> Account {
        Account {
            id: r.0,
            token_hash: r.1,
            credit: r.2,
            monthly_credit: r.3,
            refill_day: r.4,
            credit_period: r.5,
            disabled: r.6,
        }
    }

    pub(crate) fn next_refill(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.monthly_credit?;
        let day = RefillDay::parse(self.refill_day as i64).unwrap_or_default();
        let period = self
            .credit_period
            .as_deref()
            .and_then(|p| Period::parse(p).ok());
        Some(next_refill(now, day, period))
    }
}

/// The name to look up, or `UnknownUser` without asking the database. A
/// name that cannot exist must not reach it: `users.username` is ASCII with
/// a PAD SPACE collation, so MariaDB fails on a non-ASCII name (a 503, not a
/// miss) and finds `alice` for `alice ` (a token sent as `alice :T` worked).
pub(crate) fn lookup_name(credentials: &Credentials) -> Result<Username, AuthFailure> {
    Username::parse(&credentials.username).map_err(|_| {
        token::verify_dummy(&credentials.token);
        AuthFailure::UnknownUser
    })
}

/// Same work for every failure, so that timing does not tell an unknown user
/// from a wrong token.
fn authenticate(row: Option<AccountRow>, token: &str) -> Result<Account, AuthFailure> {
    match row {
        None => {
            token::verify_dummy(token);
            Err(AuthFailure::UnknownUser)
        }
        Some(r) => {
            let account = Account::from_row(r);
            if !token::verify(token, &account.token_hash) {
                Err(AuthFailure::WrongToken)
            } else if account.disabled {
                Err(AuthFailure::Disabled)
            } else {
                Ok(account)
            }
        }
    }
}

/// Charges one paid bank lookup, exactly once, or nothing. A transaction
/// the database rolled back (a conflict) is run again from the start.
pub fn charge(pool: &Pool, req: &Charge<'_>) -> Result<ChargeOutcome, DbError> {
    pool.retrying(|| charge_once(pool, req))
}

fn charge_once(pool: &Pool, req: &Charge<'_>) -> Result<ChargeOutcome, DbError> {
    let name = match lookup_name(req.credentials) {
        Ok(name) => name,
        Err(why) => return Ok(ChargeOutcome::Unauthorized(why)),
    };
    let mut conn = pool.get()?;
    let mut tx = conn.start_transaction(TxOpts::default())?;
    let account = match lock_account(&mut tx, &name, &req.credentials.token)? {
        Ok(a) => a,
        Err(why) => return Ok(ChargeOutcome::Unauthorized(why)),
    };
    if let Some(key) = req.idempotency_key {
        if let Some(answer) = remembered(&mut tx, account.id, key)? {
            return Ok(ChargeOutcome::Answered {
                answer,
                replayed: true,
            });
        }
    }
    let answer = match banks::find(&mut tx, req.bank)? {
        None => Answer::UnknownBank,
        Some(bank) => match debit(&mut tx, &account, bank.cost, BANKS_ENDPOINT, req.now)? {
            Debit::Done { credit_remaining } => Answer::Charged {
                bank,
                credit_remaining,
            },
            Debit::Insufficient => Answer::InsufficientCredit {
                cost: bank.cost,
                credit_remaining: account.credit,
                next_refill: account.next_refill(req.now).map(|t| t.timestamp()),
            },
        },
    };
    if let Some(key) = req.idempotency_key {
        remember(&mut tx, account.id, key, &answer)?;
    }
    // A connection lost during COMMIT leaves the charge in doubt: the client
    // gets 503, and only a retry with the same Idempotency-Key can tell
    // (it replays the answer if the charge was applied).
    tx.commit().map_err(db::commit_failed)?;
    db::trust(&mut conn);
    Ok(ChargeOutcome::Answered {
        answer,
        replayed: false,
    })
}

/// Locks the user's row for the rest of `tx` and authenticates against it.
pub(crate) fn lock_account(
    tx: &mut impl Queryable,
    name: &Username,
    token: &str,
) -> Result<Result<Account, AuthFailure>, DbError> {
    let row: Option<AccountRow> = tx.exec_first(
        format!("SELECT {ACCOUNT_COLUMNS} FROM users WHERE username = ? FOR UPDATE"),
        (name.as_str(),),
    )?;
    Ok(authenticate(row, token))
}

/// The answer remembered for this key in the last 24 h. Read under the row
/// lock, so a simultaneous retry waits for the first and then sees its answer.
fn remembered(
    tx: &mut impl Queryable,
    user_id: u64,
    key: &IdempotencyKey,
) -> Result<Option<Answer>, DbError> {
    let stored: Option<String> = tx.exec_first(
        "SELECT outcome FROM idempotency_keys \
         WHERE user_id = ? AND idem_key = ? AND created_at > NOW(3) - INTERVAL 1 DAY",
        (user_id, key.as_str()),
    )?;
    Ok(stored.and_then(|json| serde_json::from_str(&json).ok()))
}

fn remember(
    tx: &mut impl Queryable,
    user_id: u64,
    key: &IdempotencyKey,
    answer: &Answer,
) -> Result<(), DbError> {
    let json = serde_json::to_string(answer).expect("answers serialise");
    // REPLACE: an expired row for the same key is taken over.
    tx.exec_drop(
        "REPLACE INTO idempotency_keys (user_id, idem_key, outcome) VALUES (?, ?, ?)",
        (user_id, key.as_str(), json),
    )?;
    Ok(())
}

/// What taking `cost` from a locked account did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Debit {
    Done { credit_remaining: i64 },
    Insufficient,
}

/// Takes `cost` from the locked account and counts the call under
/// `endpoint`, or does nothing when the credit is short.
pub(crate) fn debit(
    tx: &mut mysql::Transaction<'_>,
    account: &Account,
    cost: i64,
    endpoint: &str,
    now: DateTime<Utc>,
) -> Result<Debit, DbError> {
    if account.credit < cost {
        return Ok(Debit::Insufficient);
    }
    let credit_remaining = account.credit - cost;
    if cost > 0 {
        // Relative and guarded: under the row lock it always applies; if it
        // does not, the row changed under us (a multi-writer cluster), and
        // the transaction is retried from the start.
        tx.exec_drop(
            "UPDATE users SET credit = credit - ? WHERE id = ? AND credit >= ?",
            (cost, account.id, cost),
        )?;
        if tx.affected_rows() != 1 {
            return Err(DbError::Conflict(mysql::Error::MySqlError(
                mysql::MySqlError {
                    state: "40001".into(),
                    code: 1213,
                    message: "the credit changed under the row lock".into(),
                },
            )));
        }
    }
    usage::record(tx, account.id, now.date_naive(), endpoint, cost)?;
    Ok(Debit::Done { credit_remaining })
}

/// What `GET /api/v1.0/credit` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balance {
    pub username: String,
    pub credit: i64,
    pub monthly_credit: Option<i64>,
    /// RFC 3339, UTC.
    pub next_refill: Option<String>,
}

/// The caller's own balance; free, but authenticated like a charge.
pub fn balance(
    pool: &Pool,
    credentials: &Credentials,
    now: DateTime<Utc>,
) -> Result<Result<Balance, AuthFailure>, DbError> {
    let name = match lookup_name(credentials) {
        Ok(name) => name,
        Err(why) => return Ok(Err(why)),
    };
    let row: Option<AccountRow> = pool.get()?.exec_first(
        format!("SELECT {ACCOUNT_COLUMNS} FROM users WHERE username = ?"),
        (name.as_str(),),
    )?;
    Ok(authenticate(row, &credentials.token).map(|a| Balance {
        username: credentials.username.clone(),
        credit: a.credit,
        monthly_credit: a.monthly_credit,
        next_refill: a
            .next_refill(now)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
    }))
}

/// Deletes remembered idempotent answers older than their 24 h, in small
/// batches so that no batch holds locks for long. Returns how many went.
pub fn expire_idempotency_keys(pool: &Pool) -> Result<u64, DbError> {
    let mut conn = pool.get()?;
    let mut total = 0;
    loop {
        conn.query_drop(
            "DELETE FROM idempotency_keys WHERE created_at < NOW(3) - INTERVAL 1 DAY LIMIT 1000",
        )?;
        let n = conn.affected_rows();
        total += n;
        if n < 1000 {
            return Ok(total);
        }
    }
}

/// Refills every user whose refill moment in `period` has passed by `now` and
/// who has not been refilled for `period` yet: `credit = GREATEST(credit,
/// monthly_credit)`, `credit_period = period`, one ledger row. One transaction
/// per user, re-checked under the row lock, so a refill happens once per
/// month even when several instances run it at the same moment.
pub fn refill(
    pool: &Pool,
    period: Period,
    now: DateTime<Utc>,
    actor: &str,
) -> Result<usize, DbError> {
    let p = period.to_string();
    let candidates: Vec<(u64, u32)> = pool.get()?.exec(
        "SELECT id, refill_day FROM users \
         WHERE monthly_credit IS NOT NULL AND (credit_period IS NULL OR credit_period < ?)",
        (&p,),
    )?;
    let mut refilled = 0;
    for (user_id, day) in candidates {
        let day = RefillDay::parse(day as i64).unwrap_or_default();
        if period.refill_moment(day) > now {
            continue;
        }
        if pool.retrying(|| refill_one(pool, user_id, &p, actor))? {
            refilled += 1;
        }
    }
    Ok(refilled)
}

/// Refills one user in one transaction, re-checked under the row lock;
/// false when there was nothing to do (another instance was first).
fn refill_one(pool: &Pool, user_id: u64, p: &str, actor: &str) -> Result<bool, DbError> {
    let mut conn = pool.get()?;
    let mut tx = conn.start_transaction(TxOpts::default())?;
    let row: Option<(i64, Option<i64>, Option<String>)> = tx.exec_first(
        "SELECT credit, monthly_credit, credit_period FROM users WHERE id = ? FOR UPDATE",
        (user_id,),
    )?;
    let Some((credit, Some(monthly), done)) = row else {
        return Ok(false);
    };
    if done.is_some_and(|d| d.as_str() >= p) {
        return Ok(false); // another instance was first
    }
    let new = credit.max(monthly);
    tx.exec_drop(
        "UPDATE users SET credit = GREATEST(credit, ?), credit_period = ? WHERE id = ?",
        (monthly, p, user_id),
    )?;
    ledger::record(
        &mut tx,
        &Event {
            user_id,
            delta: new - credit,
            balance_after: new,
            reason: Reason::MonthlyRefill,
            period: Some(p.to_string()),
            actor,
        },
    )?;
    tx.commit().map_err(db::commit_failed)?;
    Ok(true)
}
