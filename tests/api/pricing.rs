//! Gateway routes priced by the upstream (`max_cost`, `cost_header`): a
//! request holds `max_cost`, is forwarded, and is captured at the price
//! the answer states, or released when the answer is not billable. Real
//! upstream, real database; every test closes the books (credit, held,
//! usage, the ledger invariant).

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::json;

use crate::support::helpers::{in_parallel, request, spawn_app, Resp, TestApp, TestDb, TestServer};
use crate::support::upstream::Upstream;

/// An app with `alice` (`credit`) and the route `/llm` to a real upstream,
/// priced by it up to `max_cost` (its fixed cost 2).
fn world(credit: i64, max_cost: i64) -> (TestApp, Upstream, String) {
    let app = spawn_app();
    let token = app.db.add_user("alice", credit);
    let upstream = Upstream::start();
    app.add_route(
        "/llm",
        &upstream.url(),
        json!({"cost": 2, "max_cost": max_cost, "strip_prefix": true}),
    );
    (app, upstream, token)
}

fn call(addr: SocketAddr, token: &str, path: &str) -> Resp {
    let auth = format!("Bearer alice:{token}");
    request(addr, "GET", path, &[("Authorization", &auth)], None)
}

fn books(app: &TestApp) -> (i64, i64, i64) {
    let db = &app.db;
    assert_eq!(db.ledger_mismatches(), vec![], "the ledger invariant");
    (
        db.credit("alice"),
        db.scalar("SELECT held FROM users WHERE username = 'alice'"),
        db.scalar("SELECT CAST(COALESCE(SUM(credits), 0) AS SIGNED) FROM usage_daily"),
    )
}

#[test]
fn the_price_in_the_answer_header_is_charged_and_the_client_never_sees_it() {
    let (app, _up, token) = world(100, 10);
    let r = call(app.addr, &token, "/llm/priced/200?cost=7");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("X-Credit-Charged"), Some("7"));
    assert_eq!(r.header("X-Credit-Remaining"), Some("93"));
    assert_eq!(
        r.header("X-Credit-Cost"),
        None,
        "the upstream's price header is removed"
    );
    assert_eq!(books(&app), (93, 0, 7));
}

#[test]
fn an_answer_without_a_price_costs_the_route_cost_and_one_above_max_cost_costs_max_cost() {
    let (app, _up, token) = world(100, 10);
    let plain = call(app.addr, &token, "/llm/priced/200");
    assert_eq!(plain.header("X-Credit-Charged"), Some("2"));
    let greedy = call(app.addr, &token, "/llm/priced/200?cost=500");
    assert_eq!(
        greedy.header("X-Credit-Charged"),
        Some("10"),
        "capped at what was held"
    );
    let junk = call(app.addr, &token, "/llm/priced/200?cost=x");
    assert_eq!(
        junk.header("X-Credit-Charged"),
        Some("2"),
        "an unreadable price is none"
    );
    assert_eq!(books(&app), (86, 0, 14));
}

#[test]
fn a_route_may_name_its_own_price_header() {
    let app = spawn_app();
    let token = app.db.add_user("alice", 100);
    let upstream = Upstream::start();
    app.add_route(
        "/llm",
        &upstream.url(),
        json!({"cost": 1, "max_cost": 50, "cost_header": "X-Tokens", "strip_prefix": true}),
    );
    let r = call(app.addr, &token, "/llm/priced/200?cost=33&header=X-Tokens");
    assert_eq!(r.header("X-Credit-Charged"), Some("33"));
    assert_eq!(r.header("X-Tokens"), None);
    assert_eq!(books(&app), (67, 0, 33));
}

#[test]
fn answers_that_are_not_billable_release_the_hold() {
    let (mut app, up, token) = world(100, 10);
    let failed = call(app.addr, &token, "/llm/priced/500?cost=9");
    assert_eq!(failed.status, 500);
    assert_eq!(failed.header("X-Credit-Charged"), Some("0"));
    assert_eq!(failed.header("X-Credit-Remaining"), Some("100"));
    // 502 and 504 from creditgate itself: the upstream gone, or too slow.
    let slow = app.add_route(
        "/slow",
        &up.url(),
        json!({"cost": 1, "max_cost": 5, "strip_prefix": true, "timeout_ms": 300}),
    );
    assert_eq!(slow.status, 201);
    assert_eq!(call(app.addr, &token, "/slow/sleep/2000").status, 504);
    drop(up);
    assert_eq!(call(app.addr, &token, "/llm/priced/200?cost=3").status, 502);
    assert_eq!(books(&app), (100, 0, 0));
    app.stop();
}

#[test]
fn a_user_without_max_cost_available_is_refused_before_forwarding() {
    let (app, up, token) = world(9, 10);
    let r = call(app.addr, &token, "/llm/priced/200?cost=1");
    assert_eq!((r.status, r.error().as_str()), (402, "insufficient_credit"));
    assert_eq!(up.seen().len(), 0, "nothing reached the upstream");
    assert_eq!(books(&app), (9, 0, 0));
}

#[test]
fn concurrent_priced_requests_never_spend_what_is_not_there() {
    // 30 at once, each holding 10 of 100: at most 10 forwarded at a time,
    // each charged 3; the books close exactly on what the clients were told.
    let (app, _up, token) = world(100, 10);
    let addr = app.addr;
    let token = Arc::new(token);
    let answers = in_parallel(30, move |_| call(addr, &token, "/llm/priced/200?cost=3"));
    let charged: i64 = answers
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| {
            r.header("X-Credit-Charged")
                .unwrap()
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    assert!(
        charged >= 30,
        "at least the first ten were served: {charged}"
    );
    assert!(answers.iter().all(|r| r.status == 200 || r.status == 402));
    assert_eq!(books(&app), (100 - charged, 0, charged));
}

#[test]
fn a_keyed_retry_of_a_priced_request_replays_and_charges_once() {
    let (app, up, token) = world(100, 10);
    let auth = format!("Bearer alice:{token}");
    let send = || {
        request(
            app.addr,
            "GET",
            "/llm/priced/200?cost=4",
            &[("Authorization", &auth), ("Idempotency-Key", "k1")],
            None,
        )
    };
    let first = send();
    let again = send();
    assert_eq!(first.header("X-Credit-Charged"), Some("4"));
    assert_eq!(again.header("Idempotency-Replayed"), Some("true"));
    assert_eq!(up.seen().len(), 1, "a retry is not forwarded again");
    assert_eq!(books(&app), (96, 0, 4));
}

#[test]
fn a_hold_left_by_a_dead_instance_expires_and_is_released() {
    // What an instance killed between forwarding and settling leaves: an
    // open route hold, past its expiry. The expiry job releases it: the
    // user is not charged for an answer nobody settled.
    let (app, _up, _token) = world(100, 10);
    app.db.exec(
        "INSERT INTO holds (user_id, endpoint, amount, expires_at) \
         SELECT id, 'route:/llm', 10, NOW(3) - INTERVAL 1 SECOND FROM users",
    );
    app.db.exec("UPDATE users SET held = 10");
    let run = app.admin("POST", "/admin/v1/jobs/expire-holds/run", None);
    assert_eq!(run.status, 200, "{}", run.body);
    assert_eq!(books(&app), (100, 0, 0));
}

#[test]
fn an_instance_killed_with_40_priced_requests_in_flight_never_over_charges() {
    // 40 requests to a 2 s upstream on 8 users, the instance SIGKILLed at
    // 1 s: every hold was granted, none settled. After a restart and the
    // holds' expiry (brought forward here instead of waited for), no user
    // is charged anything, nothing is held, and the ledger closes.
    use crate::support::daemon::Daemon;
    let db = TestDb::new();
    let tokens: Vec<String> = (0..8).map(|u| db.add_user(&format!("u{u}"), 100)).collect();
    let upstream = Upstream::start();
    let admin = "priced-kill-admin-token";
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("CREDITGATE_BIND", "127.0.0.1:0"),
        ("CREDITGATE_ADMIN_TOKEN", admin),
        // Room for all 40 at once (the route's bulkhead, below, too).
        ("CREDITGATE_THREADS", "64"),
    ];
    let daemon = Daemon::start(&["serve"], &env);
    let addr = daemon.addr();
    let route = json!({"prefix": "/llm", "upstream": upstream.url(), "cost": 1,
                       "max_cost": 10, "strip_prefix": true, "max_in_flight": 40});
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
            let auth = format!("Bearer u{}:{}", i % 8, tokens[i % 8]);
            // The connection dies with the instance: no answer is fine.
            let raw = format!(
                "GET /llm/sleep/2000 HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
            );
            crate::support::helpers::send_raw(addr, raw.as_bytes())
        })
    });
    std::thread::sleep(std::time::Duration::from_millis(1_000));
    let open = db.scalar("SELECT COUNT(*) FROM holds WHERE state = 'open'");
    daemon.signal(libc::SIGKILL);
    drop(daemon);
    let _ = clients.join();
    assert!(
        open == 40,
        "the requests were in flight with their holds: {open}"
    );
    assert_eq!(
        db.scalar("SELECT COALESCE(SUM(credits), 0) FROM usage_daily"),
        0
    );
    // Restarted, past the holds' expiry: the job releases every one.
    let restarted = Daemon::start(&["serve"], &env);
    let addr = restarted.addr();
    db.exec("UPDATE holds SET expires_at = NOW(3) - INTERVAL 1 SECOND WHERE state = 'open'");
    let run = request(
        addr,
        "POST",
        "/admin/v1/jobs/expire-holds/run",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(run.status, 200, "{}", run.body);
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM holds WHERE state = 'open'"),
        0
    );
    assert_eq!(db.scalar("SELECT SUM(held) FROM users"), 0);
    assert_eq!(
        db.scalar("SELECT SUM(credit) FROM users"),
        800,
        "nobody was charged"
    );
    assert_eq!(db.ledger_mismatches(), vec![]);
}

#[test]
fn database_connections_killed_in_a_loop_never_charge_what_the_upstream_did_not_bill() {
    // 12 clients on 4 users through a database proxy that kills every
    // connection every 50 ms for 3 s, half of them keyed (and retrying a
    // 503 with the same key), half the answers upstream 500s. Afterwards,
    // once the settlements that failed were retried and the holds left
    // open expired: nothing is held, no 500 was charged, no answer was
    // charged more than the upstream stated, and the books close.
    use crate::support::proxy::Proxy;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};
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
    let r = server.add_route(
        "/llm",
        &upstream.url(),
        json!({"cost": 1, "max_cost": 10, "strip_prefix": true}),
    );
    assert_eq!(r.status, 201);
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
            let path = format!("/llm/priced/{status}?cost={}", 1 + (w + n) % 9);
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
    // The settlements that failed are retried within seconds; then every
    // hold still open is past its expiry (brought forward) and released.
    std::thread::sleep(Duration::from_secs(3));
    db.exec("UPDATE holds SET expires_at = NOW(3) - INTERVAL 1 SECOND WHERE state = 'open'");
    let run = server.admin("POST", "/admin/v1/jobs/expire-holds/run", None);
    assert_eq!(run.status, 200, "{}", run.body);
    // What the upstream answered billably, by its own log.
    let billable: i64 = upstream
        .seen()
        .iter()
        .filter(|s| s.url.starts_with("/priced/200"))
        .map(|s| s.url.rsplit('=').next().unwrap().parse::<i64>().unwrap())
        .sum();
    let charged = db.scalar("SELECT CAST(COALESCE(SUM(credits), 0) AS SIGNED) FROM usage_daily");
    let captured = db.scalar("SELECT CAST(COALESCE(SUM(captured), 0) AS SIGNED) FROM holds");
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM holds WHERE state = 'open'"),
        0
    );
    assert_eq!(db.scalar("SELECT SUM(held) FROM users"), 0);
    assert_eq!(charged, captured, "usage is the captures");
    assert!(
        charged <= billable,
        "charged {charged} of {billable} billed upstream"
    );
    assert!(charged > 0, "the load ran");
    assert_eq!(db.scalar("SELECT SUM(credit) FROM users"), 40_000 - charged);
    assert_eq!(db.ledger_mismatches(), vec![]);
    eprintln!("billed upstream {billable}, charged {charged}");
}

#[test]
fn a_release_blocked_by_a_locked_row_is_written_once_the_row_is_free() {
    // While a request is at its upstream, another session locks the
    // user's row for 12 s (past the 10 s lock wait); the answer is a 500,
    // so the hold is due back. The client gets its answer after the lock
    // wait; the release is retried and written once the row is free.
    use mysql::prelude::Queryable;
    use std::time::{Duration, Instant};
    let (app, _up, token) = world(100, 10);
    let addr = app.addr;
    let call_thread =
        std::thread::spawn(move || call(addr, &token, "/llm/priced/500?cost=5&sleep=1000"));
    std::thread::sleep(Duration::from_millis(300));
    let mut locker = app.db.conn();
    locker.query_drop("START TRANSACTION").unwrap();
    locker
        .query_drop("SELECT credit FROM users WHERE username = 'alice' FOR UPDATE")
        .unwrap();
    std::thread::sleep(Duration::from_secs(12));
    locker.query_drop("COMMIT").unwrap();
    let answer = call_thread.join().unwrap();
    assert_eq!(
        answer.status, 500,
        "the upstream's answer, not a creditgate error"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while app
        .db
        .scalar("SELECT held FROM users WHERE username = 'alice'")
        != 0
    {
        assert!(Instant::now() < deadline, "the hold was never released");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(books(&app), (100, 0, 0));
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM holds WHERE state = 'released'"),
        1
    );
}

/// A chunked body's data and its trailer fields (names lower-case).
fn dechunked(raw: &str) -> (String, Vec<(String, String)>) {
    let (mut data, mut rest) = (String::new(), raw);
    loop {
        let (size, after) = rest.split_once("\r\n").expect("a chunk size line");
        let n = usize::from_str_radix(size.trim(), 16).expect("a hex size");
        if n == 0 {
            let trailer = after
                .split("\r\n")
                .take_while(|l| !l.is_empty())
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            return (data, trailer);
        }
        data.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
}

fn field<'a>(trailer: &'a [(String, String)], name: &str) -> Option<&'a str> {
    trailer
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[test]
fn the_price_in_a_streamed_answers_trailer_is_charged_and_the_client_gets_it_in_its_own() {
    let (app, _up, token) = world(100, 10);
    let r = call(app.addr, &token, "/llm/events/3?every=20&cost=7");
    assert_eq!(r.status, 200, "{}", r.body);
    // The head is written while the hold is open: its balance, no charge.
    assert_eq!(r.header("X-Credit-Remaining"), Some("90"));
    assert_eq!(r.header("X-Credit-Charged"), None);
    assert_eq!(
        r.header("Trailer"),
        Some("X-Credit-Charged, X-Credit-Remaining")
    );
    let (data, trailer) = dechunked(&r.body);
    assert_eq!(data, "data: 0\n\ndata: 1\n\ndata: 2\n\n");
    assert_eq!(field(&trailer, "X-Credit-Charged"), Some("7"));
    assert_eq!(field(&trailer, "X-Credit-Remaining"), Some("93"));
    assert_eq!(
        field(&trailer, "X-Credit-Cost"),
        None,
        "the upstream's price is not passed on"
    );
    assert_eq!(books(&app), (93, 0, 7));
}

#[test]
fn a_streamed_answer_without_a_trailer_costs_the_route_cost_and_one_above_max_cost_max_cost() {
    let (app, _up, token) = world(100, 10);
    let plain = call(app.addr, &token, "/llm/events/2?every=10");
    assert_eq!(
        field(&dechunked(&plain.body).1, "X-Credit-Charged"),
        Some("2")
    );
    let greedy = call(app.addr, &token, "/llm/events/2?every=10&cost=500");
    let trailer = dechunked(&greedy.body).1;
    assert_eq!(field(&trailer, "X-Credit-Charged"), Some("10"));
    assert_eq!(field(&trailer, "X-Credit-Remaining"), Some("88"));
    // A route naming its own header reads the trailer of that name.
    let tokens = app.add_route(
        "/tok",
        &_up.url(),
        json!({"cost": 1, "max_cost": 50, "cost_header": "X-Tokens", "strip_prefix": true}),
    );
    assert_eq!(tokens.status, 201);
    let named = call(
        app.addr,
        &token,
        "/tok/events/2?every=10&cost=33&header=X-Tokens",
    );
    let trailer = dechunked(&named.body).1;
    assert_eq!(field(&trailer, "X-Credit-Charged"), Some("33"));
    assert_eq!(field(&trailer, "X-Tokens"), None);
    assert_eq!(books(&app), (55, 0, 45));
}

#[test]
fn a_streamed_answer_cut_short_costs_the_route_cost_and_leaves_no_hold() {
    // Billable by its status; it never reached a trailer.
    let (app, _up, token) = world(100, 10);
    let r = call(app.addr, &token, "/llm/cut/100000?chunked");
    assert_eq!(r.status, 200);
    assert!(!r.body.ends_with("0\r\n\r\n"), "the cut is visible");
    // The capture happens when the server drops the body: wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while books(&app).1 != 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(books(&app), (98, 0, 2));
}

#[test]
fn a_keyed_retry_of_a_trailer_priced_request_replays_and_charges_once() {
    let (app, up, token) = world(100, 10);
    let auth = format!("Bearer alice:{token}");
    let send = || {
        request(
            app.addr,
            "GET",
            "/llm/events/2?every=10&cost=4",
            &[("Authorization", &auth), ("Idempotency-Key", "k1")],
            None,
        )
    };
    let first = send();
    assert_eq!(
        field(&dechunked(&first.body).1, "X-Credit-Charged"),
        Some("4")
    );
    let again = send();
    assert_eq!(again.header("Idempotency-Replayed"), Some("true"));
    assert!(again.body.contains("data: 1"), "{}", again.body);
    assert_eq!(up.seen().len(), 1, "a retry is not forwarded again");
    assert_eq!(books(&app), (96, 0, 4));
}

#[test]
fn trailer_priced_requests_from_three_instances_close_the_books_on_what_clients_were_told() {
    // 40 streamed requests, each holding 10 and stating a price of 1–9 in
    // its trailer, over three instances on 150 credits: every request is
    // either refused (402) or told its price in its trailer, and the books
    // close exactly on the sum of those.
    let db = TestDb::new();
    let token = Arc::new(db.add_user("alice", 150));
    let upstream = Upstream::start();
    let servers: Vec<TestServer> = (0..3).map(|_| TestServer::start(&db.url, &[])).collect();
    let route = json!({"prefix": "/llm", "upstream": upstream.url(), "cost": 2,
                       "max_cost": 10, "strip_prefix": true});
    let added = request(
        servers[0].addr,
        "POST",
        "/admin/v1/routes",
        &[(
            "Authorization",
            &format!("Bearer {}", servers[0].admin_token),
        )],
        Some(&route.to_string()),
    );
    assert_eq!(added.status, 201, "{}", added.body);
    // Every instance sees a new route within its refresh (2 s).
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let answers = in_parallel(40, move |i| {
        let path = format!("/llm/events/3?every=30&cost={}", 1 + i % 9);
        call(addrs[i % 3], &token, &path)
    });
    let mut told = 0;
    for r in &answers {
        match r.status {
            200 => {
                let trailer = dechunked(&r.body).1;
                told += field(&trailer, "X-Credit-Charged")
                    .expect("a charge in the trailer")
                    .parse::<i64>()
                    .unwrap();
            }
            402 => {}
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert!(told > 0);
    assert_eq!(db.ledger_mismatches(), vec![], "the ledger invariant");
    assert_eq!(db.credit("alice"), 150 - told);
    assert_eq!(
        db.scalar("SELECT held FROM users WHERE username = 'alice'"),
        0
    );
    assert_eq!(
        db.scalar("SELECT CAST(COALESCE(SUM(credits), 0) AS SIGNED) FROM usage_daily"),
        told
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM holds WHERE state = 'open'"),
        0
    );
}
