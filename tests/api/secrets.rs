//! Secrets stay secret: the real binary (`creditgate serve`, `RUST_LOG=debug`)
//! is driven with all four credential forms, wrong tokens, hostile usernames
//! and the admin API, then stopped through `/stopServer`; no token and no
//! admin token may appear in anything it wrote or in any table (only their
//! hashes), and every log record must stay on one line. A process test,
//! because stderr is where the log goes.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine;
use mysql::prelude::Queryable;

use crate::support::helpers::{request, Resp, TestDb};

/// The binary running as a daemon, with its output collected.
struct Daemon {
    child: Child,
    addr: SocketAddr,
    output: Vec<JoinHandle<String>>,
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

fn start(db_url: &str, admin_token: &str) -> Daemon {
    let addr = free_addr();
    let mut child = Command::new(env!("CARGO_BIN_EXE_creditgate"))
        .arg("serve")
        // Nothing from the test's environment leaks in.
        .env_clear()
        .env("DATABASE_URL", db_url)
        .env("CREDITGATE_BIND", addr.to_string())
        .env("CREDITGATE_ADMIN_TOKEN", admin_token)
        .env("CREDITGATE_THREADS", "4")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start creditgate serve");
    // Drained on threads, so a full pipe never blocks the daemon.
    let mut output = Vec::new();
    let pipes: [Box<dyn Read + Send>; 2] = [
        Box::new(child.stdout.take().unwrap()),
        Box::new(child.stderr.take().unwrap()),
    ];
    for mut pipe in pipes {
        output.push(std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "creditgate did not start listening"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Daemon {
        child,
        addr,
        output,
    }
}

impl Daemon {
    fn get(&self, path: &str, auth: Option<&str>) -> Resp {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        request(self.addr, "GET", path, &headers, None)
    }

    fn post(&self, path: &str, auth: &str, body: &str) -> Resp {
        request(
            self.addr,
            "POST",
            path,
            &[
                ("Authorization", auth),
                ("Content-Type", "application/json"),
            ],
            Some(body),
        )
    }

    /// Waits for the daemon to exit and returns its code and all it wrote.
    fn wait(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let code = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let text = self
            .output
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
            .join("");
        (code, text)
    }
}

#[test]
fn no_token_or_admin_token_reaches_the_log() {
    // Arrange
    let db = TestDb::new();
    let alice = db.add_user("alice", 100);
    let admin_token = creditgate::auth::token::generate();
    let admin = format!("Bearer {admin_token}");
    let daemon = start(&db.url, &admin_token);
    let paid = "/api/v1.0/banks_data/bofa/";
    let basic = |pair: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    };
    let wrong = "cg_wrongwrongwrongwrongwrongwrong";

    // Act: all four forms, right and wrong.
    let mut statuses = vec![
        daemon
            .get(paid, Some(&format!("Bearer alice:{alice}")))
            .status,
        daemon
            .get(paid, Some(&basic(&format!("alice:{alice}"))))
            .status,
        daemon.get(paid, Some(&format!("alice:{alice}"))).status,
        daemon
            .get(&format!("{paid}?token=alice:{alice}"), None)
            .status,
        daemon
            .get(&format!("/api/v1.0/credit?token=alice:{alice}"), None)
            .status,
    ];
    for auth in [
        format!("Bearer alice:{wrong}"),
        basic(&format!("alice:{wrong}")),
        format!("alice:{wrong}"),
    ] {
        statuses.push(daemon.get(paid, Some(&auth)).status);
    }
    statuses.push(
        daemon
            .get(&format!("{paid}?x=1&token=alice:{wrong}"), None)
            .status,
    );
    statuses.push(
        daemon
            .get(&format!("{paid}?token=alice%3A{wrong}"), None)
            .status,
    );
    // Hostile usernames that would split a log line.
    statuses.push(
        daemon
            .get(paid, Some(&basic(&format!("ali\r\nce:{wrong}"))))
            .status,
    );
    statuses.push(
        daemon
            .get(&format!("{paid}?token=ali%0Ace%00:{wrong}"), None)
            .status,
    );
    // The admin API, including answers that carry new tokens.
    let bob: String = daemon
        .post(
            "/admin/v1/users",
            &admin,
            r#"{"username": "bob", "credit": 5}"#,
        )
        .json()["token"]
        .as_str()
        .expect("bob's token")
        .to_string();
    let imported = "imported-legacy-secret-0123456789";
    let carol = daemon.post(
        "/admin/v1/users",
        &admin,
        &format!(r#"{{"username": "carol", "token": "{imported}"}}"#),
    );
    let rotated: String = daemon
        .post("/admin/v1/users/alice/rotate", &admin, "")
        .json()["token"]
        .as_str()
        .expect("alice's new token")
        .to_string();
    statuses.push(
        daemon
            .get(paid, Some(&format!("Bearer alice:{rotated}")))
            .status,
    );
    statuses.push(
        daemon
            .post("/admin/v1/users/bob/credit", &admin, r#"{"add": 1}"#)
            .status,
    );
    statuses.push(daemon.get("/admin/v1/users", Some(&admin)).status);
    statuses.push(
        daemon
            .get("/admin/v1/users", Some(&format!("Bearer {wrong}")))
            .status,
    );
    statuses.push(
        daemon
            .get(&format!("/admin/v1/users?token={admin_token}"), None)
            .status,
    );
    statuses.push(
        daemon
            .get("/stopServer", Some(&format!("Bearer {wrong}")))
            .status,
    );
    let stop = daemon.post("/stopServer", &admin, "");
    let (code, log) = daemon.wait();

    // Assert: the run did what it should...
    assert_eq!(
        statuses,
        [
            200, 200, 200, 200, 200, 401, 401, 401, 401, 401, 401, 401, 200, 200, 200, 401, 401,
            401
        ],
        "{log}"
    );
    assert_eq!(carol.status, 201, "{}", carol.body);
    assert_eq!(stop.status, 202);
    assert_eq!(code, Some(0), "{log}");
    // ...without any secret, in full or past its shown prefix...
    for secret in [
        alice.as_str(),
        rotated.as_str(),
        bob.as_str(),
        imported,
        admin_token.as_str(),
        wrong,
    ] {
        let hidden = &secret[creditgate::auth::token::PREFIX_LEN..];
        assert!(!log.contains(hidden), "{secret:?} is in the log:\n{log}");
    }
    // ...though it logged those requests (so the capture works).
    assert!(log.contains("user=alice"), "{log}");
    assert!(log.contains("/admin/v1/users"), "{log}");
    assert!(log.contains("token=[redacted]"), "{log}");
    // Nor is any of them stored in clear, in any table.
    let mut conn = db.conn();
    let tables: Vec<String> = conn
        .query("SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()")
        .unwrap();
    assert!(tables.len() >= 6, "{tables:?}");
    let stored: String = tables
        .iter()
        .map(|t| crate::hostile::table_text(&mut **conn, t))
        .collect();
    for secret in [alice.as_str(), rotated.as_str(), bob.as_str(), imported] {
        let hidden = &secret[creditgate::auth::token::PREFIX_LEN..];
        assert!(!stored.contains(hidden), "{secret:?} is stored in clear");
        let hash = creditgate::auth::token::hash(secret);
        let is_stored = stored.contains(&hash);
        assert!(
            is_stored || secret == alice,
            "the hash of {secret:?} is not stored"
        );
    }
    // Every record is one line: env_logger starts each with `[`.
    for line in log.lines().filter(|l| !l.is_empty()) {
        assert!(
            line.starts_with('['),
            "a record spans lines: {line:?}\n{log}"
        );
    }
    assert!(log.contains(r"user=ali\r\nce"), "{log}");
}

#[test]
fn no_service_token_or_credentials_sent_to_the_service_api_reach_the_log() {
    // Arrange: a service made through the admin API (its token shown once).
    let db = TestDb::new();
    let alice = db.add_user("alice", 100);
    let admin_token = creditgate::auth::token::generate();
    let admin = format!("Bearer {admin_token}");
    let daemon = start(&db.url, &admin_token);
    let made = daemon.post(
        "/admin/v1/services",
        &admin,
        r#"{"name": "billing", "scopes": ["charge"]}"#,
    );
    assert_eq!(made.status, 201, "{}", made.body);
    let svc = made.json()["token"]
        .as_str()
        .expect("the token")
        .to_string();
    let bearer = format!("Bearer {svc}");
    let wrong_svc = "cgs_wrongwrongwrongwrongwrongwrongwron";

    // Act: the end user's credentials in bodies, keyed and not, a hold and
    // its capture, a wrong service token, the revoke.
    let creds = format!(r#"{{"credentials": "alice:{alice}", "cost": 2}}"#);
    let mut statuses = vec![
        daemon.post("/v1/charge", &bearer, &creds).status,
        daemon
            .post("/v1/charge", &format!("Bearer {wrong_svc}"), &creds)
            .status,
    ];
    let hold = daemon.post(
        "/v1/holds",
        &bearer,
        &format!(r#"{{"credentials": "alice:{alice}", "amount": 5}}"#),
    );
    statuses.push(hold.status);
    let id = hold.json()["hold"]["id"].as_u64().expect("a hold id");
    statuses.push(
        daemon
            .post(
                &format!("/v1/holds/{id}/capture"),
                &bearer,
                r#"{"amount": 3}"#,
            )
            .status,
    );
    let revoke = request(
        daemon.addr,
        "DELETE",
        "/admin/v1/services/billing",
        &[("Authorization", &admin)],
        None,
    );
    statuses.push(revoke.status);
    statuses.push(daemon.post("/v1/charge", &bearer, &creds).status);
    let stop = daemon.post("/stopServer", &admin, "");
    let (code, log) = daemon.wait();

    // Assert: as it should have gone...
    assert_eq!(statuses, [200, 401, 201, 200, 200, 401], "{log}");
    assert_eq!((stop.status, code), (202, Some(0)), "{log}");
    // ...named in the log by the service's name, never by its token...
    assert!(log.contains("user=service:billing"), "{log}");
    for secret in [svc.as_str(), wrong_svc, alice.as_str()] {
        let hidden = &secret[creditgate::auth::token::PREFIX_LEN..];
        assert!(!log.contains(hidden), "{secret:?} is in the log:\n{log}");
    }
    // ...and stored only as hashes.
    let mut conn = db.conn();
    let tables: Vec<String> = conn
        .query("SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE()")
        .unwrap();
    let stored: String = tables
        .iter()
        .map(|t| crate::hostile::table_text(&mut **conn, t))
        .collect();
    for secret in [svc.as_str(), alice.as_str()] {
        let hidden = &secret[creditgate::auth::token::PREFIX_LEN..];
        assert!(!stored.contains(hidden), "{secret:?} is stored in clear");
    }
    assert!(stored.contains(&creditgate::auth::token::hash(&svc)));
}
