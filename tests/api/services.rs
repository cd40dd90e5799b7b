//! Service tokens: made, listed and revoked by the CLI (the real binary)
//! and the admin API, and checked by `GET /v1/whoami`. Only a working
//! `cgs_` token is a service: a wrong or revoked one, a user's credentials
//! and the admin token all get the same 401.

use serde_json::{json, Value};

use crate::support::helpers::{creditgate, spawn_app, Resp, TestApp};

fn whoami(app: &TestApp, authorization: &str) -> Resp {
    app.get("/v1/whoami", &[("Authorization", authorization)])
}

fn add(app: &TestApp, body: Value) -> Resp {
    app.admin("POST", "/admin/v1/services", Some(&body.to_string()))
}

fn assert_401(r: &Resp) {
    assert_eq!(
        (r.status, r.error().as_str()),
        (401, "unauthorized"),
        "{}",
        r.body
    );
    assert!(r.header("WWW-Authenticate").is_some(), "{r:?}");
}

#[test]
fn cli_add_prints_the_token_alone_and_whoami_names_the_service() {
    // Arrange
    let app = spawn_app();
    // Act: TOKEN=$(creditgate service add billing --scopes charge,read)
    let out = creditgate(
        &app.db.url,
        &["service", "add", "billing", "--scopes", "charge,read"],
    );
    // Assert
    out.ok();
    let token = out.stdout.strip_suffix('\n').expect("a newline");
    assert!(token.starts_with("cgs_") && !token.contains(char::is_whitespace));
    assert!(out.stderr.contains("added service billing"), "{out:?}");
    assert!(!out.stderr.contains(token), "the token went to stderr too");
    let r = whoami(&app, &format!("Bearer {token}"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({ "service": "billing", "scopes": ["charge", "read"] })
    );
    // Only the hash is stored.
    assert_eq!(
        app.db.scalar(&format!(
            "SELECT COUNT(*) FROM services WHERE token_hash = SHA2('{token}', 256) \
             AND prefix = '{}'",
            &token[..8]
        )),
        1
    );
}

#[test]
fn cli_list_and_revoke() {
    let app = spawn_app();
    let token = creditgate(
        &app.db.url,
        &["service", "add", "billing", "--scopes", "charge"],
    )
    .ok()
    .stdout
    .trim()
    .to_string();
    creditgate(
        &app.db.url,
        &["service", "add", "reports", "--scopes", "read"],
    )
    .ok();

    let table = creditgate(&app.db.url, &["service", "list"])
        .ok()
        .stdout
        .clone();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("NAME"), "{table}");
    assert!(
        lines[1].starts_with("billing") && lines[1].contains("charge"),
        "{table}"
    );
    assert!(
        lines[2].starts_with("reports") && lines[2].contains("read"),
        "{table}"
    );
    assert!(!table.contains(&token), "{table}");

    let out = creditgate(&app.db.url, &["service", "revoke", "billing"]);
    out.ok();
    assert!(out.stderr.contains("revoked service billing"), "{out:?}");
    assert_401(&whoami(&app, &format!("Bearer {token}")));

    let json: Value = serde_json::from_str(
        &creditgate(&app.db.url, &["service", "list", "--json"])
            .ok()
            .stdout,
    )
    .expect("service list --json is JSON");
    let list = json["services"].as_array().expect("a list");
    assert_eq!(list.len(), 2, "{json}");
    assert_eq!(list[0]["name"], "billing");
    assert!(list[0]["revoked_at"].is_string(), "{json}");
    assert!(list[1]["revoked_at"].is_null(), "{json}");
    assert_eq!(list[1]["scopes"], json!(["read"]));
}

#[test]
fn cli_refusals_name_the_problem_and_write_nothing() {
    let app = spawn_app();
    creditgate(
        &app.db.url,
        &["service", "add", "billing", "--scopes", "read"],
    )
    .ok();
    let long = "x".repeat(65);
    let cases: &[(&[&str], &str)] = &[
        (&["service", "add", "billing", "--scopes", "read"], "exists"),
        (
            &["service", "add", "bil ling", "--scopes", "read"],
            "service name",
        ),
        (
            &["service", "add", &long, "--scopes", "read"],
            "service name",
        ),
        (&["service", "add", "x", "--scopes", "admin"], "--scopes"),
        (&["service", "add", "x", "--scopes", ""], "--scopes"),
        (&["service", "revoke", "nobody"], "no service"),
    ];
    for (args, why) in cases {
        let out = creditgate(&app.db.url, args);
        let line = out.failed();
        assert!(line.contains(why), "{args:?}: {line}");
    }
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM services"), 1);
}

#[test]
fn admin_api_adds_lists_and_revokes() {
    let app = spawn_app();
    // Scopes as a list or in the CLI's comma form.
    let made = add(&app, json!({ "name": "billing", "scopes": ["charge"] }));
    assert_eq!(made.status, 201, "{}", made.body);
    let made = made.json();
    for k in [
        "name",
        "scopes",
        "prefix",
        "created_at",
        "revoked_at",
        "token",
    ] {
        assert!(made.get(k).is_some(), "{k} missing in {made}");
    }
    assert_eq!(made["scopes"], json!(["charge"]));
    let token = made["token"].as_str().unwrap().to_string();
    assert_eq!(made["prefix"], &token[..8]);
    let r = add(&app, json!({ "name": "reports", "scopes": "read, charge" }));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["scopes"], json!(["charge", "read"]));

    let list = app.admin("GET", "/admin/v1/services", None);
    assert_eq!(list.status, 200, "{}", list.body);
    let list = list.json();
    let names: Vec<&str> = list["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["billing", "reports"]);
    assert!(!list.to_string().contains(&token), "{list}");

    assert_eq!(whoami(&app, &format!("Bearer {token}")).status, 200);
    let revoked = app.admin("DELETE", "/admin/v1/services/billing", None);
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    let revoked = revoked.json();
    assert_eq!(revoked["name"], "billing");
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    assert!(revoked.get("token").is_none(), "{revoked}");
    assert_401(&whoami(&app, &format!("Bearer {token}")));
    // Again: the same answer, the first revocation's time.
    let again = app.admin("DELETE", "/admin/v1/services/billing", None);
    assert_eq!((again.status, again.json()), (200, revoked));

    let unknown = app.admin("DELETE", "/admin/v1/services/nobody", None);
    assert_eq!(
        (unknown.status, unknown.error().as_str()),
        (404, "unknown_service")
    );
}

#[test]
fn a_name_is_never_used_twice_even_once_revoked() {
    let app = spawn_app();
    assert_eq!(
        add(&app, json!({ "name": "billing", "scopes": ["read"] })).status,
        201
    );
    let twice = add(&app, json!({ "name": "billing", "scopes": ["charge"] }));
    assert_eq!(
        (twice.status, twice.error().as_str()),
        (409, "service_exists")
    );
    app.admin("DELETE", "/admin/v1/services/billing", None);
    let after = add(&app, json!({ "name": "billing", "scopes": ["read"] }));
    assert_eq!(
        (after.status, after.error().as_str()),
        (409, "service_exists")
    );
    // Names are case-sensitive: another name.
    assert_eq!(
        add(&app, json!({ "name": "Billing", "scopes": ["read"] })).status,
        201
    );
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM services"), 2);
}

#[test]
fn bad_names_scopes_and_bodies_are_400_and_write_nothing() {
    let app = spawn_app();
    let cases = [
        (
            json!({ "name": "bil ling", "scopes": ["read"] }),
            "invalid_service",
        ),
        (json!({ "name": "", "scopes": ["read"] }), "invalid_service"),
        (
            json!({ "name": "x".repeat(65), "scopes": ["read"] }),
            "invalid_service",
        ),
        (json!({ "name": 5, "scopes": ["read"] }), "invalid_service"),
        (json!({ "scopes": ["read"] }), "invalid_service"),
        (json!({ "name": "billing" }), "invalid_service"),
        (
            json!({ "name": "billing", "scopes": [] }),
            "invalid_service",
        ),
        (
            json!({ "name": "billing", "scopes": ["admin"] }),
            "invalid_service",
        ),
        (
            json!({ "name": "billing", "scopes": [1] }),
            "invalid_service",
        ),
        (
            json!({ "name": "billing", "scopes": "charge,,read" }),
            "invalid_service",
        ),
        (
            json!({ "name": "billing", "scopes": null }),
            "invalid_service",
        ),
        (
            json!({ "name": "billing", "scopes": ["read"], "token": "cgs_mine" }),
            "invalid_body",
        ),
        (json!(["billing"]), "invalid_body"),
    ];
    for (body, code) in cases {
        let r = add(&app, body.clone());
        assert_eq!(
            (r.status, r.error().as_str()),
            (400, code),
            "{body}: {}",
            r.body
        );
    }
    let r = app.admin("POST", "/admin/v1/services", Some("{not json"));
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_body"));
    let r = app.admin("DELETE", "/admin/v1/services/bad%20name", None);
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_service"));
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM services"), 0);
}

#[test]
fn only_a_working_service_token_passes_whoami() {
    // Arrange
    let app = spawn_app();
    let user_token = app.db.add_user("alice", 10);
    let made = add(&app, json!({ "name": "billing", "scopes": ["read"] })).json();
    let token = made["token"].as_str().unwrap().to_string();
    // Act / Assert
    assert_eq!(whoami(&app, &format!("Bearer {token}")).status, 200);
    let mut wrong = token.clone();
    wrong.pop();
    wrong.push(if token.ends_with('A') { 'B' } else { 'A' });
    for authorization in [
        format!("Bearer {wrong}"),
        "Bearer cgs_".to_string(),
        format!("Bearer alice:{user_token}"),
        format!("Bearer {user_token}"),
        format!("Bearer {}", app.admin_token),
        format!("Basic {token}"),
        token.clone(),
    ] {
        assert_401(&whoami(&app, &authorization));
    }
    // No header, and two headers (even both right), are refused too.
    assert_401(&app.get("/v1/whoami", &[]));
    let auth = format!("Bearer {token}");
    assert_401(&app.get(
        "/v1/whoami",
        &[("Authorization", &auth), ("Authorization", &auth)],
    ));
    // A user's credentials stay a user's: they were not charged for trying.
    assert_eq!(app.db.credit("alice"), 10);
    let r = app.get("/v1/whoami", &[]);
    assert!(
        r.json()["message"].as_str().unwrap().contains("cgs_"),
        "{}",
        r.body
    );
}

#[test]
fn whoami_answers_get_only() {
    let app = spawn_app();
    let token = add(&app, json!({ "name": "billing", "scopes": ["charge"] })).json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = crate::support::helpers::request(
        app.addr,
        "POST",
        "/v1/whoami",
        &[("Authorization", &format!("Bearer {token}"))],
        Some(""),
    );
    assert_eq!((r.status, r.header("Allow")), (405, Some("GET")));
}
