//! The scheduler through the admin API: `heartbeat` and `monthly-refill`
//! are listed, paused, resumed and run now; a failing job is recorded and
//! counted and the scheduler goes on; `next_run` is when it really runs.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::support::helpers::{request, spawn_app, spawn_app_with, TestApp};

fn jobs(app: &TestApp) -> Vec<Value> {
    let r = app.admin("GET", "/admin/v1/jobs", None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["jobs"].as_array().expect("a jobs array").clone()
}

fn job(app: &TestApp, id: &str) -> Value {
    jobs(app)
        .into_iter()
        .find(|j| j["id"] == id)
        .unwrap_or_else(|| panic!("no job {id}"))
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap()
        .with_timezone(&Utc)
}

#[test]
fn every_job_is_listed_with_its_schedule_and_state() {
    let app = spawn_app();
    let list = jobs(&app);
    let ids: Vec<&str> = list.iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "heartbeat",
            "monthly-refill",
            "expire-idempotency-keys",
            "expire-holds",
            "refund-unsettled",
            "prune-webhook-outbox"
        ]
    );
    for j in &list {
        let keys: Vec<&String> = j.as_object().unwrap().keys().collect();
        for k in [
            "id",
            "schedule",
            "paused",
            "last_run",
            "last_result",
            "next_run",
        ] {
            assert!(j.get(k).is_some(), "{k} missing from {j}: {keys:?}");
        }
        assert_eq!(j["paused"], false);
        assert!(time(&j["next_run"]) > Utc::now() - chrono::Duration::seconds(1));
    }
    assert_eq!(list[0]["schedule"], "every 10s");
    assert_eq!(list[1]["schedule"], "every 60s");
    assert_eq!(list[2]["schedule"], "every 3600s");
    assert_eq!(list[3]["schedule"], "every 10s");
    assert_eq!(list[4]["schedule"], "every 10s");
    // The refill runs at start, before the first request is served.
    assert!(list[1]["last_run"].is_string(), "{}", list[1]);
    assert_eq!(list[1]["last_result"], "ok: 0 user(s) refilled");
}

#[test]
fn expiring_idempotency_keys_runs_now_and_reports_its_count() {
    let app = spawn_app();
    let token = app.db.add_user("alice", 10);
    let auth = format!("Bearer alice:{token}");
    let r = app.get(
        "/api/v1.0/banks_data/bofa/",
        &[("Authorization", &auth), ("Idempotency-Key", "old")],
    );
    assert_eq!(r.status, 200);
    app.db
        .exec("UPDATE idempotency_keys SET created_at = NOW(3) - INTERVAL 2 DAY");
    let run = app.admin("POST", "/admin/v1/jobs/expire-idempotency-keys/run", None);
    assert_eq!(run.status, 200, "{}", run.body);
    assert_eq!(
        run.json()["last_result"],
        "ok: 1 expired idempotency key(s) deleted"
    );
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM idempotency_keys"), 0);
}

#[test]
fn a_paused_job_has_no_next_run_and_resumes() {
    let app = spawn_app();

    let paused = app.admin("POST", "/admin/v1/jobs/heartbeat/pause", None);
    assert_eq!(paused.status, 200, "{}", paused.body);
    assert_eq!(paused.json()["paused"], true);
    assert!(paused.json()["next_run"].is_null());
    assert_eq!(job(&app, "heartbeat")["paused"], true);
    assert_eq!(job(&app, "monthly-refill")["paused"], false, "only one");

    let resumed = app.admin("POST", "/admin/v1/jobs/heartbeat/resume", None);
    assert_eq!(resumed.status, 200, "{}", resumed.body);
    assert_eq!(resumed.json()["paused"], false);
    assert!(resumed.json()["next_run"].is_string());
}

#[test]
fn run_now_runs_the_job_and_records_its_result() {
    let app = spawn_app();
    assert!(job(&app, "heartbeat")["last_run"].is_null());

    let r = app.admin("POST", "/admin/v1/jobs/heartbeat/run", None);

    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["id"], "heartbeat");
    assert_eq!(r.json()["last_result"], "ok: database up");
    assert!(time(&r.json()["last_run"]) > Utc::now() - chrono::Duration::seconds(5));
    assert_eq!(job(&app, "heartbeat")["last_result"], "ok: database up");
}

#[test]
fn a_paused_job_can_still_be_run_now() {
    let app = spawn_app();
    app.admin("POST", "/admin/v1/jobs/heartbeat/pause", None);
    let r = app.admin("POST", "/admin/v1/jobs/heartbeat/run", None);
    assert_eq!(r.json()["last_result"], "ok: database up");
    assert_eq!(r.json()["paused"], true);
}

#[test]
fn an_unknown_job_is_404_unknown_job() {
    let app = spawn_app();
    for action in ["pause", "resume", "run"] {
        let r = app.admin("POST", &format!("/admin/v1/jobs/nope/{action}"), None);
        assert_eq!(r.status, 404, "{action}: {}", r.body);
        assert_eq!(r.error(), "unknown_job");
    }
    let r = app.admin("GET", "/admin/v1/jobs/heartbeat/run", None);
    assert_eq!(r.status, 405, "{}", r.body);
}

#[test]
fn the_jobs_api_needs_the_admin_token() {
    let app = spawn_app();
    for (method, path) in [
        ("GET", "/admin/v1/jobs"),
        ("POST", "/admin/v1/jobs/heartbeat/pause"),
        ("POST", "/admin/v1/jobs/monthly-refill/run"),
    ] {
        let r = request(app.addr, method, path, &[], None);
        assert_eq!(r.status, 401, "{method} {path}");
    }
    assert_eq!(job(&app, "heartbeat")["paused"], false);
}

#[test]
fn a_failing_job_is_recorded_and_counted_and_runs_again_later() {
    // Arrange: a user is due a refill, and the ledger table is gone, so the
    // refill fails inside its transaction.
    // Paused, so that only our runs count (run-now ignores the pause).
    let app = spawn_app();
    app.admin("POST", "/admin/v1/jobs/monthly-refill/pause", None);
    app.db.add_user_with("alice", Some(0), Some(100), None);
    app.db
        .exec("UPDATE users SET credit_period = '2000-01' WHERE username = 'alice'");
    app.db
        .exec("RENAME TABLE credit_events TO credit_events_away");

    // Act
    let failed = app.admin("POST", "/admin/v1/jobs/monthly-refill/run", None);
    let heartbeat = app.admin("POST", "/admin/v1/jobs/heartbeat/run", None);
    app.db
        .exec("RENAME TABLE credit_events_away TO credit_events");
    let again = app.admin("POST", "/admin/v1/jobs/monthly-refill/run", None);

    // Assert
    assert_eq!(failed.status, 200, "{}", failed.body);
    let result = failed.json()["last_result"].as_str().unwrap().to_string();
    assert!(result.starts_with("error: "), "{result}");
    assert_eq!(
        app.db.credit("alice"),
        100,
        "the failed refill rolled back, then ran"
    );
    assert_eq!(heartbeat.json()["last_result"], "ok: database up");
    assert_eq!(again.json()["last_result"], "ok: 1 user(s) refilled");
    let metrics = app.get("/metrics", &[]).body;
    assert!(
        metrics.contains("creditgate_job_runs_total{job=\"monthly-refill\",result=\"error\"} 1"),
        "{metrics}"
    );
}

#[test]
fn the_scheduler_runs_a_job_at_its_next_run_and_skips_it_while_paused() {
    // Arrange
    let app = spawn_app_with(&[("CREDITGATE_HEARTBEAT_SECS", "3")]);
    let promised = time(&job(&app, "heartbeat")["next_run"]);

    // Act: wait for the scheduler's first run.
    let deadline = Instant::now() + Duration::from_secs(10);
    let ran = loop {
        let j = job(&app, "heartbeat");
        if j["last_run"].is_string() {
            break j;
        }
        assert!(Instant::now() < deadline, "the scheduler never ran it");
        std::thread::sleep(Duration::from_millis(100));
    };

    // Assert: it ran when the list said, and ran ok.
    let late = (time(&ran["last_run"]) - promised).num_seconds();
    assert!((0..=1).contains(&late), "promised {promised}, ran {ran}");
    assert_eq!(ran["last_result"], "ok: database up");

    // Paused, the scheduler leaves it alone for two of its periods.
    app.admin("POST", "/admin/v1/jobs/heartbeat/pause", None);
    std::thread::sleep(Duration::from_millis(300)); // a run already started ends
    let before = job(&app, "heartbeat")["last_run"].clone();
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(job(&app, "heartbeat")["last_run"], before);
}
