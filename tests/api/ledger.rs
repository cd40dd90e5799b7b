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

// See: #24 (the ledger could be read only in the console or in SQL).
#[test]
fn the_ledger_is_read_a_page_at_a_time_over_http_and_from_the_cli() {
    // Arrange: a user with 1 create row and 5 top-ups.
    let app = spawn_app();
    let created = app.admin(
        "POST",
        "/admin/v1/users",
        Some(r#"{"username":"dora","credit":10}"#),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    for n in 1..=5 {
        let body = format!(r#"{{"add": {n}}}"#);
        let r = app.admin("POST", "/admin/v1/users/dora/credit", Some(&body));
        assert_eq!(r.status, 200, "{}", r.body);
    }

    // Act: pages of 4 over HTTP.
    let first = app.admin("GET", "/admin/v1/users/dora/ledger?limit=4", None);
    assert_eq!(first.status, 200, "{}", first.body);
    let first = first.json();
    let next = first["next_before"].as_u64().expect("a second page");
    let second = app
        .admin(
            "GET",
            &format!("/admin/v1/users/dora/ledger?limit=4&before={next}"),
            None,
        )
        .json();

    // Assert: newest first, every row once, the balances as they went.
    assert_eq!(first["username"], "dora");
    let rows: Vec<&serde_json::Value> = first["rows"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["rows"].as_array().unwrap())
        .collect();
    assert_eq!(first["rows"].as_array().unwrap().len(), 4);
    assert_eq!(rows.len(), 6, "{first} {second}");
    assert!(second["next_before"].is_null(), "{second}");
    let deltas: Vec<i64> = rows.iter().map(|r| r["delta"].as_i64().unwrap()).collect();
    assert_eq!(deltas, [5, 4, 3, 2, 1, 10]);
    let balances: Vec<i64> = rows
        .iter()
        .map(|r| r["balance_after"].as_i64().unwrap())
        .collect();
    assert_eq!(balances, [25, 20, 16, 13, 11, 10]);
    assert_eq!(rows[0]["reason"], "top-up");
    assert_eq!(rows[5]["reason"], "create");
    assert_eq!(rows[0]["actor"], "admin-api");
    let ids: Vec<u64> = rows.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");

    // The CLI reads the same rows: a table, and the admin API's JSON.
    let table = creditgate(&app.db.url, &["ledger", "dora", "--limit", "2"]);
    table.ok();
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two rows: {table:#?}");
    assert!(lines[0].starts_with("ID"), "{table:#?}");
    assert!(
        lines[1].contains("+5") && lines[1].contains("25"),
        "{table:#?}"
    );
    assert!(
        table.stderr.contains(&format!("--before {}", ids[1])),
        "{table:#?}"
    );
    let json = creditgate(
        &app.db.url,
        &["ledger", "dora", "--json", "--before", &ids[1].to_string()],
    );
    json.ok();
    let page: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(page["rows"].as_array().unwrap().len(), 4);
    assert_eq!(page["rows"][0]["id"].as_u64(), Some(ids[2]));
}

#[test]
fn a_bad_ledger_request_is_refused_and_names_the_problem() {
    let app = spawn_app();
    let r = app.admin("GET", "/admin/v1/users/nobody/ledger", None);
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (404, Some("unknown_user"))
    );
    for q in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "before=-1",
        "before=0",
        "limit=",
    ] {
        let r = app.admin("GET", &format!("/admin/v1/users/nobody/ledger?{q}"), None);
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert_eq!(r.json()["error"], "invalid_body", "{q}");
    }
    let r = app.admin("POST", "/admin/v1/users/nobody/ledger", None);
    assert_eq!(r.status, 405);
    let r = app.get("/admin/v1/users/nobody/ledger", &[]);
    assert_eq!(r.status, 401);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("Bearer <admin token>"),
        "{}",
        r.body
    );
    // The CLI: one line naming the user, non-zero.
    let out = creditgate(&app.db.url, &["ledger", "nobody"]);
    assert!(out.failed().contains("nobody"), "{out:#?}");
    let out = creditgate(&app.db.url, &["ledger", "nobody", "--limit", "0"]);
    assert!(out.failed().contains("--limit"), "{out:#?}");
}
