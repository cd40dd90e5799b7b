//! The admin API under `/admin/v1/`: every endpoint and every error of the
//! SPEC's table, the admin-token guard, and the User JSON shape.

use chrono::Utc;
use serde_json::Value;

use crate::support::helpers::{request, spawn_app, spawn_app_with, TestApp};

/// The User JSON fields of the SPEC (the second stage added `rate_limit`
/// and `low_credit`, the third `held`), in no particular order.
const USER_FIELDS: [&str; 12] = [
    "held",
    "rate_limit",
    "low_credit",
    "username",
    "token_prefix",
    "credit",
    "monthly_credit",
    "refill_day",
    "credit_period",
    "email",
    "disabled",
    "created_at",
];

fn assert_user_json(v: &Value, extra: &[&str]) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want: Vec<&str> = USER_FIELDS.iter().chain(extra).copied().collect();
    want.sort_unstable();
    assert_eq!(keys, want, "{v}");
    let text = v.to_string();
    assert!(!text.contains("hash"), "a hash leaked: {text}");
}

fn create(app: &TestApp, body: &str) -> Value {
    let r = app.admin("POST", "/admin/v1/users", Some(body));
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()
}

fn current_month() -> String {
    Utc::now().format("%Y-%m").to_string()
}

#[test]
fn created_user_gets_a_token_once_and_it_works() {
    // Arrange
    let app = spawn_app();
    // Act
    let created = create(&app, r#"{"username":"alice","credit":5}"#);
    // Assert
    assert_user_json(&created, &["token"]);
    let token = created["token"].as_str().unwrap();
    assert!(token.starts_with("cg_"), "{token}");
    assert_eq!(created["credit"], 5);
    assert_eq!(created["token_prefix"], &token[..8]);
    assert_eq!(created["monthly_credit"], Value::Null);
    assert_eq!(created["credit_period"], Value::Null);
    assert_eq!(created["disabled"], false);
    assert_eq!(app.bank("alice", token, "bofa").status, 200);
    assert_eq!(app.db.credit("alice"), 4);
    // Shown once: reading the user back never shows the token again.
    let shown = app.admin("GET", "/admin/v1/users/alice", None);
    assert_eq!(shown.status, 200);
    assert_user_json(&shown.json(), &[]);
    assert!(!shown.body.contains(token));
}

#[test]
fn list_and_show_return_user_json_without_the_hash() {
    let app = spawn_app();
    create(
        &app,
        r#"{"username":"bob","credit":1,"email":"bob@example.org"}"#,
    );
    create(&app, r#"{"username":"alice"}"#);

    let list = app.admin("GET", "/admin/v1/users", None);
    assert_eq!(list.status, 200);
    let body = list.json();
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    let users = body["users"].as_array().unwrap();
    let names: Vec<&str> = users
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    for u in users {
        assert_user_json(u, &[]);
    }

    // See: operator note — a trailing slash is optional, as on the paid route.
    let slashed = app.admin("GET", "/admin/v1/users/", None);
    assert_eq!(
        (slashed.status, slashed.body.clone()),
        (200, list.body.clone())
    );

    let bob = app.admin("GET", "/admin/v1/users/bob", None).json();
    assert_eq!(bob["email"], "bob@example.org");
    assert_eq!(bob["credit"], 1);
    assert_eq!(bob["refill_day"], 1);
    let created_at = bob["created_at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(created_at).is_ok(),
        "{created_at}"
    );
}

#[test]
fn a_user_created_with_only_monthly_credit_starts_with_it_this_month() {
    let app = spawn_app();
    let u = create(&app, r#"{"username":"carol","monthly_credit":250}"#);
    assert_eq!(u["credit"], 250);
    assert_eq!(u["monthly_credit"], 250);
    assert_eq!(u["credit_period"], current_month());
    // The first allowance counts as this month's: running the refill now
    // changes nothing.
    let run = app.admin("POST", "/admin/v1/jobs/monthly-refill/run", None);
    assert_eq!(run.status, 200, "{}", run.body);
    assert_eq!(app.db.credit("carol"), 250);
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM credit_events WHERE reason = 'monthly-refill'"),
        0
    );
}

#[test]
fn an_imported_token_works_and_an_empty_one_is_refused() {
    let app = spawn_app();
    let u = create(
        &app,
        r#"{"username":"legacy","credit":3,"token":"old-flask-token:with:colons"}"#,
    );
    assert_eq!(u["token"], "old-flask-token:with:colons");
    assert_eq!(
        app.bank("legacy", "old-flask-token:with:colons", "bofa")
            .status,
        200
    );

    let r = app.admin(
        "POST",
        "/admin/v1/users",
        Some(r#"{"username":"empty","token":""}"#),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.error(), "invalid_body");
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM users"), 1);
}

// See: #26 (make test-schema found it). The key's display prefix goes to
// an ASCII column: an imported token that starts with `¸` answered 503.
#[test]
fn an_imported_token_may_hold_any_visible_character() {
    let app = spawn_app();

    let u = create(
        &app,
        r#"{"username":"legacy","token":"¸¸¸¸-old-flask-token-ü"}"#,
    );

    assert_eq!(u["token"], "¸¸¸¸-old-flask-token-ü");
    assert!(u["token_prefix"].as_str().unwrap().is_ascii(), "{u}");
    let keys = app.admin("GET", "/admin/v1/users/legacy/keys", None);
    assert_eq!(keys.status, 200, "{}", keys.body);
}

// See: #26. 512 characters, as the document's maxLength counts, not bytes.
#[test]
fn an_imported_token_is_at_most_512_characters() {
    let app = spawn_app();
    let body = |t: &str| serde_json::json!({ "username": "legacy", "token": t }).to_string();

    let long = app.admin("POST", "/admin/v1/users", Some(&body(&"é".repeat(513))));
    let fits = app.admin("POST", "/admin/v1/users", Some(&body(&"é".repeat(512))));

    assert_eq!((long.status, long.error().as_str()), (400, "invalid_body"));
    assert_eq!(fits.status, 201, "{}", fits.body);
}

#[test]
fn creating_errors_follow_the_table() {
    let app = spawn_app();
    create(&app, r#"{"username":"alice"}"#);
    let cases: &[(&str, u16, &str)] = &[
        (r#"{"username":"alice"}"#, 409, "user_exists"),
        (r#"{"username":"al ice"}"#, 400, "invalid_username"),
        (r#"{"username":""}"#, 400, "invalid_username"),
        (r#"{"credit":1}"#, 400, "invalid_username"),
        (r#"{"username":"x","credit":-1}"#, 400, "invalid_credit"),
        (r#"{"username":"x","credit":1.5}"#, 400, "invalid_credit"),
        (r#"{"username":"x","credit":"10"}"#, 400, "invalid_credit"),
        (r#"{"username":"x","credit":null}"#, 400, "invalid_credit"),
        (r#"{"username":"x","credit":1e309}"#, 400, "invalid_credit"),
        (
            r#"{"username":"x","credit":9223372036854775808}"#,
            400,
            "invalid_credit",
        ),
        (
            r#"{"username":"x","monthly_credit":-5}"#,
            400,
            "invalid_credit",
        ),
        (r#"{"username":"x","email":"nope"}"#, 400, "invalid_body"),
        (r#"{"username":"x","colour":"red"}"#, 400, "invalid_body"),
        (r#"["x"]"#, 400, "invalid_body"),
        (r#"{"username":"x""#, 400, "invalid_body"),
        ("", 400, "invalid_body"),
    ];
    for (body, status, code) in cases {
        let r = app.admin("POST", "/admin/v1/users", Some(body));
        assert_eq!((r.status, r.error().as_str()), (*status, *code), "{body}");
    }
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM users"), 1);
    // Usernames are case-sensitive: `Alice` is another user.
    create(&app, r#"{"username":"Alice"}"#);
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM users"), 2);
}

#[test]
fn unknown_users_are_404_on_every_user_route() {
    let app = spawn_app();
    for (method, path, body) in [
        ("GET", "/admin/v1/users/ghost", None),
        ("POST", "/admin/v1/users/ghost/credit", Some(r#"{"add":1}"#)),
        ("POST", "/admin/v1/users/ghost/rotate", None),
        ("POST", "/admin/v1/users/ghost/disable", None),
        ("POST", "/admin/v1/users/ghost/enable", None),
    ] {
        let r = app.admin(method, path, body);
        assert_eq!(
            (r.status, r.error().as_str()),
            (404, "unknown_user"),
            "{path}"
        );
    }
    let r = app.admin("GET", "/admin/v1/users/bad%20name", None);
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_username"));
}

#[test]
fn credit_add_and_set_change_the_balance_and_refuse_bad_numbers() {
    let app = spawn_app();
    app.db.add_user("alice", 10);
    let path = "/admin/v1/users/alice/credit";

    let r = app.admin("POST", path, Some(r#"{"add":5}"#));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_user_json(&r.json(), &[]);
    assert_eq!(r.json()["credit"], 15);
    let r = app.admin("POST", path, Some(r#"{"add":-15}"#));
    assert_eq!(r.json()["credit"], 0);
    let r = app.admin("POST", path, Some(r#"{"set":42}"#));
    assert_eq!(r.json()["credit"], 42);

    let cases: &[(&str, &str)] = &[
        (r#"{"add":-43}"#, "invalid_credit"),
        (r#"{"set":-1}"#, "invalid_credit"),
        (r#"{"add":9223372036854775807}"#, "invalid_credit"),
        // See: #26. `1.0` is a whole number (JSON Schema's `integer`); a
        // fraction is not.
        (r#"{"add":1.5}"#, "invalid_credit"),
        (r#"{"set":"7"}"#, "invalid_credit"),
        (r#"{"set":null}"#, "invalid_credit"),
        (r#"{"add":1e309}"#, "invalid_credit"),
        (r#"{"set":18446744073709551616}"#, "invalid_credit"),
        (r#"{"add":1,"set":2}"#, "invalid_body"),
        (r#"{}"#, "invalid_body"),
        (r#"{"plus":1}"#, "invalid_body"),
        (r#"42"#, "invalid_body"),
        ("not json", "invalid_body"),
    ];
    for (body, code) in cases {
        let r = app.admin("POST", path, Some(body));
        assert_eq!((r.status, r.error().as_str()), (400, *code), "{body}");
    }
    // Nothing refused changed anything, and each accepted change has its row.
    assert_eq!(app.db.credit("alice"), 42);
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM credit_events WHERE actor = 'admin-api'"),
        3
    );
}

#[test]
fn rotate_stops_the_old_token_at_once() {
    let app = spawn_app();
    let old = app.db.add_user("alice", 10);
    let r = app.admin("POST", "/admin/v1/users/alice/rotate", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    assert_eq!(body["username"], "alice");
    let new = body["token"].as_str().unwrap();
    assert_ne!(new, old);
    assert_eq!(app.bank("alice", &old, "bofa").status, 401);
    assert_eq!(app.bank("alice", new, "bofa").status, 200);
    let shown = app.admin("GET", "/admin/v1/users/alice", None).json();
    assert_eq!(shown["token_prefix"], &new[..8]);
}

#[test]
fn disable_refuses_the_user_and_enable_lets_them_back() {
    let app = spawn_app();
    let token = app.db.add_user("alice", 10);
    let r = app.admin("POST", "/admin/v1/users/alice/disable", None);
    assert_eq!(r.status, 200);
    assert_user_json(&r.json(), &[]);
    assert_eq!(r.json()["disabled"], true);
    assert_eq!(app.bank("alice", &token, "bofa").status, 401);

    let r = app.admin("POST", "/admin/v1/users/alice/enable", None);
    assert_eq!(r.json()["disabled"], false);
    assert_eq!(app.bank("alice", &token, "bofa").status, 200);
    assert_eq!(app.db.credit("alice"), 9);
}

#[test]
fn wrong_missing_or_user_tokens_are_401_and_change_nothing() {
    let app = spawn_app();
    let token = app.db.add_user("alice", 10);
    let bearer_user = format!("Bearer alice:{token}");
    let raw_user = format!("alice:{token}");
    let wrong = format!("Bearer {}x", app.admin_token);
    let basic = format!("Basic {}", app.admin_token);
    let attempts: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("Authorization", &wrong)],
        vec![("Authorization", "Bearer ")],
        vec![("Authorization", &basic)],
        vec![("Authorization", &bearer_user)],
        vec![("Authorization", &raw_user)],
    ];
    for headers in &attempts {
        for (method, path) in [
            ("GET", "/admin/v1/users"),
            ("POST", "/admin/v1/users/alice/credit"),
            ("POST", "/admin/v1/users/alice/disable"),
        ] {
            let mut h = headers.clone();
            h.push(("Content-Type", "application/json"));
            let r = request(app.addr, method, path, &h, Some(r#"{"set":1000}"#));
            assert_eq!(
                (r.status, r.error().as_str()),
                (401, "unauthorized"),
                "{h:?}"
            );
            assert!(r.header("WWW-Authenticate").is_some());
        }
    }
    // A user's token in ?token= does not open an admin route either.
    let r = request(
        app.addr,
        "GET",
        &format!("/admin/v1/users?token=alice:{token}"),
        &[],
        None,
    );
    assert_eq!(r.status, 401);
    assert_eq!(app.db.credit("alice"), 10);
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM users WHERE disabled = TRUE"),
        0
    );
}

#[test]
fn without_an_admin_token_configured_admin_routes_are_403() {
    let app = spawn_app_with(&[("CREDITGATE_ADMIN_TOKEN", "")]);
    app.db.add_user("alice", 10);
    for (method, path) in [
        ("GET", "/admin/v1/users"),
        ("POST", "/admin/v1/users/alice/credit"),
        ("GET", "/admin/v1/usage"),
        ("GET", "/stopServer"),
    ] {
        // Even the token the helper made up must not work.
        let r = app.admin(method, path, Some(r#"{"set":1000}"#));
        assert_eq!(
            (r.status, r.error().as_str()),
            (403, "admin_disabled"),
            "{path}"
        );
    }
    assert_eq!(app.db.credit("alice"), 10);
}

#[test]
fn usage_is_filtered_by_user_and_day_range() {
    let app = spawn_app();
    let a = app.db.add_user("alice", 100);
    let b = app.db.add_user("bob", 100);
    for _ in 0..3 {
        assert_eq!(app.bank("alice", &a, "bofa").status, 200);
    }
    assert_eq!(app.bank("alice", &a, "mufg").status, 200);
    assert_eq!(app.bank("bob", &b, "hsbc").status, 200);
    // Older days, written as the charge would have.
    app.db.exec(
        "INSERT INTO usage_daily (user_id, day, endpoint, calls, credits) \
         SELECT id, '2026-01-15', 'banks_data', 7, 9 FROM users WHERE username = 'alice'",
    );
    app.db.exec(
        "INSERT INTO usage_daily (user_id, day, endpoint, calls, credits) \
         SELECT id, '2026-02-01', 'banks_data', 2, 2 FROM users WHERE username = 'bob'",
    );
    let today = Utc::now().format("%Y-%m-%d").to_string();

    let rows = |query: &str| -> Vec<Value> {
        let r = app.admin("GET", &format!("/admin/v1/usage{query}"), None);
        assert_eq!(r.status, 200, "{query}: {}", r.body);
        let body = r.json();
        assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
        body["rows"].as_array().unwrap().clone()
    };

    let all = rows("");
    assert_eq!(all.len(), 4, "{all:?}");
    for row in &all {
        let mut keys: Vec<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["calls", "credits", "day", "endpoint", "username"]);
    }
    // Ordered by day then user.
    assert_eq!(all[0]["day"], "2026-01-15");
    assert_eq!(all[1]["day"], "2026-02-01");

    let alice_today = rows(&format!("?user=alice&from={today}&to={today}"));
    assert_eq!(
        alice_today,
        [serde_json::json!({
            "username": "alice", "day": today, "endpoint": "banks_data",
            "calls": 4, "credits": 5
        })]
    );
    let january = rows("?from=2026-01-01&to=2026-01-31");
    assert_eq!(january.len(), 1);
    assert_eq!(january[0]["calls"], 7);
    let bob = rows("?user=bob");
    assert_eq!(bob.len(), 2);
    assert!(bob.iter().all(|r| r["username"] == "bob"));
    assert_eq!(rows("?user=nobody"), Vec::<Value>::new());
    assert_eq!(rows("?from=2026-02-01&to=2026-01-01"), Vec::<Value>::new());

    for bad in ["?from=2026-13-01", "?to=yesterday", "?user=bad%20name"] {
        let r = app.admin("GET", &format!("/admin/v1/usage{bad}"), None);
        assert_eq!(r.status, 400, "{bad}");
    }
}

#[test]
fn jobs_are_listed_and_run_by_name() {
    let app = spawn_app();
    let r = app.admin("GET", "/admin/v1/jobs", None);
    assert_eq!(r.status, 200);
    let ids: Vec<String> = r.json()["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.contains(&"heartbeat".to_string()), "{ids:?}");
    assert!(ids.contains(&"monthly-refill".to_string()), "{ids:?}");

    let paused = app.admin("POST", "/admin/v1/jobs/heartbeat/pause", None);
    assert_eq!(paused.json()["paused"], true);
    let run = app
        .admin("POST", "/admin/v1/jobs/heartbeat/run", None)
        .json();
    assert_eq!(run["last_result"], "ok: database up");
    let resumed = app.admin("POST", "/admin/v1/jobs/heartbeat/resume", None);
    assert_eq!(resumed.json()["paused"], false);
    let r = app.admin("POST", "/admin/v1/jobs/nope/run", None);
    assert_eq!((r.status, r.error().as_str()), (404, "unknown_job"));
}

#[test]
fn wrong_methods_and_unknown_admin_routes_are_refused() {
    let app = spawn_app();
    app.db.add_user("alice", 1);
    for (method, path, status) in [
        ("DELETE", "/admin/v1/users/alice", 405),
        ("GET", "/admin/v1/users/alice/rotate", 405),
        ("PUT", "/admin/v1/users", 405),
        ("POST", "/admin/v1/usage", 405),
        ("GET", "/admin/v1/nothing", 404),
    ] {
        let r = app.admin(method, path, None);
        assert_eq!(r.status, status, "{method} {path}");
    }
}
