//! Transactions the database rolls back (a deadlock, a lock wait timeout,
//! on Galera a certification conflict) are run again, not answered 503 and
//! not called "in doubt": here a real InnoDB deadlock picks the charge as
//! its victim, and the request still succeeds, charged once.

use std::time::Duration;

use mysql::prelude::Queryable;

use crate::support::helpers::{request, spawn_app};

fn deadlocks(conn: &mut impl Queryable) -> i64 {
    let row: Option<(String, i64)> = conn
        .query_first("SHOW GLOBAL STATUS LIKE 'Innodb_deadlocks'")
        .unwrap();
    row.map(|(_, n)| n).unwrap_or(0)
}

#[test]
fn a_charge_chosen_as_a_deadlock_victim_is_retried_and_charged_once() {
    // Arrange: one paid call made the usage row exist.
    let app = spawn_app();
    let token = app.db.add_user("alice", 10);
    assert_eq!(app.bank("alice", &token, "BOFA").status, 200);
    let user_id = app
        .db
        .scalar("SELECT id FROM users WHERE username = 'alice'");
    let mut other = app.db.conn();
    let before = deadlocks(&mut **other);
    // A heavier transaction (many rows written) holding the usage row, so
    // that InnoDB picks the charge, not it, as the victim.
    other.query_drop("BEGIN").unwrap();
    for _ in 0..50 {
        other
            .exec_drop(
                "INSERT INTO credit_events (user_id, delta, balance_after, reason, actor) \
                 VALUES (?, 0, 0, 'set', 'test')",
                (user_id,),
            )
            .unwrap();
    }
    other
        .exec_drop(
            "SELECT calls FROM usage_daily WHERE user_id = ? FOR UPDATE",
            (user_id,),
        )
        .unwrap();
    // Act: the charge locks alice's row, then waits for the usage row...
    let (addr, auth) = (app.addr, format!("Bearer alice:{token}"));
    let paid = std::thread::spawn(move || {
        request(
            addr,
            "GET",
            "/api/v1.0/banks_data/BOFA/",
            &[("Authorization", &auth)],
            None,
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    // ...and the other transaction now wants alice's row: a deadlock.
    other
        .exec_drop(
            "SELECT credit FROM users WHERE id = ? FOR UPDATE",
            (user_id,),
        )
        .expect("the charge, not this, is the victim");
    std::thread::sleep(Duration::from_millis(200));
    other.query_drop("ROLLBACK").unwrap();
    let r = paid.join().unwrap();
    // Assert
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["credit_remaining"], 8);
    assert!(deadlocks(&mut **other) > before, "no deadlock happened");
    assert_eq!(app.db.credit("alice"), 8);
    assert_eq!(app.db.scalar("SELECT SUM(calls) FROM usage_daily"), 2);
    assert_eq!(app.db.ledger_mismatches(), vec![]);
}
