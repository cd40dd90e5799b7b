//! Exactly-once charging: under concurrency, with costs, with idempotency
//! keys, and never for an answer other than 200.

use std::sync::Arc;

use crate::support::helpers::{in_parallel, request, spawn_app};

/// 32 clients send `total` requests between them for one user.
fn hammer(
    app: &crate::support::helpers::TestApp,
    token: &str,
    bank: &str,
    total: usize,
) -> (usize, usize, usize) {
    let addr = app.addr;
    let auth = Arc::new(format!("Bearer alice:{token}"));
    let path = Arc::new(format!("/api/v1.0/banks_data/{bank}/"));
    let per_thread = total / 32;
    let results = in_parallel(32, move |_| {
        let mut counts = (0, 0, 0);
        for _ in 0..per_thread {
            match request(addr, "GET", &path, &[("Authorization", &auth)], None).status {
                200 => counts.0 += 1,
                402 => counts.1 += 1,
                _ => counts.2 += 1,
            }
        }
        counts
    });
    results
        .iter()
        .fold((0, 0, 0), |a, c| (a.0 + c.0, a.1 + c.1, a.2 + c.2))
}

#[test]
fn concurrent_requests_charge_exactly_the_credit() {
    // Arrange: 1,500 requests (32 x 47 = 1,504) for a credit of 500.
    let app = spawn_app();
    let token = app.db.add_user("alice", 500);
    // Act
    let (ok, no_credit, other) = hammer(&app, &token, "bofa", 1504);
    // Assert
    assert_eq!(ok, 500);
    assert_eq!(no_credit, 1004);
    assert_eq!(other, 0);
    assert_eq!(app.db.credit("alice"), 0);
    assert_eq!(app.db.scalar("SELECT SUM(calls) FROM usage_daily"), 500);
    assert_eq!(app.db.scalar("SELECT SUM(credits) FROM usage_daily"), 500);
}

#[test]
fn concurrent_requests_respect_a_bank_cost_of_three() {
    let app = spawn_app();
    app.db
        .exec("INSERT INTO banks (code, name, cost) VALUES ('TRIPLE', 'Costs three', 3)");
    let token = app.db.add_user("alice", 500);
    let (ok, no_credit, other) = hammer(&app, &token, "triple", 1504);
    assert_eq!(ok, 166);
    assert_eq!(no_credit, 1504 - 166);
    assert_eq!(other, 0);
    assert_eq!(app.db.credit("alice"), 2);
    assert_eq!(app.db.scalar("SELECT SUM(credits) FROM usage_daily"), 498);
}

#[test]
fn a_free_bank_answers_without_charging() {
    let app = spawn_app();
    let token = app.db.add_user("alice", 0);
    let r = app.bank("alice", &token, "free");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["credit_remaining"], 0);
    assert_eq!(app.db.scalar("SELECT SUM(calls) FROM usage_daily"), 1);
}

#[test]
fn an_idempotency_key_sent_twenty_times_at_once_is_charged_once() {
    let app = spawn_app();
    let token = app.db.add_user("alice", 10);
    let addr = app.addr;
    let auth = Arc::new(format!("Bearer alice:{token}"));
    let answers = in_parallel(20, move |_| {
        request(
            addr,
            "GET",
            "/api/v1.0/banks_data/bofa/",
            &[("Authorization", &auth), ("Idempotency-Key", "order-42")],
            None,
        )
    });
    assert_eq!(app.db.credit("alice"), 9);
    assert!(
        answers
            .iter()
            .all(|r| r.status == 200 && r.body == answers[0].body),
        "{answers:?}"
    );
    let replayed = answers
        .iter()
        .filter(|r| r.header("Idempotency-Replayed") == Some("true"))
        .count();
    assert_eq!(replayed, 19);
    // Another key is another request.
    let r = app.get(
        "/api/v1.0/banks_data/bofa/",
        &[
            ("Authorization", &format!("Bearer alice:{token}")),
            ("Idempotency-Key", "order-43"),
        ],
    );
    assert_eq!(r.json()["credit_remaining"], 8);
}

#[test]
fn idempotency_keys_belong_to_one_user() {
    let app = spawn_app();
    let a = app.db.add_user("alice", 10);
    let b = app.db.add_user("bob", 10);
    for (user, token) in [("alice", &a), ("bob", &b)] {
        let r = app.get(
            "/api/v1.0/banks_data/bofa/",
            &[
                ("Authorization", &format!("Bearer {user}:{token}")),
                ("Idempotency-Key", "same"),
            ],
        );
        assert_eq!(r.status, 200);
        assert!(r.header("Idempotency-Replayed").is_none());
    }
    assert_eq!(app.db.credit("alice"), 9);
    assert_eq!(app.db.credit("bob"), 9);
}

#[test]
fn malformed_and_unknown_banks_charge_nothing() {
    let app = spawn_app();
    let token = app.db.add_user("alice", 10);
    let malformed = app.bank("alice", &token, "not-a-code");
    assert_eq!(
        (malformed.status, malformed.error().as_str()),
        (400, "invalid_bank")
    );
    let traversal = app.bank("alice", &token, "..%2F..");
    assert_eq!(
        (traversal.status, traversal.error().as_str()),
        (400, "invalid_bank")
    );
    let unknown = app.bank("alice", &token, "NOPE");
    assert_eq!(
        (unknown.status, unknown.error().as_str()),
        (404, "unknown_bank")
    );
    assert_eq!(app.db.credit("alice"), 10);
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM usage_daily"), 0);
}

#[test]
fn insufficient_credit_is_402_with_the_balance_and_the_next_refill() {
    let app = spawn_app();
    let token = app.db.add_user_with("alice", Some(1), Some(100), None);
    let r = app.bank("alice", &token, "mufg"); // costs 2
    assert_eq!((r.status, r.error().as_str()), (402, "insufficient_credit"));
    assert_eq!(r.header("X-Credit-Remaining"), Some("1"));
    let wait: i64 = r
        .header("Retry-After")
        .expect("Retry-After with a monthly allowance")
        .parse()
        .unwrap();
    assert!(wait > 0 && wait <= 32 * 86_400, "{wait}");
    assert_eq!(app.db.credit("alice"), 1);

    let token = app.db.add_user("bob", 0);
    let r = app.bank("bob", &token, "bofa");
    assert_eq!(r.status, 402);
    assert!(
        r.header("Retry-After").is_none(),
        "no refill, no Retry-After"
    );
}

#[test]
fn a_refused_method_on_the_paid_route_is_never_charged() {
    let app = spawn_app();
    let token = app.db.add_user("alice", 10);
    let auth = format!("Bearer alice:{token}");
    for method in ["POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"] {
        let r = request(
            app.addr,
            method,
            "/api/v1.0/banks_data/bofa/",
            &[("Authorization", &auth)],
            None,
        );
        assert_eq!(r.status, 405, "{method}");
        if method != "HEAD" {
            assert_eq!(r.error(), "method_not_allowed");
        }
    }
    assert_eq!(app.db.credit("alice"), 10);
}

#[test]
fn idempotency_keys_expire_after_a_day() {
    // Arrange: one answer remembered now, one 25 hours ago.
    let app = spawn_app();
    let token = app.db.add_user("alice", 10);
    let auth = format!("Bearer alice:{token}");
    for key in ["fresh", "stale"] {
        let r = app.get(
            "/api/v1.0/banks_data/bofa/",
            &[("Authorization", &auth), ("Idempotency-Key", key)],
        );
        assert_eq!(r.status, 200);
    }
    app.db.exec("UPDATE idempotency_keys SET created_at = NOW(3) - INTERVAL 25 HOUR WHERE idem_key = 'stale'");
    // Act
    let removed = creditgate::idempotency::store::expire(&app.db.pool).unwrap();
    // Assert: the stale key is gone and is a new request again; the fresh one still replays.
    assert_eq!(removed, 1);
    let again = app.get(
        "/api/v1.0/banks_data/bofa/",
        &[("Authorization", &auth), ("Idempotency-Key", "stale")],
    );
    assert!(again.header("Idempotency-Replayed").is_none());
    let replay = app.get(
        "/api/v1.0/banks_data/bofa/",
        &[("Authorization", &auth), ("Idempotency-Key", "fresh")],
    );
    assert_eq!(replay.header("Idempotency-Replayed"), Some("true"));
    assert_eq!(app.db.credit("alice"), 7);
}
