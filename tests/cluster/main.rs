//! creditgate on a real 3-node MariaDB Galera cluster with HAProxy in front
//! (`make test-cluster` starts it with deploy/galera-cluster.sh and passes
//! its endpoints in CREDITGATE_CLUSTER_*). Single writer through HAProxy is
//! exact, losing the writer node over-grants nothing, a refill happens once,
//! and instances writing through two nodes are detected.
//!
//! Run one test at a time (`--test-threads=1`): the failover test kills and
//! restarts a node of the one cluster.

#[path = "../api/support/helpers.rs"]
mod helpers;
#[path = "../api/support/smtp.rs"]
mod smtp;
#[path = "../api/support/upstream.rs"]
mod upstream;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;

use helpers::{in_parallel, request, TestDb, TestServer};

/// The `mysql` crate moves a 127.0.0.1 connection onto the server's Unix
/// socket unless told not to, which would bypass HAProxy.
const NO_SOCKET: &str = "?prefer_socket=false";

fn haproxy() -> String {
    std::env::var("CREDITGATE_CLUSTER_HAPROXY_URL")
        .expect("CREDITGATE_CLUSTER_HAPROXY_URL: run these through `make test-cluster`")
}

fn nodes() -> Vec<String> {
    std::env::var("CREDITGATE_CLUSTER_NODE_URLS")
        .expect("CREDITGATE_CLUSTER_NODE_URLS: run these through `make test-cluster`")
        .split(',')
        .map(str::to_string)
        .collect()
}

/// deploy/galera-cluster.sh ARGS; its stdout.
fn cluster(args: &[&str]) -> String {
    let script = std::env::var("CREDITGATE_CLUSTER_SCRIPT").expect("CREDITGATE_CLUSTER_SCRIPT");
    let out = Command::new(script)
        .args(args)
        .output()
        .expect("run the cluster script");
    assert!(
        out.status.success(),
        "galera-cluster.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A fresh database on the cluster, reached through HAProxy. Also turns on
/// the servers' warnings, captured per test: a failing test shows why its
/// requests got 503.
fn cluster_db() -> TestDb {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .is_test(true)
        .try_init();
    TestDb::on(&haproxy(), NO_SOCKET)
}

/// `db`'s database on each node directly: (credit of `user`, ledger
/// mismatches) as every node sees them, once the node has applied
/// everything committed before (wsrep_sync_wait).
fn per_node(db: &TestDb, user: &str) -> Vec<(i64, usize, i64)> {
    nodes()
        .iter()
        .map(|node| {
            let url = format!("{node}/{}{NO_SOCKET}", db.name);
            let mut conn = mysql::Conn::new(mysql::Opts::from_url(&url).unwrap()).unwrap();
            conn.query_drop("SET SESSION wsrep_sync_wait = 1").unwrap();
            let credit: i64 = conn
                .exec_first("SELECT credit FROM users WHERE username = ?", (user,))
                .unwrap()
                .unwrap();
            let mismatches: Vec<(i64, i64, i64)> = conn
                .query(
                    "SELECT u.credit, \
                     (SELECT CAST(COALESCE(SUM(delta), 0) AS SIGNED) FROM credit_events e WHERE e.user_id = u.id), \
                     (SELECT CAST(COALESCE(SUM(credits), 0) AS SIGNED) FROM usage_daily d WHERE d.user_id = u.id) \
                     FROM users u",
                )
                .unwrap();
            let bad = mismatches.iter().filter(|(c, l, u)| *c != l - u).count();
            let calls: Option<i64> = conn
                .query_first("SELECT CAST(COALESCE(SUM(calls), 0) AS SIGNED) FROM usage_daily")
                .unwrap();
            (credit, bad, calls.unwrap_or(0))
        })
        .collect()
}

/// `requests` paid calls from `conns` clients spread over `servers`;
/// (statuses, seconds taken).
fn load(servers: &[SocketAddr], token: &str, conns: usize, requests: usize) -> (Vec<u16>, f64) {
    let servers = servers.to_vec();
    let auth = format!("Bearer alice:{token}");
    let per_client = requests / conns;
    let started = Instant::now();
    let statuses: Vec<u16> = in_parallel(conns, move |i| {
        let addr = servers[i % servers.len()];
        (0..per_client)
            .map(|_| {
                request(
                    addr,
                    "GET",
                    "/api/v1.0/banks_data/bofa/",
                    &[("Authorization", &auth)],
                    None,
                )
                .status
            })
            .collect::<Vec<u16>>()
    })
    .into_iter()
    .flatten()
    .collect();
    (statuses, started.elapsed().as_secs_f64())
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[test]
fn single_writer_through_haproxy_is_exact_on_every_node() {
    // Arrange: 3 instances, all through HAProxy (one writer node).
    let credit = 300;
    let db = cluster_db();
    let token = db.add_user("alice", credit);
    let servers: Vec<TestServer> = (0..3).map(|_| TestServer::start(&db.url, &[])).collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    // Act: 3·C requests at 30 connections.
    let (statuses, secs) = load(&addrs, &token, 30, 3 * credit as usize);
    // Assert
    let ok = count(&statuses, 200);
    let unavailable = count(&statuses, 503);
    assert_eq!(ok, credit as usize, "200s: {ok}, 503s: {unavailable}");
    let mut seen: Vec<u16> = statuses.clone();
    seen.sort_unstable();
    seen.dedup();
    let histogram: Vec<(u16, usize)> = seen.iter().map(|s| (*s, count(&statuses, *s))).collect();
    assert_eq!(
        ok + count(&statuses, 402) + unavailable,
        statuses.len(),
        "{histogram:?}"
    );
    assert!(unavailable * 100 <= statuses.len(), "{unavailable} × 503");
    for (i, (node_credit, bad, calls)) in per_node(&db, "alice").into_iter().enumerate() {
        assert_eq!(node_credit, 0, "node {}", i + 1);
        assert_eq!(bad, 0, "ledger on node {}", i + 1);
        assert_eq!(calls, credit, "usage on node {}", i + 1);
    }
    // The same load on the plain MariaDB, for the README's comparison.
    let plain = TestDb::new();
    let plain_token = plain.add_user("alice", credit);
    let plain_servers: Vec<TestServer> =
        (0..3).map(|_| TestServer::start(&plain.url, &[])).collect();
    let plain_addrs: Vec<SocketAddr> = plain_servers.iter().map(|s| s.addr).collect();
    let (plain_statuses, plain_secs) = load(&plain_addrs, &plain_token, 30, 3 * credit as usize);
    assert_eq!(count(&plain_statuses, 200), credit as usize);
    eprintln!(
        "single writer: {} requests in {secs:.2} s ({:.0}/s) through HAProxy to Galera, \
         {plain_secs:.2} s ({:.0}/s) on one MariaDB; {unavailable} × 503",
        statuses.len(),
        statuses.len() as f64 / secs,
        plain_statuses.len() as f64 / plain_secs,
    );
}

#[test]
fn losing_the_writer_node_over_grants_nothing_and_recovers_within_3_s() {
    // Arrange
    let credit = 100_000;
    let db = cluster_db();
    let token = db.add_user("alice", credit);
    let servers: Vec<TestServer> = (0..3).map(|_| TestServer::start(&db.url, &[])).collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let stop = Arc::new(AtomicBool::new(false));
    // (time since start, status) of every answer.
    let log: Arc<Mutex<Vec<(Duration, u16)>>> = Arc::default();
    let t0 = Instant::now();
    let runner = {
        let (stop, log, auth) = (stop.clone(), log.clone(), format!("Bearer alice:{token}"));
        std::thread::spawn(move || {
            in_parallel(12, move |i| {
                while !stop.load(Ordering::SeqCst) {
                    let r = request(
                        addrs[i % addrs.len()],
                        "GET",
                        "/api/v1.0/banks_data/bofa/",
                        &[("Authorization", &auth)],
                        None,
                    );
                    log.lock().unwrap().push((t0.elapsed(), r.status));
                    if r.status != 200 {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
    };
    // Act: SIGKILL the writer mid-load.
    std::thread::sleep(Duration::from_secs(3));
    let writer = cluster(&["writer"]);
    let killed_at = t0.elapsed();
    cluster(&["kill", &writer]);
    std::thread::sleep(Duration::from_secs(10));
    stop.store(true, Ordering::SeqCst);
    runner.join().unwrap();
    cluster(&["restart", &writer]);
    // Assert: no over-grant, on every node, the rejoined one included.
    let answers = log.lock().unwrap().clone();
    let ok = count(&answers.iter().map(|(_, s)| *s).collect::<Vec<_>>(), 200) as i64;
    let per_node = per_node(&db, "alice");
    for (i, (node_credit, bad, _)) in per_node.iter().enumerate() {
        assert_eq!(*node_credit, per_node[0].0, "node {} differs", i + 1);
        assert_eq!(*bad, 0, "ledger on node {}", i + 1);
    }
    let taken = credit - per_node[0].0;
    assert!(
        ok <= taken,
        "{ok} answers 200 but only {taken} credits taken"
    );
    // Recovery: the first failure after the kill, and the first 200 after it.
    let failed_from = answers
        .iter()
        .filter(|(t, s)| *t >= killed_at && *s != 200)
        .map(|(t, _)| *t)
        .next();
    if let Some(first_failure) = failed_from {
        let back = answers
            .iter()
            .filter(|(t, s)| *t > first_failure && *s == 200)
            .map(|(t, _)| *t)
            .next()
            .expect("requests never succeeded again");
        let outage = back.saturating_sub(killed_at);
        eprintln!(
            "writer {writer} killed: {} × 200 and {} credits taken overall; \
             answers again {outage:?} after the kill",
            ok, taken
        );
        assert!(
            outage <= Duration::from_secs(3),
            "answered again only after {outage:?}"
        );
    }
}

#[test]
fn a_refill_with_three_instances_happens_once_per_user() {
    let db = cluster_db();
    for i in 0..50 {
        db.add_user_with(&format!("u{i}"), Some(0), Some(100), None);
    }
    // Last month's refill done: this month's is due.
    db.exec("UPDATE users SET credit_period = DATE_FORMAT(NOW() - INTERVAL 1 MONTH, '%Y-%m')");
    // Every instance refills at start, all at once.
    let servers: Vec<TestServer> = (0..3).map(|_| TestServer::start(&db.url, &[])).collect();
    drop(servers);
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM credit_events WHERE reason = 'monthly-refill'"),
        50
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM users WHERE credit = 100"),
        50
    );
    assert_eq!(db.ledger_mismatches(), vec![]);
}

/// `creditgate_cluster_writer_nodes` on `addr`'s /metrics, if present.
fn writer_nodes(addr: SocketAddr) -> Option<u64> {
    request(addr, "GET", "/metrics", &[], None)
        .body
        .lines()
        .find_map(|l| {
            l.strip_prefix("creditgate_cluster_writer_nodes ")?
                .parse()
                .ok()
        })
}

fn wait_for(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

#[test]
fn instances_writing_through_two_nodes_are_detected_and_mailed_once() {
    let db = cluster_db();
    let mail = smtp::SmtpServer::start();
    let smtp_url = mail.url();
    let vars = [
        ("CREDITGATE_HEARTBEAT_SECS", "1"),
        ("CREDITGATE_SMTP_URL", smtp_url.as_str()),
        ("CREDITGATE_MAIL_FROM", "cg@example.org"),
        ("CREDITGATE_ALERT_TO", "ops@example.org"),
    ];
    let nodes = nodes();
    let on_node = |i: usize| format!("{}/{}{NO_SOCKET}", nodes[i], db.name);
    // Arrange: one instance on node 1.
    let a = TestServer::start(&on_node(0), &vars);
    assert!(
        wait_for(Duration::from_secs(10), || writer_nodes(a.addr) == Some(1)),
        "one writer node not reported: {:?}",
        writer_nodes(a.addr)
    );
    // Act: a second instance writing through node 2.
    let b = TestServer::start(&on_node(1), &vars);
    // Assert
    assert!(
        wait_for(Duration::from_secs(15), || writer_nodes(a.addr) == Some(2)
            && writer_nodes(b.addr) == Some(2)),
        "multi-writer not detected: {:?} {:?}",
        writer_nodes(a.addr),
        writer_nodes(b.addr)
    );
    let alerts = || {
        mail.messages()
            .into_iter()
            .filter(|m| m.subject().contains("multi-writer"))
            .count()
    };
    assert!(
        wait_for(Duration::from_secs(10), || alerts() >= 1),
        "no alert mail"
    );
    // Back to one node: b stops, a sees 1 once b's beats are stale.
    drop(b);
    assert!(
        wait_for(Duration::from_secs(15), || writer_nodes(a.addr) == Some(1)),
        "still {:?} after the second instance stopped",
        writer_nodes(a.addr)
    );
    // One mail per instance that saw it, not one per heartbeat.
    assert!(alerts() <= 2, "{} alert mails", alerts());
}

#[test]
fn gateway_refunds_are_exact_through_the_single_writer() {
    let db = cluster_db();
    let token = db.add_user("alice", 200);
    let up = upstream::Upstream::start();
    let servers: Vec<TestServer> = (0..3).map(|_| TestServer::start(&db.url, &[])).collect();
    let body = serde_json::json!({ "prefix": "/mix", "upstream": up.url(), "cost": 2, "strip_prefix": true });
    let r = servers[0].admin("POST", "/admin/v1/routes", Some(&body.to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    // Every instance has the route within its refresh.
    std::thread::sleep(creditgate::gateway::REFRESH + Duration::from_secs(1));
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let auth = format!("Bearer alice:{token}");
    let statuses: Vec<u16> = in_parallel(24, move |i| {
        (0..10)
            .map(|n| {
                let want = if (i + n) % 2 == 0 { 200 } else { 500 };
                request(
                    addrs[i % addrs.len()],
                    "GET",
                    &format!("/mix/status/{want}"),
                    &[("Authorization", &auth)],
                    None,
                )
                .status
            })
            .collect::<Vec<u16>>()
    })
    .into_iter()
    .flatten()
    .collect();
    let billed = count(&statuses, 200) as i64;
    let refunded = count(&statuses, 500) as i64;
    assert_eq!(up.seen().len() as i64, billed + refunded);
    for (i, (credit, bad, _)) in per_node(&db, "alice").into_iter().enumerate() {
        assert_eq!(credit, 200 - 2 * billed, "node {}", i + 1);
        assert_eq!(bad, 0, "ledger on node {}", i + 1);
    }
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM credit_events WHERE reason = 'refund'"),
        refunded
    );
}
