//! Fixed-price gateway charges settled durably: every charge writes an
//! unsettled record in its own transaction, deleted when the answer was
//! billable or refunded; the refund-unsettled job refunds what is left at
//! its expiry. So a refund that cannot be written, a charge whose COMMIT
//! was in doubt, or an instance that dies mid-request never leaves a user
//! charged for an answer that was not billed. (Priced routes settle through
//! holds: tests/api/pricing.rs.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::daemon::Daemon;
use crate::support::helpers::{in_parallel, request, send_raw, TestDb, TestServer};
use crate::support::proxy::Proxy;
use crate::support::upstream::Upstream;

/// Brings every unsettled record's expiry forward and runs the job once,
/// as the job would at the records' own expiry.
fn settle_now(db: &TestDb, addr: std::net::SocketAddr, admin: &str) {
    db.exec("UPDATE route_charges SET expires_at = NOW(3) - INTERVAL 1 SECOND");
    let run = request(
        addr,
        "POST",
        "/admin/v1/jobs/refund-unsettled/run",
        &[("Authorization", &format!("Bearer {admin}"))],
        None,
    );
    assert_eq!(run.status, 200, "{}", run.body);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM route_charges"), 0);
}

#[test]
fn an_instance_killed_with_40_requests_in_flight_refunds_them_after_a_restart() {
    let db = TestDb::new();
    let tokens: Vec<String> = (0..8).map(|u| db.add_user(&format!("u{u}"), 100)).collect();
    let upstream = Upstream::start();
    let admin = "settlement-kill-admin-token";
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("CREDITGATE_BIND", "127.0.0.1:0"),
        ("CREDITGATE_ADMIN_TOKEN", admin),
        ("CREDITGATE_THREADS", "64"),
    ];
    let daemon = Daemon::start(&["serve"], &env);
    let addr = daemon.addr();
    let route = json!({"prefix": "/api2", "upstream": upstream.url(), "cost": 3,
                       "strip_prefix": true, "max_in_flight": 40});
    let auth = format!("Bearer {admin}");
    let r = request(
        addr,
        "POST",
        "/admin/v1/routes",
        &[("Authorization", &auth)],
        Some(&route.to_string()),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let tokens = Arc::new(tokens);
    let clients = std::thread::spawn(move || {
        in_parallel(40, move |i| {
            let raw = format!(
                "GET /api2/sleep/2000 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer u{}:{}\r\n\
                 Connection: close\r\n\r\n",
                i % 8,
                tokens[i % 8]
            );
            send_raw(addr, raw.as_bytes())
        })
    });
    std::thread::sleep(Duration::from_millis(1_000));
    daemon.signal(libc::SIGKILL);
    drop(daemon);
    let _ = clients.join();
    // Charged before forwarding, and the instance died: 40 × 3 taken...
    assert_eq!(db.scalar("SELECT SUM(credit) FROM users"), 800 - 120);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM route_charges"), 40);
    // ...and given back by a restarted instance's job at their expiry.
    let restarted = Daemon::start(&["serve"], &env);
    settle_now(&db, restarted.addr(), admin);
    assert_eq!(
        db.scalar("SELECT SUM(credit) FROM users"),
        800,
        "nobody over-charged"
    );
    assert_eq!(db.ledger_mismatches(), vec![]);
}

#[test]
fn a_refund_that_cannot_be_written_is_made_by_the_job_not_lost() {
    // The database goes away while the upstream works on a request whose
    // answer will be a 500: the refund fails (three tries), the client
    // still gets the upstream's answer, and the refund is made later.
    let db = TestDb::new();
    let token = db.add_user("alice", 100);
    let upstream = Upstream::start();
    let proxy = Proxy::to_test_server();
    let server = TestServer::start(&proxy.url(&db.name), &[("CREDITGATE_DB_TIMEOUT_MS", "500")]);
    server.add_route(
        "/api2",
        &upstream.url(),
        json!({"cost": 4, "strip_prefix": true}),
    );
    let addr = server.addr;
    let call = std::thread::spawn(move || {
        let auth = format!("Bearer alice:{token}");
        request(
            addr,
            "GET",
            "/api2/priced/500?sleep=800",
            &[("Authorization", &auth)],
            None,
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    proxy.cut();
    let answer = call.join().unwrap();
    proxy.restore();
    assert_eq!(answer.status, 500, "the upstream's answer");
    assert_eq!(
        db.credit("alice"),
        96,
        "the refund could not be written then"
    );
    settle_now(&db, server.addr, &server.admin_token);
    assert_eq!(db.credit("alice"), 100);
    assert_eq!(db.ledger_mismatches(), vec![]);
}

#[test]
fn connections_killed_every_50_ms_leave_exactly_what_the_upstream_billed() {
    // 12 clients on 4 users through a proxy that kills every database
    // connection every 50 ms for 3 s; half keyed (retrying a 503 with the
    // same key), half the answers 500. Once the unsettled charges left
    // (refunds that failed, charges whose COMMIT was cut in doubt) are
    // refunded at their expiry, every credit charged is one the upstream
    // billed by its own log — exactly.
    let db = TestDb::new();
    let tokens: Vec<String> = (0..4)
        .map(|u| db.add_user(&format!("u{u}"), 10_000))
        .collect();
    let upstream = Upstream::start();
    let proxy = Proxy::to_test_server();
    let server = TestServer::start(
        &proxy.url(&db.name),
        &[
            ("CREDITGATE_DB_TIMEOUT_MS", "1000"),
            ("CREDITGATE_THREADS", "16"),
        ],
    );
    server.add_route(
        "/api2",
        &upstream.url(),
        json!({"cost": 2, "strip_prefix": true}),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
                proxy.cut();
                proxy.restore();
            }
            proxy
        })
    };
    let addr = server.addr;
    let tokens = Arc::new(tokens);
    let until = Instant::now() + Duration::from_secs(3);
    in_parallel(12, move |w| {
        let mut n = 0;
        while Instant::now() < until {
            n += 1;
            let u = (w + n) % 4;
            let status = if n % 2 == 0 { 200 } else { 500 };
            let path = format!("/api2/priced/{status}");
            let auth = format!("Bearer u{u}:{}", tokens[u]);
            let key = format!("w{w}-{n}");
            for _ in 0..50 {
                let mut headers = vec![("Authorization", auth.as_str())];
                if w % 2 == 1 {
                    headers.push(("Idempotency-Key", key.as_str()));
                }
                let r = request(addr, "GET", &path, &headers, None);
                if r.status != 503 || w % 2 == 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    });
    stop.store(true, Ordering::SeqCst);
    let _proxy = killer.join().unwrap();
    // Confirmations of billable answers flush within 100 ms once the
    // database stays; then what is left is owed back.
    std::thread::sleep(Duration::from_secs(1));
    settle_now(&db, server.addr, &server.admin_token);
    let billed = 2 * upstream
        .seen()
        .iter()
        .filter(|s| s.url.starts_with("/priced/200"))
        .count() as i64;
    let charged = db.scalar("SELECT CAST(COALESCE(SUM(credits), 0) AS SIGNED) FROM usage_daily");
    assert!(charged > 0, "the load ran");
    assert_eq!(charged, billed, "charged exactly what the upstream billed");
    assert_eq!(db.scalar("SELECT SUM(credit) FROM users"), 40_000 - charged);
    assert_eq!(db.ledger_mismatches(), vec![]);
    eprintln!("billed upstream {billed}, charged {charged}");
}
