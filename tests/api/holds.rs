//! The service API against the real server and database: `/v1/charge` and
//! holds (place, capture, release, expiry), their exactness under
//! concurrency from several instances, and the Idempotency-Key rules of the
//! IETF draft on every path that moves credit.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use creditgate::services::{self, Scopes};
use serde_json::{json, Value};

use crate::support::helpers::{in_parallel, request, spawn_app, Resp, TestDb, TestServer};

/// A service token of `name` with `scopes` (e.g. "charge").
fn service(db: &TestDb, name: &str, scopes: &str) -> String {
    services::add(&db.pool, name, Scopes::parse(scopes).unwrap())
        .expect("add service")
        .1
}

/// A service call: POST (with a JSON body) or GET.
fn call(addr: SocketAddr, token: &str, method: &str, path: &str, body: Option<Value>) -> Resp {
    call_keyed(addr, token, method, path, body, None)
}

fn call_keyed(
    addr: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
    key: Option<&str>,
) -> Resp {
    let auth = format!("Bearer {token}");
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    if let Some(k) = key {
        headers.push(("Idempotency-Key", k));
    }
    let body = body.map(|b| b.to_string());
    request(addr, method, path, &headers, body.as_deref())
}

fn hold(addr: SocketAddr, svc: &str, user: &str, amount: i64) -> Resp {
    call(
        addr,
        svc,
        "POST",
        "/v1/holds",
        Some(json!({"user": user, "amount": amount})),
    )
}

fn capture(addr: SocketAddr, svc: &str, id: &Value, amount: i64) -> Resp {
    call(
        addr,
        svc,
        "POST",
        &format!("/v1/holds/{id}/capture"),
        Some(json!({ "amount": amount })),
    )
}

fn release(addr: SocketAddr, svc: &str, id: &Value) -> Resp {
    call(addr, svc, "POST", &format!("/v1/holds/{id}/release"), None)
}

fn held(db: &TestDb, user: &str) -> i64 {
    db.scalar(&format!("SELECT held FROM users WHERE username = '{user}'"))
}

fn usage(db: &TestDb, user: &str) -> i64 {
    db.scalar(&format!(
        "SELECT CAST(COALESCE(SUM(d.credits), 0) AS SIGNED) FROM usage_daily d \
         JOIN users u ON u.id = d.user_id WHERE u.username = '{user}'"
    ))
}

/// Credit, held, usage and the ledger invariant, checked together.
fn assert_books(db: &TestDb, user: &str, credit: i64, held_now: i64, used: i64) {
    assert_eq!(
        (db.credit(user), held(db, user), usage(db, user)),
        (credit, held_now, used),
        "{user}: (credit, held, usage)"
    );
    assert_eq!(db.ledger_mismatches(), vec![], "the ledger invariant");
}

#[test]
fn twenty_concurrent_holds_of_75_on_500_from_three_instances_grant_exactly_six() {
    let db = TestDb::new();
    db.add_user("alice", 500);
    let svc = Arc::new(service(&db, "llm", "charge"));
    let servers: Vec<TestServer> = (0..3).map(|_| TestServer::start(&db.url, &[])).collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let answers = in_parallel(20, {
        let svc = Arc::clone(&svc);
        move |i| hold(addrs[i % 3], &svc, "alice", 75)
    });
    let granted: Vec<&Resp> = answers.iter().filter(|r| r.status == 201).collect();
    let refused: Vec<&Resp> = answers
        .iter()
        .filter(|r| r.status == 200 && r.json()["code"] == "INSUFFICIENT_CREDIT")
        .collect();
    assert_eq!((granted.len(), refused.len()), (6, 14), "{answers:?}");
    assert_books(&db, "alice", 500, 450, 0);
    // Capturing each at a real price of 50 charges 300 and frees the rest.
    for r in &granted {
        let c = capture(servers[1].addr, &svc, &r.json()["hold"]["id"], 50);
        assert_eq!(c.status, 200, "{}", c.body);
    }
    assert_books(&db, "alice", 200, 0, 300);
}

#[test]
fn a_hold_takes_its_amount_from_what_every_paid_path_may_spend() {
    let app = spawn_app();
    let token = app.db.add_user("alice", 10);
    let svc = service(&app.db, "llm", "charge");
    let h = hold(app.addr, &svc, "alice", 9);
    assert_eq!(h.status, 201, "{}", h.body);
    assert_eq!(h.json()["credit_available"], 1);
    assert_eq!(h.json()["hold"]["state"], "open");
    // The bank route sees 1 available; its 402 says so.
    assert_eq!(app.bank("alice", &token, "BOFA").status, 200);
    let short = app.bank("alice", &token, "BOFA");
    assert_eq!(short.status, 402);
    assert_eq!(short.header("X-Credit-Remaining"), Some("0"));
    let balance = app.get(
        "/api/v1.0/credit",
        &[("Authorization", &format!("Bearer alice:{token}"))],
    );
    assert_eq!(
        (
            balance.json()["credit"].clone(),
            balance.json()["held"].clone()
        ),
        (json!(0), json!(9))
    );
    // The operator cannot take held credit away; everything else can go.
    let set = app.admin(
        "POST",
        "/admin/v1/users/alice/credit",
        Some(r#"{"set": 8}"#),
    );
    assert_eq!(set.status, 400, "{}", set.body);
    assert!(set.body.contains("held"), "{}", set.body);
    let set = app.admin(
        "POST",
        "/admin/v1/users/alice/credit",
        Some(r#"{"set": 9}"#),
    );
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(set.json()["held"], 9);
    assert_books(&app.db, "alice", 9, 9, 1);
}

#[test]
fn capture_math_at_its_edges() {
    let app = spawn_app();
    app.db.add_user("alice", 100);
    let svc = service(&app.db, "llm", "charge");
    let mut captured_total = 0;
    // (amount held, real price, captured, uncollected)
    for (amount, price, want, missing) in [
        (10, 10, 10, 0),
        (10, 11, 11, 0),
        (10, 0, 0, 0),
        (10, 3, 3, 0),
    ] {
        let h = hold(app.addr, &svc, "alice", amount);
        let c = capture(app.addr, &svc, &h.json()["hold"]["id"], price);
        assert_eq!(c.status, 200, "{}", c.body);
        let j = c.json();
        assert_eq!(
            (j["captured"].clone(), j["uncollected"].clone()),
            (json!(want), json!(missing))
        );
        assert_eq!(j["hold"]["state"], "captured");
        captured_total += want;
        assert_eq!(j["credit_remaining"], 100 - captured_total);
    }
    assert_books(&app.db, "alice", 76, 0, 24);
    // Above hold + available: all of it is taken, never below zero, and
    // what is missing is said.
    let h = hold(app.addr, &svc, "alice", 70);
    let c = capture(app.addr, &svc, &h.json()["hold"]["id"], 90);
    let j = c.json();
    assert_eq!(
        (
            j["captured"].clone(),
            j["uncollected"].clone(),
            j["credit_remaining"].clone()
        ),
        (json!(76), json!(14), json!(0))
    );
    assert_books(&app.db, "alice", 0, 0, 100);
}

#[test]
fn capture_and_release_settle_once_and_say_so_after() {
    let app = spawn_app();
    app.db.add_user("alice", 100);
    let svc = service(&app.db, "llm", "charge");
    let id = hold(app.addr, &svc, "alice", 10).json()["hold"]["id"].clone();
    let first = capture(app.addr, &svc, &id, 7);
    let again = capture(app.addr, &svc, &id, 7);
    assert_eq!((first.status, again.status), (200, 200));
    assert_eq!(
        first.json(),
        again.json(),
        "the same capture answers the same"
    );
    let other = capture(app.addr, &svc, &id, 8);
    assert_eq!(
        (other.status, other.error().as_str()),
        (409, "hold_settled")
    );
    assert_eq!(other.json()["state"], "captured");
    let r = release(app.addr, &svc, &id);
    assert_eq!(
        (r.status, r.json()["state"].clone()),
        (409, json!("captured"))
    );
    assert_books(&app.db, "alice", 93, 0, 7);

    let id = hold(app.addr, &svc, "alice", 10).json()["hold"]["id"].clone();
    let r1 = release(app.addr, &svc, &id);
    let r2 = release(app.addr, &svc, &id);
    assert_eq!((r1.status, r2.status), (200, 200), "{}", r1.body);
    assert_eq!(r1.json()["hold"]["state"], "released");
    assert_eq!(r1.json()["credit_remaining"], 93);
    let c = capture(app.addr, &svc, &id, 1);
    assert_eq!(
        (c.status, c.json()["state"].clone()),
        (409, json!("released"))
    );
    let got = call(app.addr, &svc, "GET", &format!("/v1/holds/{id}"), None);
    assert_eq!(got.json()["hold"]["state"], "released");
    assert_books(&app.db, "alice", 93, 0, 7);
}

#[test]
fn another_services_hold_is_unknown_to_it() {
    let app = spawn_app();
    app.db.add_user("alice", 100);
    let a = service(&app.db, "a", "charge");
    let b = service(&app.db, "b", "charge");
    let id = hold(app.addr, &a, "alice", 10).json()["hold"]["id"].clone();
    for r in [
        call(app.addr, &b, "GET", &format!("/v1/holds/{id}"), None),
        capture(app.addr, &b, &id, 1),
        release(app.addr, &b, &id),
        capture(app.addr, &a, &json!(999_999), 1),
        call(app.addr, &a, "GET", "/v1/holds/nope", None),
        call(app.addr, &a, "GET", &format!("/v1/holds/+{id}"), None),
    ] {
        assert_eq!(
            (r.status, r.error().as_str()),
            (404, "unknown_hold"),
            "{}",
            r.body
        );
    }
    assert_books(&app.db, "alice", 100, 10, 0);
}

#[test]
fn an_expired_hold_is_released_once_and_cannot_be_captured() {
    let app = spawn_app();
    app.db.add_user("alice", 100);
    let svc = service(&app.db, "llm", "charge");
    // Only this test runs the job: the scheduler's own run (every 10 s)
    // could otherwise come between the expiry and the capture.
    let paused = app.admin("POST", "/admin/v1/jobs/expire-holds/pause", None);
    assert_eq!(paused.status, 200, "{}", paused.body);
    let body = |ttl: i64| Some(json!({"user": "alice", "amount": 10, "ttl_secs": ttl}));
    let late = call(app.addr, &svc, "POST", "/v1/holds", body(1)).json()["hold"]["id"].clone();
    let left = call(app.addr, &svc, "POST", "/v1/holds", body(1)).json()["hold"]["id"].clone();
    assert_eq!(held(&app.db, "alice"), 20);
    std::thread::sleep(Duration::from_millis(1_200));
    // A capture after the expiry, before the job: refused, and the hold is
    // released by it.
    let c = capture(app.addr, &svc, &late, 5);
    assert_eq!(
        (c.status, c.json()["state"].clone()),
        (409, json!("expired")),
        "{}",
        c.body
    );
    assert_eq!(held(&app.db, "alice"), 10);
    // The job releases the other, once, however often it runs.
    for _ in 0..3 {
        let run = app.admin("POST", "/admin/v1/jobs/expire-holds/run", None);
        assert_eq!(run.status, 200, "{}", run.body);
    }
    let got = call(app.addr, &svc, "GET", &format!("/v1/holds/{left}"), None);
    assert_eq!(got.json()["hold"]["state"], "expired");
    let metrics = app.get("/metrics", &[]).body;
    assert!(
        metrics.contains("creditgate_holds_expired_total 1\n"),
        "{metrics}"
    );
    assert_books(&app.db, "alice", 100, 0, 0);
}

#[test]
fn a_user_has_at_most_ten_thousand_open_holds() {
    let app = spawn_app();
    app.db.add_user("alice", 1_000_000);
    let svc = service(&app.db, "llm", "charge");
    // 9,999 open holds of 1, written as the service would have.
    app.db.exec(
        "INSERT INTO holds (user_id, service_id, endpoint, amount, expires_at) \
         SELECT u.id, s.id, 'hold', 1, NOW(3) + INTERVAL 1 HOUR \
         FROM users u, services s, seq_1_to_9999",
    );
    app.db.exec("UPDATE users SET held = 9999");
    assert_eq!(hold(app.addr, &svc, "alice", 1).status, 201);
    let over = hold(app.addr, &svc, "alice", 1);
    assert_eq!(
        (over.status, over.error().as_str()),
        (400, "too_many_holds"),
        "{}",
        over.body
    );
    assert_books(&app.db, "alice", 1_000_000, 10_000, 0);
}

#[test]
fn the_charge_api_decides_as_the_paid_route() {
    let app = spawn_app();
    let token = app.db.add_user("alice", 5);
    app.db.add_user("bob", 5);
    app.admin("POST", "/admin/v1/users/bob/disable", None);
    let svc = service(&app.db, "billing", "charge");
    let charge = |body: Value| call(app.addr, &svc, "POST", "/v1/charge", Some(body));
    let creds = format!("alice:{token}");
    let ok = charge(json!({"credentials": creds, "cost": 3, "endpoint": "llm:tokens"}));
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(
        ok.json(),
        json!({"valid": true, "code": "VALID", "user": "alice", "cost": 3, "credit_remaining": 2})
    );
    // Cost 0 verifies: nothing charged, no usage.
    let verify = charge(json!({"user": "alice", "cost": 0}));
    assert_eq!(
        (
            verify.json()["valid"].clone(),
            verify.json()["credit_remaining"].clone()
        ),
        (json!(true), json!(2))
    );
    let short = charge(json!({"user": "alice", "cost": 3}));
    assert_eq!(
        (
            short.status,
            short.json()["code"].clone(),
            short.json()["credit_remaining"].clone()
        ),
        (200, json!("INSUFFICIENT_CREDIT"), json!(2))
    );
    for who in [
        json!({"credentials": "alice:cg_wrong"}),
        json!({"credentials": "nobody:cg_x"}),
        json!({"user": "nobody"}),
        json!({"user": "bob"}),
    ] {
        let r = charge(who.clone());
        assert_eq!(
            (r.status, r.json()["code"].clone()),
            (200, json!("UNAUTHORIZED")),
            "{who}"
        );
        assert_eq!(
            r.json()["credit_remaining"],
            Value::Null,
            "no balance leaks"
        );
    }
    // Bad bodies change nothing.
    for bad in [
        json!({}),
        json!({"user": "alice", "cost": -1}),
        json!({"user": "alice", "endpoint": "a b"}),
    ] {
        assert_eq!(charge(bad.clone()).status, 400, "{bad}");
    }
    assert_books(&app.db, "alice", 2, 0, 3);
    let used: i64 = app
        .db
        .scalar("SELECT SUM(calls) FROM usage_daily WHERE endpoint = 'llm:tokens'");
    assert_eq!(used, 1);
}

#[test]
fn the_charge_api_counts_against_the_rate_limit() {
    let app = spawn_app();
    app.db.add_user("alice", 100);
    let limit = app.admin(
        "POST",
        "/admin/v1/users/alice/limit",
        Some(r#"{"quota": 2, "window_secs": 60}"#),
    );
    assert_eq!(limit.status, 200, "{}", limit.body);
    let svc = service(&app.db, "billing", "charge");
    let codes: Vec<Value> = (0..3)
        .map(|_| {
            call(
                app.addr,
                &svc,
                "POST",
                "/v1/charge",
                Some(json!({"user": "alice"})),
            )
            .json()
        })
        .collect();
    assert_eq!(
        (codes[0]["code"].clone(), codes[1]["code"].clone()),
        (json!("VALID"), json!("VALID"))
    );
    assert_eq!(codes[2]["code"], "RATE_LIMITED", "{:?}", codes[2]);
    assert!(codes[2]["retry_after"].as_u64().unwrap() >= 1);
    // A hold asks the same limiter (and does not spend it).
    let h = hold(app.addr, &svc, "alice", 1);
    assert_eq!(
        (h.status, h.json()["code"].clone()),
        (200, json!("RATE_LIMITED"))
    );
    assert_books(&app.db, "alice", 98, 0, 2);
}

#[test]
fn service_tokens_guard_the_service_api() {
    let app = spawn_app();
    app.db.add_user("alice", 10);
    let reader = service(&app.db, "reader", "read");
    let body = Some(json!({"user": "alice"}));
    let r = call(app.addr, &reader, "POST", "/v1/charge", body.clone());
    assert_eq!(r.status, 403, "{}", r.body);
    let r = call(
        app.addr,
        "cgs_not_a_token",
        "POST",
        "/v1/holds",
        Some(json!({"user": "alice", "amount": 1})),
    );
    assert_eq!(r.status, 401, "{}", r.body);
    let r = call(app.addr, &app.admin_token, "POST", "/v1/charge", body);
    assert_eq!(r.status, 401, "the admin token is not a service token");
    assert_books(&app.db, "alice", 10, 0, 0);
}

#[test]
fn idempotency_keys_on_the_service_api_follow_the_draft() {
    let app = spawn_app();
    app.db.add_user("alice", 100);
    let a = service(&app.db, "a", "charge");
    let b = service(&app.db, "b", "charge");
    let keyed = |svc: &str, path: &str, body: Value, key: &str| {
        call_keyed(app.addr, svc, "POST", path, Some(body), Some(key))
    };
    let first = keyed(&a, "/v1/charge", json!({"user": "alice", "cost": 5}), "k1");
    let again = keyed(&a, "/v1/charge", json!({"cost": 5, "user": "alice"}), "k1");
    assert_eq!((first.status, again.status), (200, 200));
    assert_eq!(first.body, again.body);
    assert_eq!(again.header("Idempotency-Replayed"), Some("true"));
    let other = keyed(&a, "/v1/charge", json!({"user": "alice", "cost": 6}), "k1");
    assert_eq!(
        (other.status, other.error().as_str()),
        (422, "idempotency_key_reused")
    );
    // Another path under the same key is another request too.
    let path = keyed(&a, "/v1/holds", json!({"user": "alice", "amount": 5}), "k1");
    assert_eq!(path.status, 422);
    // Keys belong to their service.
    let theirs = keyed(&b, "/v1/charge", json!({"user": "alice", "cost": 5}), "k1");
    assert_eq!(theirs.header("Idempotency-Replayed"), None);
    assert_books(&app.db, "alice", 90, 0, 10);
    // A hold and its capture, each keyed, retried: placed once, charged once.
    let h1 = keyed(&a, "/v1/holds", json!({"user": "alice", "amount": 20}), "h");
    let h2 = keyed(&a, "/v1/holds", json!({"user": "alice", "amount": 20}), "h");
    assert_eq!(
        (h1.status, h2.status, h1.body.clone()),
        (201, 201, h2.body.clone())
    );
    let id = h1.json()["hold"]["id"].clone();
    let path = format!("/v1/holds/{id}/capture");
    let c1 = keyed(&a, &path, json!({"amount": 4}), "c");
    let c2 = keyed(&a, &path, json!({"amount": 4}), "c");
    assert_eq!(
        (c1.body.clone(), c2.header("Idempotency-Replayed")),
        (c2.body.clone(), Some("true"))
    );
    assert_books(&app.db, "alice", 86, 0, 14);
}

#[test]
fn one_key_sent_by_twelve_clients_at_once_is_charged_once() {
    let app = spawn_app();
    app.db.add_user("alice", 100);
    let svc = Arc::new(service(&app.db, "a", "charge"));
    let addr = app.addr;
    let answers = in_parallel(12, move |_| {
        call_keyed(
            addr,
            &svc,
            "POST",
            "/v1/charge",
            Some(json!({"user": "alice", "cost": 7})),
            Some("same"),
        )
    });
    assert!(
        answers
            .iter()
            .all(|r| r.status == 200 && r.json()["valid"] == true),
        "{answers:?}"
    );
    let replayed = answers
        .iter()
        .filter(|r| r.header("Idempotency-Replayed").is_some())
        .count();
    assert_eq!(replayed, 11);
    assert_books(&app.db, "alice", 93, 0, 7);
}

#[test]
fn the_bank_route_refuses_a_key_reused_for_another_bank() {
    let app = spawn_app();
    let token = app.db.add_user("alice", 10);
    let get = |bank: &str| {
        app.get(
            &format!("/api/v1.0/banks_data/{bank}/"),
            &[
                ("Authorization", &format!("Bearer alice:{token}")),
                ("Idempotency-Key", "k"),
            ],
        )
    };
    assert_eq!(get("BOFA").status, 200);
    assert_eq!(get("BOFA").header("Idempotency-Replayed"), Some("true"));
    let other = get("CHASE");
    assert_eq!(
        (other.status, other.error().as_str()),
        (422, "idempotency_key_reused"),
        "{}",
        other.body
    );
    assert_eq!(app.db.credit("alice"), 9);
}

/// What the clients of the mixed run were told they were charged, per user.
struct Told(Vec<AtomicI64>);

#[test]
fn holds_captures_releases_charges_and_bank_requests_mixed_from_three_instances_stay_exact() {
    const USERS: usize = 4;
    const START: i64 = 2_000;
    let db = TestDb::new();
    let tokens: Vec<String> = (0..USERS)
        .map(|u| db.add_user(&format!("u{u}"), START))
        .collect();
    let svc = service(&db, "mix", "charge");
    let servers: Vec<TestServer> = (0..3).map(|_| TestServer::start(&db.url, &[])).collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let told = Arc::new(Told((0..USERS).map(|_| AtomicI64::new(0)).collect()));
    let tokens = Arc::new(tokens);
    let svc = Arc::new(svc);
    let until = Instant::now() + Duration::from_secs(10);
    in_parallel(12, {
        let told = Arc::clone(&told);
        move |w| {
            let mut rng = Rng(w as u64 * 7919 + 1);
            while Instant::now() < until {
                let u = rng.below(USERS as u64) as usize;
                let addr = addrs[rng.below(3) as usize];
                let charged = mixed_step(&mut rng, addr, &svc, &format!("u{u}"), &tokens[u]);
                told.0[u].fetch_add(charged, Ordering::SeqCst);
            }
        }
    });
    // Abandoned holds (at most 3 s) expire; then every user's books close.
    std::thread::sleep(Duration::from_millis(3_200));
    let run = servers[0].admin("POST", "/admin/v1/jobs/expire-holds/run", None);
    assert_eq!(run.status, 200);
    for (u, t) in told.0.iter().enumerate() {
        let name = format!("u{u}");
        let t = t.load(Ordering::SeqCst);
        assert!(t > 0, "{name} was charged nothing: the run did not run");
        assert_books(&db, &name, START - t, 0, t);
    }
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM holds WHERE state = 'open'"),
        0
    );
}

/// One random step of the mixed run; returns what the client was told it
/// was charged.
fn mixed_step(rng: &mut Rng, addr: SocketAddr, svc: &str, user: &str, token: &str) -> i64 {
    match rng.below(4) {
        0 => {
            let cost = rng.below(6) as i64;
            let r = call(
                addr,
                svc,
                "POST",
                "/v1/charge",
                Some(json!({"user": user, "cost": cost})),
            );
            if r.json()["valid"] == true {
                r.json()["cost"].as_i64().unwrap()
            } else {
                0
            }
        }
        1 => {
            let r = request(
                addr,
                "GET",
                "/api/v1.0/banks_data/BOFA/",
                &[("Authorization", &format!("Bearer {user}:{token}"))],
                None,
            );
            if r.status == 200 {
                1
            } else {
                0
            }
        }
        _ => {
            let ttl = 1 + rng.below(3) as i64;
            let amount = 1 + rng.below(29) as i64;
            let body = json!({"credentials": format!("{user}:{token}"), "amount": amount, "ttl_secs": ttl});
            let h = call(addr, svc, "POST", "/v1/holds", Some(body));
            if h.status != 201 {
                return 0;
            }
            let id = h.json()["hold"]["id"].clone();
            match rng.below(4) {
                0 => {
                    release(addr, svc, &id);
                    0
                }
                1 => 0, // abandoned: the expiry releases it
                _ => {
                    let c = capture(addr, svc, &id, rng.below(45) as i64);
                    if c.status == 200 {
                        c.json()["captured"].as_i64().unwrap()
                    } else {
                        0
                    }
                }
            }
        }
    }
}

/// A small deterministic generator (xorshift), so a failing run can be
/// repeated; seeded per worker.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
