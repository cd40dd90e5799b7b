//! Coalesced charging (CREDITGATE_COALESCE=on): waiting requests, of one
//! user or of many, decided one by one in one transaction. Every answer must be what some
//! serial order of single requests would have given.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use creditgate::services::{self, Scopes};
use mysql::prelude::Queryable;
use serde_json::json;

use crate::support::helpers::{
    in_parallel, request, spawn_app_with, Resp, TestApp, TestDb, TestServer,
};

fn coalescing_app() -> TestApp {
    spawn_app_with(&[("CREDITGATE_COALESCE", "on")])
}

fn metric(app: &TestApp, name: &str) -> i64 {
    let text = app.get("/metrics", &[]).body;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in {text}"))
}

#[test]
fn a_hot_user_is_charged_exactly_in_one_serial_order() {
    // Arrange: credit 100, a bank that costs 3.
    let app = coalescing_app();
    app.db.exec(
        "INSERT INTO banks (code, name, cost, data) VALUES ('THREE', 'Costs three', 3, '{}')",
    );
    let token = app.db.add_user("alice", 100);
    let (addr, auth) = (app.addr, format!("Bearer alice:{token}"));
    // Act: 200 at once.
    let answers: Vec<Resp> = in_parallel(200, move |_| {
        request(
            addr,
            "GET",
            "/api/v1.0/banks_data/THREE/",
            &[("Authorization", &auth)],
            None,
        )
    });
    // Assert
    let ok: Vec<&Resp> = answers.iter().filter(|r| r.status == 200).collect();
    assert_eq!(ok.len(), 33);
    assert_eq!(answers.iter().filter(|r| r.status == 402).count(), 167);
    assert_eq!(app.db.credit("alice"), 1);
    assert_eq!(app.db.scalar("SELECT SUM(calls) FROM usage_daily"), 33);
    let remaining: BTreeSet<i64> = ok
        .iter()
        .map(|r| r.json()["credit_remaining"].as_i64().unwrap())
        .collect();
    let serial: BTreeSet<i64> = (0..33).map(|i| 97 - 3 * i).collect();
    assert_eq!(
        remaining, serial,
        "each 200 saw its own step of one serial order"
    );
    for r in answers.iter().filter(|r| r.status == 402) {
        assert_eq!(r.header("X-Credit-Remaining"), Some("1"));
    }
    assert_eq!(app.db.ledger_mismatches(), vec![]);
    let (batches, requests) = (
        metric(&app, "creditgate_coalesced_batches_total"),
        metric(&app, "creditgate_coalesced_requests_total"),
    );
    assert_eq!(requests, 200);
    assert!(
        batches < requests,
        "nothing was coalesced: {batches} batches"
    );
}

#[test]
fn a_batch_decides_each_request_on_its_own_credentials_and_key() {
    let app = coalescing_app();
    let token = app.db.add_user("alice", 50);
    let addr = app.addr;
    // Half the clients send a wrong token; a third send the same key.
    let answers: Vec<(usize, Resp)> = in_parallel(60, move |i| {
        let tok = if i % 2 == 0 {
            token.clone()
        } else {
            "cg_wrong".to_string()
        };
        let auth = format!("Bearer alice:{tok}");
        let mut headers = vec![("Authorization", auth.as_str())];
        if i % 6 == 0 {
            headers.push(("Idempotency-Key", "shared-key"));
        }
        (
            i,
            request(addr, "GET", "/api/v1.0/banks_data/BOFA/", &headers, None),
        )
    });
    for (i, r) in &answers {
        if i % 2 == 1 {
            assert_eq!(r.status, 401, "client {i}");
        } else {
            assert_eq!(r.status, 200, "client {i}: {}", r.body);
        }
    }
    // 30 good clients, of which 10 share one key: charged once for those.
    let keyed: Vec<&Resp> = answers
        .iter()
        .filter(|(i, _)| i % 6 == 0)
        .map(|(_, r)| r)
        .collect();
    let replays = keyed
        .iter()
        .filter(|r| r.header("Idempotency-Replayed") == Some("true"))
        .count();
    assert_eq!(replays, keyed.len() - 1);
    assert_eq!(app.db.credit("alice"), 50 - (30 - replays as i64));
    assert_eq!(app.db.ledger_mismatches(), vec![]);
}

// Group charging (#23): different users' waiting requests in one batch.

/// A coalescing server on `db`, as a second (or third) instance would be.
fn coalescing_server(db: &TestDb) -> TestServer {
    TestServer::start(&db.url, &[("CREDITGATE_COALESCE", "on")])
}

fn bank(addr: SocketAddr, user: &str, token: &str, key: Option<&str>) -> Resp {
    let auth = format!("Bearer {user}:{token}");
    let mut headers = vec![("Authorization", auth.as_str())];
    if let Some(k) = key {
        headers.push(("Idempotency-Key", k));
    }
    request(addr, "GET", "/api/v1.0/banks_data/BOFA/", &headers, None)
}

#[test]
fn many_users_on_three_instances_are_charged_exactly() {
    // Arrange: 30 users with 10 credits each; every third has 4 of them
    // held by a service's open hold; three coalescing instances.
    let db = TestDb::new();
    let users: Vec<(String, String)> = (0..30)
        .map(|i| {
            let name = format!("u{i:02}");
            let token = db.add_user(&name, 10);
            (name, token)
        })
        .collect();
    let servers: Vec<TestServer> = (0..3).map(|_| coalescing_server(&db)).collect();
    let svc = services::add(&db.pool, "svc", Scopes::parse("charge").unwrap())
        .unwrap()
        .1;
    for (name, _) in users.iter().step_by(3) {
        let body = json!({"user": name, "amount": 4, "ttl_secs": 3600}).to_string();
        let auth = format!("Bearer {svc}");
        let r = request(
            servers[0].addr,
            "POST",
            "/v1/holds",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            Some(&body),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let shared = Arc::new(users.clone());

    // Act: 15 requests per user at once, spread over the instances; three
    // of each user's share one Idempotency-Key.
    let answers: Vec<(usize, Option<String>, Resp)> = in_parallel(30 * 15, move |i| {
        let (user, n) = (i % 30, i / 30);
        let (name, token) = &shared[user];
        let key = (n < 3).then(|| format!("key-{name}"));
        let r = bank(addrs[i % 3], name, token, key.as_deref());
        (user, key, r)
    });

    // Assert: per user, exactly what may be spent was charged, once each.
    for (u, (name, _)) in users.iter().enumerate() {
        let mine: Vec<&(usize, Option<String>, Resp)> =
            answers.iter().filter(|(user, ..)| *user == u).collect();
        let held = if u % 3 == 0 { 4 } else { 0 };
        let fresh_ok = mine
            .iter()
            .filter(|(_, _, r)| r.status == 200 && r.header("Idempotency-Replayed").is_none())
            .count() as i64;
        assert_eq!(fresh_ok, 10 - held, "{name}");
        assert!(
            mine.iter().all(|(_, _, r)| [200, 402].contains(&r.status)),
            "{name}"
        );
        let keyed: BTreeSet<(u16, String)> = mine
            .iter()
            .filter(|(_, key, _)| key.is_some())
            .map(|(_, _, r)| (r.status, r.body.clone()))
            .collect();
        assert_eq!(keyed.len(), 1, "{name}: one key, one answer");
        assert_eq!(db.credit(name), held, "{name}");
        let row = format!("SELECT held FROM users WHERE username = '{name}'");
        assert_eq!(db.scalar(&row), held, "{name}");
        let calls = format!(
            "SELECT SUM(d.calls) FROM usage_daily d JOIN users u ON u.id = d.user_id \
             WHERE u.username = '{name}'"
        );
        assert_eq!(db.scalar(&calls), 10 - held, "{name}");
    }
    assert_eq!(db.ledger_mismatches(), vec![]);
    let batches: i64 = servers
        .iter()
        .map(|s| metric_at(s.addr, "creditgate_coalesced_batches_total"))
        .sum();
    let requests: i64 = servers
        .iter()
        .map(|s| metric_at(s.addr, "creditgate_coalesced_requests_total"))
        .sum();
    assert_eq!(requests, 450, "each request decided in one batch");
    assert!(batches < requests, "{batches} batches");
}

fn metric_at(addr: SocketAddr, name: &str) -> i64 {
    let text = request(addr, "GET", "/metrics", &[], None).body;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in {text}"))
}

#[test]
fn one_request_each_of_many_users_shares_batches() {
    // Each user sends one request: any batch of two or more mixes users.
    let app = coalescing_app();
    let users: Vec<(String, String)> = (0..100)
        .map(|i| {
            let name = format!("p{i:03}");
            let token = app.db.add_user(&name, 5);
            (name, token)
        })
        .collect();
    let addr = app.addr;
    let shared = Arc::new(users.clone());
    let answers = in_parallel(100, move |i| bank(addr, &shared[i].0, &shared[i].1, None));
    assert!(answers.iter().all(|r| r.status == 200));
    for (name, _) in &users {
        assert_eq!(app.db.credit(name), 4, "{name}");
    }
    assert_eq!(app.db.ledger_mismatches(), vec![]);
    let batches = metric(&app, "creditgate_coalesced_batches_total");
    assert!(batches < 100, "every request alone: {batches} batches");
}

#[test]
fn refusals_in_a_batch_do_not_fail_their_batch_mates() {
    // Arrange: users that pay, and one of each way to be refused.
    let app = coalescing_app();
    let payers: Vec<(String, String)> = (0..20)
        .map(|i| {
            let name = format!("ok{i:02}");
            let token = app.db.add_user(&name, 100);
            (name, token)
        })
        .collect();
    let broke = app.db.add_user("broke", 0);
    let limited = app.db.add_user("limited", 100);
    app.db.exec(
        "UPDATE users SET rate_quota = 1, rate_window_secs = 3600 WHERE username = 'limited'",
    );
    let off = app.db.add_user("off", 100);
    app.db
        .exec("UPDATE users SET disabled = TRUE WHERE username = 'off'");
    let addr = app.addr;
    let shared = Arc::new(payers.clone());

    // Act: all at once, each kind several times.
    let answers: Vec<(usize, Resp)> = in_parallel(60, move |i| {
        let r = match i % 6 {
            0 | 1 => {
                let (name, token) = &shared[i % 20];
                bank(addr, name, token, None)
            }
            2 => bank(addr, "broke", &broke, None),
            3 => bank(addr, "limited", &limited, None),
            4 => bank(addr, "off", &off, None),
            _ => bank(addr, "nobody", "cg_nothing", None),
        };
        (i % 6, r)
    });

    // Assert: each answered as it would have been alone.
    for (kind, r) in &answers {
        let want: &[u16] = match kind {
            0 | 1 => &[200],
            2 => &[402],
            3 => &[200, 429],
            _ => &[401],
        };
        assert!(
            want.contains(&r.status),
            "kind {kind}: {} {}",
            r.status,
            r.body
        );
    }
    let limited_ok = answers
        .iter()
        .filter(|(k, r)| *k == 3 && r.status == 200)
        .count();
    assert_eq!(limited_ok, 1, "a quota of one lets one through");
    let paid: i64 = payers.iter().map(|(n, _)| 100 - app.db.credit(n)).sum();
    assert_eq!(paid, 20);
    assert_eq!(app.db.credit("limited"), 99);
    assert_eq!(app.db.credit("off"), 100);
    assert_eq!(app.db.ledger_mismatches(), vec![]);
}

#[test]
fn a_row_locked_by_an_admin_holds_up_only_its_own_user() {
    // Arrange: alice's row locked FOR UPDATE by an admin's open transaction.
    let app = coalescing_app();
    let alice = app.db.add_user("alice", 10);
    let others: Vec<(String, String)> = (0..20)
        .map(|i| {
            let name = format!("o{i:02}");
            let token = app.db.add_user(&name, 10);
            (name, token)
        })
        .collect();
    let mut admin = app.db.conn();
    admin.query_drop("START TRANSACTION").unwrap();
    admin
        .query_drop("SELECT * FROM users WHERE username = 'alice' FOR UPDATE")
        .unwrap();
    let addr = app.addr;

    // Act: alice's requests and everybody else's at once.
    let alice_waits: Vec<_> = (0..3)
        .map(|_| {
            let token = alice.clone();
            std::thread::spawn(move || bank(addr, "alice", &token, None))
        })
        .collect();
    let shared = Arc::new(others.clone());
    let answers = in_parallel(60, move |i| {
        let (name, token) = &shared[i % 20];
        bank(addr, name, token, None)
    });

    // Assert: the others were all answered while alice's row was still
    // locked, and alice's requests were not (they wait for the row)...
    assert!(answers.iter().all(|r| r.status == 200));
    // (Alice's first request is left out of a batch, not waited for; her
    // others wait in the queue for the batch that waits for her row.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while metric(&app, "creditgate_coalesced_skipped_total") < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "alice was never skipped"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(alice_waits.iter().all(|h| !h.is_finished()));
    for (name, _) in &others {
        assert_eq!(app.db.credit(name), 7, "{name}");
    }
    // ...then are answered once it is free.
    admin.query_drop("COMMIT").unwrap();
    for h in alice_waits {
        assert_eq!(h.join().unwrap().status, 200);
    }
    assert_eq!(app.db.credit("alice"), 7);
    assert_eq!(app.db.ledger_mismatches(), vec![]);
}
