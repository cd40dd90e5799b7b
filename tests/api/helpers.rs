//! Test support: a fresh database per test, the real server on a free port,
//! and a minimal HTTP/1.1 client over a raw TcpStream (raw, so that tests can
//! also send what no well-behaved client would).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::Utc;
use creditgate::app::App;
use creditgate::config::Config;
use creditgate::db::{self, Pool};
use creditgate::ledger::Reason;
use creditgate::model::{RefillDay, Username};
use creditgate::shutdown::Shutdown;
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
        let name = format!(
            "cg_test_{}_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::SeqCst),
            Utc::now().timestamp_subsec_nanos()
        );
        let url = format!("{}/{name}", server_url());
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
            credit,
            monthly_credit: monthly,
            refill_day: RefillDay::default(),
            email: None,
            token: token.map(str::to_string),
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
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = db::drop_database(&self.url);
    }
}

/// The real server (the same `App` that `creditgate serve` runs) on a free
/// port of 127.0.0.1, stopped when dropped.
pub struct TestApp {
    pub addr: SocketAddr,
    pub admin_token: String,
    pub shutdown: Shutdown,
    thread: Option<JoinHandle<String>>,
    pub db: TestDb,
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
    let admin_token = creditgate::token::generate();
    let config = test_config(&db.url, &admin_token, vars);
    let shutdown = Shutdown::new();
    let app = App::build(config, shutdown.clone()).expect("app starts");
    let addr = app.addr();
    let thread = std::thread::spawn(move || app.run());
    TestApp {
        addr,
        admin_token,
        shutdown,
        thread: Some(thread),
        db,
    }
}

pub fn test_config(db_url: &str, admin_token: &str, vars: &[(&str, &str)]) -> Config {
    let mut map: HashMap<String, String> = HashMap::from([
        ("DATABASE_URL".into(), db_url.to_string()),
        ("CREDITGATE_BIND".into(), "127.0.0.1:0".into()),
        ("CREDITGATE_ADMIN_TOKEN".into(), admin_token.to_string()),
        ("CREDITGATE_THREADS".into(), "16".into()),
        ("CREDITGATE_DB_POOL".into(), "8".into()),
        // Tests fire many failures from 127.0.0.1 on purpose.
        ("CREDITGATE_AUTH_FAILS_PER_MIN".into(), "1000000".into()),
    ]);
    for (k, v) in vars {
        map.insert(k.to_string(), v.to_string());
    }
    Config::from_lookup(|k| map.get(k).cloned()).expect("test config is valid")
}

impl TestApp {
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

    /// Stops the server and returns the stop reason.
    pub fn stop(&mut self) -> String {
        self.shutdown.trigger("test over");
        self.thread
            .take()
            .map(|t| t.join().expect("server thread"))
            .unwrap_or_default()
    }
}

impl Drop for TestApp {
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
