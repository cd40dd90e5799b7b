//! Coalesced charging (CREDITGATE_COALESCE=on): one user's waiting requests
//! decided one by one in one transaction. Every answer must be what some
//! serial order of single requests would have given.

use std::collections::BTreeSet;

use crate::support::helpers::{in_parallel, request, spawn_app_with, Resp, TestApp};

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
