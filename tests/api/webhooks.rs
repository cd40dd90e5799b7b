//! Webhooks (Standard Webhooks), end to end: real receivers on loopback,
//! the real server (in process, or the real binary where it is killed),
//! and signatures checked by the official `standardwebhooks` package from
//! PyPI (deploy/webhook-venv.sh, tests/webhook_verify.py), never by our own
//! signing code.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::daemon::Daemon;
use crate::support::helpers::{
    creditgate, in_parallel, request, spawn_app_with, Resp, TestApp, TestDb, TestServer,
};

/// One delivery as the receiver got it.
#[derive(Debug, Clone)]
struct Delivery {
    headers: BTreeMap<String, String>,
    body: String,
}

impl Delivery {
    fn id(&self) -> &str {
        &self.headers["webhook-id"]
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }

    fn kind(&self) -> String {
        self.json()["type"].as_str().unwrap_or_default().to_string()
    }
}

/// A webhook receiver on a free loopback port: answers every POST with
/// the status it is set to (200 at first) and records what it accepted
/// (a 2xx) and how many attempts it saw in all.
struct Receiver {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    accepted: Arc<Mutex<Vec<Delivery>>>,
    attempts: Arc<Mutex<u64>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn start() -> Receiver {
        let limits = tiny_http::Limits {
            max_conns_per_ip: 0,
            ..tiny_http::Limits::default()
        };
        let server = limits.scope(|| tiny_http::Server::http("127.0.0.1:0"));
        let server = Arc::new(server.expect("bind the receiver"));
        let addr = server.server_addr().to_ip().expect("a TCP address");
        let r = Receiver {
            addr,
            status: Arc::new(AtomicU16::new(200)),
            accepted: Arc::default(),
            attempts: Arc::default(),
            stop: Arc::default(),
        };
        let (status, accepted, attempts, stop) = (
            r.status.clone(),
            r.accepted.clone(),
            r.attempts.clone(),
            r.stop.clone(),
        );
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let Ok(Some(mut req)) = server.recv_timeout(Duration::from_millis(50)) else {
                    continue;
                };
                let mut body = String::new();
                let _ = req.as_reader().read_to_string(&mut body);
                let headers = req
                    .headers()
                    .iter()
                    .map(|h| {
                        (
                            h.field.as_str().as_str().to_ascii_lowercase(),
                            h.value.as_str().to_string(),
                        )
                    })
                    .collect();
                let code = status.load(Ordering::SeqCst);
                *attempts.lock().unwrap() += 1;
                if (200..300).contains(&code) {
                    accepted.lock().unwrap().push(Delivery { headers, body });
                }
                let _ = req.respond(tiny_http::Response::empty(code));
            }
        });
        r
    }

    fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn accepted(&self) -> Vec<Delivery> {
        self.accepted.lock().unwrap().clone()
    }

    fn attempts(&self) -> u64 {
        *self.attempts.lock().unwrap()
    }

    /// Waits until at least `n` deliveries were accepted; returns them.
    fn wait_for(&self, n: usize, limit: Duration) -> Vec<Delivery> {
        let deadline = Instant::now() + limit;
        loop {
            let got = self.accepted();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The venv's python with `standardwebhooks`, made once per test run.
fn verifier_python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/webhook-venv.sh");
        let out = Command::new(script)
            .stderr(Stdio::inherit())
            .output()
            .expect("run deploy/webhook-venv.sh");
        assert!(out.status.success(), "deploy/webhook-venv.sh failed");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
}

/// What `standardwebhooks` says of each delivery under `secret`: "ok
/// <type>" or "fail …", one per delivery.
fn verify_all(secret: &str, deliveries: &[Delivery]) -> Vec<String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/webhook_verify.py");
    let mut child = Command::new(verifier_python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the verifier");
    let mut input = String::new();
    for d in deliveries {
        let case = json!({ "secret": secret, "headers": d.headers, "body": d.body });
        input.push_str(&case.to_string());
        input.push('\n');
    }
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let lines: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(Result::unwrap)
        .collect();
    assert!(child.wait().unwrap().success());
    lines
}

fn admin_at(addr: SocketAddr, token: &str, method: &str, path: &str, body: Option<Value>) -> Resp {
    let auth = format!("Bearer {token}");
    let body = body.map(|b| b.to_string());
    request(
        addr,
        method,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.as_deref(),
    )
}

/// Adds an endpoint for `events` through the admin API; its secret.
fn add_webhook(app: &TestServer, url: &str, events: &[&str]) -> String {
    let r = app.admin(
        "POST",
        "/admin/v1/webhooks",
        Some(&json!({ "url": url, "events": events }).to_string()),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["secret"].as_str().unwrap().to_string()
}

/// A service with the charge scope; its token.
fn add_service(app: &TestServer) -> String {
    let r = app.admin(
        "POST",
        "/admin/v1/services",
        Some(r#"{"name": "billing", "scopes": ["charge"]}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["token"].as_str().unwrap().to_string()
}

fn v1(addr: SocketAddr, service: &str, path: &str, body: Value) -> Resp {
    let auth = format!("Bearer {service}");
    request(
        addr,
        "POST",
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        Some(&body.to_string()),
    )
}

/// Charges `cost` to `user` through `/v1/charge`; whether it was granted.
fn charge(addr: SocketAddr, service: &str, user: &str, cost: i64) -> bool {
    let r = v1(
        addr,
        service,
        "/v1/charge",
        json!({ "user": user, "cost": cost }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["valid"] == true
}

fn run_job(app: &TestServer, job: &str) {
    let r = app.admin("POST", &format!("/admin/v1/jobs/{job}/run"), None);
    assert_eq!(r.status, 200, "{}", r.body);
}

const ALL_EVENTS: [&str; 5] = [
    "credit.low",
    "credit.exhausted",
    "credit.usage_threshold",
    "credit.refilled",
    "hold.expired",
];

/// Outbox rows by type (all endpoints).
fn outbox_types(db: &TestDb) -> BTreeMap<String, i64> {
    use mysql::prelude::Queryable;
    db.conn()
        .query("SELECT event_type, COUNT(*) FROM webhook_outbox GROUP BY event_type")
        .unwrap()
        .into_iter()
        .collect()
}

#[test]
fn every_event_is_signed_so_that_the_standardwebhooks_library_verifies_it() {
    // Arrange
    let app = spawn_app_with(&[]);
    let receiver = Receiver::start();
    let secret = add_webhook(&app, &receiver.url(), &ALL_EVENTS);
    let service = add_service(&app);
    app.db.add_user_with("alice", Some(100), Some(100), None);
    let r = app.admin(
        "POST",
        "/admin/v1/users/alice/notify",
        Some(r#"{"low_credit": 30}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    // Act: 60 used (50 %), 75 (below 30 left: low), 100 (80 %, 100 %),
    // refused (exhausted), a hold that expires, a refill.
    assert!(charge(app.addr, &service, "alice", 60));
    assert!(charge(app.addr, &service, "alice", 15));
    assert!(charge(app.addr, &service, "alice", 25));
    assert!(!charge(app.addr, &service, "alice", 1));
    let r = app.admin(
        "POST",
        "/admin/v1/users/alice/credit",
        Some(r#"{"add": 10}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let hold = v1(
        app.addr,
        &service,
        "/v1/holds",
        json!({ "user": "alice", "amount": 5, "ttl_secs": 1 }),
    );
    assert_eq!(hold.status, 201, "{}", hold.body);
    thread::sleep(Duration::from_millis(1_100));
    run_job(&app, "expire-holds");
    app.db
        .exec("UPDATE users SET credit_period = '2000-01' WHERE username = 'alice'");
    run_job(&app, "monthly-refill");

    // Assert: every type arrived, signed as the library verifies...
    let got = receiver.wait_for(7, Duration::from_secs(20));
    assert_eq!(got.len(), 7, "{got:#?}");
    let kinds: BTreeSet<String> = got.iter().map(Delivery::kind).collect();
    let want: BTreeSet<String> = ALL_EVENTS.iter().map(|s| s.to_string()).collect();
    assert_eq!(kinds, want, "{got:#?}");
    let verdicts = verify_all(&secret, &got);
    assert_eq!(verdicts.len(), got.len());
    for (v, d) in verdicts.iter().zip(&got) {
        assert_eq!(v, &format!("ok {}", d.kind()), "{d:?}");
    }
    // ...and a wrong secret fails, so the check above can fail.
    let wrong = creditgate::webhooks::sign::new_secret();
    for v in verify_all(&wrong, &got) {
        assert!(v.starts_with("fail"), "{v}");
    }
    // The payloads say what happened.
    let thresholds: Vec<i64> = got
        .iter()
        .filter(|d| d.kind() == "credit.usage_threshold")
        .map(|d| d.json()["data"]["percent"].as_i64().unwrap())
        .collect();
    assert_eq!(thresholds, [50, 80, 100]);
    let low = got
        .iter()
        .find(|d| d.kind() == "credit.low")
        .unwrap()
        .json();
    assert_eq!(
        low["data"],
        json!({"user": "alice", "credit_available": 25, "threshold": 30})
    );
    let expired = got
        .iter()
        .find(|d| d.kind() == "hold.expired")
        .unwrap()
        .json();
    assert_eq!(expired["data"]["hold"]["amount"], 5);
    let refilled = got
        .iter()
        .find(|d| d.kind() == "credit.refilled")
        .unwrap()
        .json();
    assert_eq!(refilled["data"]["credit"], 100);
    // Per user in order: the outbox's order is the receiver's.
    let ids: Vec<u64> = got
        .iter()
        .map(|d| d.id().trim_start_matches("msg_").parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(app.db.ledger_mismatches(), vec![]);
}

#[test]
fn a_receiver_answering_503_for_20_s_gets_all_30_events_after_it() {
    // Arrange: retries from 0.5 s (the default is 5 s; at most doubling).
    let app = spawn_app_with(&[("CREDITGATE_WEBHOOK_FIRST_RETRY_MS", "500")]);
    let receiver = Receiver::start();
    receiver.answer(503);
    let secret = add_webhook(&app, &receiver.url(), &["credit.exhausted"]);
    let tokens: Vec<String> = (0..30)
        .map(|i| app.db.add_user(&format!("u{i}"), 0))
        .collect();

    // Act: 30 users refused for credit while the receiver says 503.
    let began = Instant::now();
    for (i, t) in tokens.iter().enumerate() {
        assert_eq!(app.bank(&format!("u{i}"), t, "BOFA").status, 402);
    }
    thread::sleep(Duration::from_secs(20).saturating_sub(began.elapsed()));
    assert!(receiver.attempts() >= 30, "tried during the outage");
    assert!(receiver.accepted().is_empty());
    receiver.answer(200);

    // Assert
    let got = receiver.wait_for(30, Duration::from_secs(60));
    let ids: BTreeSet<&str> = got.iter().map(Delivery::id).collect();
    assert_eq!(ids.len(), 30, "{} delivered", got.len());
    assert_eq!(got.len(), 30, "each once");
    assert!(verify_all(&secret, &got)
        .iter()
        .all(|v| v == "ok credit.exhausted"));
    // Delivered, and so counted in /metrics (refreshed every 2 s).
    thread::sleep(Duration::from_millis(2_500));
    let metrics = app.get("/metrics", &[]).body;
    assert!(
        metrics.contains("creditgate_webhook_deliveries{state=\"delivered\"} 30\n"),
        "{metrics}"
    );
    assert!(metrics.contains("creditgate_webhook_deliveries{state=\"pending\"} 0\n"));
    assert!(metrics.contains("creditgate_webhook_attempts_total{result=\"retry\"}"));
}

#[test]
fn events_undelivered_when_the_instance_is_killed_are_delivered_after_a_restart() {
    // Arrange: the real binary, a receiver that says 503 for now.
    let db = TestDb::new();
    let receiver = Receiver::start();
    receiver.answer(503);
    let admin = "webhooks-kill-admin-token";
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("CREDITGATE_BIND", "127.0.0.1:0"),
        ("CREDITGATE_ADMIN_TOKEN", admin),
        ("CREDITGATE_WEBHOOK_FIRST_RETRY_MS", "500"),
    ];
    let daemon = Daemon::start(&["serve"], &env);
    let addr = daemon.addr();
    let r = admin_at(
        addr,
        admin,
        "POST",
        "/admin/v1/webhooks",
        Some(json!({ "url": receiver.url(), "events": ["credit.exhausted"] })),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let tokens: Vec<String> = (0..10).map(|i| db.add_user(&format!("k{i}"), 0)).collect();
    for (i, t) in tokens.iter().enumerate() {
        let auth = format!("Bearer k{i}:{t}");
        let r = request(
            addr,
            "GET",
            "/api/v1.0/banks_data/BOFA/",
            &[("Authorization", &auth)],
            None,
        );
        assert_eq!(r.status, 402);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.attempts() < 10 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }

    // Act: killed with all 10 undelivered, then started again.
    daemon.signal(libc::SIGKILL);
    drop(daemon);
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM webhook_outbox WHERE state = 'pending'"),
        10
    );
    receiver.answer(204);
    let _restarted = Daemon::start(&["serve"], &env);

    // Assert: each delivered, once a lease the dead instance held ran out.
    let got = receiver.wait_for(10, Duration::from_secs(40));
    let ids: BTreeSet<&str> = got.iter().map(Delivery::id).collect();
    assert_eq!(ids.len(), 10, "{got:#?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while db.scalar("SELECT COUNT(*) FROM webhook_outbox WHERE state = 'delivered'") < 10
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM webhook_outbox WHERE state = 'delivered'"),
        10
    );
}

#[test]
fn each_usage_threshold_fires_once_per_period() {
    // Arrange
    let app = spawn_app_with(&[]);
    let receiver = Receiver::start();
    add_webhook(
        &app,
        &receiver.url(),
        &["credit.usage_threshold", "credit.exhausted"],
    );
    let service = add_service(&app);
    app.db.add_user_with("alice", Some(100), Some(100), None);
    // Last month's allowance: the refill below starts this month's period.
    app.db
        .exec("UPDATE users SET credit_period = '2000-01' WHERE username = 'alice'");
    let crossed = |db: &TestDb| db.scalar("SELECT COUNT(*) FROM usage_thresholds");

    // Act and assert: 49 % crosses nothing, 50 % crosses one...
    assert!(charge(app.addr, &service, "alice", 49));
    assert_eq!(crossed(&app.db), 0);
    assert!(charge(app.addr, &service, "alice", 1));
    assert_eq!(crossed(&app.db), 1);
    // ...a top-up and the same usage again cross nothing new...
    let r = app.admin(
        "POST",
        "/admin/v1/users/alice/credit",
        Some(r#"{"add": 50}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(charge(app.addr, &service, "alice", 50));
    assert_eq!(crossed(&app.db), 1);
    // ...one charge may cross two...
    assert!(charge(app.addr, &service, "alice", 50));
    assert_eq!(crossed(&app.db), 3);
    // ...refusals say "exhausted" once until credit comes back...
    assert!(!charge(app.addr, &service, "alice", 1));
    assert!(!charge(app.addr, &service, "alice", 1));
    assert_eq!(outbox_types(&app.db)["credit.exhausted"], 1);
    let r = app.admin(
        "POST",
        "/admin/v1/users/alice/credit",
        Some(r#"{"add": 1}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!charge(app.addr, &service, "alice", 2));
    assert_eq!(outbox_types(&app.db)["credit.exhausted"], 2);
    // ...and a new period starts them again.
    run_job(&app, "monthly-refill");
    assert!(charge(app.addr, &service, "alice", 100));
    assert_eq!(crossed(&app.db), 6);
    assert_eq!(outbox_types(&app.db)["credit.usage_threshold"], 6);
    let got = receiver.wait_for(8, Duration::from_secs(20));
    assert_eq!(got.len(), 8);
}

#[test]
fn thresholds_fire_once_with_three_instances_charging_at_once() {
    // Arrange: three servers on one database, 300 credits of allowance.
    let db = TestDb::new();
    let servers: Vec<TestServer> = (0..3).map(|_| TestServer::start(&db.url, &[])).collect();
    let receiver = Receiver::start();
    add_webhook(
        &servers[0],
        &receiver.url(),
        &["credit.usage_threshold", "credit.exhausted"],
    );
    let service = add_service(&servers[0]);
    db.add_user_with("alice", Some(300), Some(300), None);
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();

    // Act: 330 charges of 1 from 30 clients over the three instances.
    let granted: usize = in_parallel(30, move |i| {
        (0..11)
            .filter(|_| charge(addrs[i % 3], &service, "alice", 1))
            .count()
    })
    .into_iter()
    .sum();

    // Assert: exactly the allowance granted, each threshold and the
    // exhaustion once, and each delivered once.
    assert_eq!(granted, 300);
    let types = outbox_types(&db);
    assert_eq!(types["credit.usage_threshold"], 3, "{types:?}");
    assert_eq!(types["credit.exhausted"], 1, "{types:?}");
    let got = receiver.wait_for(4, Duration::from_secs(20));
    thread::sleep(Duration::from_millis(500));
    let got_now = receiver.accepted();
    assert_eq!(got_now.len(), 4, "{got:#?}");
    let percents: Vec<i64> = got_now
        .iter()
        .filter(|d| d.kind() == "credit.usage_threshold")
        .map(|d| d.json()["data"]["percent"].as_i64().unwrap())
        .collect();
    assert_eq!(percents, [50, 80, 100], "in order");
}

#[test]
fn the_admin_api_adds_lists_and_removes_endpoints() {
    let app = spawn_app_with(&[]);
    // Add: 201 with the secret, once.
    let r = app.admin(
        "POST",
        "/admin/v1/webhooks",
        Some(r#"{"url": "https://hooks.example.com/cg", "events": "hold.expired, credit.low"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let created = r.json();
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(created["events"], json!(["credit.low", "hold.expired"]));
    let id = created["id"].as_u64().unwrap();
    // List: never the secret.
    let list = app.admin("GET", "/admin/v1/webhooks", None);
    assert_eq!(list.status, 200);
    assert_eq!(
        list.json()["webhooks"][0]["url"],
        "https://hooks.example.com/cg"
    );
    assert!(!list.body.contains("whsec_"));
    // Refused: bad URL, unknown event, no events, unknown field.
    for body in [
        json!({"url": "ftp://x", "events": ["credit.low"]}),
        json!({"url": "https://x.example", "events": ["credit.lo"]}),
        json!({"url": "https://x.example", "events": []}),
        json!({"url": "https://x.example", "events": ["credit.low"], "x": 1}),
    ] {
        let r = app.admin("POST", "/admin/v1/webhooks", Some(&body.to_string()));
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(["invalid_webhook", "invalid_body"].contains(&r.error().as_str()));
    }
    // Without the admin token: 401, as every admin route.
    let r = request(app.addr, "GET", "/admin/v1/webhooks", &[], None);
    assert_eq!(r.status, 401);
    // Remove: 200 with it, then 404.
    let path = format!("/admin/v1/webhooks/{id}");
    assert_eq!(app.admin("DELETE", &path, None).status, 200);
    let again = app.admin("DELETE", &path, None);
    assert_eq!(again.status, 404);
    assert_eq!(again.error(), "unknown_webhook");
    assert_eq!(
        app.admin("DELETE", "/admin/v1/webhooks/x", None).status,
        404
    );
    assert_eq!(app.admin("PUT", "/admin/v1/webhooks", None).status, 405);
}

#[test]
fn the_cli_prints_the_secret_alone_and_lists_and_removes() {
    let db = TestDb::new();
    let add = creditgate(
        &db.url,
        &[
            "webhook",
            "add",
            "http://127.0.0.1:9/h",
            "--events",
            "credit.refilled",
        ],
    );
    add.ok();
    let secret = add.stdout.trim();
    assert!(
        secret.starts_with("whsec_") && !secret.contains(' '),
        "{secret}"
    );
    assert!(creditgate::webhooks::sign::key_of(secret).is_some());
    let list = creditgate(&db.url, &["webhook", "list", "--json"]);
    list.ok();
    let v: Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(v["webhooks"][0]["events"], json!(["credit.refilled"]));
    let id = v["webhooks"][0]["id"].to_string();
    let table = creditgate(&db.url, &["webhook", "list"]);
    assert!(
        table.stdout.contains("http://127.0.0.1:9/h"),
        "{}",
        table.stdout
    );
    assert!(creditgate(
        &db.url,
        &["webhook", "add", "http://x.example", "--events", "nope"]
    )
    .failed()
    .contains("--events"));
    creditgate(&db.url, &["webhook", "remove", &id]).ok();
    assert!(creditgate(&db.url, &["webhook", "remove", &id])
        .failed()
        .contains("no webhook"));
}

#[test]
fn removing_an_endpoint_fails_its_undelivered_events_and_the_console_counts_them() {
    let app = spawn_app_with(&[]);
    let receiver = Receiver::start();
    receiver.answer(500);
    add_webhook(&app, &receiver.url(), &["credit.exhausted"]);
    let token = app.db.add_user("bob", 0);
    assert_eq!(app.bank("bob", &token, "BOFA").status, 402);
    let r = app.admin("GET", "/admin/v1/webhooks", None);
    let id = r.json()["webhooks"][0]["id"].as_u64().unwrap();
    assert_eq!(
        app.admin("DELETE", &format!("/admin/v1/webhooks/{id}"), None)
            .status,
        200
    );
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM webhook_outbox WHERE state = 'failed'"),
        1
    );
    console_shows_counts(&app, 0, 0, 1);
}

/// Logs in to the console; the `Cookie` header's value.
fn console_login(app: &TestApp) -> String {
    let form = format!("token={}", app.admin_token);
    let r = request(
        app.addr,
        "POST",
        "/console/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(&form),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let set = r.header("Set-Cookie").unwrap();
    set.split(';').next().unwrap().to_string()
}

/// POSTs a console form with the page's CSRF token; follows a 303 (a
/// refused form is answered with its page at once).
fn console_post(app: &TestApp, cookie: &str, path: &str, fields: &str) -> Resp {
    let page = app.get("/console/webhooks", &[("Cookie", cookie)]).body;
    let marker = "name=\"csrf\" value=\"";
    let at = page.find(marker).unwrap() + marker.len();
    let csrf = &page[at..at + page[at..].find('"').unwrap()];
    let body = format!("csrf={csrf}&{fields}");
    let r = request(
        app.addr,
        "POST",
        path,
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", cookie),
        ],
        Some(&body),
    );
    match r.header("Location") {
        Some(to) if r.status == 303 => app.get(to, &[("Cookie", cookie)]),
        _ => r,
    }
}

#[test]
fn the_console_adds_lists_and_removes_endpoints_and_shows_the_secret_once() {
    let app = spawn_app_with(&[]);
    let cookie = console_login(&app);
    let page = console_post(
        &app,
        &cookie,
        "/console/webhooks",
        "url=http%3A%2F%2F127.0.0.1%3A9%2Fh&credit.low=on&hold.expired=on",
    );
    assert!(page.body.contains("whsec_"), "{}", page.body);
    assert!(
        page.body.contains("credit.low, hold.expired"),
        "{}",
        page.body
    );
    let list = app.admin("GET", "/admin/v1/webhooks", None).json();
    let id = list["webhooks"][0]["id"].as_u64().unwrap();
    // Shown once: the page again has no secret.
    let again = app.get("/console/webhooks", &[("Cookie", &cookie)]);
    assert!(!again.body.contains("whsec_"));
    // No event ticked: refused, nothing added.
    let url_only = "url=http%3A%2F%2Fx.example%2F";
    let refused = console_post(&app, &cookie, "/console/webhooks", url_only);
    assert_eq!(refused.status, 400);
    assert!(
        refused.body.contains("tick at least one event"),
        "{}",
        refused.body
    );
    let remove = format!("/console/webhooks/{id}/remove");
    let gone = console_post(&app, &cookie, &remove, "");
    assert!(
        gone.body.contains("No webhook endpoints yet."),
        "{}",
        gone.body
    );
}

/// The console's overview, logged in, shows the deliveries by state.
fn console_shows_counts(app: &TestApp, pending: u64, delivered: u64, failed: u64) {
    let cookie = console_login(app);
    let page = app.get("/console/", &[("Cookie", &cookie)]);
    assert_eq!(page.status, 200);
    for (id, n) in [
        ("webhooks-pending", pending),
        ("webhooks-delivered", delivered),
        ("webhooks-failed", failed),
    ] {
        assert!(
            page.body.contains(&format!("id=\"{id}\">{n}<")),
            "{id} {n}: {}",
            page.body
        );
    }
}

#[test]
fn the_prune_job_deletes_only_settled_deliveries_past_their_keeping_time() {
    let app = spawn_app_with(&[]);
    let receiver = Receiver::start();
    receiver.answer(500);
    add_webhook(&app, &receiver.url(), &["credit.exhausted"]);
    let hook = app.db.scalar("SELECT MAX(id) FROM webhooks");
    // Rows as the delivery thread leaves them, settled at various ages.
    let row = |state: &str, settled_days_ago: Option<u32>| {
        let settled = settled_days_ago
            .map(|d| format!("NOW(3) - INTERVAL {d} DAY"))
            .unwrap_or_else(|| "NULL".into());
        app.db.exec(&format!(
            "INSERT INTO webhook_outbox (webhook_id, user_id, event_type, body, state, \
             created_at, next_attempt_at, settled_at) VALUES ({hook}, 1, 'credit.exhausted', \
             '{{}}', '{state}', NOW(3) - INTERVAL 40 DAY, NOW(3) + INTERVAL 1 DAY, {settled})"
        ));
    };
    row("delivered", Some(8)); // gone
    row("delivered", Some(6)); // kept
    row("failed", Some(31)); // gone
    row("failed", Some(8)); // kept
    row("pending", None); // kept, however old
    run_job(&app, "prune-webhook-outbox");
    let left: BTreeMap<String, i64> = {
        use mysql::prelude::Queryable;
        let mut conn = app.db.pool.get().unwrap();
        conn.query("SELECT state, COUNT(*) FROM webhook_outbox GROUP BY state")
            .unwrap()
            .into_iter()
            .collect()
    };
    let want: BTreeMap<String, i64> = [("delivered", 1), ("failed", 1), ("pending", 1)]
        .map(|(s, n)| (s.to_string(), n))
        .into_iter()
        .collect();
    assert_eq!(left, want);
    let r = app.admin("GET", "/admin/v1/jobs", None);
    let job = r.json()["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["id"] == "prune-webhook-outbox")
        .cloned()
        .unwrap();
    assert!(
        job["last_result"].as_str().unwrap().contains("2 settled"),
        "{job}"
    );
}
