//! `creditgate import-legacy` against a table laid out as the Flask sample's
//! (USERNAME, TOKEN, CREDIT): the sample's clients must work unchanged
//! afterwards, and no token may be stored in clear.

use mysql::prelude::Queryable;

use crate::support::helpers::creditgate;
use crate::support::helpers::{request, spawn_app, TestDb};

/// A second fresh database holding only the sample's `users` table (plus
/// `table`, when it is another name) with these rows.
pub fn legacy_db(table: &str, rows: &[(&str, Option<&str>, i64)]) -> TestDb {
    let db = TestDb::new();
    // TestDb comes migrated; the sample's database has none of our tables.
    db.exec(
        "DROP TABLE route_charges, holds, api_keys, idempotency_keys, usage_daily, credit_events, users",
    );
    db.exec(&format!(
        "CREATE TABLE `{table}` (
            ID       INT AUTO_INCREMENT PRIMARY KEY,
            USERNAME VARCHAR(255) NOT NULL,
            TOKEN    VARCHAR(255),
            CREDIT   INT
        )"
    ));
    let mut conn = db.conn();
    for (name, token, credit) in rows {
        conn.exec_drop(
            format!("INSERT INTO `{table}` (USERNAME, TOKEN, CREDIT) VALUES (?, ?, ?)"),
            (name, token, credit),
        )
        .unwrap();
    }
    db
}

#[test]
fn imported_users_keep_their_tokens_and_the_sample_clients_work() {
    // Arrange: one user already here, and the sample's rows, good and bad.
    let app = spawn_app();
    app.db.add_user("existing", 1);
    let legacy = legacy_db(
        "users",
        &[
            ("alice", Some("tok-alice-1234"), 10),
            // Short enough that a fixed 8-character prefix would be all of it.
            ("bob", Some("b0b5ecr3"), 5),
            ("existing", Some("whatever-token"), 3),
            ("bad name", Some("tok-bad-name"), 3),
            ("emptytok", Some(""), 4),
            ("nulltok", None, 4),
            ("negative", Some("tok-negative"), -3),
        ],
    );

    // Act
    let out = creditgate(&app.db.url, &["import-legacy", "--from", &legacy.url]);

    // Assert: the report.
    out.ok();
    assert_eq!(out.stdout, "");
    let err = &out.stderr;
    for line in [
        "skipped \"existing\": already exists",
        "skipped \"bad name\": a username is",
        "skipped \"emptytok\": an imported token must not be empty",
        "skipped \"nulltok\": no TOKEN",
        "skipped \"negative\": CREDIT is negative (-3)",
        "7/7 rows",
        "imported 2 user(s); skipped 1 existing and 4 invalid",
    ] {
        assert!(err.contains(line), "no {line:?} in:\n{err}");
    }
    assert!(
        !err.contains('\r'),
        "terminal progress off a terminal: {err:?}"
    );
    assert!(!err.contains("tok-alice-1234") && !err.contains("b0b5ecr3"));

    // The users, their credit and their ledger rows.
    assert_eq!(app.db.credit("alice"), 10);
    assert_eq!(app.db.credit("bob"), 5);
    assert_eq!(app.db.credit("existing"), 1);
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM users"), 3);
    assert_eq!(
        app.db.scalar(
            "SELECT COUNT(*) FROM credit_events e JOIN users u ON u.id = e.user_id \
             WHERE e.reason = 'import' AND e.actor = 'cli:opsbob' \
             AND ((u.username = 'alice' AND e.delta = 10) OR (u.username = 'bob' AND e.delta = 5))"
        ),
        2
    );
    // No token in clear, not even as its displayed prefix.
    assert_eq!(
        app.db.scalar(
            "SELECT COUNT(*) FROM api_keys WHERE token_hash IN ('tok-alice-1234', 'b0b5ecr3') \
             OR prefix IN ('tok-alice-1234', 'b0b5ecr3')"
        ),
        0
    );

    // The sample's clients: the raw header and ?token=, unchanged.
    let r = request(
        app.addr,
        "GET",
        "/api/v1.0/banks_data/bofa/",
        &[("Authorization", "alice:tok-alice-1234")],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["credit_remaining"], 9);
    let r = request(
        app.addr,
        "GET",
        "/api/v1.0/banks_data/bofa?token=bob:b0b5ecr3",
        &[],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(app.db.credit("bob"), 4);
    assert_eq!(app.bank("alice", "tok-alice-1234x", "bofa").status, 401);
}

#[test]
fn importing_twice_skips_everyone_the_second_time() {
    let db = TestDb::new();
    let legacy = legacy_db("accounts", &[("alice", Some("tok-alice-1234"), 10)]);
    let args = [
        "import-legacy",
        "--from",
        legacy.url.as_str(),
        "--table",
        "accounts",
    ];
    creditgate(&db.url, &args).ok();
    let again = creditgate(&db.url, &args);
    assert!(
        again
            .ok()
            .stderr
            .contains("imported 0 user(s); skipped 1 existing and 0 invalid"),
        "{again:?}"
    );
    assert_eq!(db.credit("alice"), 10);
    assert_eq!(db.scalar("SELECT COUNT(*) FROM credit_events"), 1);
}

#[test]
fn a_bad_source_fails_with_one_line_and_imports_nothing() {
    let db = TestDb::new();
    let legacy = legacy_db("users", &[("alice", Some("tok-alice-1234"), 10)]);
    let missing_db = format!("{}_missing", legacy.url);
    for (args, why) in [
        (
            vec!["import-legacy", "--from", &legacy.url, "--table", "nope"],
            "nope",
        ),
        (
            vec![
                "import-legacy",
                "--from",
                &legacy.url,
                "--table",
                "users;drop",
            ],
            "--table",
        ),
        (vec!["import-legacy", "--from", "postgres://x/y"], "--from"),
        (vec!["import-legacy", "--from", &missing_db], "--from"),
    ] {
        let out = creditgate(&db.url, &args);
        let line = out.failed();
        assert!(line.contains(why), "{args:?}: {line}");
    }
    assert_eq!(db.scalar("SELECT COUNT(*) FROM users"), 0);
}
