//! Process counters, rendered in the Prometheus text exposition format.
//! Counters only ever grow; gauges (pool) are read at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    job_runs: Mutex<BTreeMap<(String, &'static str), u64>>,
    credits_charged: AtomicU64,
    auth_failures: AtomicU64,
    db_errors: AtomicU64,
    commits_unknown: AtomicU64,
}

/// Pool figures at scrape time.
pub struct PoolGauges {
    pub in_use: u32,
    pub idle: u32,
    pub max: u32,
}

impl Metrics {
    pub fn request(&self, route: &'static str, status: u16) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((route, status))
            .or_insert(0) += 1;
    }

    pub fn job_run(&self, job: &str, result: &'static str) {
        *self
            .job_runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((job.to_string(), result))
            .or_insert(0) += 1;
    }

    pub fn credits_charged(&self, n: i64) {
        self.credits_charged.fetch_add(n.max(0) as u64, Relaxed);
    }

    pub fn auth_failure(&self) {
        self.auth_failures.fetch_add(1, Relaxed);
    }

    pub fn db_error(&self) {
        self.db_errors.fetch_add(1, Relaxed);
    }

    pub fn commit_unknown(&self) {
        self.commits_unknown.fetch_add(1, Relaxed);
    }

    pub fn render(&self, pool: PoolGauges) -> String {
        let mut out = String::new();
        let w = &mut out;
        help(
            w,
            "creditgate_build_info",
            "gauge",
            "Build information; the value is always 1.",
        );
        let _ = writeln!(
            w,
            "creditgate_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );

        help(
            w,
            "creditgate_http_requests_total",
            "counter",
            "HTTP requests answered, by route and status.",
        );
        for ((route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                w,
                "creditgate_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        help(
            w,
            "creditgate_credits_charged_total",
            "counter",
            "Credits charged by paid requests.",
        );
        let _ = writeln!(
            w,
            "creditgate_credits_charged_total {}",
            self.credits_charged.load(Relaxed)
        );
        help(
            w,
            "creditgate_auth_failures_total",
            "counter",
            "Failed authentications.",
        );
        let _ = writeln!(
            w,
            "creditgate_auth_failures_total {}",
            self.auth_failures.load(Relaxed)
        );
        help(
            w,
            "creditgate_db_errors_total",
            "counter",
            "Requests that failed on the database.",
        );
        let _ = writeln!(
            w,
            "creditgate_db_errors_total {}",
            self.db_errors.load(Relaxed)
        );
        help(
            w,
            "creditgate_charges_in_doubt_total",
            "counter",
            "Paid requests answered 503 whose COMMIT failed: each may have been charged.",
        );
        let _ = writeln!(
            w,
            "creditgate_charges_in_doubt_total {}",
            self.commits_unknown.load(Relaxed)
        );

        help(
            w,
            "creditgate_db_pool_connections",
            "gauge",
            "Pooled database connections by state.",
        );
        let _ = writeln!(
            w,
            "creditgate_db_pool_connections{{state=\"in_use\"}} {}",
            pool.in_use
        );
        let _ = writeln!(
            w,
            "creditgate_db_pool_connections{{state=\"idle\"}} {}",
            pool.idle
        );
        help(
            w,
            "creditgate_db_pool_max_connections",
            "gauge",
            "Configured pool size.",
        );
        let _ = writeln!(w, "creditgate_db_pool_max_connections {}", pool.max);

        help(
            w,
            "creditgate_job_runs_total",
            "counter",
            "Scheduled job runs, by job and result.",
        );
        for ((job, result), n) in self
            .job_runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                w,
                "creditgate_job_runs_total{{job=\"{job}\",result=\"{result}\"}} {n}"
            );
        }
        out
    }
}

fn help(w: &mut String, name: &str, kind: &str, text: &str) {
    let _ = writeln!(w, "# HELP {name} {text}");
    let _ = writeln!(w, "# TYPE {name} {kind}");
}
