//! Test support: a fresh database per test, the real server on a free port,
//! and a minimal HTTP/1.1 client over a raw TcpStream (raw, so that tests can
//! also send what no well-behaved client would).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::Utc;
use creditgate::app::App;
use creditgate::billing::ledger::Reason;
use creditgate::config::Config;
use creditgate::db::{self, Pool};
use creditgate::model::{Credit, ImportedToken, RefillDay, Username};
use creditgate::ops::shutdown::Shutdown;
use creditgate::users::{self, NewUser};
use mysql::prelude::Queryable;

/// The MariaDB server tests use, without a database name:
/// `CREDITGATE_TEST_DATABASE_URL`, else `DATABASE_URL`'s server, else
/// root@127.0.0.1:3306.
pub fn server_url() -> String {
    let url = std::env::var("CREDITGATE_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
    let (scheme, rest) = url.split_once("://").expect("a mysql:// URL");
    let host = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{host}")
}

static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// A freshly created, migrated database, dropped when this goes out of scope.
pub struct TestDb {
    pub url: String,
    pub name: String,
    pub pool: Pool,
}

impl TestDb {
    pub fn new() -> TestDb {
        TestDb::on(&server_url(), "")
    }

    /// A fresh database on another server (`mysql://user@host:port`), with
    /// `query` (e.g. `?prefer_socket=false`) appended to its URL.
    pub fn on(server: &str, query: &str) -> TestDb {
        let name = format!(
            "cg_test_{}_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::SeqCst),
            Utc::now().timestamp_subsec_nanos()
        );
        let url = format!("{server}/{name}{query}");
        db::create_database_if_missing(&url).expect("create the test database");
        let pool = db::pool(&url, 4, Duration::from_secs(10)).expect("pool");
        db::migrate(&pool).expect("migrate");
        TestDb { url, name, pool }
    }

    pub fn add_user(&self, name: &str, credit: i64) -> String {
        self.add_user_with(name, Some(credit), None, None)
    }

    pub fn add_user_with(
        &self,
        name: &str,
        credit: Option<i64>,
        monthly: Option<i64>,
        token: Option<&str>,
    ) -> String {
        let new = NewUser {
            username: Username::parse(name).unwrap(),
            credit: credit.map(|c| Credit::new(c).expect("a test credit is not negative")),
            monthly_credit: monthly
                .map(|c| Credit::new(c).expect("a test allowance is not negative")),
            refill_day: RefillDay::default(),
            email: None,
            token: token.map(|t| ImportedToken::parse(t).expect("a usable test token")),
            rate_limit: None,
            low_credit: None,
        };
        users::create(&self.pool, new, Reason::Create, "test", Utc::now())
            .expect("create user")
            .1
    }

    pub fn credit(&self, name: &str) -> i64 {
        self.conn()
            .exec_first("SELECT credit FROM users WHERE username = ?", (name,))
            .unwrap()
            .expect("user exists")
    }

    /// A single number from SQL.
    pub fn scalar(&self, sql: &str) -> i64 {
        let v: Option<Option<i64>> = self.conn().query_first(sql).unwrap();
        v.flatten().unwrap_or(0)
    }

    pub fn exec(&self, sql: &str) {
        self.conn().query_drop(sql).unwrap();
    }

    pub fn conn(&self) -> db::Conn {
        self.pool.get().unwrap()
    }

    /// Users whose credit does not equal their ledger minus their usage, with
    /// (credit, ledger, usage): the invariant every credit path keeps.
    pub fn ledger_mismatches(&self) -> Vec<(String, i64, i64, i64)> {
        self.conn()
            .query(
                "SELECT u.username, u.credit, \
                    (SELECT CAST(COALESCE(SUM(delta), 0) AS SIGNED) FROM credit_events e WHERE e.user_id = u.id), \
                    (SELECT CAST(COALESCE(SUM(credits), 0) AS SIGNED) FROM usage_daily d WHERE d.user_id = u.id) \
                 FROM users u ORDER BY u.username",
            )
            .unwrap()
            .into_iter()
            .filter(|(_, credit, ledger, usage): &(String, i64, i64, i64)| {
                *credit != ledger - usage
            })
            .collect()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = db::drop_database(&self.url);
    }
}

/// The real server (the same `App` that `creditgate serve` runs) on a free
/// port of 127.0.0.1, on any database URL, stopped when dropped. Several
/// may share one database.
pub struct TestServer {
    pub addr: SocketAddr,
    pub admin_token: String,
    pub shutdown: Shutdown,
    thread: Option<JoinHandle<String>>,
}

impl TestServer {
    pub fn start(db_url: &str, vars: &[(&str, &str)]) -> TestServer {
        let admin_token = creditgate::auth::token::generate();
        let config = test_config(db_url, &admin_token, vars);
        let shutdown = Shutdown::new();
        let app = App::build(config, shutdown.clone()).expect("app starts");
        let addr = app.addr();
        let thread = std::thread::spawn(move || app.run());
        TestServer {
            addr,
            admin_token,
            shutdown,
            thread: Some(thread),
        }
    }
}

/// A `TestServer` on its own fresh database. Derefs to the server, so
/// `app.addr` and `app.admin(…)` work; the server stops before the
/// database is dropped (field order).
pub struct TestApp {
    pub server: TestServer,
    pub db: TestDb,
}

impl std::ops::Deref for TestApp {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.server
    }
}

impl std::ops::DerefMut for TestApp {
    fn deref_mut(&mut self) -> &mut TestServer {
        &mut self.server
    }
}

pub fn spawn_app() -> TestApp {
    spawn_app_with(&[])
}

/// Like `spawn_app`, with extra environment variables for the config.
pub fn spawn_app_with(vars: &[(&str, &str)]) -> TestApp {
    spawn_app_on(TestDb::new(), vars)
}

/// Like `spawn_app_with`, on a database the test prepared (a `DATABASE_URL`
/// in `vars` wins, e.g. one through a proxy to `db`).
pub fn spawn_app_on(db: TestDb, vars: &[(&str, &str)]) -> TestApp {
    TestApp {
        server: TestServer::start(&db.url, vars),
        db,
    }
}

pub fn test_config(db_url: &str, admin_token: &str, vars: &[(&str, &str)]) -> Config {
    let mut map: HashMap<String, String> = HashMap::from([
        ("DATABASE_URL".into(), db_url.to_string()),
        ("CREDITGATE_BIND".into(), "127.0.0.1:0".into()),
        ("CREDITGATE_ADMIN_TOKEN".into(), admin_token.to_string()),
        // Enough that a route's default bulkhead (half of them) holds the
        // concurrency tests; the edge tests set their own.
        ("CREDITGATE_THREADS".into(), "64".into()),
        ("CREDITGATE_DB_POOL".into(), "8".into()),
        // Tests fire many failures from 127.0.0.1 on purpose.
        ("CREDITGATE_AUTH_FAILS_PER_MIN".into(), "1000000".into()),
        // ...and many connections from it at once: every client of a
        // concurrency test is 127.0.0.1. The edge tests set their own cap.
        ("CREDITGATE_MAX_CONNS_PER_IP".into(), "100000".into()),
    ]);
    // `make test` runs the exactness, idempotency, rate-limit and ledger
    // tests a second time with coalesced charging on (issue #13): the same
    // tests, not copies.
    if std::env::var("CREDITGATE_TEST_COALESCE").is_ok_and(|v| v == "on") {
        map.insert("CREDITGATE_COALESCE".into(), "on".into());
    }
    for (k, v) in vars {
        map.insert(k.to_string(), v.to_string());
    }
    Config::from_lookup(|k| map.get(k).cloned()).expect("test config is valid")
}

impl TestServer {
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        request(self.addr, "GET", path, headers, None)
    }

    pub fn bank(&self, user: &str, token: &str, bank: &str) -> Resp {
        self.get(
            &format!("/api/v1.0/banks_data/{bank}/"),
            &[("Authorization", &format!("Bearer {user}:{token}"))],
        )
    }

    pub fn admin(&self, method: &str, path: &str, body: Option<&str>) -> Resp {
        let auth = format!("Bearer {}", self.admin_token);
        request(
            self.addr,
            method,
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    }

    /// Adds a gateway route through the admin API: `fields` merged over
    /// `{"prefix", "upstream"}`; asserts 201 and returns the route JSON.
    pub fn add_route(&self, prefix: &str, upstream: &str, fields: serde_json::Value) -> Resp {
        let mut body = serde_json::json!({ "prefix": prefix, "upstream": upstream });
        for (k, v) in fields.as_object().expect("route fields are an object") {
            body[k] = v.clone();
        }
        let r = self.admin("POST", "/admin/v1/routes", Some(&body.to_string()));
        assert_eq!(r.status, 201, "{}", r.body);
        r
    }

    /// Stops the server and returns the stop reason.
    pub fn stop(&mut self) -> String {
        self.shutdown.trigger("test over");
        self.thread
            .take()
            .map(|t| t.join().expect("server thread"))
            .unwrap_or_default()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The `error` code of a JSON error body.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// One request on a new connection (`Connection: close`).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Resp {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        raw.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    raw.push_str("\r\n");
    let mut bytes = raw.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b.as_bytes());
    }
    send_raw(addr, &bytes).expect("a complete HTTP response")
}

/// Sends bytes as they are and parses the answer; `None` when the server
/// closed the connection without one.
pub fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Option<Resp> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // The server may answer and close before reading everything we send.
    let _ = stream.write_all(bytes);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    parse_response(&out)
}

pub fn parse_response(out: &[u8]) -> Option<Resp> {
    let text = String::from_utf8_lossy(out);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Resp {
        status,
        headers,
        body: body.to_string(),
    })
}

/// Runs `n` copies of `f` at once and collects their results.
pub fn in_parallel<T: Send + 'static>(
    n: usize,
    f: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let f = Arc::new(f);
    let barrier = Arc::new(std::sync::Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let f = Arc::clone(&f);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                f(i)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("worker thread"))
        .collect()
}

/// What one run of the binary left behind.
#[derive(Debug)]
pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "{self:#?}");
        self
    }

    /// Failed, with exactly one line on stderr and nothing on stdout; returns
    /// that line.
    pub fn failed(&self) -> &str {
        assert_ne!(self.code, Some(0), "{self:#?}");
        assert!(self.code.is_some(), "killed: {self:#?}");
        assert_eq!(self.stdout, "", "{self:#?}");
        let line = self.stderr.trim_end_matches('\n');
        assert!(
            !line.is_empty() && !line.contains('\n'),
            "not one line: {self:#?}"
        );
        line
    }
}

/// The OS user the ledger should name for CLI changes.
pub const OS_USER: &str = "opsbob";

/// Runs `creditgate ARGS` with `DATABASE_URL = db_url`, for at most 60 s.
pub fn creditgate(db_url: &str, args: &[&str]) -> Out {
    let mut child = Command::new(env!("CARGO_BIN_EXE_creditgate"))
        .args(args)
        .env("DATABASE_URL", db_url)
        .env("USER", OS_USER)
        .env_remove("SUDO_USER")
        .env_remove("RUST_LOG")
        .env_remove("CREDITGATE_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the creditgate binary");
    // Read both pipes while waiting, so a chatty child cannot block on them.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("wait after kill");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Out {
        code: status.code(),
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}
