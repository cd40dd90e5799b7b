//! Gateway routes priced by the upstream (`max_cost`, `cost_header`): a
//! request holds `max_cost`, is forwarded, and is captured at the price
//! the answer states, or released when the answer is not billable. Real
//! upstream, real database; every test closes the books (credit, held,
//! usage, the ledger invariant).

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::json;

use crate::support::helpers::{in_parallel, request, spawn_app, Resp, TestApp};
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
