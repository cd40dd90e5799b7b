//! Start and stop: `/stopServer` and its admin check in process, then the
//! real binary stopped by SIGTERM (with a request in flight), SIGINT and
//! `/stopServer`, and refusing to start (port taken, database unreachable)
//! with a non-zero exit, a one-line reason and an alert mail.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use serde_json::json;

use crate::support::daemon::Daemon;
use crate::support::helpers::{request, spawn_app, spawn_app_with, TestDb};
use crate::support::smtp::SmtpServer;

const ADMIN: &str = "lifecycle-admin-token";
const PREFIX: &str = "[cg-test] ";

/// The environment of a daemon on `db_url` that mails `smtp`.
fn daemon_env<'a>(db_url: &'a str, smtp: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("DATABASE_URL", db_url),
        ("CREDITGATE_BIND", "127.0.0.1:0"),
        ("CREDITGATE_ADMIN_TOKEN", ADMIN),
        ("CREDITGATE_THREADS", "4"),
        ("CREDITGATE_DB_POOL", "4"),
        // The suite starts dozens of databases at once; a busy server is
        // not what these tests are about.
        ("CREDITGATE_DB_TIMEOUT_MS", "10000"),
        ("CREDITGATE_SMTP_URL", smtp),
        ("CREDITGATE_MAIL_FROM", "creditgate@test.invalid"),
        ("CREDITGATE_ALERT_TO", "ops@test.invalid"),
        ("CREDITGATE_MAIL_PREFIX", PREFIX),
    ]
}

/// The one mail whose subject is `subject` (after the prefix).
fn mail_with_subject(smtp: &SmtpServer, subject: &str) -> crate::support::smtp::Received {
    let want = format!("{PREFIX}{subject}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = smtp.messages();
        if let Some(m) = all.iter().find(|m| m.subject() == want) {
            return m.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no mail {want:?}; got {:?}",
            all.iter().map(|m| m.subject()).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A port nothing listens on (bound, then released).
fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---- /stopServer in process ----

#[test]
fn stop_server_without_or_with_a_wrong_token_is_401_and_serving_goes_on() {
    // Arrange
    let app = spawn_app();
    for method in ["GET", "POST"] {
        for headers in [vec![], vec![("Authorization", "Bearer not-the-token")]] {
            // Act
            let r = request(app.addr, method, "/stopServer", &headers, None);
            // Assert
            assert_eq!(r.status, 401, "{method} {headers:?}: {}", r.body);
            assert_eq!(r.error(), "unauthorized");
        }
    }
    assert!(!app.shutdown.is_triggered());
    assert_eq!(app.get("/health", &[]).status, 200);
}

#[test]
fn stop_server_answers_202_and_stops_for_get_and_post() {
    for method in ["GET", "POST"] {
        // Arrange
        let mut app = spawn_app();
        // Act
        let r = app.admin(method, "/stopServer", None);
        // Assert
        assert_eq!(r.status, 202, "{method}: {}", r.body);
        assert_eq!(
            r.json(),
            json!({"success": true, "message": "Server is Stopping..."})
        );
        assert_eq!(app.stop(), "admin /stopServer");
    }
}

#[test]
fn stop_server_is_403_when_no_admin_token_is_configured() {
    let app = spawn_app_with(&[("CREDITGATE_ADMIN_TOKEN", "")]);
    let r = request(
        app.addr,
        "POST",
        "/stopServer",
        &[("Authorization", "Bearer anything")],
        None,
    );
    assert_eq!(r.status, 403);
    assert_eq!(r.error(), "admin_disabled");
    assert!(!app.shutdown.is_triggered());
}

// ---- the real binary ----

/// Waits until a `FOR UPDATE` of this database's runs on a connection other
/// than the caller's; false if none did within `limit`. The live process
/// list, not `information_schema.innodb_trx`: that one is a cache that is
/// not refreshed while it is read more often than every 100 ms.
fn wait_for_a_locking_read(db: &TestDb, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let sql = format!(
        "SELECT COUNT(*) FROM information_schema.processlist \
         WHERE db = '{}' AND command <> 'Sleep' AND info LIKE '%FOR UPDATE%' \
         AND id <> CONNECTION_ID()",
        db.name
    );
    while db.scalar(&sql) == 0 {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[test]
fn sigterm_lets_a_request_in_flight_finish_charges_it_once_and_exits_0() {
    // Arrange: alice's row is locked by the test, so her paid request waits
    // inside the server's charging transaction.
    let db = TestDb::new();
    let token = db.add_user("alice", 10);
    let smtp = SmtpServer::start();
    let mut daemon = Daemon::start(&["serve"], &daemon_env(&db.url, &smtp.url()));
    let addr = daemon.addr();
    let mut holder = db.conn();
    holder.query_drop("START TRANSACTION").unwrap();
    holder
        .query_drop("SELECT id FROM users WHERE username = 'alice' FOR UPDATE")
        .unwrap();
    let auth = format!("Bearer alice:{token}");
    let in_flight = std::thread::spawn(move || {
        request(
            addr,
            "GET",
            "/api/v1.0/banks_data/BOFA/",
            &[("Authorization", &auth)],
            None,
        )
    });
    if !wait_for_a_locking_read(&db, Duration::from_secs(8)) {
        let procs: Vec<(u64, Option<String>, String, Option<String>)> = db
            .conn()
            .query("SELECT id, db, command, info FROM information_schema.processlist")
            .unwrap();
        let _ = holder.query_drop("ROLLBACK");
        let answer = in_flight.join().unwrap();
        panic!(
            "the request never waited: {answer:?}\n{procs:?}\n{}",
            daemon.log()
        );
    }

    // Act: stop while the request waits, then let it go on.
    daemon.signal(libc::SIGTERM);
    daemon
        .wait_for_line("signal SIGTERM received", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no SIGTERM line:\n{}", daemon.log()));
    std::thread::sleep(Duration::from_millis(300));
    holder.query_drop("COMMIT").unwrap();
    let answer = in_flight.join().unwrap();
    let status = daemon.wait_exit(Duration::from_secs(15));

    // Assert
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["credit_remaining"], 9);
    let status = status.unwrap_or_else(|| panic!("still running 15 s on:\n{}", daemon.log()));
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    assert_eq!(db.credit("alice"), 9, "charged exactly once");
    assert_eq!(db.scalar("SELECT SUM(calls) FROM usage_daily"), 1);
    assert!(daemon.log().contains("stopped: signal SIGTERM"));
    let mail = mail_with_subject(&smtp, "stopped");
    assert!(mail.body().contains("signal SIGTERM"), "{}", mail.data);
}

#[test]
fn sigint_stops_with_exit_0_and_says_sigint() {
    let db = TestDb::new();
    let smtp = SmtpServer::start();
    let mut daemon = Daemon::start(&["serve"], &daemon_env(&db.url, &smtp.url()));
    let addr = daemon.addr();
    assert_eq!(request(addr, "GET", "/health", &[], None).status, 200);

    daemon.signal(libc::SIGINT);
    let status = daemon.wait_exit(Duration::from_secs(15));

    let status = status.unwrap_or_else(|| panic!("still running 15 s on:\n{}", daemon.log()));
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    assert!(
        daemon.log().contains("stopped: signal SIGINT"),
        "{}",
        daemon.log()
    );
    let mail = mail_with_subject(&smtp, "stopped");
    assert!(mail.body().contains("signal SIGINT"), "{}", mail.data);
    assert!(!mail.body().contains("SIGTERM"), "{}", mail.data);
}

#[test]
fn stop_server_stops_the_process_with_exit_0() {
    let db = TestDb::new();
    let smtp = SmtpServer::start();
    let mut daemon = Daemon::start(&["serve"], &daemon_env(&db.url, &smtp.url()));
    let addr = daemon.addr();

    let r = request(
        addr,
        "POST",
        "/stopServer",
        &[("Authorization", &format!("Bearer {ADMIN}"))],
        None,
    );
    let status = daemon.wait_exit(Duration::from_secs(15));

    assert_eq!(r.status, 202, "{}", r.body);
    let status = status.unwrap_or_else(|| panic!("still running 15 s on:\n{}", daemon.log()));
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
    let mail = mail_with_subject(&smtp, "stopped");
    assert!(mail.body().contains("admin /stopServer"), "{}", mail.data);
}

/// The last stderr line: the one-line reason `main` prints.
fn reason_line(daemon: &Daemon) -> String {
    daemon.log().lines().last().unwrap_or_default().to_string()
}

#[test]
fn a_taken_port_fails_the_start_with_a_reason_and_a_mail() {
    // Arrange: the port is held by the test.
    let db = TestDb::new();
    let smtp = SmtpServer::start();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = taken.local_addr().unwrap().to_string();
    let smtp_url = smtp.url();
    let mut env = daemon_env(&db.url, &smtp_url);
    env.retain(|(k, _)| *k != "CREDITGATE_BIND");
    env.push(("CREDITGATE_BIND", &bind));
    // Act
    let mut daemon = Daemon::start(&["serve"], &env);
    let status = daemon.wait_exit(Duration::from_secs(30));
    // Assert
    let status = status.expect("exits");
    assert!(!status.success(), "{}", daemon.log());
    let reason = reason_line(&daemon);
    assert!(
        reason.starts_with("creditgate: cannot listen on") && reason.contains(&bind),
        "{reason}"
    );
    let mail = mail_with_subject(&smtp, "start failed");
    assert!(mail.body().contains("cannot listen on"), "{}", mail.data);
    assert_eq!(mail.rcpt, vec!["ops@test.invalid"]);
}

#[test]
fn an_unreachable_database_fails_the_start_after_the_bounded_retry() {
    // Arrange: nothing listens on the database port.
    let smtp = SmtpServer::start();
    let url = format!("mysql://root@127.0.0.1:{}/creditgate", dead_port());
    let smtp_url = smtp.url();
    let mut env = daemon_env(&url, &smtp_url);
    env.retain(|(k, _)| *k != "CREDITGATE_DB_TIMEOUT_MS");
    env.push(("CREDITGATE_DB_TIMEOUT_MS", "500"));
    env.push(("CREDITGATE_DB_START_WAIT_SECS", "3"));
    let started = Instant::now();
    // Act
    let mut daemon = Daemon::start(&["serve"], &env);
    let status = daemon.wait_exit(Duration::from_secs(30));
    // Assert
    let status = status.unwrap_or_else(|| panic!("still running:\n{}", daemon.log()));
    assert!(!status.success());
    assert!(started.elapsed() >= Duration::from_secs(3), "it retried");
    let reason = reason_line(&daemon);
    assert!(
        reason.starts_with("creditgate: database unavailable"),
        "{reason}"
    );
    let mail = mail_with_subject(&smtp, "start failed");
    assert!(
        mail.body().contains("database unavailable"),
        "{}",
        mail.data
    );
}

#[test]
fn the_started_line_names_the_address_and_the_version() {
    let db = TestDb::new();
    let smtp = SmtpServer::start();
    let mut daemon = Daemon::start(&["serve"], &daemon_env(&db.url, &smtp.url()));
    let addr: SocketAddr = daemon.addr();
    let line = daemon
        .wait_for_line("listening on", Duration::from_secs(1))
        .unwrap();
    assert!(line.contains(env!("CARGO_PKG_VERSION")), "{line}");
    assert!(addr.port() != 0);
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(15)).is_some());
}

#[test]
fn requests_arriving_during_a_stop_get_503_while_the_one_in_flight_finishes() {
    // Arrange: alice's paid request parked on her row lock.
    let mut app = spawn_app();
    let alice = app.db.add_user("alice", 10);
    let bob = app.db.add_user("bob", 10);
    let mut holder = app.db.conn();
    holder.query_drop("START TRANSACTION").unwrap();
    holder
        .query_drop("SELECT credit FROM users WHERE username = 'alice' FOR UPDATE")
        .unwrap();
    let addr = app.addr;
    let auth = format!("Bearer alice:{alice}");
    let parked = std::thread::spawn(move || {
        request(
            addr,
            "GET",
            "/api/v1.0/banks_data/bofa/",
            &[("Authorization", &auth)],
            None,
        )
    });
    assert!(
        wait_for_a_locking_read(&app.db, Duration::from_secs(10)),
        "the request never waited on the row lock"
    );

    // Act: the stop begins while alice's request waits; bob comes late.
    app.shutdown.trigger("test stop");
    std::thread::sleep(Duration::from_millis(200));
    let late = app.bank("bob", &bob, "bofa");
    holder.query_drop("ROLLBACK").unwrap();
    let first = parked.join().unwrap();
    let reason = app.stop();

    // Assert: a clean 503 for the latecomer, the parked one served, and
    // only the served one charged.
    assert_eq!((late.status, late.error().as_str()), (503, "unavailable"));
    assert!(late.header("Retry-After").is_some());
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(reason, "test stop");
    assert_eq!(app.db.credit("alice"), 9);
    assert_eq!(app.db.credit("bob"), 10);
}

// ---- under systemd (Type=notify) ----

/// A datagram socket where systemd would listen, in its own folder.
struct NotifySocket {
    sock: std::os::unix::net::UnixDatagram,
    dir: std::path::PathBuf,
}

impl NotifySocket {
    fn bind(name: &str) -> NotifySocket {
        let dir = std::env::temp_dir().join(format!("cg-notify-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = std::os::unix::net::UnixDatagram::bind(dir.join("notify")).unwrap();
        NotifySocket { sock, dir }
    }

    fn path(&self) -> String {
        self.dir.join("notify").to_str().unwrap().to_string()
    }

    /// The next message, or None after `limit`.
    fn next(&self, limit: Duration) -> Option<String> {
        self.sock.set_read_timeout(Some(limit)).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.sock.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Messages until one contains `needle` (returned last); panics after
    /// `limit`.
    fn until(&self, needle: &str, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        while let Some(m) = self.next(deadline.saturating_duration_since(Instant::now())) {
            let done = m.contains(needle);
            seen.push(m);
            if done {
                return seen;
            }
        }
        panic!("no {needle:?} within {limit:?}; got {seen:?}");
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// See: #25
#[test]
fn under_systemd_ready_comes_once_health_answers_and_a_stop_says_stopping() {
    // Arrange
    let db = TestDb::new();
    let smtp = SmtpServer::start();
    let systemd = NotifySocket::bind("ready");
    let path = systemd.path();
    let smtp_url = smtp.url();
    let mut env = daemon_env(&db.url, &smtp_url);
    env.extend([
        ("NOTIFY_SOCKET", path.as_str()),
        ("WATCHDOG_USEC", "3000000"),
        ("CREDITGATE_HEARTBEAT_SECS", "1"),
    ]);
    // Act
    let mut daemon = Daemon::start(&["serve"], &env);
    let before_ready = systemd.until("READY=1", Duration::from_secs(30));
    // Assert: the start said what it waited on, then READY with the address,
    // and the address answers at that moment.
    assert_eq!(before_ready[0], "STATUS=waiting for the database");
    let ready = before_ready.last().unwrap();
    let addr: SocketAddr = ready
        .strip_prefix("READY=1\nSTATUS=listening on http://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{ready:?}"));
    assert_eq!(request(addr, "GET", "/health", &[], None).status, 200);
    // The heartbeat pings the watchdog.
    systemd.until("WATCHDOG=1", Duration::from_secs(5));

    daemon.signal(libc::SIGTERM);
    let stopping = systemd.until("STOPPING=1", Duration::from_secs(5));
    assert_eq!(
        stopping.last().unwrap(),
        "STOPPING=1\nSTATUS=stopping: signal SIGTERM"
    );
    systemd.until(
        "STATUS=stopping: sending the stop mail",
        Duration::from_secs(15),
    );
    let status = daemon.wait_exit(Duration::from_secs(15)).expect("exits");
    assert_eq!(status.code(), Some(0), "{}", daemon.log());
}

// See: #25
#[test]
fn under_systemd_a_failed_start_says_why_and_never_ready() {
    // Arrange: nothing listens on the database port.
    let smtp = SmtpServer::start();
    let systemd = NotifySocket::bind("failed");
    let path = systemd.path();
    let url = format!("mysql://root@127.0.0.1:{}/creditgate", dead_port());
    let smtp_url = smtp.url();
    let mut env = daemon_env(&url, &smtp_url);
    env.retain(|(k, _)| *k != "CREDITGATE_DB_TIMEOUT_MS");
    env.extend([
        ("CREDITGATE_DB_TIMEOUT_MS", "500"),
        ("CREDITGATE_DB_START_WAIT_SECS", "1"),
        ("NOTIFY_SOCKET", path.as_str()),
    ]);
    // Act
    let mut daemon = Daemon::start(&["serve"], &env);
    let status = daemon.wait_exit(Duration::from_secs(30)).expect("exits");
    // Assert
    assert!(!status.success());
    let mut said = Vec::new();
    while let Some(m) = systemd.next(Duration::from_millis(200)) {
        said.push(m);
    }
    assert!(!said.iter().any(|m| m.contains("READY=1")), "{said:?}");
    assert!(
        said.last()
            .is_some_and(|m| m.starts_with("STATUS=start failed: database unavailable")),
        "{said:?}"
    );
}
