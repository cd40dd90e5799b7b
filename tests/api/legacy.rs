//! `CREDITGATE_LEGACY_ANSWERS=on`: a script written for the Flask sample
//! (tests/legacy_client.py: status 201, `["Data"]`, `["Status"]`) runs
//! unchanged against the real binary after `import-legacy`, and is charged
//! exactly as any client; with the setting off it sees today's answers.

use std::process::Command;

use serde_json::Value;

use crate::import::legacy_db;
use crate::support::daemon::Daemon;
use crate::support::helpers::{creditgate, TestDb};

const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/legacy_client.py");

/// Runs the sample-style client; (exit code, its JSON line).
fn sample_client(base: &str, user: &str, token: &str, calls: u32) -> (i32, Value) {
    let out = Command::new("python3")
        .args([CLIENT, base, user, token, "BOFA", &calls.to_string()])
        .output()
        .expect("python3 runs");
    let line = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(line.trim())
        .unwrap_or_else(|e| panic!("{e}: {line:?} {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), json)
}

/// Our database with the sample's users imported, and a server on it.
fn imported(legacy_answers: &str) -> (TestDb, Daemon, String) {
    let db = TestDb::new();
    let legacy = legacy_db("users", &[("alice", Some("tok-alice-1234"), 3)]);
    creditgate(&db.url, &["import-legacy", "--from", &legacy.url]).ok();
    let daemon = Daemon::start(
        &["serve"],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("CREDITGATE_BIND", "127.0.0.1:0"),
            ("CREDITGATE_LEGACY_ANSWERS", legacy_answers),
        ],
    );
    let base = format!("http://{}", daemon.addr());
    (db, daemon, base)
}

#[test]
fn a_script_written_for_the_sample_runs_unchanged_with_legacy_answers() {
    let (db, _daemon, base) = imported("on");
    let (code, out) = sample_client(&base, "alice", "tok-alice-1234", 10);
    assert_eq!(code, 0, "{out}");
    let data = out["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "{out}");
    assert_eq!(data[0]["bank"], "BOFA");
    assert_eq!(data[2]["credit_remaining"], 0);
    assert_eq!(
        out["status"],
        serde_json::json!(["No enough credit for this account"])
    );
    let (code, out) = sample_client(&base, "alice", "wrong-token", 1);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["status"], serde_json::json!(["Access Not Authorized"]));
    // Charged exactly as any client: three calls, three credits.
    assert_eq!(db.credit("alice"), 0);
    assert_eq!(db.scalar("SELECT SUM(calls) FROM usage_daily"), 3);
    assert_eq!(db.ledger_mismatches(), vec![]);
}

#[test]
fn without_legacy_answers_the_same_script_sees_todays_answers() {
    let (db, _daemon, base) = imported("off");
    let (code, out) = sample_client(&base, "alice", "tok-alice-1234", 10);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out["error"], "status 200", "{out}");
    let (code, out) = sample_client(&base, "alice", "wrong-token", 1);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out["error"], "status 401", "{out}");
    assert_eq!(db.credit("alice"), 2);
}
