//! API keys: several per user, expiry, revocation, rotation with a grace
//! period, the 20-key cap, last use, and the migration that moved every
//! existing token into `api_keys`. Every refusal is the same 401.

use std::time::{Duration, Instant};

use mysql::prelude::Queryable;
use serde_json::{json, Value};

use crate::support::helpers::{creditgate, spawn_app, spawn_app_on, TestApp, TestDb};

fn paid(app: &TestApp, user: &str, token: &str) -> u16 {
    app.bank(user, token, "BOFA").status
}

fn add_key(app: &TestApp, user: &str, body: Value) -> Value {
    let r = app.admin(
        "POST",
        &format!("/admin/v1/users/{user}/keys"),
        Some(&body.to_string()),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()
}

#[test]
fn two_keys_both_work_and_a_revoked_one_stops_at_once() {
    let app = spawn_app();
    let first = app.db.add_user("alice", 10);
    let second = add_key(&app, "alice", json!({ "label": "ci" }));
    for k in [
        "id",
        "label",
        "prefix",
        "created_at",
        "expires_at",
        "last_used_at",
        "token",
    ] {
        assert!(second.get(k).is_some(), "{k} missing in {second}");
    }
    let second_token = second["token"].as_str().unwrap().to_string();
    assert_eq!(paid(&app, "alice", &first), 200);
    assert_eq!(paid(&app, "alice", &second_token), 200);
    let id = second["id"].as_u64().unwrap();
    let r = app.admin("DELETE", &format!("/admin/v1/users/alice/keys/{id}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let refused = app.bank("alice", &second_token, "BOFA");
    assert_eq!(
        (refused.status, refused.error().as_str()),
        (401, "unauthorized")
    );
    assert_eq!(paid(&app, "alice", &first), 200);
    let gone = app.admin("DELETE", &format!("/admin/v1/users/alice/keys/{id}"), None);
    assert_eq!((gone.status, gone.error().as_str()), (404, "unknown_key"));
    let list = app.admin("GET", "/admin/v1/users/alice/keys", None).json();
    assert_eq!(list["keys"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(app.db.credit("alice"), 7);
}

#[test]
fn a_key_with_a_ttl_works_until_it_expires() {
    let app = spawn_app();
    app.db.add_user("alice", 10);
    let out = creditgate(
        &app.db.url,
        &["key", "add", "alice", "--ttl", "2s", "--label", "short"],
    );
    let token = out.ok().stdout.trim().to_string();
    assert_eq!(paid(&app, "alice", &token), 200);
    std::thread::sleep(Duration::from_millis(2300));
    let r = app.bank("alice", &token, "BOFA");
    assert_eq!((r.status, r.error().as_str()), (401, "unauthorized"));
    let bad = creditgate(&app.db.url, &["key", "add", "alice", "--ttl", "2 weeks"]);
    assert!(bad.failed().contains("--ttl"), "{bad:?}");
}

#[test]
fn rotate_with_grace_keeps_the_old_key_working_for_the_grace_only() {
    let app = spawn_app();
    let old = app.db.add_user("alice", 10);
    let out = creditgate(&app.db.url, &["user", "rotate", "alice", "--grace", "3s"]);
    let new = out.ok().stdout.trim().to_string();
    assert_ne!(new, old);
    assert_eq!(paid(&app, "alice", &old), 200);
    assert_eq!(paid(&app, "alice", &new), 200);
    std::thread::sleep(Duration::from_millis(3300));
    assert_eq!(paid(&app, "alice", &old), 401);
    assert_eq!(paid(&app, "alice", &new), 200);
    // Without a grace (the admin API's default) the old key stops at once.
    let r = app.admin("POST", "/admin/v1/users/alice/rotate", None);
    let newest = r.json()["token"].as_str().unwrap().to_string();
    assert_eq!(paid(&app, "alice", &new), 401);
    assert_eq!(paid(&app, "alice", &newest), 200);
    let r = app.admin(
        "POST",
        "/admin/v1/users/alice/rotate",
        Some(r#"{"grace_secs": 60}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(paid(&app, "alice", &newest), 200, "inside its grace");
}

#[test]
fn the_21st_key_is_refused() {
    let app = spawn_app();
    app.db.add_user("alice", 0);
    for _ in 1..20 {
        add_key(&app, "alice", json!({}));
    }
    let r = app.admin("POST", "/admin/v1/users/alice/keys", Some("{}"));
    assert_eq!((r.status, r.error().as_str()), (400, "too_many_keys"));
    let cli = creditgate(&app.db.url, &["key", "add", "alice"]);
    assert!(cli.failed().contains("at most 20"), "{cli:?}");
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL"),
        20
    );
}

#[test]
fn last_used_is_recorded_after_a_use() {
    let app = spawn_app();
    let token = app.db.add_user("alice", 10);
    let before = creditgate(&app.db.url, &["key", "list", "alice", "--json"]);
    let v: Value = serde_json::from_str(&before.ok().stdout).unwrap();
    assert_eq!(v["keys"][0]["last_used_at"], Value::Null);
    assert_eq!(paid(&app, "alice", &token), 200);
    let after = app.admin("GET", "/admin/v1/users/alice/keys", None).json();
    let used = after["keys"][0]["last_used_at"].as_str().expect("set");
    assert!(used.ends_with('Z'), "{used}");
}

#[test]
fn a_token_of_one_user_does_not_work_for_another() {
    let app = spawn_app();
    let alice = app.db.add_user("alice", 10);
    app.db.add_user("bob", 10);
    assert_eq!(paid(&app, "bob", &alice), 401);
    assert_eq!(app.db.credit("bob"), 10);
}

/// Median time of `n` calls of `f`.
fn median(n: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort_unstable();
    times[n / 2]
}

#[test]
fn unknown_user_wrong_key_and_expired_key_cost_the_same_shape() {
    // Arrange: one expired key, one user with 20 keys.
    let app = spawn_app();
    app.db.add_user("alice", 0);
    let expired = add_key(
        &app,
        "alice",
        json!({ "expires_at": "2020-01-01T00:00:00Z" }),
    );
    let expired = expired["token"].as_str().unwrap().to_string();
    for _ in 0..18 {
        add_key(&app, "alice", json!({}));
    }
    let call = |user: &str, token: &str| {
        let r = app.bank(user, token, "BOFA");
        assert_eq!(r.status, 401);
    };
    // Act: interleaved, so machine noise hits all three alike.
    let mut unknown = Vec::new();
    let mut wrong = Vec::new();
    let mut old = Vec::new();
    for _ in 0..5 {
        unknown.push(median(21, || call("nobody", "cg_nothing_here_at_all")));
        wrong.push(median(21, || call("alice", "cg_nothing_here_at_all")));
        old.push(median(21, || call("alice", &expired)));
    }
    // Assert: the same order of cost (no path skips the query or the hash).
    let m = |v: &mut Vec<Duration>| {
        v.sort_unstable();
        v[2].as_secs_f64()
    };
    let (u, w, e) = (m(&mut unknown), m(&mut wrong), m(&mut old));
    for (name, t) in [("wrong key", w), ("expired key", e)] {
        let ratio = t / u;
        assert!(
            (0.5..2.0).contains(&ratio),
            "{name}: {t:.6} s vs unknown {u:.6} s"
        );
    }
    // And one body for all of them.
    let bodies: Vec<String> = [
        ("nobody", "cg_x"),
        ("alice", "cg_x"),
        ("alice", expired.as_str()),
    ]
    .iter()
    .map(|(u, t)| app.bank(u, t, "BOFA").body)
    .collect();
    assert!(bodies.iter().all(|b| b == &bodies[0]), "{bodies:?}");
}

#[test]
fn tokens_made_before_keys_existed_still_authenticate_and_charge() {
    // Arrange: a database as the first stage left it (migrations 1-8, tokens
    // in users.token_hash), with a generated and an imported token.
    let db = TestDb::new();
    let mut conn = db.conn();
    conn.query_drop(
        "DROP TABLE webhook_outbox, webhooks, usage_thresholds, route_charges, holds, services, service_idempotency_keys, api_keys, instances, routes, \
         idempotency_keys, usage_daily, \
         credit_events, users, banks, schema_migrations",
    )
    .unwrap();
    for &(version, file, sql) in &creditgate::db::MIGRATIONS[..8] {
        if version == 1 {
            conn.query_drop(
                "CREATE TABLE schema_migrations (version INT UNSIGNED NOT NULL PRIMARY KEY, \
                 name VARCHAR(255) NOT NULL, applied_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3))",
            )
            .unwrap();
        }
        conn.query_drop(sql).unwrap();
        conn.exec_drop(
            "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
            (version, file),
        )
        .unwrap();
    }
    let generated = creditgate::auth::token::generate();
    for (name, token) in [("alice", generated.as_str()), ("legacy", "tok-from-flask")] {
        conn.exec_drop(
            "INSERT INTO users (username, token_hash, token_prefix, credit) VALUES (?, ?, ?, 5)",
            (
                name,
                creditgate::auth::token::hash(token),
                creditgate::auth::token::prefix(token),
            ),
        )
        .unwrap();
    }
    drop(conn);
    // Act
    let applied = creditgate::db::migrate(&db.pool).unwrap();
    assert!(
        applied.contains(&"0010_move_tokens_to_api_keys.sql"),
        "{applied:?}"
    );
    let app = spawn_app_on(db, &[]);
    // Assert
    assert_eq!(paid(&app, "alice", &generated), 200);
    assert_eq!(paid(&app, "legacy", "tok-from-flask"), 200);
    assert_eq!(paid(&app, "legacy", "tok-from-flaskX"), 401);
    assert_eq!(app.db.credit("alice"), 4);
    assert_eq!(app.db.credit("legacy"), 4);
    let shown = app.admin("GET", "/admin/v1/users/alice", None).json();
    assert_eq!(shown["token_prefix"], &generated[..8]);
}
