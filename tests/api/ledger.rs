//! The credit ledger: every change that is not a request charge leaves a
//! `credit_events` row in the same transaction, so that for every user
//! `credit == SUM(credit_events.delta) - SUM(usage_daily.credits)`.

use std::collections::BTreeSet;

use mysql::prelude::Queryable;

use crate::import::legacy_db;
use crate::support::helpers::creditgate;
use crate::support::helpers::{request, spawn_app, TestApp};

fn ok(app: &TestApp, user: &str, token: &str, bank: &str) {
    let r = app.bank(user, token, bank);
    assert_eq!(r.status, 200, "{user} {bank}: {}", r.body);
}

fn token_of(v: serde_json::Value) -> String {
    v["token"].as_str().unwrap().to_string()
}

#[test]
fn credit_is_the_ledger_minus_the_usage_after_a_mixed_workload() {
    // Arrange: users made by the admin API, the CLI and an import.
    let app = spawn_app();
    let url = app.db.url.clone();
    let alice = token_of(
        app.admin(
            "POST",
            "/admin/v1/users",
            Some(r#"{"username":"alice","credit":50}"#),
        )
        .json(),
    );
    let carol = token_of(
        app.admin(
            "POST",
            "/admin/v1/users",
            Some(r#"{"username":"carol","monthly_credit":100}"#),
        )
        .json(),
    );
    let bob = creditgate(&url, &["user", "add", "bob", "--credit", "20"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let legacy = legacy_db("users", &[("erin", Some("erin-legacy-token"), 30)]);
    creditgate(&url, &["import-legacy", "--from", &legacy.url]).ok();
    app.db.add_user("zero", 0);

    // Act: charges, refusals, replays, top-ups, sets and a refill.
    for _ in 0..10 {
        ok(&app, "alice", &alice, "bofa");
    }
    for _ in 0..3 {
        ok(&app, "alice", &alice, "mufg");
    }
    ok(&app, "alice", &alice, "free");
    for _ in 0..4 {
        ok(&app, "carol", &carol, "hsbc");
    }
    ok(&app, "erin", "erin-legacy-token", "deut");
    let replayed = |n| {
        request(
            app.addr,
            "GET",
            "/api/v1.0/banks_data/mufg/",
            &[
                ("Authorization", "Bearer erin:erin-legacy-token"),
                ("Idempotency-Key", "order-1"),
            ],
            None,
        )
        .header("Idempotency-Replayed")
        .map(|_| n)
    };
    assert_eq!(replayed(1), None);
    assert_eq!(replayed(2), Some(2));
    assert_eq!(app.bank("zero", "wrong", "bofa").status, 401);

    let credit = |name: &str, body: &str| {
        let r = app.admin(
            "POST",
            &format!("/admin/v1/users/{name}/credit"),
            Some(body),
        );
        assert_eq!(r.status, 200, "{body}: {}", r.body);
    };
    credit("alice", r#"{"add":25}"#);
    credit("carol", r#"{"set":7}"#);
    assert_eq!(
        app.admin(
            "POST",
            "/admin/v1/users/bob/credit",
            Some(r#"{"add":-1000}"#)
        )
        .status,
        400
    );
    creditgate(&url, &["user", "credit", "bob", "--set", "2"]).ok();
    for expected in [200, 200, 402] {
        assert_eq!(app.bank("bob", &bob, "bofa").status, expected);
    }
    creditgate(&url, &["user", "credit", "bob", "--add", "9"]).ok();
    creditgate(&url, &["user", "credit", "alice", "--add", "-5"]).ok();

    // carol's allowance is due again (as if last month's), and she has spent.
    // The scheduler is paused so that the refill is the one run here.
    let paused = app.admin("POST", "/admin/v1/jobs/monthly-refill/pause", None);
    assert_eq!(paused.status, 200);
    app.db
        .exec("UPDATE users SET credit_period = '2000-01' WHERE username = 'carol'");
    ok(&app, "carol", &carol, "bofa");
    let run = app.admin("POST", "/admin/v1/jobs/monthly-refill/run", None);
    assert_eq!(
        run.json()["last_result"],
        "ok: 1 user(s) refilled",
        "{}",
        run.body
    );
    ok(&app, "carol", &carol, "bofa");

    // Assert: the invariant, user by user.
    assert_eq!(app.db.ledger_mismatches(), vec![]);
    assert_eq!(app.db.credit("alice"), 50 - 10 - 6 + 25 - 5);
    assert_eq!(app.db.credit("bob"), 9);
    assert_eq!(app.db.credit("carol"), 99);
    assert_eq!(app.db.credit("erin"), 30 - 1 - 2);
    assert_eq!(app.db.credit("zero"), 0);

    // Every kind of change and every actor is in the ledger.
    let seen = |col: &str| -> BTreeSet<String> {
        app.db
            .conn()
            .query(format!("SELECT DISTINCT {col} FROM credit_events"))
            .unwrap()
            .into_iter()
            .collect()
    };
    assert_eq!(
        seen("reason"),
        BTreeSet::from(["create", "import", "monthly-refill", "set", "top-up"].map(String::from))
    );
    assert_eq!(
        seen("actor"),
        BTreeSet::from(["admin-api", "cli:opsbob", "job:monthly-refill", "test"].map(String::from))
    );
    // balance_after is the credit the change left.
    assert_eq!(
        app.db.scalar(
            "SELECT balance_after FROM credit_events e JOIN users u ON u.id = e.user_id \
             WHERE u.username = 'carol' AND e.reason = 'monthly-refill'"
        ),
        100
    );
    assert_eq!(
        app.db.scalar(
            "SELECT delta FROM credit_events e JOIN users u ON u.id = e.user_id \
             WHERE u.username = 'carol' AND e.reason = 'monthly-refill'"
        ),
        100 - 6
    );
}

#[test]
fn a_change_whose_ledger_row_cannot_be_written_does_not_happen() {
    // Breaks the ledger on purpose: the change must roll back with it.
    let app = spawn_app();
    app.db.add_user("alice", 10);
    app.db
        .exec("RENAME TABLE credit_events TO credit_events_gone");

    let r = app.admin("POST", "/admin/v1/users/alice/credit", Some(r#"{"add":5}"#));
    assert_eq!((r.status, r.error().as_str()), (503, "unavailable"));
    let r = app.admin(
        "POST",
        "/admin/v1/users",
        Some(r#"{"username":"bob","credit":5}"#),
    );
    assert_eq!(r.status, 503);
    let out = creditgate(&app.db.url, &["user", "credit", "alice", "--set", "99"]);
    out.failed();

    app.db
        .exec("RENAME TABLE credit_events_gone TO credit_events");
    assert_eq!(app.db.credit("alice"), 10);
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM users"), 1);
    assert_eq!(app.db.ledger_mismatches(), vec![]);
}
