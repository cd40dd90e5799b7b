//! Holds: reserve credit first, charge the real price after. A hold takes
//! its amount out of what the user may spend (`users.held`) in the same
//! row-locked transaction that checks the credit, so N concurrent holds of
//! h on a balance B grant exactly ⌊B/h⌋; a capture charges the real price
//! and frees the rest; a release or the expiry job frees it all. Every
//! settlement locks the user's row first, then the hold's, and acts only
//! on an open hold: each hold is settled exactly once, by whichever
//! instance comes first.
//!
//! The money rule of a capture is `split` (pure); the decision to grant a
//! hold is the one money decision (`decide`), asked with the hold's amount
//! as the cost: the same order of checks as every paid path.

use chrono::{DateTime, Utc};
use mysql::prelude::Queryable;
use mysql::TxOpts;
use serde::Serialize;

use super::account::{self, Account, AuthFailure, LowCredit, RateState, Who};
use super::decide::{decide, Insufficient, Outcome, Verdict};
use super::ratelimit;
use super::usage;
use crate::db::{self, DbError, Pool, Statements};
use crate::model::Username;

/// At most this many open holds per user (400 `too_many_holds`): a
/// runaway client cannot grow the table without bound.
pub const MAX_OPEN_PER_USER: i64 = 10_000;

/// A hold lasts at most a day.
pub const MAX_TTL_SECS: i64 = 86_400;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    #[default]
    Open,
    Captured,
    Released,
    Expired,
}

impl HoldState {
    fn parse(s: &str) -> HoldState {
        match s {
            "captured" => HoldState::Captured,
            "released" => HoldState::Released,
            "expired" => HoldState::Expired,
            _ => HoldState::Open,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HoldState::Open => "open",
            HoldState::Captured => "captured",
            HoldState::Released => "released",
            HoldState::Expired => "expired",
        }
    }
}

/// A hold as a service sees it. (`Default`: an empty open hold, for
/// templates' tests; holds themselves are only read from the database.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Hold {
    pub id: u64,
    pub user: String,
    pub amount: i64,
    pub state: HoldState,
    pub endpoint: String,
    /// RFC 3339, UTC, to the millisecond.
    pub created_at: String,
    pub expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub captured: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uncollected: Option<i64>,
    #[serde(skip)]
    pub credit_after: Option<i64>,
    #[serde(skip)]
    user_id: u64,
    #[serde(skip)]
    service_id: Option<u64>,
    /// Past `expires_at` by the database's clock.
    #[serde(skip)]
    past_expiry: bool,
    /// The key that authenticated the request that placed it (0: none):
    /// its capture is counted in that key's usage.
    #[serde(skip)]
    key_id: u64,
}

/// A hold's columns, in `hold_at`'s order.
macro_rules! hold_fields {
    () => {
        "h.id, u.username, h.amount, h.state, h.endpoint, \
         DATE_FORMAT(h.created_at, '%Y-%m-%dT%H:%i:%s.%fZ'), \
         DATE_FORMAT(h.expires_at, '%Y-%m-%dT%H:%i:%s.%fZ'), \
         h.captured, h.uncollected, h.credit_after, h.user_id, h.service_id, \
         h.expires_at <= NOW(3), h.key_id"
    };
}

const HOLD_COLUMNS: &str = concat!(
    hold_fields!(),
    " FROM holds h JOIN users u ON u.id = h.user_id"
);

/// A settlement's one lookup: hold `?` of service `?` (NULL-safe: a
/// gateway's holds have none) and its user, both rows locked (a locking
/// read sees them as last committed, whatever a snapshot held). Every
/// settlement, the expiry included, locks through this one query, so
/// always in one order.
pub const SETTLE_LOCK: &str = concat!(
    account::user_columns!(),
    account::no_key!(),
    ", ",
    hold_fields!(),
    " FROM holds h JOIN users u ON u.id = h.user_id \
     WHERE h.id = ? AND h.service_id <=> ? FOR UPDATE"
);

/// Where the hold's columns start in a `SETTLE_LOCK` row.
const SETTLE_HOLD_AT: usize = 19;

/// Locks hold `id` of `service` and its user; `None`: no such hold.
fn lock_settlement(
    tx: &mut impl Queryable,
    sql: &Statements,
    id: u64,
    service: Option<u64>,
) -> Result<Option<(Account, Hold)>, DbError> {
    let row: Option<mysql::Row> = tx.exec_first(sql.get(SETTLE_LOCK), (id, service))?;
    Ok(row.map(|row| (account::from_row(&row), hold_at(&row, SETTLE_HOLD_AT))))
}

impl Hold {
    /// Still open past `expires_at` (by the database's clock when read):
    /// its amount stays held until the `expire-holds` job or its service
    /// settles it.
    pub fn is_past_expiry(&self) -> bool {
        self.past_expiry
    }
}

fn hold_from(row: mysql::Row) -> Hold {
    hold_at(&row, 0)
}

/// The hold in `row`'s columns from `at` on.
fn hold_at(row: &mysql::Row, at: usize) -> Hold {
    let millis = |s: String| match s.len() {
        // %f is microseconds: keep milliseconds.
        n if n > 5 => format!("{}Z", &s[..n - 4]),
        _ => s,
    };
    let state: String = row.get(at + 3).unwrap_or_default();
    Hold {
        id: row.get(at).unwrap_or(0),
        user: row.get(at + 1).unwrap_or_default(),
        amount: row.get(at + 2).unwrap_or(0),
        state: HoldState::parse(&state),
        endpoint: row.get(at + 4).unwrap_or_default(),
        created_at: millis(row.get(at + 5).unwrap_or_default()),
        expires_at: millis(row.get(at + 6).unwrap_or_default()),
        captured: row.get(at + 7).flatten(),
        uncollected: row.get(at + 8).flatten(),
        credit_after: row.get(at + 9).flatten(),
        user_id: row.get(at + 10).unwrap_or(0),
        service_id: row.get(at + 11).flatten(),
        past_expiry: row.get(at + 12).unwrap_or(false),
        key_id: row.get(at + 13).unwrap_or(0),
    }
}

fn read_hold(conn: &mut impl Queryable, id: u64) -> Result<Option<Hold>, DbError> {
    let row: Option<mysql::Row> =
        conn.exec_first(format!("SELECT {HOLD_COLUMNS} WHERE h.id = ?"), (id,))?;
    Ok(row.map(hold_from))
}

/// A request for a hold, from service `service_id`.
pub struct Place<'a> {
    pub service_id: u64,
    pub who: &'a Who,
    pub amount: i64,
    pub ttl_secs: u32,
    pub endpoint: &'a str,
    pub now: DateTime<Utc>,
}

/// Why a paid decision said no: the charge API's and the holds' refusals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Unauthorized(AuthFailure),
    RateLimited {
        rate: RateState,
        credit_available: i64,
    },
    Insufficient(Insufficient),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    Granted {
        hold: Hold,
        credit_available: i64,
    },
    Refused(Refusal),
    /// The user has `MAX_OPEN_PER_USER` open holds already.
    TooMany,
}

/// Places a hold inside `tx`: lock and authenticate, the one decision with
/// the amount as the cost, then the hold and `held` in step. The limiter is
/// asked but not spent: the call counts once, at its capture.
pub fn place(
    tx: &mut mysql::Transaction<'_>,
    sql: &Statements,
    req: &Place<'_>,
) -> Result<Placed, DbError> {
    let account = match account::lock_who(tx, sql, req.who)? {
        Ok(a) => a,
        Err(why) => return Ok(Placed::Refused(Refusal::Unauthorized(why))),
    };
    match decide::<()>(&account, None, Some(req.amount), req.now) {
        Outcome::RateLimited(rate) => {
            return Ok(Placed::Refused(Refusal::RateLimited {
                rate,
                credit_available: account.available(),
            }))
        }
        Outcome::Counted {
            verdict: Verdict::Insufficient(short),
            ..
        } => return Ok(Placed::Refused(Refusal::Insufficient(short))),
        _ => {}
    }
    // Every open hold holds at least 1, so below the cap in `held` there
    // is no need to count (the count costs a round trip per hold).
    if account.held >= MAX_OPEN_PER_USER && open_holds(tx, account.id)? >= MAX_OPEN_PER_USER {
        return Ok(Placed::TooMany);
    }
    let (id, created, expires) = insert(
        tx,
        &account,
        Some(req.service_id),
        req.amount,
        req.ttl_secs,
        req.endpoint,
    )?;
    account::touch_key(tx, &account)?;
    let hold = Hold {
        id,
        user: account.username.clone(),
        amount: req.amount,
        state: HoldState::Open,
        endpoint: req.endpoint.to_string(),
        created_at: created.rfc3339,
        expires_at: expires.rfc3339,
        captured: None,
        uncollected: None,
        credit_after: None,
        user_id: account.id,
        service_id: Some(req.service_id),
        past_expiry: false,
        key_id: account.key().0,
    };
    Ok(Placed::Granted {
        hold,
        credit_available: account.available() - req.amount,
    })
}

/// A gateway route's hold of `amount` on the locked `account`, whose
/// request the one decision has granted (its caller writes the count):
/// the hold's id.
pub fn place_for_route(
    tx: &mut mysql::Transaction<'_>,
    account: &Account,
    amount: i64,
    ttl_secs: u32,
    endpoint: &str,
) -> Result<u64, DbError> {
    Ok(insert(tx, account, None, amount, ttl_secs, endpoint)?.0)
}

/// The hold's row and `held` in step. Its times come from the database's
/// clock as read with the row, written as they are answered: no read back.
fn insert(
    tx: &mut mysql::Transaction<'_>,
    account: &Account,
    service_id: Option<u64>,
    amount: i64,
    ttl_secs: u32,
    endpoint: &str,
) -> Result<(u64, Stamp, Stamp), DbError> {
    let created = Stamp::at_us(account.now_us());
    let expires = Stamp::at_us(account.now_us() + i64::from(ttl_secs) * 1_000_000);
    tx.exec_drop(
        "INSERT INTO holds (user_id, service_id, key_id, endpoint, amount, created_at, expires_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            account.id,
            service_id,
            account.key().0,
            endpoint,
            amount,
            &created.sql,
            &expires.sql,
        ),
    )?;
    let id = tx.last_insert_id().unwrap_or(0);
    reserve(tx, account, amount)?;
    Ok((id, created, expires))
}

fn open_holds(tx: &mut impl Queryable, user_id: u64) -> Result<i64, DbError> {
    Ok(tx
        .exec_first(
            "SELECT COUNT(*) FROM holds WHERE user_id = ? AND state = 'open'",
            (user_id,),
        )?
        .unwrap_or(0))
}

/// A moment as the `holds` columns take it and as answers show it (the
/// millisecond, UTC: the session's time zone).
struct Stamp {
    sql: String,
    rfc3339: String,
}

impl Stamp {
    fn at_us(us: i64) -> Stamp {
        let t = DateTime::from_timestamp_micros(us - us.rem_euclid(1000)).unwrap_or_default();
        Stamp {
            sql: t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
            rfc3339: t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        }
    }
}

/// `held` grows by the hold, guarded like a charge by what may be spent.
fn reserve(
    conn: &mut mysql::Transaction<'_>,
    account: &Account,
    amount: i64,
) -> Result<(), DbError> {
    conn.exec_drop(
        "UPDATE users SET held = held + ? WHERE id = ? AND credit - held >= ?",
        (amount, account.id, amount),
    )?;
    if conn.affected_rows() != 1 {
        return Err(DbError::conflict("the credit changed under the row lock"));
    }
    Ok(())
}

/// What a capture of `n` takes from a hold of `hold` when the user may
/// spend `available` besides it: (captured, uncollected). Up to the hold,
/// the price; beyond it, as much as the available credit covers, never
/// more: the balance never goes below zero and what is missing is said.
pub fn split(hold: i64, n: i64, available: i64) -> (i64, i64) {
    let captured = if n <= hold {
        n
    } else {
        hold + (n - hold).min(available.max(0))
    };
    (captured, n - captured)
}

/// What a capture or release answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Settled now (`low_credit`: this capture crossed the threshold).
    Done {
        hold: Hold,
        credit_remaining: i64,
        low_credit: Option<LowCredit>,
    },
    /// The same call was made before: its answer again.
    Again { hold: Hold, credit_remaining: i64 },
    /// Settled otherwise before (or just expired): 409 naming the state.
    AlreadySettled(Hold),
    /// No such hold of this service: 404.
    Unknown,
}

/// What a settlement does to an open hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    Capture(i64),
    Release,
}

/// Captures or releases hold `id` of service `service_id`, exactly once,
/// inside `tx`.
pub fn settle(
    tx: &mut mysql::Transaction<'_>,
    sql: &Statements,
    service_id: u64,
    id: u64,
    how: Settle,
    now: DateTime<Utc>,
) -> Result<Settled, DbError> {
    settle_of(tx, sql, Some(service_id), id, how, now)
}

/// Captures or releases a gateway route's hold `id` (no service: the route
/// counted the call against the limit when it placed the hold).
pub fn settle_for_route(
    tx: &mut mysql::Transaction<'_>,
    sql: &Statements,
    id: u64,
    how: Settle,
    now: DateTime<Utc>,
) -> Result<Settled, DbError> {
    settle_of(tx, sql, None, id, how, now)
}

fn settle_of(
    tx: &mut mysql::Transaction<'_>,
    sql: &Statements,
    owner: Option<u64>,
    id: u64,
    how: Settle,
    now: DateTime<Utc>,
) -> Result<Settled, DbError> {
    let Some((account, hold)) = lock_settlement(tx, sql, id, owner)? else {
        return Ok(Settled::Unknown);
    };
    let counts = owner.is_some();
    match (hold.state, how) {
        (HoldState::Open, _) if hold.past_expiry => {
            end_hold(tx, &account, &hold, HoldState::Expired)?;
            let hold = read_hold(tx, id)?.unwrap_or(hold);
            Ok(Settled::AlreadySettled(hold))
        }
        (HoldState::Open, Settle::Release) => {
            end_hold(tx, &account, &hold, HoldState::Released)?;
            let credit_remaining = account.available() + hold.amount;
            let hold = read_hold(tx, id)?.unwrap_or(hold);
            Ok(Settled::Done {
                hold,
                credit_remaining,
                low_credit: None,
            })
        }
        (HoldState::Open, Settle::Capture(n)) => capture(tx, sql, &account, hold, n, counts, now),
        (HoldState::Captured, Settle::Capture(n))
            if hold.captured.unwrap_or(0) + hold.uncollected.unwrap_or(0) == n =>
        {
            let credit_remaining = hold.credit_after.unwrap_or(0);
            Ok(Settled::Again {
                hold,
                credit_remaining,
            })
        }
        (HoldState::Released, Settle::Release) => Ok(Settled::Again {
            hold,
            credit_remaining: account.available(),
        }),
        _ => Ok(Settled::AlreadySettled(hold)),
    }
}

/// Charges `n` against the open `hold` on the locked `account`: the split,
/// the credit, `held`, the limiter's count and the hold's answer (kept for
/// the same call again) in one guarded write of both rows, then the usage.
fn capture(
    tx: &mut mysql::Transaction<'_>,
    sql: &Statements,
    account: &Account,
    mut hold: Hold,
    n: i64,
    counts: bool,
    now: DateTime<Utc>,
) -> Result<Settled, DbError> {
    let (captured, uncollected) = split(hold.amount, n, account.available());
    let before = account.available();
    let after = before + hold.amount - captured;
    let low_credit = account::crossed_low_credit(account, before, after);
    // A service's hold counts against the limit now; a route's did when
    // it was placed.
    let tat = account
        .rate_limit()
        .filter(|_| counts)
        .map(|limit| ratelimit::spend(account.rate_tat(), account.now_us(), limit));
    tx.exec_drop(
        sql.get(CAPTURE),
        (
            captured,
            tat,
            account.notified_after(after, low_credit.is_some()),
            captured,
            uncollected,
            after,
            hold.id,
            account.id,
            captured,
        ),
    )?;
    if tx.affected_rows() != 2 {
        return Err(DbError::conflict("the credit changed under the row lock"));
    }
    usage::record(
        tx,
        sql,
        account.id,
        hold.key_id,
        now.date_naive(),
        &hold.endpoint,
        captured,
    )?;
    hold.state = HoldState::Captured;
    hold.captured = Some(captured);
    hold.uncollected = Some(uncollected);
    hold.credit_after = Some(after);
    Ok(Settled::Done {
        hold,
        credit_remaining: after,
        low_credit,
    })
}

/// A capture's one write of the user's row and the hold's: guarded by the
/// hold being open and the credit covering what is captured (always so
/// under the row lock; if not, the row changed under us and the
/// transaction is run again).
pub const CAPTURE: &str = "UPDATE users u JOIN holds h ON h.user_id = u.id \
     SET u.credit = u.credit - ?, u.held = u.held - h.amount, \
     u.rate_tat = COALESCE(?, u.rate_tat), u.low_credit_notified = ?, \
     h.state = 'captured', h.captured = ?, h.uncollected = ?, h.credit_after = ?, \
     h.settled_at = NOW(3) \
     WHERE h.id = ? AND h.state = 'open' AND u.id = ? AND u.held >= h.amount \
     AND u.credit - ? >= u.held - h.amount";

/// Frees an open hold: released by its service, or expired.
fn end_hold(
    tx: &mut mysql::Transaction<'_>,
    account: &Account,
    hold: &Hold,
    state: HoldState,
) -> Result<(), DbError> {
    tx.exec_drop(
        format!(
            "UPDATE users SET held = held - ?, {} WHERE id = ? AND held >= ?",
            account::REARM_LOW_CREDIT
        ),
        (hold.amount, account.id, hold.amount),
    )?;
    if tx.affected_rows() != 1 {
        return Err(DbError::conflict("held changed under the row lock"));
    }
    tx.exec_drop(
        "UPDATE holds SET state = ?, settled_at = NOW(3) WHERE id = ? AND state = 'open'",
        (state.as_str(), hold.id),
    )?;
    Ok(())
}

/// Hold `id` as its service sees it; `None` for another service's.
pub fn get(conn: &mut impl Queryable, service_id: u64, id: u64) -> Result<Option<Hold>, DbError> {
    Ok(read_hold(conn, id)?.filter(|h| h.service_id == Some(service_id)))
}

/// At most this many of a user's open holds are listed for operators.
pub const OPEN_LISTED: usize = 100;

/// A user's open holds, newest first, for operators.
pub fn open_of(conn: &mut impl Queryable, user_id: u64) -> Result<Vec<Hold>, DbError> {
    let rows: Vec<mysql::Row> = conn.exec(
        format!(
            "SELECT {HOLD_COLUMNS} WHERE h.user_id = ? AND h.state = 'open' \
             ORDER BY h.id DESC LIMIT {OPEN_LISTED}"
        ),
        (user_id,),
    )?;
    Ok(rows.into_iter().map(hold_from).collect())
}

/// `open_of` by the user's name (the console's page of a user); no user
/// of that name has none.
pub fn open_of_user(pool: &Pool, username: &Username) -> Result<Vec<Hold>, DbError> {
    let rows: Vec<mysql::Row> = pool.get()?.exec(
        format!(
            "SELECT {HOLD_COLUMNS} WHERE u.username = ? AND h.state = 'open' \
             ORDER BY h.id DESC LIMIT {OPEN_LISTED}"
        ),
        (username.as_str(),),
    )?;
    Ok(rows.into_iter().map(hold_from).collect())
}

/// Releases every open hold past its expiry as `expired`: one transaction
/// per hold, the user's row locked first and the hold re-read under it, so
/// several instances running this at once expire each hold once. Returns
/// how many this run expired.
pub fn expire_due(pool: &Pool) -> Result<u64, DbError> {
    let due: Vec<(u64, Option<u64>)> = pool.get()?.query(
        "SELECT id, service_id FROM holds WHERE state = 'open' AND expires_at <= NOW(3) \
         ORDER BY expires_at LIMIT 1000",
    )?;
    let mut expired = 0;
    for (id, service_id) in due {
        if pool.retrying(|| expire_one(pool, id, service_id))? {
            expired += 1;
        }
    }
    Ok(expired)
}

fn expire_one(pool: &Pool, id: u64, service_id: Option<u64>) -> Result<bool, DbError> {
    let mut conn = pool.get()?;
    let sql = conn.prepared(account::PER_REQUEST)?;
    let mut tx = conn.start_transaction(TxOpts::default())?;
    let Some((account, hold)) = lock_settlement(&mut tx, &sql, id, service_id)? else {
        return Ok(false);
    };
    if hold.state != HoldState::Open || !hold.past_expiry {
        return Ok(false); // settled by its service, or by another instance
    }
    end_hold(&mut tx, &account, &hold, HoldState::Expired)?;
    tx.commit().map_err(db::commit_failed)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_up_to_the_hold_charges_the_price() {
        assert_eq!(split(10, 10, 0), (10, 0));
        assert_eq!(split(10, 3, 0), (3, 0));
        assert_eq!(split(10, 0, 50), (0, 0));
    }

    #[test]
    fn beyond_the_hold_the_available_credit_covers_what_it_can() {
        assert_eq!(split(10, 11, 5), (11, 0));
        assert_eq!(split(10, 15, 5), (15, 0));
        assert_eq!(split(10, 16, 5), (15, 1));
        assert_eq!(split(10, 100, 0), (10, 90));
        // Never more than there is, whatever the row says.
        assert_eq!(split(10, 20, -3), (10, 10));
    }

    #[test]
    fn a_stamp_is_the_millisecond_in_utc_for_the_column_and_the_answer() {
        let s = Stamp::at_us(1_765_080_000_123_456);
        assert_eq!(s.sql, "2025-12-07 04:00:00.123");
        assert_eq!(s.rfc3339, "2025-12-07T04:00:00.123Z");
    }

    #[test]
    fn states_read_back_as_written() {
        for s in [
            HoldState::Open,
            HoldState::Captured,
            HoldState::Released,
            HoldState::Expired,
        ] {
            assert_eq!(HoldState::parse(s.as_str()), s);
        }
    }
}
