//! The database edge: the connection pool, connecting with a bounded retry,
//! and the schema migrations in `sql/` (compiled in, recorded in
//! `schema_migrations`). Business rules live in the domain modules.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql::prelude::{AsStatement, Queryable};
use mysql::{Opts, OptsBuilder, Statement};
use r2d2_mysql::MySqlConnectionManager;

pub type Conn = r2d2::PooledConnection<Manager>;

/// The connection pool, and how its users retry a transaction the database
/// rolled back (a deadlock, a lock wait timeout, a Galera certification
/// conflict). Derefs to the r2d2 pool.
#[derive(Clone)]
pub struct Pool {
    inner: r2d2::Pool<Manager>,
    retry: Retry,
}

impl std::ops::Deref for Pool {
    type Target = r2d2::Pool<Manager>;
    fn deref(&self) -> &r2d2::Pool<Manager> {
        &self.inner
    }
}

/// At most `attempts` retries of a transaction, all within `budget`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub attempts: u32,
    pub budget: Duration,
}

/// Default retries of a rolled-back transaction (`CREDITGATE_DB_RETRIES`).
pub const DEFAULT_RETRIES: u32 = 5;

/// An error that may be the database's "rolled back, try again".
pub trait Retryable {
    fn is_conflict(&self) -> bool;
}

impl Retryable for DbError {
    fn is_conflict(&self) -> bool {
        matches!(self, DbError::Conflict(_))
    }
}

impl Pool {
    /// The same pool with another retry policy.
    pub fn with_retry(mut self, retry: Retry) -> Pool {
        self.retry = retry;
        self
    }

    pub fn retry(&self) -> Retry {
        self.retry
    }

    /// Runs `transaction` and runs it again, after a jittered pause, while
    /// it fails with a conflict — the database rolled it back, so running
    /// it again cannot apply it twice — at most `retry.attempts` times and
    /// not past `retry.budget`. Anything else (and the last conflict) is
    /// returned as it is.
    pub fn retrying<T, E: Retryable>(
        &self,
        mut transaction: impl FnMut() -> Result<T, E>,
    ) -> Result<T, E> {
        let deadline = Instant::now() + self.retry.budget;
        let mut attempt = 0;
        loop {
            match transaction() {
                Err(e) if e.is_conflict() && attempt < self.retry.attempts => {
                    attempt += 1;
                    let pause = backoff(attempt);
                    if Instant::now() + pause >= deadline {
                        return Err(e);
                    }
                    log::debug!("transaction rolled back by a conflict; retry {attempt}");
                    std::thread::sleep(pause);
                }
                other => return other,
            }
        }
    }
}

/// Full jitter: a random pause below 2^attempt ms, at most 64 ms, so that
/// transactions that collided do not collide again in step.
fn backoff(attempt: u32) -> Duration {
    let cap_us = 1000u64 << attempt.min(6);
    let mut bytes = [0u8; 8];
    let random = match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => Instant::now().elapsed().subsec_nanos() as u64,
    };
    Duration::from_micros(random % cap_us + 100)
}

/// How long after a transaction committed a pooled connection is taken as
/// healthy without a ping.
const TRUST_AFTER_COMMIT: Duration = Duration::from_secs(1);

/// r2d2_mysql's manager, minus two round trips per request: r2d2 pings a
/// connection on checkout (`is_valid`) and r2d2_mysql pings it again on
/// return (`has_broken`). A connection whose last transaction committed a
/// moment ago (see `trust`) skips the checkout ping; every other checkout
/// pings, which is what finds and discards a broken connection, so the ping
/// on return is dropped.
#[derive(Debug)]
pub struct Manager {
    inner: MySqlConnectionManager,
}

/// A pooled MySQL connection; derefs to `mysql::Conn`.
#[derive(Debug)]
pub struct Connection {
    conn: mysql::Conn,
    trusted_until: Option<Instant>,
    /// The per-request statements, once prepared on this connection.
    statements: Option<Statements>,
}

/// Statements of the per-request path, prepared once per pooled connection
/// and kept with it (`Connection::prepared`). Run by SQL text, the driver
/// finds a statement in its cache only after parsing the whole text for
/// named parameters, on every call: ~4,800 instructions per statement and
/// 11 % of a paid request's instructions (callgrind). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Statements(Arc<Vec<(&'static str, Statement)>>);

/// A statement to run: prepared on this connection, or SQL text that the
/// driver prepares (and caches) on first use.
pub enum Stmt<'a> {
    Prepared(&'a Statement),
    Text(&'static str),
}

impl Statements {
    /// The statement for `sql`: the prepared one if `sql` is among them.
    pub fn get(&self, sql: &'static str) -> Stmt<'_> {
        match self.0.iter().find(|(text, _)| *text == sql) {
            Some((_, statement)) => Stmt::Prepared(statement),
            None => Stmt::Text(sql),
        }
    }
}

impl AsStatement for Stmt<'_> {
    fn as_statement<Q: Queryable>(&self, queryable: &mut Q) -> mysql::Result<Cow<'_, Statement>> {
        match self {
            Stmt::Prepared(statement) => Ok(Cow::Borrowed(statement)),
            Stmt::Text(sql) => queryable.prep(sql).map(Cow::Owned),
        }
    }
}

impl Connection {
    /// `sqls` prepared on this connection: at the first call, then kept.
    /// Every list a caller passes starts with the same statements (the
    /// per-request path's); a longer one (a coalesced batch's) prepares
    /// only what it adds, when first asked for, so that a connection of the
    /// per-request path never waits for statements it does not run (a new
    /// connection's first request pays for every statement prepared).
    pub fn prepared(&mut self, sqls: &[&'static str]) -> Result<Statements, DbError> {
        let have = self.statements.as_ref().map_or(0, |s| s.0.len());
        if let Some(statements) = &self.statements {
            if have >= sqls.len() {
                return Ok(statements.clone());
            }
        }
        let mut list: Vec<(&'static str, Statement)> = match &self.statements {
            Some(s) => s.0.as_ref().clone(),
            None => Vec::with_capacity(sqls.len()),
        };
        for sql in &sqls[have..] {
            list.push((*sql, self.conn.prep(sql)?));
        }
        let statements = Statements(Arc::new(list));
        self.statements = Some(statements.clone());
        Ok(statements)
    }
}

impl std::ops::Deref for Connection {
    type Target = mysql::Conn;
    fn deref(&self) -> &mysql::Conn {
        &self.conn
    }
}

impl std::ops::DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut mysql::Conn {
        &mut self.conn
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Connection;
    type Error = mysql::Error;

    fn connect(&self) -> Result<Connection, mysql::Error> {
        Ok(Connection {
            conn: self.inner.connect()?,
            trusted_until: None,
            statements: None,
        })
    }

    fn is_valid(&self, c: &mut Connection) -> Result<(), mysql::Error> {
        // Trust is spent on one checkout, so a connection that then fails is
        // pinged (and dropped) at the next one.
        match c.trusted_until.take() {
            Some(t) if Instant::now() < t => Ok(()),
            _ => self.inner.is_valid(&mut c.conn),
        }
    }

    fn has_broken(&self, _: &mut Connection) -> bool {
        false
    }
}

/// Marks a connection whose transaction just committed as healthy, so that
/// its next checkout needs no ping.
pub fn trust(conn: &mut Conn) {
    conn.trusted_until = Some(Instant::now() + TRUST_AFTER_COMMIT);
}

/// Every migration, in order. Forward-only: never edit one that has shipped.
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (
        1,
        "0001_create_users.sql",
        include_str!("../../sql/0001_create_users.sql"),
    ),
    (
        2,
        "0002_create_banks.sql",
        include_str!("../../sql/0002_create_banks.sql"),
    ),
    (
        3,
        "0003_create_credit_events.sql",
        include_str!("../../sql/0003_create_credit_events.sql"),
    ),
    (
        4,
        "0004_create_usage_daily.sql",
        include_str!("../../sql/0004_create_usage_daily.sql"),
    ),
    (
        5,
        "0005_seed_banks.sql",
        include_str!("../../sql/0005_seed_banks.sql"),
    ),
    (
        6,
        "0006_create_idempotency_keys.sql",
        include_str!("../../sql/0006_create_idempotency_keys.sql"),
    ),
    (
        7,
        "0007_create_routes.sql",
        include_str!("../../sql/0007_create_routes.sql"),
    ),
    (
        8,
        "0008_create_instances.sql",
        include_str!("../../sql/0008_create_instances.sql"),
    ),
    (
        9,
        "0009_create_api_keys.sql",
        include_str!("../../sql/0009_create_api_keys.sql"),
    ),
    (
        10,
        "0010_move_tokens_to_api_keys.sql",
        include_str!("../../sql/0010_move_tokens_to_api_keys.sql"),
    ),
    (
        11,
        "0011_drop_users_token.sql",
        include_str!("../../sql/0011_drop_users_token.sql"),
    ),
    (
        12,
        "0012_add_users_rate_limit.sql",
        include_str!("../../sql/0012_add_users_rate_limit.sql"),
    ),
    (
        13,
        "0013_add_users_low_credit.sql",
        include_str!("../../sql/0013_add_users_low_credit.sql"),
    ),
    (
        14,
        "0014_widen_usage_endpoint.sql",
        include_str!("../../sql/0014_widen_usage_endpoint.sql"),
    ),
    (
        15,
        "0015_widen_idempotency_key.sql",
        include_str!("../../sql/0015_widen_idempotency_key.sql"),
    ),
    (
        16,
        "0016_add_routes_max_in_flight.sql",
        include_str!("../../sql/0016_add_routes_max_in_flight.sql"),
    ),
    (
        17,
        "0017_add_idempotency_keys_answer.sql",
        include_str!("../../sql/0017_add_idempotency_keys_answer.sql"),
    ),
    (
        18,
        "0018_create_services.sql",
        include_str!("../../sql/0018_create_services.sql"),
    ),
    (
        19,
        "0019_add_users_held.sql",
        include_str!("../../sql/0019_add_users_held.sql"),
    ),
    (
        20,
        "0020_create_holds.sql",
        include_str!("../../sql/0020_create_holds.sql"),
    ),
    (
        21,
        "0021_create_service_idempotency_keys.sql",
        include_str!("../../sql/0021_create_service_idempotency_keys.sql"),
    ),
    (
        22,
        "0022_add_routes_max_cost.sql",
        include_str!("../../sql/0022_add_routes_max_cost.sql"),
    ),
    (
        23,
        "0023_create_route_charges.sql",
        include_str!("../../sql/0023_create_route_charges.sql"),
    ),
    (
        24,
        "0024_add_usage_key.sql",
        include_str!("../../sql/0024_add_usage_key.sql"),
    ),
    (
        25,
        "0025_create_webhooks.sql",
        include_str!("../../sql/0025_create_webhooks.sql"),
    ),
    (
        26,
        "0026_create_webhook_outbox.sql",
        include_str!("../../sql/0026_create_webhook_outbox.sql"),
    ),
    (
        27,
        "0027_add_users_credit_exhausted.sql",
        include_str!("../../sql/0027_add_users_credit_exhausted.sql"),
    ),
    (
        28,
        "0028_create_usage_thresholds.sql",
        include_str!("../../sql/0028_create_usage_thresholds.sql"),
    ),
];

pub fn expected_schema_version() -> u32 {
    MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}

#[derive(Debug)]
pub enum DbError {
    /// No connection could be had in time: the database is down or the pool
    /// is exhausted. Clients see 503.
    Unavailable(r2d2::Error),
    /// A statement failed.
    Query(mysql::Error),
    /// An INSERT hit a unique key (ER_DUP_ENTRY, 1062): the row exists.
    Duplicate(mysql::Error),
    /// The URL's database does not exist (ER_BAD_DB_ERROR, 1049).
    UnknownDatabase(mysql::Error),
    /// COMMIT failed, mostly because the connection broke while it ran:
    /// whether the database applied it cannot be known from here.
    CommitUnknown(mysql::Error),
    /// The database rolled the transaction back (ER_LOCK_DEADLOCK 1213, a
    /// lock wait timeout 1205; Galera reports its certification conflicts
    /// as 1213, also at COMMIT): nothing of it was applied, it may be run
    /// again (`Pool::retrying`).
    Conflict(mysql::Error),
    BadUrl(String),
    SchemaTooOld {
        have: u32,
        want: u32,
    },
    SchemaTooNew {
        have: u32,
        want: u32,
    },
    Migration {
        file: &'static str,
        source: mysql::Error,
    },
    MigrationLocked,
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Unavailable(e) => write!(f, "database unavailable: {e}"),
            DbError::Query(e) => write!(f, "database query failed: {e}"),
            DbError::Duplicate(e) => write!(f, "duplicate row: {e}"),
            DbError::UnknownDatabase(e) => write!(f, "no such database: {e}"),
            DbError::Conflict(e) => write!(f, "transaction rolled back by a conflict: {e}"),
            DbError::CommitUnknown(e) => write!(
                f,
                "COMMIT failed, so whether it was applied is unknown: {e}"
            ),
            DbError::BadUrl(e) => write!(f, "DATABASE_URL: {e}"),
            DbError::SchemaTooOld { have, want } => write!(
                f,
                "the database schema is at version {have}, this build needs {want}: run `creditgate migrate`"
            ),
            DbError::SchemaTooNew { have, want } => write!(
                f,
                "the database schema is at version {have}, newer than this build knows ({want}): upgrade creditgate"
            ),
            DbError::Migration { file, source } => write!(f, "migration {file} failed: {source}"),
            DbError::MigrationLocked => write!(f, "another `creditgate migrate` held its lock for 60 s"),
        }
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DbError::Unavailable(e) => Some(e),
            DbError::Query(e)
            | DbError::Duplicate(e)
            | DbError::UnknownDatabase(e)
            | DbError::Conflict(e)
            | DbError::CommitUnknown(e)
            | DbError::Migration { source: e, .. } => Some(e),
            _ => None,
        }
    }
}

impl DbError {
    /// A conflict the domain found itself (a guarded write that matched no
    /// row under the lock: the row changed, as on a multi-writer cluster):
    /// nothing of the transaction may stand, and it is run again like one
    /// the server rolled back (`Pool::retrying`).
    pub fn conflict(why: &str) -> DbError {
        DbError::Conflict(said(why))
    }

    /// A failure with no database error behind it (the thread that ran a
    /// shared transaction went away without an answer): a 503.
    pub fn failed(why: &str) -> DbError {
        DbError::Query(said(why))
    }

    /// This failure again, for another request that shared its
    /// transaction (`DbError` is not `Clone`): the class that decides the
    /// answer stays — in doubt stays in doubt, a conflict a conflict — with
    /// the first one's text.
    pub fn again(&self) -> DbError {
        let text = said(&self.to_string());
        match self {
            DbError::CommitUnknown(_) => DbError::CommitUnknown(text),
            DbError::Conflict(_) => DbError::Conflict(text),
            _ => DbError::Query(text),
        }
    }
}

/// An error of ours, in the shape the variants hold: no server error
/// number, so nothing reads it as one.
fn said(why: &str) -> mysql::Error {
    mysql::Error::IoError(std::io::Error::other(why.to_string()))
}

/// The server's error numbers the domain acts on. Every MySQL error code
/// is classified here and nowhere else.
const ER_DUP_ENTRY: u16 = 1062;
const ER_BAD_DB_ERROR: u16 = 1049;
const ER_LOCK_DEADLOCK: u16 = 1213;
const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;

fn is_conflict(e: &mysql::Error) -> bool {
    matches!(e, mysql::Error::MySqlError(m) if m.code == ER_LOCK_DEADLOCK || m.code == ER_LOCK_WAIT_TIMEOUT)
}

impl From<mysql::Error> for DbError {
    fn from(e: mysql::Error) -> Self {
        match &e {
            _ if is_conflict(&e) => DbError::Conflict(e),
            mysql::Error::MySqlError(m) if m.code == ER_DUP_ENTRY => DbError::Duplicate(e),
            mysql::Error::MySqlError(m) if m.code == ER_BAD_DB_ERROR => DbError::UnknownDatabase(e),
            _ => DbError::Query(e),
        }
    }
}

/// A failed COMMIT: a conflict the server reported was rolled back; any
/// other failure (mostly a connection lost while it ran) leaves it unknown
/// whether it was applied.
pub fn commit_failed(e: mysql::Error) -> DbError {
    if is_conflict(&e) {
        DbError::Conflict(e)
    } else {
        DbError::CommitUnknown(e)
    }
}

impl From<r2d2::Error> for DbError {
    fn from(e: r2d2::Error) -> Self {
        DbError::Unavailable(e)
    }
}

fn opts(url: &str) -> Result<OptsBuilder, DbError> {
    let opts = Opts::from_url(url).map_err(|e| DbError::BadUrl(e.to_string()))?;
    Ok(OptsBuilder::from_opts(opts)
        .tcp_connect_timeout(Some(Duration::from_secs(3)))
        // A database that stops answering mid-statement must not hold a
        // worker forever; lock waits are bounded below this.
        .read_timeout(Some(Duration::from_secs(15)))
        .write_timeout(Some(Duration::from_secs(15)))
        // The driver closes the statement its cache evicts, and `Statements`
        // holds some of them: room for every SQL text in the code (all are
        // constants, ~100), so that nothing is ever evicted.
        .stmt_cache_size(Some(512))
        // Days and timestamps are UTC whatever the server's zone.
        .init(vec![
            "SET time_zone = '+00:00'",
            "SET SESSION innodb_lock_wait_timeout = 10",
        ]))
}

/// A pool that connects lazily: building it never waits for the database.
pub fn pool(url: &str, max_size: u32, checkout_timeout: Duration) -> Result<Pool, DbError> {
    let manager = Manager {
        inner: MySqlConnectionManager::new(opts(url)?),
    };
    let inner = r2d2::Pool::builder()
        .max_size(max_size)
        .min_idle(Some(0))
        .connection_timeout(checkout_timeout)
        // r2d2 logs every failed connect attempt itself; ours say it once.
        .error_handler(Box::new(r2d2::NopErrorHandler))
        .build_unchecked(manager);
    Ok(Pool {
        inner,
        // Retries share the wait a request accepts for a connection.
        retry: Retry {
            attempts: DEFAULT_RETRIES,
            budget: checkout_timeout,
        },
    })
}

/// Waits until the database answers, for at most `limit`.
pub fn wait_until_ready(pool: &Pool, limit: Duration) -> Result<(), DbError> {
    let deadline = Instant::now() + limit;
    loop {
        match pool.get() {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(DbError::Unavailable(e)),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// Does the database answer a trivial query right now?
pub fn ping(pool: &Pool) -> Result<(), DbError> {
    let mut conn = pool.get()?;
    conn.query_drop("SELECT 1")?;
    Ok(())
}

/// One direct connection with the pool's options, outside any pool: for
/// the CLI, which wants the server's own reason when it cannot connect (a
/// pool only reports that it timed out), and for reading other databases.
pub fn connect_once(url: &str) -> Result<mysql::Conn, DbError> {
    Ok(mysql::Conn::new(opts(url)?)?)
}

/// Creates the URL's database when it does not exist yet, so that a fresh
/// server needs only `creditgate migrate`.
pub fn create_database_if_missing(url: &str) -> Result<(), DbError> {
    let builder = opts(url)?;
    let name = Opts::from(builder.clone())
        .get_db_name()
        .map(str::to_owned)
        .ok_or_else(|| DbError::BadUrl("the URL names no database (…/creditgate)".into()))?;
    let mut conn = mysql::Conn::new(builder.db_name(None::<String>))?;
    conn.query_drop(format!(
        "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4",
        quote_ident(&name)
    ))?;
    Ok(())
}

/// Drops the URL's database; for tests and benchmarks that made their own.
pub fn drop_database(url: &str) -> Result<(), DbError> {
    let builder = opts(url)?;
    let name = Opts::from(builder.clone()).get_db_name().map(str::to_owned);
    if let Some(name) = name {
        let mut conn = mysql::Conn::new(builder.db_name(None::<String>))?;
        conn.query_drop(format!("DROP DATABASE IF EXISTS {}", quote_ident(&name)))?;
    }
    Ok(())
}

fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// The highest applied migration, 0 on an empty database.
pub fn schema_version(conn: &mut impl Queryable) -> Result<u32, DbError> {
    let exists: Option<u64> = conn.query_first(
        "SELECT COUNT(*) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_name = 'schema_migrations'",
    )?;
    if exists.unwrap_or(0) == 0 {
        return Ok(0);
    }
    let v: Option<Option<u32>> = conn.query_first("SELECT MAX(version) FROM schema_migrations")?;
    Ok(v.flatten().unwrap_or(0))
}

/// Refuses a schema this build does not expect.
pub fn check_schema(pool: &Pool) -> Result<(), DbError> {
    let have = schema_version(&mut **pool.get()?)?;
    let want = expected_schema_version();
    match have.cmp(&want) {
        std::cmp::Ordering::Less => Err(DbError::SchemaTooOld { have, want }),
        std::cmp::Ordering::Greater => Err(DbError::SchemaTooNew { have, want }),
        std::cmp::Ordering::Equal => Ok(()),
    }
}

/// Applies the migrations that are missing and returns their file names.
/// Safe to run twice, and from two processes at once (a named lock).
pub fn migrate(pool: &Pool) -> Result<Vec<&'static str>, DbError> {
    let mut conn = pool.get()?;
    conn.query_drop(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    INT UNSIGNED NOT NULL PRIMARY KEY,
            name       VARCHAR(255) NOT NULL,
            applied_at DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3)
        ) ENGINE = InnoDB",
    )?;
    let locked: Option<Option<i64>> =
        conn.query_first("SELECT GET_LOCK('creditgate.migrate', 60)")?;
    if locked.flatten() != Some(1) {
        return Err(DbError::MigrationLocked);
    }
    let result = apply_missing(&mut conn);
    let _ = conn.query_drop("DO RELEASE_LOCK('creditgate.migrate')");
    result
}

fn apply_missing(conn: &mut Conn) -> Result<Vec<&'static str>, DbError> {
    let have = schema_version(&mut ***conn)?;
    let mut applied = Vec::new();
    for &(version, file, sql) in MIGRATIONS.iter().filter(|m| m.0 > have) {
        // One statement at a time: a multi-statement query's later errors
        // are lost when its result is dropped.
        for statement in statements(sql) {
            conn.query_drop(statement)
                .map_err(|source| DbError::Migration { file, source })?;
        }
        conn.exec_drop(
            "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
            (version, file),
        )?;
        applied.push(file);
    }
    Ok(applied)
}

/// A migration file's statements: split after each line that ends in `;`
/// (no file has one inside a string), leaving out pieces of comments only.
fn statements(file: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut at = 0;
    for line in file.split_inclusive('\n') {
        at += line.len();
        if line.trim_end().ends_with(';') {
            pieces.push(&file[start..at]);
            start = at;
        }
    }
    pieces.push(&file[start..]);
    pieces
        .into_iter()
        .filter(|piece| {
            piece
                .lines()
                .map(str::trim)
                .any(|l| !l.is_empty() && !l.starts_with("--"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_migration_file_splits_after_each_line_ending_in_a_semicolon() {
        let file = "-- why; and how\nALTER TABLE a\n  ADD x INT;\n-- next\nALTER TABLE b ADD y INT;\n-- done\n";
        assert_eq!(
            statements(file),
            [
                "-- why; and how\nALTER TABLE a\n  ADD x INT;\n",
                "-- next\nALTER TABLE b ADD y INT;\n"
            ]
        );
        assert_eq!(statements("SELECT 1"), ["SELECT 1"]);
    }

    #[test]
    fn every_shipped_migration_but_0024_is_one_statement() {
        for (version, file, sql) in MIGRATIONS {
            let want = if *version == 24 { 3 } else { 1 };
            assert_eq!(statements(sql).len(), want, "{file}");
        }
    }

    #[test]
    fn a_statement_not_prepared_on_the_connection_runs_as_text() {
        assert!(matches!(
            Statements::default().get("SELECT 1"),
            Stmt::Text("SELECT 1")
        ));
    }

    fn server_error(code: u16) -> mysql::Error {
        mysql::Error::MySqlError(mysql::MySqlError {
            state: "40001".into(),
            message: "test".into(),
            code,
        })
    }

    #[test]
    fn deadlocks_and_lock_timeouts_are_conflicts_also_at_commit() {
        assert!(matches!(
            DbError::from(server_error(1213)),
            DbError::Conflict(_)
        ));
        assert!(matches!(
            DbError::from(server_error(1205)),
            DbError::Conflict(_)
        ));
        assert!(matches!(
            commit_failed(server_error(1213)),
            DbError::Conflict(_)
        ));
        assert!(matches!(
            DbError::from(server_error(1062)),
            DbError::Duplicate(_)
        ));
        let lost = mysql::Error::IoError(std::io::Error::other("reset"));
        assert!(matches!(commit_failed(lost), DbError::CommitUnknown(_)));
    }

    fn lazy_pool(retry: Retry) -> Pool {
        pool(
            "mysql://root@127.0.0.1:9/none",
            1,
            Duration::from_millis(10),
        )
        .unwrap()
        .with_retry(retry)
    }

    #[test]
    fn conflicts_are_retried_at_most_the_given_times() {
        let pool = lazy_pool(Retry {
            attempts: 3,
            budget: Duration::from_secs(5),
        });
        let mut runs = 0;
        let r: Result<(), DbError> = pool.retrying(|| {
            runs += 1;
            Err(DbError::Conflict(server_error(1213)))
        });
        assert!(matches!(r, Err(DbError::Conflict(_))));
        assert_eq!(runs, 4, "one run and three retries");
    }

    #[test]
    fn a_retry_that_succeeds_returns_its_value_and_other_errors_are_not_retried() {
        let pool = lazy_pool(Retry {
            attempts: 5,
            budget: Duration::from_secs(5),
        });
        let mut runs = 0;
        let r = pool.retrying(|| {
            runs += 1;
            if runs < 3 {
                Err(DbError::Conflict(server_error(1205)))
            } else {
                Ok(runs)
            }
        });
        assert_eq!(r.unwrap(), 3);
        let mut other = 0;
        let r: Result<(), DbError> = pool.retrying(|| {
            other += 1;
            Err(DbError::MigrationLocked)
        });
        assert!(r.is_err());
        assert_eq!(other, 1);
    }

    #[test]
    fn retries_stop_at_the_budget() {
        let pool = lazy_pool(Retry {
            attempts: 1000,
            budget: Duration::from_millis(30),
        });
        let started = Instant::now();
        let _: Result<(), DbError> = pool.retrying(|| Err(DbError::Conflict(server_error(1213))));
        assert!(started.elapsed() < Duration::from_millis(200));
    }

    #[test]
    fn the_domain_says_conflict_without_a_server_number() {
        assert!(DbError::conflict("changed").is_conflict());
        assert!(!DbError::failed("gone").is_conflict());
        let copied = DbError::conflict("changed").again();
        assert!(copied.is_conflict() && copied.to_string().contains("changed"));
        let in_doubt = commit_failed(mysql::Error::IoError(std::io::Error::other("reset")));
        assert!(matches!(in_doubt.again(), DbError::CommitUnknown(_)));
        assert!(matches!(DbError::failed("gone").again(), DbError::Query(_)));
    }
}
