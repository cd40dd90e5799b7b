//! Alert mail over real SMTP (the loopback server in `smtp.rs`): what a mail
//! says and to whom, one mail per database transition rather than per
//! heartbeat, and a hung SMTP server that must not hold up requests, and
//! holds up a stop or a failed start by at most `app::MAIL_WAIT`.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use creditgate::app::{standard_jobs, MAIL_WAIT};
use creditgate::ops::mail::{Mailer, SMTP_TIMEOUT};
use creditgate::ops::metrics::Metrics;

use crate::support::daemon::Daemon;
use crate::support::helpers::{spawn_app_on, spawn_app_with, test_config, TestDb};
use crate::support::proxy::Proxy;
use crate::support::smtp::SmtpServer;

const PREFIX: &str = "[cg-test] ";

fn mail_vars(smtp_url: &str) -> Vec<(&str, &str)> {
    vec![
        ("CREDITGATE_SMTP_URL", smtp_url),
        ("CREDITGATE_MAIL_FROM", "creditgate@test.invalid"),
        (
            "CREDITGATE_ALERT_TO",
            "ops@test.invalid, oncall@test.invalid",
        ),
        ("CREDITGATE_MAIL_PREFIX", PREFIX),
    ]
}

#[test]
fn the_stop_mail_carries_the_prefix_the_recipients_and_the_reason() {
    // Arrange
    let smtp = SmtpServer::start();
    let url = smtp.url();
    let mut app = spawn_app_with(&mail_vars(&url));
    // Act
    let reason = app.stop();
    // Assert
    assert_eq!(reason, "test over");
    let mails = smtp.wait_for(1, Duration::from_secs(10));
    assert_eq!(mails.len(), 1, "{mails:?}");
    let mail = &mails[0];
    assert_eq!(mail.subject(), format!("{PREFIX}stopped"));
    assert_eq!(mail.from, "creditgate@test.invalid");
    assert_eq!(mail.rcpt, vec!["ops@test.invalid", "oncall@test.invalid"]);
    assert!(
        mail.body().contains("creditgate stopped: test over"),
        "{}",
        mail.data
    );
}

#[test]
fn the_heartbeat_mails_once_when_the_database_goes_down_and_once_when_it_is_back() {
    // Arrange: the jobs the service runs, on a database behind a proxy.
    let db = TestDb::new();
    let proxy = Proxy::to_test_server();
    let smtp = SmtpServer::start();
    let url = smtp.url();
    let db_url = proxy.url(&db.name);
    let config = test_config(&db_url, "unused", &mail_vars(&url));
    let pool = creditgate::db::pool(&db_url, 2, Duration::from_millis(500)).unwrap();
    let mailer = Mailer::start(&config).unwrap();
    let jobs = standard_jobs(
        &config,
        &pool,
        &mailer,
        &Arc::new(Metrics::default()),
        &creditgate::ops::cluster::Instance::this_process(),
    );
    let beat = || {
        jobs.run_now("heartbeat")
            .unwrap()
            .last_result
            .unwrap_or_default()
    };

    // Act: up, down for three ticks, up for three, then down and up again.
    let mut results = vec![beat(), beat()];
    proxy.cut();
    results.extend((0..3).map(|_| beat()));
    proxy.restore();
    results.extend((0..3).map(|_| beat()));
    proxy.cut();
    results.push(beat());
    proxy.restore();
    results.push(beat());
    mailer.stop(Duration::from_secs(10));

    // Assert
    let ok: Vec<bool> = results.iter().map(|r| r.starts_with("ok: ")).collect();
    assert_eq!(
        ok,
        [true, true, false, false, false, true, true, true, false, true],
        "{results:#?}"
    );
    let subjects: Vec<String> = smtp.messages().iter().map(|m| m.subject()).collect();
    let down = format!("{PREFIX}database down");
    let back = format!("{PREFIX}database back");
    assert_eq!(subjects, [down.clone(), back.clone(), down, back]);
    assert!(smtp.messages()[0]
        .body()
        .contains("The database does not answer"));
}

#[test]
fn a_silent_smtp_server_does_not_delay_requests_and_delays_a_stop_by_at_most_mail_wait() {
    // Arrange: the heartbeat sees the database go down and its mail hangs
    // on an SMTP server that accepts and never answers.
    let db = TestDb::new();
    let token = db.add_user("alice", 10);
    let proxy = Proxy::to_test_server();
    let smtp = SmtpServer::silent();
    let smtp_url = smtp.url();
    let db_url = proxy.url(&db.name);
    let mut vars = mail_vars(&smtp_url);
    vars.extend([
        ("DATABASE_URL", db_url.as_str()),
        ("CREDITGATE_HEARTBEAT_SECS", "1"),
        ("CREDITGATE_DB_TIMEOUT_MS", "500"),
    ]);
    let mut app = spawn_app_on(db, &vars);
    proxy.cut();
    assert_eq!(
        smtp.wait_for_connections(1, Duration::from_secs(15)),
        1,
        "the down mail never reached the SMTP server"
    );
    proxy.restore();

    // Act: a paid request while the mail hangs, then a stop.
    let asked = Instant::now();
    let answer = app.bank("alice", &token, "BOFA");
    let answered_in = asked.elapsed();
    let stopping = Instant::now();
    app.stop();
    let stopped_in = stopping.elapsed();

    // Assert: a request that waited for the mail would take SMTP_TIMEOUT.
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answered_in < SMTP_TIMEOUT, "answered in {answered_in:?}");
    assert!(
        stopped_in <= MAIL_WAIT + Duration::from_secs(3),
        "stopped in {stopped_in:?}"
    );
    eprintln!("with a silent SMTP server: request {answered_in:?}, stop {stopped_in:?}");
}

#[test]
fn a_failed_start_waits_for_a_silent_smtp_server_at_most_mail_wait() {
    // Arrange: the port is taken and the SMTP server never answers.
    let db = TestDb::new();
    let smtp = SmtpServer::silent();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = taken.local_addr().unwrap().to_string();
    let smtp_url = smtp.url();
    let mut env = mail_vars(&smtp_url);
    env.extend([
        ("DATABASE_URL", db.url.as_str()),
        ("CREDITGATE_BIND", bind.as_str()),
    ]);
    // Act
    let started = Instant::now();
    let mut daemon = Daemon::start(&["serve"], &env);
    let status = daemon.wait_exit(Duration::from_secs(30));
    let took = started.elapsed();
    // Assert
    assert!(!status.expect("exits").success(), "{}", daemon.log());
    assert_eq!(smtp.connections(), 1, "the start-failure mail was tried");
    assert!(
        took <= MAIL_WAIT + Duration::from_secs(3),
        "a failed start took {took:?}:\n{}",
        daemon.log()
    );
}
