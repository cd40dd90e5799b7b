//! The locked row: the only SQL of charging. Every paid request — the bank
//! route (`bank::charge`), a coalesced batch (`group`) and gateway
//! routes (`gateway::billing`) — finds the user and the key by the token's
//! hash and locks the user's row (`lock`), lets `decide` plan the request
//! against it (pure: `rate_check`, `plan_debit` are the row's own rules),
//! then writes the plan (`apply`, or `write_batch` for a batch): the key's
//! use, the cost, the limiter's new state and the low-credit flag in one
//! UPDATE, so a limit costs no extra round trip.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use chrono::{DateTime, NaiveDate, Utc};
use mysql::prelude::Queryable;

use super::decide::{Outcome, Verdict};
use crate::auth::token::{self, Credentials};
use crate::banks;
use crate::billing::ledger::{self, Event, Reason};
use crate::billing::ratelimit::{self, Decision};
use crate::billing::usage;
use crate::db::{DbError, Statements};
use crate::model::{next_refill, Period, RateLimit, RefillDay, Username};
use crate::webhooks::outbox;

/// Why authentication failed: for the log only; clients all get one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    NoCredentials,
    UnknownUser,
    WrongToken,
    /// The key matched but is expired or revoked.
    KeyNotValid,
    Disabled,
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthFailure::NoCredentials => "no or malformed credentials",
            AuthFailure::UnknownUser => "unknown user",
            AuthFailure::WrongToken => "wrong token",
            AuthFailure::KeyNotValid => "expired or revoked key",
            AuthFailure::Disabled => "user disabled",
        })
    }
}

/// A user's rate limit and what the limiter said about this request: what
/// the `RateLimit*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateState {
    pub limit: RateLimit,
    pub decision: Decision,
}

/// A charge took the credit from at or above the user's threshold to
/// below it: the one mail of the notice is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowCredit {
    pub username: String,
    pub email: Option<String>,
    pub credit: i64,
    pub threshold: i64,
}

/// The authenticated, locked user: what the request needs from the row.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: u64,
    pub username: String,
    /// The balance, held credit included.
    pub credit: i64,
    /// Reserved by open holds: not to be spent by anything else.
    pub held: i64,
    pub monthly_credit: Option<i64>,
    refill_day: u32,
    credit_period: Option<String>,
    email: Option<String>,
    rate: Option<RateLimit>,
    rate_tat: Option<i64>,
    low_credit: Option<i64>,
    low_credit_notified: bool,
    /// `credit.exhausted` was sent and the credit has not come back since.
    credit_exhausted: bool,
    key_id: u64,
    key_use_due: bool,
    /// The database's clock, µs since the epoch: every instance agrees.
    now_us: i64,
}

/// The text of `ACCOUNT_QUERY`, as a macro so that the locking variant
/// can be a constant too (`concat!` takes literals only).
macro_rules! account_query {
    () => {
        concat!(
            user_columns!(),
            ", k.id, k.token_hash, \
             (k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > NOW(3))), \
             (k.last_used_at IS NULL OR k.last_used_at < NOW(3) - INTERVAL 1 MINUTE) \
             FROM users u LEFT JOIN api_keys k ON k.user_id = u.id AND k.token_hash = ? \
             WHERE u.username = ?"
        )
    };
}

/// The row's columns every account query reads, in `from_row`'s order;
/// the key's four columns follow (`NO_KEY` when there is none).
macro_rules! user_columns {
    () => {
        "SELECT u.id, u.credit, u.monthly_credit, u.refill_day, u.credit_period, \
         u.disabled, u.email, u.rate_quota, u.rate_window_secs, u.rate_tat, u.low_credit, \
         u.low_credit_notified, CAST(UNIX_TIMESTAMP(NOW(6)) * 1000000 AS SIGNED), \
         u.held, u.username, u.credit_exhausted"
    };
}
pub(crate) use user_columns;

/// What stands for the key's four columns in a query without a key.
macro_rules! no_key {
    () => {
        ", NULL, NULL, NULL, FALSE"
    };
}
pub(crate) use no_key;

/// The user's row and, joined by the token's hash, at most one key; the
/// database's clock with it.
pub const ACCOUNT_QUERY: &str = account_query!();

/// `ACCOUNT_QUERY`, locking the user's row for the transaction.
pub const ACCOUNT_FOR_UPDATE: &str = concat!(account_query!(), " FOR UPDATE");

/// The user's row by name, without a key, locked: for a service that
/// authenticated the user itself (`/v1/charge` with `"user"`).
pub const ACCOUNT_BY_NAME: &str = concat!(
    user_columns!(),
    ", NULL, NULL, NULL, FALSE FROM users u WHERE u.username = ? FOR UPDATE"
);

/// The charge's one write (`take`): guarded by what may be spent, so that
/// the credit held by open holds is never charged by another request.
pub const TAKE: &str = "UPDATE users SET credit = credit - ?, rate_tat = COALESCE(?, rate_tat), \
     low_credit_notified = low_credit_notified OR ? WHERE id = ? AND credit - held >= ?";

/// The statements every paid request (and every coalesced batch) runs,
/// prepared once per pooled connection (`db::Connection::prepared`).
pub const PER_REQUEST: &[&str] = &[
    ACCOUNT_FOR_UPDATE,
    ACCOUNT_BY_NAME,
    super::holds::SETTLE_LOCK,
    super::holds::CAPTURE,
    crate::services::AUTHENTICATE,
    banks::FIND,
    TAKE,
    usage::RECORD,
    usage::RECORD_MANY,
];

/// `PER_REQUEST` and then a coalesced batch's statements, for each list
/// size (1, 2, 4 … 64): what a batch prepares (`db::Connection::prepared`
/// adds them to a connection the first time a batch uses it). A batch's
/// statement run as text cost the driver a scan for named parameters on
/// every call (~13,000 instructions a batch, callgrind).
pub fn per_batch() -> &'static [&'static str] {
    static ALL: OnceLock<Vec<&'static str>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut all = PER_REQUEST.to_vec();
        for n in SIZES {
            all.extend([ids_sql(n), lock_many_sql(n), keys_sql(n)]);
            if n > 1 {
                all.extend([write_many_sql(n), note_keys_sql(n), usage::rows_sql(n)]);
            }
        }
        all
    })
}

/// The sizes a batch's lists are padded to (`padded`).
const SIZES: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];

/// The text for a list of `n` (a power of two up to 64), made once.
pub(crate) fn sized(
    cell: &'static OnceLock<Vec<&'static str>>,
    n: usize,
    make: impl Fn(usize) -> String,
) -> &'static str {
    let texts = cell.get_or_init(|| {
        // Leaked once: they live as long as the process, as constants do.
        SIZES.iter().map(|&n| &*make(n).leak()).collect()
    });
    texts[n.trailing_zeros() as usize]
}

fn ids_sql(n: usize) -> &'static str {
    static T: OnceLock<Vec<&'static str>> = OnceLock::new();
    sized(&T, n, |n| {
        format!(
            "SELECT username, id FROM users WHERE username IN ({})",
            marks(n)
        )
    })
}

fn lock_many_sql(n: usize) -> &'static str {
    static T: OnceLock<Vec<&'static str>> = OnceLock::new();
    sized(&T, n, |n| {
        format!(
            concat!(
                user_columns!(),
                no_key!(),
                " FROM users u FORCE INDEX (PRIMARY) WHERE u.id IN ({}) ORDER BY u.id \
                 FOR UPDATE SKIP LOCKED"
            ),
            marks(n)
        )
    })
}

fn keys_sql(n: usize) -> &'static str {
    static T: OnceLock<Vec<&'static str>> = OnceLock::new();
    sized(&T, n, |n| {
        format!(
            "SELECT user_id, token_hash, id, \
             (revoked_at IS NULL AND (expires_at IS NULL OR expires_at > NOW(3))), \
             (last_used_at IS NULL OR last_used_at < NOW(3) - INTERVAL 1 MINUTE) \
             FROM api_keys WHERE user_id IN ({}) AND token_hash IN ({})",
            marks(n),
            marks(n)
        )
    })
}

fn write_many_sql(n: usize) -> &'static str {
    static T: OnceLock<Vec<&'static str>> = OnceLock::new();
    sized(&T, n, |n| {
        let when = "WHEN ? THEN ? ".repeat(n);
        format!(
            "UPDATE users FORCE INDEX (PRIMARY) SET credit = credit - CASE id {when}END, \
             rate_tat = COALESCE(CASE id {when}END, rate_tat), \
             low_credit_notified = low_credit_notified OR CASE id {when}END \
             WHERE id IN ({}) AND credit - held >= CASE id {when}END",
            marks(n)
        )
    })
}

fn note_keys_sql(n: usize) -> &'static str {
    static T: OnceLock<Vec<&'static str>> = OnceLock::new();
    sized(&T, n, |n| {
        format!(
            "UPDATE api_keys FORCE INDEX (PRIMARY) SET last_used_at = NOW(3) WHERE id IN ({})",
            marks(n)
        )
    })
}

/// The name to look up, or `UnknownUser` without asking the database. A
/// name that cannot exist must not reach it: `users.username` is ASCII with
/// a PAD SPACE collation, so MariaDB fails on a non-ASCII name (a 503, not a
/// miss) and finds `alice` for `alice ` (a token sent as `alice :T` worked).
pub fn lookup_name(credentials: &Credentials) -> Result<Username, AuthFailure> {
    Username::parse(&credentials.username).map_err(|_| {
        token::verify_dummy(&credentials.token);
        AuthFailure::UnknownUser
    })
}

/// Finds and authenticates the user; with `for_update`, locks the row for
/// the rest of the transaction. The token is hashed once, whatever follows,
/// and every outcome does the same compare, so timing tells an unknown user
/// from a wrong or expired key no more than the one query does.
pub fn lock(
    conn: &mut impl Queryable,
    sql: &Statements,
    name: &Username,
    token: &str,
    for_update: bool,
) -> Result<Result<Account, AuthFailure>, DbError> {
    let hash = token::hash(token);
    let query = if for_update {
        ACCOUNT_FOR_UPDATE
    } else {
        ACCOUNT_QUERY
    };
    let row: Option<mysql::Row> = conn.exec_first(sql.get(query), (&hash, name.as_str()))?;
    Ok(authenticate(row, &hash, name))
}

/// The ids of these users (a name without a row is left out). Read before
/// a batch's transaction, so that its rows can be locked by id, in id order.
pub fn ids_of(
    conn: &mut impl Queryable,
    sql: &Statements,
    names: &[&str],
) -> Result<HashMap<String, u64>, DbError> {
    let names = padded(names);
    Ok(conn
        .exec(sql.get(ids_sql(names.len())), names)?
        .into_iter()
        .collect())
}

/// A user's row as a batch locked it, before any key is checked.
pub struct Locked {
    account: Account,
    disabled: bool,
}

impl Locked {
    /// The row's user name.
    pub fn name(&self) -> &str {
        &self.account.username
    }
}

/// Locks the rows of `ids` in ONE statement, `FOR UPDATE SKIP LOCKED`: a row
/// locked elsewhere (an admin's transaction, another instance's batch, a
/// single request) is left out instead of waited for, so that one locked
/// user never holds up the others in the batch; the caller sends those
/// requests down the path that waits. The primary key is read in ascending
/// order, so rows are locked in id order, the same order on every instance.
/// `FORCE INDEX`: on a small table the optimizer prefers a full scan, which
/// locks (and here, skips) every row it reads, not only the batch's: the
/// batch's statements that lock rows by id all name the primary key.
pub fn lock_many(
    tx: &mut mysql::Transaction<'_>,
    sql: &Statements,
    ids: &[u64],
) -> Result<HashMap<u64, Locked>, DbError> {
    let ids = padded(ids);
    let rows: Vec<mysql::Row> = tx.exec(sql.get(lock_many_sql(ids.len())), ids)?;
    Ok(rows
        .iter()
        .map(|row| {
            let disabled = row.get::<bool, _>(5).unwrap_or(true);
            let account = from_row(row);
            (account.id, Locked { account, disabled })
        })
        .collect())
}

/// A key as a batch reads it: its id, whether it works now, whether its
/// use is due to be noted.
#[derive(Debug, Clone, Copy)]
pub struct KeyRow {
    id: u64,
    works: bool,
    use_due: bool,
}

/// The keys of `users` whose hash is one of `hashes`, by (user, hash): one
/// read for the whole batch, after its rows are locked (the snapshot is
/// taken then, as the single request's join reads them under its lock).
pub fn keys_of(
    tx: &mut mysql::Transaction<'_>,
    sql: &Statements,
    users: &[u64],
    hashes: &[&str],
) -> Result<HashMap<(u64, String), KeyRow>, DbError> {
    // Both lists padded to one size: 7 statements, not 49.
    let n = users.len().max(hashes.len()).next_power_of_two();
    let (mut users, mut hashes) = (users.to_vec(), hashes.to_vec());
    users.resize(n, users[0]);
    hashes.resize(n, hashes[0]);
    let params: Vec<mysql::Value> = users
        .iter()
        .map(|u| mysql::Value::from(*u))
        .chain(hashes.iter().map(|h| mysql::Value::from(*h)))
        .collect();
    let rows: Vec<(u64, String, u64, bool, bool)> = tx.exec(sql.get(keys_sql(n)), params)?;
    Ok(rows
        .into_iter()
        .map(|(user, hash, id, works, use_due)| {
            let key = KeyRow { id, works, use_due };
            ((user, hash), key)
        })
        .collect())
}

/// `authenticate` for a row locked by `lock_many` and its key as
/// `keys_of` found it (`None`: no key of this user has `hash`): the same
/// checks in the same order, with the same constant-time compare.
pub fn authenticate_locked(
    locked: &Locked,
    hash: &str,
    key: Option<&KeyRow>,
) -> Result<Account, AuthFailure> {
    const DUMMY: &str = "0000000000000000000000000000000000000000000000000000000000000000";
    // The compare a stored hash gets, done whatever was found.
    let against = key.map_or(DUMMY, |_| hash);
    let matched = token::constant_time_eq(hash.as_bytes(), against.as_bytes());
    let Some(key) = key.filter(|_| matched) else {
        return Err(AuthFailure::WrongToken);
    };
    if !key.works {
        Err(AuthFailure::KeyNotValid)
    } else if locked.disabled {
        Err(AuthFailure::Disabled)
    } else {
        let mut account = locked.account.clone();
        account.key_id = key.id;
        account.key_use_due = key.use_due;
        Ok(account)
    }
}

/// `list` with its last item repeated up to a power of two: an `IN` list
/// of 1, 2, 4 … 64 items, so that a connection prepares a handful of
/// statements, not one per batch size (the driver keeps 512 per
/// connection; two lists of 1–64 each would make 4,096). A repeated item
/// changes nothing in an `IN`.
fn padded<T: Clone>(list: &[T]) -> Vec<T> {
    let mut out = list.to_vec();
    if let Some(last) = list.last() {
        out.resize(list.len().next_power_of_two(), last.clone());
    }
    out
}

/// `?, ?, …`: `n` placeholders for an `IN` list.
fn marks(n: usize) -> String {
    let mut s = "?, ".repeat(n);
    s.truncate(s.len().saturating_sub(2));
    s
}

/// Who a service's call is for: the end user's credentials, as they sent
/// them to the service, or a user the service authenticated itself.
#[derive(Debug, Clone)]
pub enum Who {
    Credentials(Credentials),
    User(Username),
}

impl Who {
    /// The name the caller gave, for answers (even a refused one).
    pub fn name(&self) -> &str {
        match self {
            Who::Credentials(c) => &c.username,
            Who::User(u) => u.as_str(),
        }
    }
}

/// Finds, authenticates (by key, for credentials) and locks the user's row.
pub fn lock_who(
    conn: &mut impl Queryable,
    sql: &Statements,
    who: &Who,
) -> Result<Result<Account, AuthFailure>, DbError> {
    match who {
        Who::Credentials(c) => match lookup_name(c) {
            Ok(name) => lock(conn, sql, &name, &c.token, true),
            Err(why) => Ok(Err(why)),
        },
        Who::User(name) => lock_by_name(conn, sql, name),
    }
}

/// Finds and locks the user's row by name without a key: the service that
/// asks has authenticated the user itself.
pub fn lock_by_name(
    conn: &mut impl Queryable,
    sql: &Statements,
    name: &Username,
) -> Result<Result<Account, AuthFailure>, DbError> {
    let row: Option<mysql::Row> = conn.exec_first(sql.get(ACCOUNT_BY_NAME), (name.as_str(),))?;
    Ok(trusted(row))
}

fn authenticate(
    row: Option<mysql::Row>,
    hash: &str,
    name: &Username,
) -> Result<Account, AuthFailure> {
    const DUMMY: &str = "0000000000000000000000000000000000000000000000000000000000000000";
    let Some(row) = row else {
        let _ = token::constant_time_eq(hash.as_bytes(), DUMMY.as_bytes());
        return Err(AuthFailure::UnknownUser);
    };
    let stored: Option<String> = row.get(KEY_COLUMN + 1).flatten();
    let matched = token::constant_time_eq(
        hash.as_bytes(),
        stored.as_deref().unwrap_or(DUMMY).as_bytes(),
    );
    let works: Option<bool> = row.get(KEY_COLUMN + 2).flatten();
    let disabled: bool = row.get(5).unwrap_or(true);
    if !matched {
        Err(AuthFailure::WrongToken)
    } else if works != Some(true) {
        Err(AuthFailure::KeyNotValid)
    } else if disabled {
        Err(AuthFailure::Disabled)
    } else {
        Ok(account(&row, name.as_str()))
    }
}

/// Where the key's columns start in an account query's row.
const KEY_COLUMN: usize = 16;

/// The account of a row read without a key (`ACCOUNT_BY_NAME`,
/// `ACCOUNT_BY_ID`): only a disabled user is refused.
fn trusted(row: Option<mysql::Row>) -> Result<Account, AuthFailure> {
    let row = row.ok_or(AuthFailure::UnknownUser)?;
    if row.get::<bool, _>(5).unwrap_or(true) {
        return Err(AuthFailure::Disabled);
    }
    Ok(from_row(&row))
}

/// The account of a row of `user_columns!` and a key's (or `no_key!`)
/// columns, as the first columns of `row`.
pub(crate) fn from_row(row: &mysql::Row) -> Account {
    let name: String = row.get(14).unwrap_or_default();
    account(row, &name)
}

fn account(row: &mysql::Row, name: &str) -> Account {
    let quota: Option<u32> = row.get(7).flatten();
    let window: Option<u32> = row.get(8).flatten();
    Account {
        id: row.get(0).unwrap_or(0),
        username: name.to_string(),
        credit: row.get(1).unwrap_or(0),
        held: row.get(13).unwrap_or(0),
        monthly_credit: row.get(2).flatten(),
        refill_day: row.get(3).unwrap_or(1),
        credit_period: row.get(4).flatten(),
        email: row.get(6).flatten(),
        rate: quota
            .zip(window)
            .map(|(quota, window_secs)| RateLimit { quota, window_secs }),
        rate_tat: row.get(9).flatten(),
        low_credit: row.get(10).flatten(),
        low_credit_notified: row.get(11).unwrap_or(false),
        credit_exhausted: row.get(15).unwrap_or(false),
        key_id: row.get::<Option<u64>, _>(KEY_COLUMN).flatten().unwrap_or(0),
        key_use_due: row
            .get::<Option<bool>, _>(KEY_COLUMN + 3)
            .flatten()
            .unwrap_or(false),
        now_us: row.get(12).unwrap_or(0),
    }
}

impl Account {
    /// What the user may spend: the credit not held by open holds.
    pub fn available(&self) -> i64 {
        self.credit - self.held
    }

    pub fn next_refill(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.monthly_credit?;
        let day = RefillDay::parse(self.refill_day as i64).unwrap_or_default();
        let period = self
            .credit_period
            .as_deref()
            .and_then(|p| Period::parse(p).ok());
        Some(next_refill(now, day, period))
    }

    /// `credit.exhausted` was sent and the credit has not come back since
    /// (as the row was read).
    pub fn credit_exhausted(&self) -> bool {
        self.credit_exhausted
    }

    /// The refill period (`YYYY-MM`) the credit belongs to; `None` before
    /// the first refill.
    pub fn credit_period(&self) -> Option<&str> {
        self.credit_period.as_deref()
    }

    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rate
    }

    pub fn rate_tat(&self) -> Option<i64> {
        self.rate_tat
    }

    /// The database's clock when the row was read, µs since the epoch.
    pub fn now_us(&self) -> i64 {
        self.now_us
    }

    /// The notice's flag once the available credit is `after`: set when
    /// this change crossed the threshold (`crossed`), re-armed once back at
    /// or above it, else as it was. For writes that cannot compute it in
    /// SQL (a multi-table UPDATE has no order of assignments).
    pub fn notified_after(&self, after: i64, crossed: bool) -> bool {
        match self.low_credit {
            _ if crossed => true,
            Some(threshold) if after >= threshold => false,
            _ => self.low_credit_notified,
        }
    }

    /// The limiter's word on this request, spending nothing: `Ok(None)` for
    /// a user without a limit, `Err` when it refuses.
    pub fn rate_check(&self) -> Result<Option<RateState>, RateState> {
        let Some(limit) = self.rate else {
            return Ok(None);
        };
        let decision = ratelimit::decide(self.rate_tat, self.now_us, limit);
        let state = RateState { limit, decision };
        if decision.allowed {
            Ok(Some(state))
        } else {
            Err(state)
        }
    }

    /// The limiter's state as it stands, for answers it does not decide
    /// (an idempotent replay).
    pub fn rate_now(&self) -> Option<RateState> {
        self.rate.map(|limit| RateState {
            limit,
            decision: ratelimit::peek(self.rate_tat, self.now_us, limit),
        })
    }
}

/// What changes of a user's row while a coalesced batch decides its
/// requests, before the one write at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Running {
    pub credit: i64,
    pub rate_tat: Option<i64>,
    pub low_credit_notified: bool,
}

impl Account {
    pub fn running(&self) -> Running {
        Running {
            credit: self.credit,
            rate_tat: self.rate_tat,
            low_credit_notified: self.low_credit_notified,
        }
    }

    /// This account as the batch has left it so far.
    pub fn with_running(mut self, r: Running) -> Account {
        self.credit = r.credit;
        self.rate_tat = r.rate_tat;
        self.low_credit_notified = r.low_credit_notified;
        self
    }

    /// The key that authenticated, and whether its use is due to be noted.
    pub fn key(&self) -> (u64, bool) {
        (self.key_id, self.key_use_due)
    }

    /// What `debit` would do, in memory: the row after it (`None` when the
    /// credit is short) and the low-credit notice it makes due.
    pub fn plan_debit(&self, cost: i64) -> Option<(Running, Option<LowCredit>)> {
        if self.available() < cost {
            return None;
        }
        let low = crossed_low_credit(self, self.available(), self.available() - cost);
        Some((
            Running {
                credit: self.credit - cost,
                rate_tat: self.rate_tat,
                low_credit_notified: self.low_credit_notified || low.is_some(),
            },
            low,
        ))
    }
}

/// The one write of a coalesced batch: `taken` credits off, the limiter's
/// and the notice's state as the batch left them. The same write as `debit`.
pub fn write_batch(
    tx: &mut mysql::Transaction<'_>,
    sql: &Statements,
    user_id: u64,
    taken: i64,
    end: Running,
) -> Result<(), DbError> {
    take(
        tx,
        sql,
        user_id,
        taken,
        end.rate_tat,
        end.low_credit_notified,
    )
}

/// The one write of a coalesced batch of many users: each user's `taken`
/// credits off and the limiter's and the notice's state as the batch left
/// them, in ONE statement (`CASE id WHEN …`), guarded per row as `take` is;
/// one user alone takes `write_batch`'s prepared statement. Padded to a
/// power of two by repeating the last user (a repeated `WHEN` or `IN` item
/// changes nothing). Every listed row must change, as under the row locks
/// it does: if one does not, the rows changed under us and the batch is
/// retried from the start.
pub fn write_many(
    tx: &mut mysql::Transaction<'_>,
    sql: &Statements,
    changes: &[(u64, i64, Running)],
) -> Result<(), DbError> {
    let [first, ..] = changes else {
        return Ok(());
    };
    if changes.len() == 1 {
        return write_batch(tx, sql, first.0, first.1, first.2);
    }
    let padded = padded(changes);
    let mut params: Vec<mysql::Value> = Vec::with_capacity(padded.len() * 9);
    for (id, taken, _) in &padded {
        params.extend([(*id).into(), (*taken).into()]);
    }
    for (id, _, end) in &padded {
        params.extend([(*id).into(), end.rate_tat.into()]);
    }
    for (id, _, end) in &padded {
        params.extend([(*id).into(), end.low_credit_notified.into()]);
    }
    params.extend(padded.iter().map(|(id, ..)| mysql::Value::from(*id)));
    for (id, taken, _) in &padded {
        params.extend([(*id).into(), (*taken).into()]);
    }
    tx.exec_drop(sql.get(write_many_sql(padded.len())), params)?;
    if tx.affected_rows() != changes.len() as u64 {
        return Err(DbError::conflict("the credit changed under the row locks"));
    }
    Ok(())
}

/// Takes `cost` off the locked row with the limiter's new state and the
/// notice's flag. Relative and guarded: under the row lock it always
/// applies; if it does not, the row changed under us (a multi-writer
/// cluster), and the transaction is retried from the start.
fn take(
    tx: &mut mysql::Transaction<'_>,
    sql: &Statements,
    user_id: u64,
    cost: i64,
    tat: Option<i64>,
    notified: bool,
) -> Result<(), DbError> {
    tx.exec_drop(sql.get(TAKE), (cost, tat, notified, user_id, cost))?;
    if tx.affected_rows() != 1 {
        return Err(DbError::conflict("the credit changed under the row lock"));
    }
    Ok(())
}

/// Records the key's use, at most once a minute: a key's last use is
/// shown exact to the minute, and a write per request would cost a row
/// update on every paid call.
pub fn touch_key(conn: &mut impl Queryable, account: &Account) -> Result<(), DbError> {
    if account.key_use_due {
        note_key_use(conn, account.key_id)?;
    }
    Ok(())
}

/// The key-use write itself, for `touch_key` and a batch's one write.
pub fn note_key_use(conn: &mut impl Queryable, key_id: u64) -> Result<(), DbError> {
    conn.exec_drop(
        "UPDATE api_keys SET last_used_at = NOW(3) WHERE id = ?",
        (key_id,),
    )?;
    Ok(())
}

/// The key-use write of a coalesced batch: every key due, at once.
pub fn note_keys_used(
    conn: &mut impl Queryable,
    sql: &Statements,
    ids: &[u64],
) -> Result<(), DbError> {
    match ids {
        [] => Ok(()),
        [id] => note_key_use(conn, *id),
        _ => {
            let ids = padded(ids);
            Ok(conn.exec_drop(sql.get(note_keys_sql(ids.len())), ids)?)
        }
    }
}

/// Gives `amount` back to the user's row, locked for it, and takes it back
/// out of the usage of `key_id` at `endpoint` on `day` (the row the charge
/// was counted in; the call itself stays counted),
/// with a `refund` ledger row of delta 0 and the balance after: the credit
/// returns through usage, so that
/// `credit = Σ credit_events.delta − Σ usage_daily.credits` holds. Returns
/// the available credit after it.
pub fn give_back(
    tx: &mut mysql::Transaction<'_>,
    user_id: u64,
    key_id: u64,
    amount: i64,
    day: NaiveDate,
    endpoint: &str,
    actor: &str,
) -> Result<i64, DbError> {
    let row: Option<(i64, i64)> = tx.exec_first(
        "SELECT credit, held FROM users WHERE id = ? FOR UPDATE",
        (user_id,),
    )?;
    let (credit, held) = row.unwrap_or((0, 0));
    let credit = credit + amount;
    if amount > 0 {
        tx.exec_drop(
            format!("UPDATE users SET credit = credit + ?, {REARM_LOW_CREDIT} WHERE id = ?"),
            (amount, user_id),
        )?;
        tx.exec_drop(
            "UPDATE usage_daily SET credits = credits - ? \
             WHERE user_id = ? AND key_id = ? AND day = ? AND endpoint = ?",
            (
                amount,
                user_id,
                key_id,
                day.format("%Y-%m-%d").to_string(),
                endpoint,
            ),
        )?;
        ledger::record(
            tx,
            &Event {
                user_id,
                delta: 0,
                balance_after: credit,
                reason: Reason::Refund,
                period: None,
                actor,
            },
        )?;
    }
    Ok(credit - held)
}

/// Writes what `decide` said of one request on its locked row: the key's
/// use, the limiter's new state, and for a debit the cost and the usage
/// (counted under `endpoint`). A replay or a refusal by the limit writes
/// nothing. A 402 still counts against the limit, so its state is written.
pub fn apply<R>(
    tx: &mut mysql::Transaction<'_>,
    sql: &Statements,
    account: &Account,
    outcome: &Outcome<R>,
    endpoint: &str,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    let Outcome::Counted { verdict, rate, .. } = outcome else {
        return Ok(());
    };
    touch_key(tx, account)?;
    let tat = rate.map(|r| r.decision.new_tat);
    match verdict {
        Verdict::Unpriced | Verdict::Insufficient(_) => save_rate(tx, account, tat)?,
        Verdict::Debited {
            cost, low_credit, ..
        } => {
            if *cost > 0 || tat.is_some() {
                take(tx, sql, account.id, *cost, tat, low_credit.is_some())?;
            }
            let day = now.date_naive();
            usage::record(tx, sql, account.id, account.key_id, day, endpoint, *cost)?;
        }
    }
    // In the same transaction: an event exists exactly when its cause does.
    outbox::after_decision(tx, account, verdict)
}

/// Counts a request that reserves instead of debiting (a gateway route
/// priced by its upstream places a hold): the key's use and the limiter's
/// new state, as `apply` writes them for a debit.
pub fn count(
    conn: &mut impl Queryable,
    account: &Account,
    rate: Option<&RateState>,
) -> Result<(), DbError> {
    touch_key(conn, account)?;
    save_rate(conn, account, rate.map(|r| r.decision.new_tat))
}

/// Writes the limiter's new state when nothing is debited (a 402, an
/// unknown bank): the request still counts.
fn save_rate(
    conn: &mut impl Queryable,
    account: &Account,
    tat: Option<i64>,
) -> Result<(), DbError> {
    if let Some(tat) = tat {
        conn.exec_drop(
            "UPDATE users SET rate_tat = ? WHERE id = ?",
            (tat, account.id),
        )?;
    }
    Ok(())
}

/// The notice is due when this charge takes the available credit from at
/// or above the threshold to below it and none was sent since the last
/// re-arm.
pub(crate) fn crossed_low_credit(account: &Account, before: i64, after: i64) -> Option<LowCredit> {
    let threshold = account.low_credit?;
    let crossed = before >= threshold && after < threshold;
    (crossed && !account.low_credit_notified).then(|| LowCredit {
        username: account.username.clone(),
        email: account.email.clone(),
        credit: after,
        threshold,
    })
}

/// SQL for an UPDATE that raised the available credit: re-arms the notice
/// once it is back at or above the threshold (assignments run left to
/// right, so `credit` and `held` are already the new ones when this comes
/// last), and re-arms `credit.exhausted` (the credit came back).
pub const REARM_LOW_CREDIT: &str = "low_credit_notified = \
     IF(low_credit IS NOT NULL AND credit - held >= low_credit, FALSE, low_credit_notified), \
     credit_exhausted = FALSE";

#[cfg(test)]
impl Account {
    /// An authenticated account without a limit or a threshold, for the
    /// unit tests of the decision.
    pub(crate) fn for_test(credit: i64, monthly_credit: Option<i64>) -> Account {
        Account {
            id: 1,
            username: "alice".into(),
            credit,
            held: 0,
            monthly_credit,
            refill_day: 1,
            credit_period: None,
            email: None,
            rate: None,
            rate_tat: None,
            low_credit: None,
            low_credit_notified: false,
            credit_exhausted: false,
            key_id: 1,
            key_use_due: false,
            now_us: 1_000_000_000_000,
        }
    }

    pub(crate) fn with_limit(mut self, limit: RateLimit) -> Account {
        self.rate = Some(limit);
        self
    }

    pub(crate) fn with_held(mut self, held: i64) -> Account {
        self.held = held;
        self
    }

    pub(crate) fn with_low_credit(mut self, threshold: i64) -> Account {
        self.low_credit = Some(threshold);
        self
    }

    pub(crate) fn running_now_us(&self) -> i64 {
        self.now_us
    }
}
