//! The rest of the SPEC's status table: probes, balance, unknown routes,
//! limits, and the database being unreachable.

use std::sync::Arc;
use std::time::Duration;

use creditgate::app::AppState;
use creditgate::db;
use creditgate::gateway::Gateway;
use creditgate::http;
use creditgate::ops::jobs::Jobs;
use creditgate::ops::metrics::Metrics;
use creditgate::ops::shutdown::Shutdown;

use crate::support::helpers::{request, spawn_app, test_config};

#[test]
fn health_ready_and_warmup_answer() {
    let app = spawn_app();
    let health = app.get("/health", &[]);
    assert_eq!(
        (health.status, health.json()["status"].as_str()),
        (200, Some("ok"))
    );
    assert_eq!(app.get("/ready", &[]).status, 200);
    let warm = app.get("/_ah/warmup", &[]);
    assert_eq!((warm.status, warm.body.as_str()), (200, ""));
}

#[test]
fn unknown_routes_are_404_with_a_json_body() {
    let app = spawn_app();
    for path in [
        "/",
        "/api",
        "/api/v1.0/banks_data",
        "/api/v2.0/banks_data/bofa/",
        "/nope?x=1",
    ] {
        let r = app.get(path, &[]);
        assert_eq!((r.status, r.error().as_str()), (404, "not_found"), "{path}");
        assert!(r
            .header("Content-Type")
            .unwrap_or_default()
            .starts_with("application/json"));
    }
}

#[test]
fn the_trailing_slash_is_optional_and_codes_are_case_insensitive() {
    let app = spawn_app();
    let token = app.db.add_user("alice", 10);
    let auth = format!("Bearer alice:{token}");
    let r = app.get("/api/v1.0/banks_data/hsbc", &[("Authorization", &auth)]);
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(body["bank"], "HSBC");
    assert_eq!(body["name"], "HSBC Holdings");
    assert_eq!(body["country"], "GB");
    assert_eq!(body["bic"], "HBUKGB4B");
    assert!(body["data"].is_object());
    assert_eq!(r.header("X-Credit-Remaining"), Some("9"));
}

#[test]
fn the_balance_route_is_free_and_authenticated() {
    let app = spawn_app();
    let token = app.db.add_user_with("alice", Some(7), Some(100), None);
    let r = app.get(
        "/api/v1.0/credit",
        &[("Authorization", &format!("Bearer alice:{token}"))],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(body["username"], "alice");
    assert_eq!(body["credit"], 7);
    assert_eq!(body["monthly_credit"], 100);
    let next = body["next_refill"].as_str().expect("next_refill");
    assert!(chrono::DateTime::parse_from_rfc3339(next).is_ok(), "{next}");
    assert_eq!(app.db.credit("alice"), 7);
    assert_eq!(app.get("/api/v1.0/credit", &[]).status, 401);
}

#[test]
fn oversized_headers_are_431_and_charge_nothing() {
    let app = spawn_app();
    let token = app.db.add_user("alice", 10);
    let big = "x".repeat(20 * 1024);
    let r = app.get(
        "/api/v1.0/banks_data/bofa/",
        &[
            ("Authorization", &format!("Bearer alice:{token}")),
            ("X-Filler", &big),
        ],
    );
    assert_eq!((r.status, r.error().as_str()), (431, "headers_too_large"));
    assert_eq!(app.db.credit("alice"), 10);
}

#[test]
fn a_malformed_idempotency_key_is_400_and_charges_nothing() {
    let app = spawn_app();
    let token = app.db.add_user("alice", 10);
    let auth = format!("Bearer alice:{token}");
    for key in ["".to_string(), "k".repeat(129), "has space".into()] {
        let r = app.get(
            "/api/v1.0/banks_data/bofa/",
            &[("Authorization", &auth), ("Idempotency-Key", &key)],
        );
        assert_eq!(
            (r.status, r.error().as_str()),
            (400, "invalid_idempotency_key"),
            "{key:?}"
        );
    }
    assert_eq!(app.db.credit("alice"), 10);
}

#[test]
fn an_unreachable_database_is_503_with_retry_after() {
    // Arrange: a server whose pool points at a port nobody listens on.
    let dead_url = "mysql://root@127.0.0.1:9/creditgate";
    let config = test_config(dead_url, "admin", &[("CREDITGATE_DB_TIMEOUT_MS", "300")]);
    let config_for_mail = config.clone();
    let pool = db::pool(dead_url, 2, Duration::from_millis(300)).unwrap();
    let shutdown = Shutdown::new();
    let metrics = Arc::new(Metrics::default());
    let jobs = Arc::new(Jobs::new(Vec::new(), Arc::clone(&metrics)));
    let gateway = Arc::new(Gateway::new(2));
    let state = Arc::new(AppState::new(
        config,
        pool,
        metrics,
        shutdown.clone(),
        jobs,
        gateway,
        creditgate::ops::mail::Mailer::start(&config_for_mail).unwrap(),
    ));
    let server = http::bind(state).unwrap();
    let addr = server.addr();
    let stopper = shutdown.clone();
    let thread = std::thread::spawn(move || server.run(&stopper, Duration::from_secs(5)));
    // Act
    let paid = request(
        addr,
        "GET",
        "/api/v1.0/banks_data/bofa/",
        &[("Authorization", "Bearer alice:cg_x")],
        None,
    );
    let ready = request(addr, "GET", "/ready", &[], None);
    let health = request(addr, "GET", "/health", &[], None);
    shutdown.trigger("test over");
    thread.join().unwrap();
    // Assert
    for r in [&paid, &ready] {
        assert_eq!((r.status, r.error().as_str()), (503, "unavailable"));
        assert!(r.header("Retry-After").is_some());
    }
    assert_eq!(health.status, 200, "health needs no database");
}
