//! `/metrics`, read by a real Prometheus text-format parser after known
//! traffic: every line must parse, every sample must be typed, and the
//! counters must hold exactly what the traffic did.

use prometheus_parse::{Sample, Scrape, Value};

use crate::support::helpers::{request, spawn_app_with, TestApp};

struct Metrics {
    samples: Vec<Sample>,
}

impl Metrics {
    fn scrape(app: &TestApp) -> Metrics {
        let r = app.get("/metrics", &[]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Type"), Some("text/plain; version=0.0.4"));
        let lines: Vec<String> = r.body.lines().map(str::to_string).collect();
        let scrape = Scrape::parse(lines.iter().cloned().map(Ok)).expect("parses");
        // The parser folds a histogram's _bucket lines into one sample and
        // reads its _sum and _count as untyped ones: those are checked on
        // their own below.
        let histogram = "creditgate_upstream_seconds";
        let sample_lines = lines
            .iter()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .filter(|l| !l.starts_with(histogram))
            .count();
        let (folded, plain): (Vec<&Sample>, Vec<&Sample>) = scrape
            .samples
            .iter()
            .partition(|s| s.metric.starts_with(histogram));
        // The parser skips what it cannot read; nothing may be skipped.
        assert_eq!(plain.len(), sample_lines, "{}", r.body);
        assert!(
            folded
                .iter()
                .any(|s| s.metric == histogram && matches!(s.value, Value::Histogram(_))),
            "{}",
            r.body
        );
        for part in ["_sum", "_count"] {
            assert!(folded
                .iter()
                .any(|s| s.metric == format!("{histogram}{part}")));
        }
        for s in plain {
            assert!(
                matches!(s.value, Value::Counter(_) | Value::Gauge(_)),
                "{} has no TYPE",
                s.metric
            );
            assert!(
                scrape.docs.contains_key(&s.metric),
                "{} has no HELP",
                s.metric
            );
        }
        Metrics {
            samples: scrape.samples,
        }
    }

    /// The value of the sample with this name and exactly these labels;
    /// `None` when there is no such sample.
    fn get(&self, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.metric == metric
                    && s.labels.len() == labels.len()
                    && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            })
            .map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) => v,
                _ => unreachable!("checked in scrape"),
            })
    }

    fn requests(&self, route: &str, status: &str) -> Option<f64> {
        self.get(
            "creditgate_http_requests_total",
            &[("route", route), ("status", status)],
        )
    }
}

#[test]
fn counters_match_the_traffic() {
    // Arrange: a heartbeat that never ticks on its own, so its runs are ours.
    let app = spawn_app_with(&[("CREDITGATE_HEARTBEAT_SECS", "3600")]);
    let token = app.db.add_user("alice", 5);

    // Act: 3 charged (2 + 2 + 1 credits), 2 refused for credit, 3 bad
    // credentials, 1 unknown bank, 1 database failure, and admin calls.
    assert_eq!(app.bank("alice", &token, "mufg").status, 200);
    assert_eq!(app.bank("alice", &token, "mufg").status, 200);
    assert_eq!(app.bank("alice", &token, "bofa").status, 200);
    assert_eq!(app.bank("alice", &token, "bofa").status, 402);
    assert_eq!(app.bank("alice", &token, "bofa").status, 402);
    assert_eq!(app.bank("alice", "wrong", "bofa").status, 401);
    assert_eq!(app.bank("mallory", &token, "bofa").status, 401);
    assert_eq!(app.get("/api/v1.0/banks_data/bofa/", &[]).status, 401);
    assert_eq!(app.bank("alice", &token, "nosuchbank").status, 404);
    app.db.exec("UPDATE users SET credit = 5");
    // Breaks the charge on purpose: its usage row cannot be written.
    app.db.exec("RENAME TABLE usage_daily TO usage_daily_gone");
    assert_eq!(app.bank("alice", &token, "bofa").status, 503);
    app.db.exec("RENAME TABLE usage_daily_gone TO usage_daily");
    let wrong_admin = request(
        app.addr,
        "GET",
        "/admin/v1/users",
        &[("Authorization", "Bearer not-the-admin-token")],
        None,
    );
    assert_eq!(wrong_admin.status, 401);
    let run = app.admin("POST", "/admin/v1/jobs/heartbeat/run", None);
    assert_eq!(run.status, 200);
    assert_eq!(app.get("/health", &[]).status, 200);

    // Assert
    let m = Metrics::scrape(&app);
    assert_eq!(m.requests("banks_data", "200"), Some(3.0));
    assert_eq!(m.requests("banks_data", "402"), Some(2.0));
    assert_eq!(m.requests("banks_data", "401"), Some(3.0));
    assert_eq!(m.requests("banks_data", "404"), Some(1.0));
    assert_eq!(m.requests("banks_data", "503"), Some(1.0));
    assert_eq!(m.requests("admin", "401"), Some(1.0));
    assert_eq!(m.requests("admin", "200"), Some(1.0));
    assert_eq!(m.requests("health", "200"), Some(1.0));
    assert_eq!(m.requests("banks_data", "500"), None);
    assert_eq!(m.get("creditgate_credits_charged_total", &[]), Some(5.0));
    assert_eq!(m.get("creditgate_auth_failures_total", &[]), Some(4.0));
    assert_eq!(m.get("creditgate_db_errors_total", &[]), Some(1.0));
    assert_eq!(
        m.get(
            "creditgate_job_runs_total",
            &[("job", "heartbeat"), ("result", "ok")]
        ),
        Some(1.0)
    );
    // Run once at start (a missed refill happens before serving), and by
    // the scheduler each minute.
    let refills = m
        .get(
            "creditgate_job_runs_total",
            &[("job", "monthly-refill"), ("result", "ok")],
        )
        .expect("monthly-refill ran at start");
    assert!(refills >= 1.0, "{refills}");
    assert_eq!(
        m.get(
            "creditgate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );

    // The pool: nothing is in flight at scrape time, and what was opened
    // for the traffic above is idle, within the configured size.
    let in_use = m
        .get("creditgate_db_pool_connections", &[("state", "in_use")])
        .expect("in_use");
    let idle = m
        .get("creditgate_db_pool_connections", &[("state", "idle")])
        .expect("idle");
    let max = m.get("creditgate_db_pool_max_connections", &[]);
    assert_eq!(max, Some(8.0));
    assert!(in_use <= 1.0, "{in_use}");
    assert!(idle >= 1.0 && in_use + idle <= 8.0, "{in_use} {idle}");

    // The scrape itself is counted once it is answered.
    let again = Metrics::scrape(&app);
    assert_eq!(again.requests("metrics", "200"), Some(1.0));
    assert_eq!(
        again.get("creditgate_credits_charged_total", &[]),
        Some(5.0)
    );
}
