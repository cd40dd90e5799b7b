//! The command line, run as the real binary against a fresh database: what
//! goes to stdout (tokens alone, tables, JSON), the one-line reason on stderr
//! and the exit code of every subcommand.

use chrono::Utc;
use serde_json::Value;

use crate::support::helpers::{creditgate, server_url, spawn_app, TestDb};

fn show_json(db: &TestDb, name: &str) -> Value {
    let out = creditgate(&db.url, &["user", "show", name, "--json"]);
    serde_json::from_str(&out.ok().stdout).expect("user show --json is JSON")
}

/// Every row's cells start at the header's column offsets.
fn assert_aligned(table: &str, headers: &[&str]) {
    let mut lines = table.lines();
    let head = lines.next().expect("a header line");
    let starts: Vec<usize> = headers
        .iter()
        .map(|h| head.find(h).unwrap_or_else(|| panic!("no {h} in {head:?}")))
        .collect();
    for line in lines {
        let bytes = line.as_bytes();
        for &s in &starts {
            assert!(
                s == 0 || (bytes.get(s - 1) == Some(&b' ') && bytes.get(s) != Some(&b' ')),
                "column at {s} not aligned in {line:?}\n{table}"
            );
        }
    }
}

#[test]
fn user_add_prints_the_token_alone_and_it_works() {
    // Arrange
    let app = spawn_app();
    // Act: TOKEN=$(creditgate user add alice --credit 100)
    let out = creditgate(&app.db.url, &["user", "add", "alice", "--credit", "100"]);
    // Assert
    out.ok();
    let token = out.stdout.strip_suffix('\n').expect("a newline");
    assert!(token.starts_with("cg_") && !token.contains(char::is_whitespace));
    assert!(out.stderr.contains("created user alice"), "{out:?}");
    assert!(!out.stderr.contains(token), "the token went to stderr too");
    let r = app.bank("alice", token, "bofa");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(app.db.credit("alice"), 99);
    assert_eq!(
        app.db.scalar(
            "SELECT COUNT(*) FROM credit_events \
             WHERE reason = 'create' AND delta = 100 AND balance_after = 100 AND actor = 'cli:opsbob'"
        ),
        1
    );
}

#[test]
fn user_add_refuses_what_it_cannot_create() {
    let db = TestDb::new();
    creditgate(&db.url, &["user", "add", "alice"]).ok();
    let long = "x".repeat(65);
    let cases: &[(&[&str], &str)] = &[
        (&["user", "add", "alice"], "already exists"),
        (&["user", "add", "al ice"], "username"),
        (&["user", "add", &long], "username"),
        (&["user", "add", "bob", "--credit", "-5"], "-5"),
        (&["user", "add", "bob", "--credit", "1.5"], "1.5"),
        (&["user", "add", "bob", "--monthly", "-1"], "-1"),
        (&["user", "add", "bob", "--refill-day", "32"], "32"),
        (&["user", "add", "bob", "--token", ""], "empty"),
        (&["user", "add", "bob", "--email", "nope"], "e-mail"),
    ];
    for (args, why) in cases {
        let out = creditgate(&db.url, args);
        let line = out.failed();
        assert!(line.contains(why), "{args:?}: {line}");
    }
    assert_eq!(db.scalar("SELECT COUNT(*) FROM users"), 1);
}

#[test]
fn user_add_with_monthly_credit_or_an_imported_token() {
    let app = spawn_app();
    let out = creditgate(&app.db.url, &["user", "add", "carol", "--monthly", "50"]);
    out.ok();
    let carol = show_json(&app.db, "carol");
    assert_eq!(carol["credit"], 50);
    assert_eq!(carol["monthly_credit"], 50);
    assert_eq!(
        carol["credit_period"],
        Utc::now().format("%Y-%m").to_string()
    );

    let out = creditgate(
        &app.db.url,
        &[
            "user",
            "add",
            "dave",
            "--credit",
            "2",
            "--token",
            "flask-era-token",
        ],
    );
    assert_eq!(out.ok().stdout, "flask-era-token\n");
    assert_eq!(app.bank("dave", "flask-era-token", "bofa").status, 200);
}

#[test]
fn user_list_prints_an_aligned_table_or_json() {
    let db = TestDb::new();
    db.add_user("alice", 5);
    db.add_user_with("a-much-longer-name", None, Some(1000), None);
    let out = creditgate(&db.url, &["user", "list"]);
    let table = &out.ok().stdout;
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(table.starts_with("USERNAME"), "{table}");
    assert_aligned(
        table,
        &[
            "USERNAME",
            "CREDIT",
            "MONTHLY",
            "REFILL_DAY",
            "PERIOD",
            "DISABLED",
            "TOKEN",
        ],
    );
    assert!(!table.contains("hash"));

    let out = creditgate(&db.url, &["user", "list", "--json"]);
    let v: Value = serde_json::from_str(&out.ok().stdout).unwrap();
    let users = v["users"].as_array().expect("{\"users\": [...]}");
    assert_eq!(users.len(), 2);
    assert_eq!(users[0]["username"], "a-much-longer-name");
    assert_eq!(users[0]["monthly_credit"], 1000);
    assert_eq!(users[1]["credit"], 5);
}

#[test]
fn user_show_prints_one_user_or_says_who_is_unknown() {
    let db = TestDb::new();
    db.add_user("alice", 5);
    let out = creditgate(&db.url, &["user", "show", "alice"]);
    assert!(out.ok().stdout.contains("credit:         5"), "{out:?}");
    let line = creditgate(&db.url, &["user", "show", "ghost"])
        .failed()
        .to_string();
    assert!(line.contains("ghost"), "{line}");
    let line = creditgate(&db.url, &["user", "show", "bad/name"])
        .failed()
        .to_string();
    assert!(line.contains("username"), "{line}");
}

#[test]
fn user_credit_adds_and_sets_and_refuses_a_negative_result() {
    let db = TestDb::new();
    db.add_user("alice", 10);
    creditgate(&db.url, &["user", "credit", "alice", "--add", "5"]).ok();
    assert_eq!(db.credit("alice"), 15);
    creditgate(&db.url, &["user", "credit", "alice", "--add", "-3"]).ok();
    assert_eq!(db.credit("alice"), 12);
    creditgate(&db.url, &["user", "credit", "alice", "--set", "40"]).ok();
    assert_eq!(db.credit("alice"), 40);

    let cases: &[(&[&str], &str)] = &[
        (&["user", "credit", "alice", "--set", "-1"], "-1"),
        (&["user", "credit", "alice", "--add", "-41"], "below 0"),
        (&["user", "credit", "alice", "--add", "1.5"], "1.5"),
        (&["user", "credit", "alice", "--set", "x"], "x"),
        (&["user", "credit", "ghost", "--add", "1"], "ghost"),
        (&["user", "credit", "alice"], "--"),
        (
            &["user", "credit", "alice", "--add", "1", "--set", "1"],
            "--",
        ),
    ];
    for (args, why) in cases {
        let out = creditgate(&db.url, args);
        let line = out.failed();
        assert!(line.contains(why), "{args:?}: {line}");
    }
    assert_eq!(db.credit("alice"), 40);
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM credit_events WHERE actor = 'cli:opsbob'"),
        3
    );
    assert_eq!(
        db.scalar("SELECT delta FROM credit_events WHERE reason = 'set'"),
        28
    );
}

#[test]
fn user_rotate_prints_a_new_token_and_the_old_one_stops() {
    let app = spawn_app();
    let old = app.db.add_user("alice", 10);
    let out = creditgate(&app.db.url, &["user", "rotate", "alice"]);
    let new = out.ok().stdout.strip_suffix('\n').unwrap().to_string();
    assert!(new.starts_with("cg_") && new != old);
    assert_eq!(app.bank("alice", &old, "bofa").status, 401);
    assert_eq!(app.bank("alice", &new, "bofa").status, 200);
    let line = creditgate(&app.db.url, &["user", "rotate", "ghost"])
        .failed()
        .to_string();
    assert!(line.contains("ghost"), "{line}");
}

#[test]
fn user_disable_and_enable() {
    let app = spawn_app();
    let token = app.db.add_user("alice", 10);
    creditgate(&app.db.url, &["user", "disable", "alice"]).ok();
    assert_eq!(app.bank("alice", &token, "bofa").status, 401);
    assert_eq!(show_json(&app.db, "alice")["disabled"], true);
    creditgate(&app.db.url, &["user", "enable", "alice"]).ok();
    assert_eq!(app.bank("alice", &token, "bofa").status, 200);
    for cmd in ["disable", "enable"] {
        let out = creditgate(&app.db.url, &["user", cmd, "ghost"]);
        assert!(out.failed().contains("ghost"));
    }
}

#[test]
fn bank_add_makes_a_priced_bank_and_refuses_bad_input() {
    let app = spawn_app();
    let token = app.db.add_user("alice", 10);
    let out = creditgate(
        &app.db.url,
        &[
            "bank",
            "add",
            "acme",
            "--name",
            "Acme Bank",
            "--country",
            "nl",
            "--bic",
            "ACMENL2A",
            "--cost",
            "3",
            "--data",
            r#"{"founded":1901}"#,
        ],
    );
    out.ok();
    let r = app.bank("alice", &token, "ACME");
    assert_eq!(r.status, 200, "{}", r.body);
    let body = r.json();
    assert_eq!(body["country"], "NL");
    assert_eq!(body["data"]["founded"], 1901);
    assert_eq!(app.db.credit("alice"), 7);

    let long = "A".repeat(17);
    let cases: &[(&[&str], &str)] = &[
        (&["bank", "add", "ac-me", "--name", "X"], "bank code"),
        (&["bank", "add", &long, "--name", "X"], "bank code"),
        (&["bank", "add", "acme", "--name", "Again"], "exists"),
        (
            &["bank", "add", "okay", "--name", "X", "--data", "{nope"],
            "JSON",
        ),
        (
            &["bank", "add", "okay", "--name", "X", "--cost", "-1"],
            "-1",
        ),
        (
            &["bank", "add", "okay", "--name", "X", "--country", "NLD"],
            "country",
        ),
        (&["bank", "add", "okay"], "--name"),
    ];
    for (args, why) in cases {
        let out = creditgate(&app.db.url, args);
        let line = out.failed();
        assert!(line.contains(why), "{args:?}: {line}");
    }
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM banks WHERE code = 'OKAY'"),
        0
    );
}

#[test]
fn refill_restores_allowances_once_and_refuses_a_bad_period() {
    let db = TestDb::new();
    db.add_user_with("carol", None, Some(100), None);
    db.exec("UPDATE users SET credit = 30, credit_period = '2000-01'");
    let out = creditgate(&db.url, &["refill"]);
    assert!(out.ok().stderr.contains("1 user(s) refilled"), "{out:?}");
    assert_eq!(db.credit("carol"), 100);
    let out = creditgate(&db.url, &["refill"]);
    assert!(out.ok().stderr.contains("0 user(s) refilled"), "{out:?}");
    assert_eq!(
        db.scalar(
            "SELECT COUNT(*) FROM credit_events \
             WHERE reason = 'monthly-refill' AND delta = 70 AND actor = 'cli:opsbob'"
        ),
        1
    );
    for bad in ["2026-13", "2026-1", "26-01", "next"] {
        let line = creditgate(&db.url, &["refill", "--period", bad])
            .failed()
            .to_string();
        assert!(line.contains("YYYY-MM"), "{bad}: {line}");
    }
}

#[test]
fn usage_prints_a_filtered_table_or_json() {
    let app = spawn_app();
    let a = app.db.add_user("alice", 100);
    let b = app.db.add_user("bob", 100);
    assert_eq!(app.bank("alice", &a, "bofa").status, 200);
    assert_eq!(app.bank("alice", &a, "mufg").status, 200);
    assert_eq!(app.bank("bob", &b, "bofa").status, 200);
    app.db.exec(
        "INSERT INTO usage_daily (user_id, day, endpoint, calls, credits) \
         SELECT id, '2026-01-15', 'banks_data', 7, 9 FROM users WHERE username = 'alice'",
    );
    let today = Utc::now().format("%Y-%m-%d").to_string();

    let out = creditgate(&app.db.url, &["usage"]);
    let table = &out.ok().stdout;
    assert_eq!(table.lines().count(), 4, "{table}");
    assert_aligned(table, &["DAY", "USERNAME", "ENDPOINT", "CALLS", "CREDITS"]);

    let out = creditgate(
        &app.db.url,
        &["usage", "alice", "--from", &today, "--to", &today, "--json"],
    );
    let v: Value = serde_json::from_str(&out.ok().stdout).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"rows": [{
            "username": "alice", "day": today, "endpoint": "banks_data",
            "calls": 2, "credits": 3
        }]})
    );
    let out = creditgate(
        &app.db.url,
        &[
            "usage",
            "--from",
            "2026-01-01",
            "--to",
            "2026-01-31",
            "--json",
        ],
    );
    let v: Value = serde_json::from_str(&out.ok().stdout).unwrap();
    assert_eq!(v["rows"].as_array().unwrap().len(), 1);
    assert_eq!(v["rows"][0]["calls"], 7);

    for (args, why) in [
        (&["usage", "--from", "2026-02-30"][..], "--from"),
        (&["usage", "--to", "tomorrow"][..], "--to"),
        (&["usage", "bad name"][..], "username"),
    ] {
        let line = creditgate(&app.db.url, args).failed().to_string();
        assert!(line.contains(why), "{args:?}: {line}");
    }
}

#[test]
fn help_works_at_every_level() {
    let url = format!("{}/cg_never_used", server_url());
    for args in [
        &["--help"][..],
        &["help"],
        &["serve", "--help"],
        &["migrate", "--help"],
        &["user", "--help"],
        &["user", "add", "--help"],
        &["user", "list", "--help"],
        &["user", "show", "--help"],
        &["user", "credit", "--help"],
        &["user", "rotate", "--help"],
        &["user", "disable", "--help"],
        &["user", "enable", "--help"],
        &["bank", "--help"],
        &["bank", "add", "--help"],
        &["refill", "--help"],
        &["usage", "--help"],
        &["import-legacy", "--help"],
    ] {
        let out = creditgate(&url, args);
        out.ok();
        assert!(out.stdout.contains("Usage:"), "{args:?}: {out:?}");
    }
    let out = creditgate(&url, &["--version"]);
    assert!(out.ok().stdout.starts_with("creditgate "), "{out:?}");
}

#[test]
fn usage_errors_are_one_line_too() {
    let url = format!("{}/cg_never_used", server_url());
    for args in [
        &["frobnicate"][..],
        &["user"],
        &["user", "add"],
        &["user", "list", "--colour"],
        &["import-legacy"],
    ] {
        let out = creditgate(&url, args);
        let line = out.failed();
        assert!(line.starts_with("creditgate: "), "{args:?}: {line}");
        assert!(line.contains("--help"), "{args:?}: {line}");
    }
}

#[test]
fn migrate_twice_is_fine_and_commands_before_it_say_to_run_it() {
    // A database that does not exist yet, then one that exists but is empty.
    let name = format!("cg_test_unmigrated_{}", std::process::id());
    let url = format!("{}/{name}", server_url());
    let _ = creditgate::db::drop_database(&url);
    let line = creditgate(&url, &["user", "list"]).failed().to_string();
    assert!(line.contains("creditgate migrate"), "{line}");
    creditgate::db::create_database_if_missing(&url).unwrap();
    let line = creditgate(&url, &["user", "add", "alice"])
        .failed()
        .to_string();
    assert!(line.contains("creditgate migrate"), "{line}");

    let first = creditgate(&url, &["migrate"]);
    assert!(first.ok().stderr.contains("applied 0001_"), "{first:?}");
    assert_eq!(first.stdout, "");
    let second = creditgate(&url, &["migrate"]);
    assert!(second.ok().stderr.contains("up to date"), "{second:?}");
    creditgate(&url, &["user", "add", "alice"]).ok();
    creditgate::db::drop_database(&url).unwrap();
}
