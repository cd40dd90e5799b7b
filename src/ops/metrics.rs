//! Process counters, rendered in the Prometheus text exposition format.
//! Counters only ever grow; gauges (pool) are read at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the upstream latency histogram's buckets.
const UPSTREAM_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    job_runs: Mutex<BTreeMap<(String, &'static str), u64>>,
    credits_charged: AtomicU64,
    auth_failures: AtomicU64,
    db_errors: AtomicU64,
    commits_unknown: AtomicU64,
    upstream_requests: Mutex<BTreeMap<(String, String), u64>>,
    /// Counts per bucket of `UPSTREAM_BUCKETS` (not cumulative), then +Inf.
    upstream_buckets: Mutex<[u64; UPSTREAM_BUCKETS.len() + 1]>,
    upstream_micros: AtomicU64,
    refunds: Mutex<BTreeMap<String, u64>>,
    coalesced_batches: AtomicU64,
    holds_expired: AtomicU64,
    coalesced_requests: AtomicU64,
    coalesced_skipped: AtomicU64,
    /// Distinct Galera writer nodes of the live instances; `None` off Galera.
    writer_nodes: Mutex<Option<u64>>,
    /// Webhook delivery attempts of this instance, by result.
    webhook_attempts: Mutex<BTreeMap<&'static str, u64>>,
    /// Deliveries by state over all instances (pending, delivered, failed),
    /// as the delivery thread last read them; `None` before it has.
    webhook_deliveries: Mutex<Option<[u64; 3]>>,
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

    /// One upstream call of a gateway route: its status (or `timeout`,
    /// `unavailable`) and how long until the answer's head arrived.
    pub fn upstream(&self, route: &str, status: &str, took: Duration) {
        *self
            .upstream_requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((route.to_string(), status.to_string()))
            .or_insert(0) += 1;
        let secs = took.as_secs_f64();
        let bucket = UPSTREAM_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(UPSTREAM_BUCKETS.len());
        self.upstream_buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())[bucket] += 1;
        self.upstream_micros
            .fetch_add(took.as_micros() as u64, Relaxed);
    }

    /// One coalesced transaction that decided `requests` requests.
    pub fn coalesced_batch(&self, requests: usize) {
        self.coalesced_batches.fetch_add(1, Relaxed);
        self.coalesced_requests.fetch_add(requests as u64, Relaxed);
    }

    /// Requests a batch left out: their user's row was locked elsewhere.
    pub fn coalesced_skipped(&self, requests: usize) {
        self.coalesced_skipped.fetch_add(requests as u64, Relaxed);
    }

    pub fn holds_expired(&self, n: u64) {
        self.holds_expired.fetch_add(n, Relaxed);
    }

    /// One webhook delivery attempt: `delivered`, `retry` or `failed`.
    pub fn webhook_attempt(&self, result: &'static str) {
        *self
            .webhook_attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(result)
            .or_insert(0) += 1;
    }

    /// The outbox's deliveries by state, read by the delivery thread.
    pub fn webhook_deliveries(&self, pending: u64, delivered: u64, failed: u64) {
        *self
            .webhook_deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some([pending, delivered, failed]);
    }

    pub fn cluster_writer_nodes(&self, nodes: Option<u64>) {
        *self.writer_nodes.lock().unwrap_or_else(|e| e.into_inner()) = nodes;
    }

    pub fn refund(&self, route: &str) {
        *self
            .refunds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(route.to_string())
            .or_insert(0) += 1;
    }

    /// The histogram's samples: cumulative buckets, then sum and count.
    fn upstream_histogram(&self) -> (Vec<(String, u64)>, f64, u64) {
        let counts = *self
            .upstream_buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut total = 0;
        let mut samples = Vec::new();
        for (i, n) in counts.iter().enumerate() {
            total += n;
            let le = UPSTREAM_BUCKETS
                .get(i)
                .map(|b| b.to_string())
                .unwrap_or_else(|| "+Inf".into());
            samples.push((format!("le=\"{le}\""), total));
        }
        let sum = self.upstream_micros.load(Relaxed) as f64 / 1e6;
        (samples, sum, total)
    }

    /// The exposition text: one entry per metric family, in a fixed order.
    pub fn render(&self, pool: PoolGauges) -> String {
        let mut families = self.process_families(pool);
        families.extend(self.job_and_gateway_families());
        // Absent off Galera, where it means nothing.
        if let Some(n) = *self.writer_nodes.lock().unwrap_or_else(|e| e.into_inner()) {
            families.push((
                "creditgate_cluster_writer_nodes",
                "gauge",
                "Distinct Galera nodes the live instances write through; above 1 is not exact.",
                vec![(String::new(), n)],
            ));
        }
        families.extend(self.webhook_families());
        let mut out = String::new();
        for (name, kind, text, samples) in families {
            let _ = writeln!(out, "# HELP {name} {text}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {value}");
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {value}");
                }
            }
        }
        self.write_upstream_histogram(&mut out);
        out
    }

    /// Requests, credits, failures and the pool.
    fn process_families(&self, pool: PoolGauges) -> Vec<Family> {
        let requests = lines(&self.requests, |(route, status)| {
            format!("route=\"{route}\",status=\"{status}\"")
        });
        vec![
            (
                "creditgate_build_info",
                "gauge",
                "Build information; the value is always 1.",
                vec![(format!("version=\"{}\"", env!("CARGO_PKG_VERSION")), 1)],
            ),
            (
                "creditgate_http_requests_total",
                "counter",
                "HTTP requests answered, by route and status.",
                requests,
            ),
            (
                "creditgate_credits_charged_total",
                "counter",
                "Credits charged by paid requests.",
                single(&self.credits_charged),
            ),
            (
                "creditgate_auth_failures_total",
                "counter",
                "Failed authentications.",
                single(&self.auth_failures),
            ),
            (
                "creditgate_db_errors_total",
                "counter",
                "Requests that failed on the database.",
                single(&self.db_errors),
            ),
            (
                "creditgate_charges_in_doubt_total",
                "counter",
                "Paid requests answered 503 whose COMMIT failed: each may have been charged.",
                single(&self.commits_unknown),
            ),
            (
                "creditgate_db_pool_connections",
                "gauge",
                "Pooled database connections by state.",
                vec![
                    ("state=\"in_use\"".into(), pool.in_use.into()),
                    ("state=\"idle\"".into(), pool.idle.into()),
                ],
            ),
            (
                "creditgate_db_pool_max_connections",
                "gauge",
                "Configured pool size.",
                vec![(String::new(), pool.max.into())],
            ),
        ]
    }

    /// Scheduled jobs and gateway routes.
    fn job_and_gateway_families(&self) -> Vec<Family> {
        let job_runs = lines(&self.job_runs, |(job, result)| {
            format!("job=\"{job}\",result=\"{result}\"")
        });
        let upstream = lines(&self.upstream_requests, |(route, status)| {
            format!("route=\"{route}\",status=\"{status}\"")
        });
        let refunds = lines(&self.refunds, |route| format!("route=\"{route}\""));
        vec![
            (
                "creditgate_job_runs_total",
                "counter",
                "Scheduled job runs, by job and result.",
                job_runs,
            ),
            (
                "creditgate_upstream_requests_total",
                "counter",
                "Gateway calls to upstreams, by route and status (or timeout, unavailable).",
                upstream,
            ),
            (
                "creditgate_refunds_total",
                "counter",
                "Gateway charges refunded, by route.",
                refunds,
            ),
            (
                "creditgate_coalesced_batches_total",
                "counter",
                "Coalesced charge transactions (CREDITGATE_COALESCE=on).",
                single(&self.coalesced_batches),
            ),
            (
                "creditgate_coalesced_requests_total",
                "counter",
                "Requests decided in coalesced charge transactions.",
                single(&self.coalesced_requests),
            ),
            (
                "creditgate_coalesced_skipped_total",
                "counter",
                "Requests a coalesced batch left out because their user's row was \
                 locked elsewhere (then charged by a batch that waits for the row).",
                single(&self.coalesced_skipped),
            ),
            (
                "creditgate_holds_expired_total",
                "counter",
                "Open holds released by the expire-holds job at their expiry.",
                single(&self.holds_expired),
            ),
        ]
    }

    /// Webhook deliveries: this instance's attempts, and the outbox's
    /// states over all instances.
    fn webhook_families(&self) -> Vec<Family> {
        let attempts = lines(&self.webhook_attempts, |r| format!("result=\"{r}\""));
        let states = self
            .webhook_deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or_default();
        vec![
            (
                "creditgate_webhook_attempts_total",
                "counter",
                "Webhook delivery attempts by this instance, by result (delivered, retry, failed).",
                attempts,
            ),
            (
                "creditgate_webhook_deliveries",
                "gauge",
                "Webhook deliveries in the outbox by state, over all instances.",
                ["pending", "delivered", "failed"]
                    .iter()
                    .zip(states)
                    .map(|(s, n)| (format!("state=\"{s}\""), n))
                    .collect(),
            ),
        ]
    }

    fn write_upstream_histogram(&self, out: &mut String) {
        let (buckets, sum, count) = self.upstream_histogram();
        let name = "creditgate_upstream_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Seconds until an upstream's answer head arrived."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (le, n) in buckets {
            let _ = writeln!(out, "{name}_bucket{{{le}}} {n}");
        }
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// A metric family: name, type, help text, and its samples as
/// (labels, value).
type Family = (&'static str, &'static str, &'static str, Vec<(String, u64)>);

/// An unlabelled sample.
fn single(n: &AtomicU64) -> Vec<(String, u64)> {
    vec![(String::new(), n.load(Relaxed))]
}

/// One sample per key of a labelled counter, in key order.
fn lines<K: Ord>(
    map: &Mutex<BTreeMap<K, u64>>,
    labels: impl Fn(&K) -> String,
) -> Vec<(String, u64)> {
    map.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, n)| (labels(k), *n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_histogram_is_cumulative() {
        let m = Metrics::default();
        m.upstream("/w", "200", Duration::from_millis(3));
        m.upstream("/w", "500", Duration::from_millis(300));
        m.upstream("/w", "timeout", Duration::from_secs(100));
        let text = m.render(PoolGauges {
            in_use: 0,
            idle: 0,
            max: 1,
        });
        assert!(text.contains("creditgate_upstream_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("creditgate_upstream_seconds_bucket{le=\"0.5\"} 2\n"));
        assert!(text.contains("creditgate_upstream_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("creditgate_upstream_seconds_count 3\n"));
        assert!(text
            .contains("creditgate_upstream_requests_total{route=\"/w\",status=\"timeout\"} 1\n"));
    }

    #[test]
    fn every_family_has_help_type_and_its_samples() {
        let m = Metrics::default();
        m.request("banks_data", 200);
        m.request("banks_data", 200);
        m.credits_charged(3);
        let text = m.render(PoolGauges {
            in_use: 1,
            idle: 2,
            max: 8,
        });
        assert!(text.contains("# TYPE creditgate_http_requests_total counter\n"));
        assert!(text
            .contains("creditgate_http_requests_total{route=\"banks_data\",status=\"200\"} 2\n"));
        assert!(text.contains("creditgate_credits_charged_total 3\n"));
        assert!(text.contains("creditgate_db_pool_connections{state=\"idle\"} 2\n"));
        assert!(text.contains("creditgate_db_pool_max_connections 8\n"));
        assert!(text.contains(
            "creditgate_webhook_deliveries{state=\"pending\"} 0
"
        ));
        assert_eq!(text.matches("# HELP ").count(), 18);
    }
}
