//! The monthly refill on a real database with the clock passed in: month
//! ends and leap years, not before the refill day, once per month however
//! often and however concurrently it runs, no claw-back of a bigger top-up,
//! catch-up after downtime; then at start and through `creditgate refill`.

use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use creditgate::billing::bank::refill;
use creditgate::model::Period;
use mysql::prelude::Queryable;

use crate::support::daemon::BIN;
use crate::support::helpers::{in_parallel, spawn_app_on, TestDb};

fn at(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, s).unwrap()
}

fn period(p: &str) -> Period {
    Period::parse(p).unwrap()
}

/// A user with a monthly allowance, last refilled for `credit_period`.
fn user(db: &TestDb, name: &str, credit: i64, monthly: i64, day: u32, credit_period: &str) {
    db.add_user_with(name, Some(credit), Some(monthly), None);
    db.conn()
        .exec_drop(
            "UPDATE users SET refill_day = ?, credit_period = ? WHERE username = ?",
            (day, credit_period, name),
        )
        .unwrap();
}

/// The user's refill ledger rows: (period, delta, balance_after).
fn refills(db: &TestDb, name: &str) -> Vec<(String, i64, i64)> {
    db.conn()
        .exec(
            "SELECT e.period, e.delta, e.balance_after FROM credit_events e \
             JOIN users u ON u.id = e.user_id \
             WHERE u.username = ? AND e.reason = 'monthly-refill' ORDER BY e.id",
            (name,),
        )
        .unwrap()
}

fn credit_period(db: &TestDb, name: &str) -> Option<String> {
    db.conn()
        .exec_first(
            "SELECT credit_period FROM users WHERE username = ?",
            (name,),
        )
        .unwrap()
        .flatten()
}

#[test]
fn refill_day_31_in_a_30_day_month_refills_on_the_30th() {
    let db = TestDb::new();
    user(&db, "alice", 0, 100, 31, "2026-03");

    let before = refill(
        &db.pool,
        period("2026-04"),
        at(2026, 4, 29, 23, 59, 59),
        "test",
    )
    .unwrap();
    assert_eq!((before, db.credit("alice")), (0, 0));

    let on_the_30th = refill(
        &db.pool,
        period("2026-04"),
        at(2026, 4, 30, 0, 0, 0),
        "test",
    )
    .unwrap();
    assert_eq!(on_the_30th, 1);
    assert_eq!(db.credit("alice"), 100);
    assert_eq!(refills(&db, "alice"), [("2026-04".into(), 100, 100)]);
    assert_eq!(credit_period(&db, "alice").as_deref(), Some("2026-04"));
}

#[test]
fn february_refills_late_days_on_the_28th_and_in_a_leap_year_on_the_29th() {
    // (refill day, month, the last second before, the refill moment)
    let cases = [
        (
            31,
            "2027-02",
            at(2027, 2, 27, 23, 59, 59),
            at(2027, 2, 28, 0, 0, 0),
        ),
        (
            29,
            "2027-02",
            at(2027, 2, 27, 23, 59, 59),
            at(2027, 2, 28, 0, 0, 0),
        ),
        (
            28,
            "2027-02",
            at(2027, 2, 27, 23, 59, 59),
            at(2027, 2, 28, 0, 0, 0),
        ),
        (
            31,
            "2028-02",
            at(2028, 2, 28, 23, 59, 59),
            at(2028, 2, 29, 0, 0, 0),
        ),
        (
            30,
            "2028-02",
            at(2028, 2, 28, 23, 59, 59),
            at(2028, 2, 29, 0, 0, 0),
        ),
        (
            29,
            "2028-02",
            at(2028, 2, 28, 23, 59, 59),
            at(2028, 2, 29, 0, 0, 0),
        ),
        (
            28,
            "2028-02",
            at(2028, 2, 27, 23, 59, 59),
            at(2028, 2, 28, 0, 0, 0),
        ),
    ];
    for (day, month, just_before, moment) in cases {
        let db = TestDb::new();
        user(&db, "alice", 0, 100, day, "2000-01");
        let p = period(month);
        let early = refill(&db.pool, p, just_before, "test").unwrap();
        assert_eq!(early, 0, "day {day} of {month} refilled at {just_before}");
        let on_time = refill(&db.pool, p, moment, "test").unwrap();
        assert_eq!(on_time, 1, "day {day} of {month} not refilled at {moment}");
        assert_eq!(refills(&db, "alice"), [(month.into(), 100, 100)]);
    }
}

#[test]
fn before_the_refill_day_nothing_happens() {
    let db = TestDb::new();
    user(&db, "alice", 7, 100, 15, "2026-10");

    let n = refill(
        &db.pool,
        period("2026-11"),
        at(2026, 11, 14, 23, 59, 59),
        "test",
    )
    .unwrap();

    assert_eq!(n, 0);
    assert_eq!(db.credit("alice"), 7);
    assert!(refills(&db, "alice").is_empty());
    assert_eq!(credit_period(&db, "alice").as_deref(), Some("2026-10"));
}

#[test]
fn a_month_is_refilled_once_however_often_the_job_runs() {
    let db = TestDb::new();
    user(&db, "alice", 0, 100, 1, "2026-10");
    let nov = period("2026-11");

    let first = refill(&db.pool, nov, at(2026, 11, 1, 0, 0, 30), "test").unwrap();
    db.exec("UPDATE users SET credit = 3 WHERE username = 'alice'"); // spent
    let later: usize = [at(2026, 11, 1, 0, 1, 30), at(2026, 11, 30, 23, 59, 59)]
        .into_iter()
        .map(|now| refill(&db.pool, nov, now, "test").unwrap())
        .sum();

    assert_eq!((first, later), (1, 0));
    assert_eq!(
        db.credit("alice"),
        3,
        "spent credit is not given back twice"
    );
    assert_eq!(refills(&db, "alice").len(), 1);
}

#[test]
fn a_refill_never_claws_back_a_bigger_top_up() {
    let db = TestDb::new();
    user(&db, "rich", 500, 100, 1, "2026-10");
    user(&db, "poor", 30, 100, 1, "2026-10");

    let n = refill(
        &db.pool,
        period("2026-11"),
        at(2026, 11, 2, 0, 0, 0),
        "test",
    )
    .unwrap();

    assert_eq!(n, 2);
    assert_eq!(db.credit("rich"), 500);
    assert_eq!(refills(&db, "rich"), [("2026-11".into(), 0, 500)]);
    assert_eq!(credit_period(&db, "rich").as_deref(), Some("2026-11"));
    assert_eq!(db.credit("poor"), 100);
    assert_eq!(refills(&db, "poor"), [("2026-11".into(), 70, 100)]);
}

#[test]
fn users_without_a_monthly_allowance_are_left_alone() {
    let db = TestDb::new();
    db.add_user("bob", 5);

    let n = refill(
        &db.pool,
        period("2026-11"),
        at(2026, 11, 28, 0, 0, 0),
        "test",
    )
    .unwrap();

    assert_eq!(n, 0);
    assert_eq!(db.credit("bob"), 5);
    assert_eq!(credit_period(&db, "bob"), None);
}

#[test]
fn after_downtime_the_current_month_is_refilled_once() {
    // Arrange: last refilled in September; October was missed.
    let db = TestDb::new();
    user(&db, "alice", 2, 100, 1, "2026-09");
    let nov = period("2026-11");
    // Act
    let n = refill(&db.pool, nov, at(2026, 11, 28, 12, 0, 0), "test").unwrap();
    let again = refill(&db.pool, nov, at(2026, 11, 28, 12, 1, 0), "test").unwrap();
    // Assert: one refill, for November, not one per missed month.
    assert_eq!((n, again), (1, 0));
    assert_eq!(db.credit("alice"), 100);
    assert_eq!(refills(&db, "alice"), [("2026-11".into(), 98, 100)]);
}

#[test]
fn eight_instances_refilling_at_once_refill_each_user_exactly_once() {
    // Arrange: 200 users due a refill.
    let db = TestDb::new();
    let rows: Vec<String> = (0..200)
        .map(|i| format!("('u{i}', {}, 100, 1, '2026-10')", i % 150))
        .collect();
    db.exec(&format!(
        "INSERT INTO users (username, credit, monthly_credit, \
         refill_day, credit_period) VALUES {}",
        rows.join(", ")
    ));
    let url = db.url.clone();

    // Act: 8 threads, each with its own pool, like 8 service instances.
    let counts = in_parallel(8, move |i| {
        let pool = creditgate::db::pool(&url, 2, Duration::from_secs(30)).unwrap();
        refill(
            &pool,
            period("2026-11"),
            at(2026, 11, 1, 0, 0, 0),
            &format!("instance-{i}"),
        )
        .unwrap()
    });

    // Assert
    assert_eq!(counts.iter().sum::<usize>(), 200, "{counts:?}");
    let per_user = "SELECT COUNT(*) FROM (SELECT user_id FROM credit_events \
                    WHERE reason = 'monthly-refill' GROUP BY user_id HAVING COUNT(*) <> 1) x";
    assert_eq!(db.scalar(per_user), 0, "a user refilled twice");
    assert_eq!(
        db.scalar(
            "SELECT COUNT(DISTINCT user_id) FROM credit_events WHERE reason = 'monthly-refill'"
        ),
        200
    );
    let wrong_credit = "SELECT COUNT(*) FROM users \
                        WHERE credit <> GREATEST(CAST(SUBSTRING(username, 2) AS UNSIGNED) % 150, 100)";
    assert_eq!(db.scalar(wrong_credit), 0);
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM users WHERE credit_period <> '2026-11'"),
        0
    );
}

#[test]
fn the_service_refills_at_start_before_serving() {
    // Arrange: a user last refilled long ago, so this month is due.
    let db = TestDb::new();
    user(&db, "alice", 1, 100, 1, "2000-01");
    // Act
    let app = spawn_app_on(db, &[]);
    // Assert
    assert_eq!(app.db.credit("alice"), 100);
    let this_month = Period::of(Utc::now().date_naive()).to_string();
    assert_eq!(refills(&app.db, "alice").len(), 1);
    assert_eq!(credit_period(&app.db, "alice"), Some(this_month));
}

fn cli_refill(db: &TestDb, period: &str) -> std::process::Output {
    Command::new(BIN)
        .args(["refill", "--period", period])
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .output()
        .expect("run creditgate refill")
}

#[test]
fn creditgate_refill_with_a_period_refills_that_month_once() {
    // Arrange: a period long past, so its refill moment has passed for sure.
    let db = TestDb::new();
    user(&db, "alice", 0, 100, 31, "2019-12");

    // Act
    let first = cli_refill(&db, "2020-02");
    let second = cli_refill(&db, "2020-02");
    let future = cli_refill(&db, "2999-01");

    // Assert
    let stderr = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).to_string();
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("1 user(s) refilled for 2020-02"),
        "{}",
        stderr(&first)
    );
    assert!(second.status.success());
    assert!(
        stderr(&second).contains("0 user(s) refilled for 2020-02"),
        "{}",
        stderr(&second)
    );
    assert!(
        stderr(&future).contains("0 user(s) refilled for 2999-01"),
        "{}",
        stderr(&future)
    );
    assert_eq!(db.credit("alice"), 100);
    assert_eq!(refills(&db, "alice"), [("2020-02".into(), 100, 100)]);
}

#[test]
fn creditgate_refill_refuses_a_malformed_period_in_one_line() {
    let db = TestDb::new();
    let out = cli_refill(&db, "2020-13");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("YYYY-MM"), "{stderr}");
}
