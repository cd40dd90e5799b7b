//! Exact rate limits: GCRA state in the user's row, decided inside the
//! row-locked charge with the database's clock, so several instances on one
//! database enforce one limit exactly. The headers are read with a real
//! RFC 8941 parser.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use sfv::{BareItem, ListEntry, Parser};

use crate::support::helpers::{creditgate, in_parallel, request, spawn_app, Resp, TestServer};
use crate::support::upstream::Upstream;

/// The one member of a RateLimit header, `"user"` with its parameters.
fn sf_params(value: &str) -> Vec<(String, i64)> {
    let list: sfv::List = Parser::new(value)
        .parse_list()
        .unwrap_or_else(|e| panic!("{value:?} is not an RFC 8941 List: {e}"));
    assert_eq!(list.len(), 1, "{value}");
    let ListEntry::Item(item) = &list[0] else {
        panic!("an inner list: {value}")
    };
    match &item.bare_item {
        BareItem::String(s) => assert_eq!(s.as_str(), "user"),
        other => panic!("the policy name is a string, not {other:?}"),
    }
    item.params
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                v.as_integer().map(i64::from).unwrap_or(-1),
            )
        })
        .collect()
}

fn param(params: &[(String, i64)], name: &str) -> i64 {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {name} in {params:?}"))
}

/// (q, w, r, t) from an answer's headers.
fn rate_headers(r: &Resp) -> (i64, i64, i64, i64) {
    let policy = sf_params(r.header("RateLimit-Policy").expect("RateLimit-Policy"));
    let now = sf_params(r.header("RateLimit").expect("RateLimit"));
    (
        param(&policy, "q"),
        param(&policy, "w"),
        param(&now, "r"),
        param(&now, "t"),
    )
}

fn paid(addr: SocketAddr, auth: &str) -> Resp {
    request(
        addr,
        "GET",
        "/api/v1.0/banks_data/BOFA/",
        &[("Authorization", auth)],
        None,
    )
}

#[test]
fn three_instances_enforce_one_limit_exactly() {
    // Arrange: 50/min on one database served by three instances.
    let app = spawn_app();
    let token = app.db.add_user("alice", 1000);
    creditgate(&app.db.url, &["user", "limit", "alice", "--rate", "50/min"]).ok();
    let others: Vec<TestServer> = (0..2)
        .map(|_| TestServer::start(&app.db.url, &[]))
        .collect();
    let addrs: Vec<SocketAddr> = [app.addr, others[0].addr, others[1].addr].to_vec();
    let auth = format!("Bearer alice:{token}");
    // Act: 300 requests in one burst.
    let started = Instant::now();
    let answers = {
        let (addrs, auth) = (addrs.clone(), auth.clone());
        in_parallel(30, move |i| {
            (0..10)
                .map(|_| paid(addrs[i % 3], &auth))
                .collect::<Vec<Resp>>()
        })
    };
    let took = started.elapsed();
    // Assert
    let all: Vec<Resp> = answers.into_iter().flatten().collect();
    let ok = all.iter().filter(|r| r.status == 200).count() as i64;
    let limited: Vec<&Resp> = all.iter().filter(|r| r.status == 429).collect();
    // One more may pass per 1.2 s (W/N) the burst lasted.
    let refills = (took.as_millis() / 1200) as i64;
    assert!((50..=50 + refills).contains(&ok), "{ok} passed in {took:?}");
    assert_eq!(ok + limited.len() as i64, 300);
    for r in &limited {
        assert_eq!(r.error(), "rate_limited");
        let retry: u64 = r.header("Retry-After").unwrap().parse().unwrap();
        assert!((1..=2).contains(&retry), "Retry-After {retry}");
        assert_eq!(rate_headers(r).2, 0, "r on a 429");
    }
    assert_eq!(
        app.db.credit("alice"),
        1000 - ok,
        "charged exactly the 200s"
    );
    // After W/N seconds, exactly one more passes.
    std::thread::sleep(Duration::from_millis(1300));
    let next: Vec<u16> = (0..5).map(|i| paid(addrs[i % 3], &auth).status).collect();
    assert_eq!(next.iter().filter(|s| **s == 200).count(), 1, "{next:?}");
    assert_eq!(app.db.ledger_mismatches(), vec![]);
}

#[test]
fn headers_count_down_and_a_refused_request_does_not_count() {
    let app = spawn_app();
    let token = app.db.add_user("alice", 100);
    let r = app.admin(
        "POST",
        "/admin/v1/users/alice/limit",
        Some(r#"{"quota": 3, "window_secs": 2}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["rate_limit"],
        json!({ "quota": 3, "window_secs": 2 })
    );
    let auth = format!("Bearer alice:{token}");
    let rs: Vec<(u16, (i64, i64, i64, i64))> = (0..3)
        .map(|_| {
            let r = paid(app.addr, &auth);
            (r.status, rate_headers(&r))
        })
        .collect();
    assert_eq!(rs[0], (200, (3, 2, 2, 1)));
    assert_eq!(rs[1].1 .2, 1);
    assert_eq!(rs[2].1 .2, 0);
    // Refused ones, hammered: they must not push the next pass out.
    for _ in 0..20 {
        assert_eq!(paid(app.addr, &auth).status, 429);
    }
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        paid(app.addr, &auth).status,
        200,
        "one interval (0.67 s) later"
    );
    assert_eq!(app.db.credit("alice"), 96);
}

#[test]
fn a_402_and_a_404_count_against_the_limit() {
    let app = spawn_app();
    let token = app.db.add_user("alice", 0);
    creditgate(&app.db.url, &["user", "limit", "alice", "--rate", "2/h"]).ok();
    let auth = format!("Bearer alice:{token}");
    let poor = paid(app.addr, &auth);
    assert_eq!(poor.status, 402);
    assert_eq!(rate_headers(&poor).2, 1);
    let unknown = request(
        app.addr,
        "GET",
        "/api/v1.0/banks_data/NOPE/",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(unknown.status, 404);
    assert_eq!(rate_headers(&unknown).2, 0);
    let third = paid(app.addr, &auth);
    assert_eq!(
        (third.status, third.error().as_str()),
        (429, "rate_limited")
    );
    // Off again: nothing refused, no headers.
    creditgate(&app.db.url, &["user", "limit", "alice", "--rate", "off"]).ok();
    let free = paid(app.addr, &auth);
    assert_eq!(free.status, 402);
    assert!(free.header("RateLimit").is_none());
}

#[test]
fn a_user_without_a_limit_gets_no_headers_and_bad_rates_are_refused() {
    let app = spawn_app();
    let token = app.db.add_user("alice", 5);
    let r = paid(app.addr, &format!("Bearer alice:{token}"));
    assert_eq!(r.status, 200);
    assert!(r.header("RateLimit-Policy").is_none());
    for body in [
        r#"{"quota": 0, "window_secs": 60}"#,
        r#"{"quota": 5}"#,
        // See: make test-schema. Without `quota` this removed the limit.
        r#"{"window_secs": 60}"#,
        r#"{}"#,
        r#"{"quota": 5, "window_secs": 0}"#,
        r#"{"quota": "5", "window_secs": 60}"#,
    ] {
        let r = app.admin("POST", "/admin/v1/users/alice/limit", Some(body));
        assert_eq!(
            (r.status, r.error().as_str()),
            (400, "invalid_rate"),
            "{body}"
        );
    }
    let r = app.admin(
        "POST",
        "/admin/v1/users",
        Some(r#"{"username": "bob", "rate_limit": {"window_secs": 60}}"#),
    );
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_rate"));
    let cli = creditgate(&app.db.url, &["user", "limit", "alice", "--rate", "5/day"]);
    assert!(cli.failed().contains("N/s, N/min or N/h"), "{cli:?}");
}

#[test]
fn gateway_routes_are_limited_too_and_nothing_is_forwarded_over_it() {
    let app = spawn_app();
    let token = app.db.add_user("alice", 100);
    creditgate(&app.db.url, &["user", "limit", "alice", "--rate", "2/min"]).ok();
    let up = Upstream::start();
    let body = json!({ "prefix": "/lim", "upstream": up.url() }).to_string();
    assert_eq!(
        app.admin("POST", "/admin/v1/routes", Some(&body)).status,
        201
    );
    let auth = format!("Bearer alice:{token}");
    let statuses: Vec<u16> = (0..4)
        .map(|_| {
            let r = request(app.addr, "GET", "/lim/x", &[("Authorization", &auth)], None);
            if r.status == 200 {
                assert_eq!(rate_headers(&r).0, 2);
            }
            r.status
        })
        .collect();
    assert_eq!(statuses, vec![200, 200, 429, 429]);
    assert_eq!(up.seen().len(), 2);
    assert_eq!(app.db.credit("alice"), 98);
}
