//! The low-credit notice: one mail, to the user and the alert list, when a
//! charge takes the credit from at or above the threshold to below it;
//! another only after a top-up re-arms it and a charge crosses again. Sent
//! by the mailer thread to a real SMTP server on loopback.

use std::time::Duration;

use crate::support::helpers::{creditgate, request, spawn_app_with, TestApp};
use crate::support::smtp::SmtpServer;

fn app_with_mail(smtp: &SmtpServer) -> TestApp {
    let url = smtp.url();
    spawn_app_with(&[
        ("CREDITGATE_SMTP_URL", url.as_str()),
        ("CREDITGATE_MAIL_FROM", "creditgate@test.invalid"),
        ("CREDITGATE_ALERT_TO", "ops@test.invalid"),
    ])
}

fn notices(smtp: &SmtpServer) -> Vec<crate::support::smtp::Received> {
    smtp.messages()
        .into_iter()
        .filter(|m| m.subject().contains("low credit"))
        .collect()
}

#[test]
fn one_mail_per_crossing_and_a_top_up_re_arms_it() {
    // Arrange: 14 credits, notice below 5, an e-mail address.
    let smtp = SmtpServer::start();
    let app = app_with_mail(&smtp);
    let r = app.admin(
        "POST",
        "/admin/v1/users",
        Some(r#"{"username":"alice","credit":14,"email":"alice@test.invalid","low_credit":5}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["low_credit"], 5);
    let token = r.json()["token"].as_str().unwrap().to_string();
    let auth = format!("Bearer alice:{token}");
    let call = || {
        request(
            app.addr,
            "GET",
            "/api/v1.0/banks_data/BOFA/",
            &[("Authorization", &auth)],
            None,
        )
        .status
    };
    // Act: 10 paid calls: 14 → 4 crosses 5 once.
    for _ in 0..10 {
        assert_eq!(call(), 200);
    }
    smtp.wait_for(1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    let first = notices(&smtp);
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(
        first[0].rcpt.contains(&"alice@test.invalid".to_string()),
        "{:?}",
        first[0].rcpt
    );
    assert!(first[0].rcpt.contains(&"ops@test.invalid".to_string()));
    assert!(first[0]
        .body()
        .contains("is 4, below its low-credit threshold of 5"));
    // Still below: no more mails.
    for _ in 0..3 {
        assert_eq!(call(), 200);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(notices(&smtp).len(), 1);
    // A top-up re-arms; the next crossing mails again.
    creditgate(&app.db.url, &["user", "credit", "alice", "--add", "10"]).ok();
    for _ in 0..7 {
        assert_eq!(call(), 200);
    }
    smtp.wait_for(2, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(notices(&smtp).len(), 2);
    assert_eq!(app.db.credit("alice"), 4);
    assert_eq!(app.db.ledger_mismatches(), vec![]);
}

#[test]
fn the_notice_is_set_and_removed_from_the_cli_and_the_api() {
    let smtp = SmtpServer::start();
    let app = app_with_mail(&smtp);
    app.db.add_user("alice", 3);
    let out = creditgate(
        &app.db.url,
        &["user", "notify", "alice", "--low-credit", "10"],
    );
    assert!(out.ok().stdout.contains("low_credit:     10"), "{out:?}");
    let r = app.admin(
        "POST",
        "/admin/v1/users/alice/notify",
        Some(r#"{"low_credit": null}"#),
    );
    assert_eq!(r.json()["low_credit"], serde_json::Value::Null);
    let bad = app.admin(
        "POST",
        "/admin/v1/users/alice/notify",
        Some(r#"{"low_credit": -1}"#),
    );
    assert_eq!((bad.status, bad.error().as_str()), (400, "invalid_credit"));
    let cli = creditgate(
        &app.db.url,
        &["user", "notify", "alice", "--low-credit", "x"],
    );
    assert!(cli.failed().contains("--low-credit"), "{cli:?}");
}
