//! The delivery thread: takes due events from the outbox, signs and POSTs
//! them, and settles each row — delivered on a 2xx, retried after a delay
//! on anything else (a non-2xx, a timeout, a refused connection), failed
//! once it has been tried for a day. Each row is leased in the database
//! before it is sent (`outbox::claim`), so several instances share the
//! work without sending a row twice at once, and the rows a killed
//! instance held are sent by another (or by itself, restarted) once the
//! lease runs out: at least once, per user in order.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::Utc;
use ureq::config::AutoHeaderValue;

use super::outbox::{self, Due};
use super::sign;
use crate::config::WebhookDelivery;
use crate::db::Pool;
use crate::error::error_chain;
use crate::gateway::forward::outbound_config;
use crate::ops::metrics::Metrics;
use crate::ops::shutdown::Shutdown;

/// The longest delay between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);
/// Retried for at least this long, then failed.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How often an idle thread looks for due events.
const POLL: Duration = Duration::from_millis(250);
/// How often the delivered/pending/failed counts are read for `/metrics`.
const COUNT_EVERY: Duration = Duration::from_secs(2);
/// Heads read per look; each is claimed just before it is sent.
const BATCH: u32 = 32;
/// Deliveries sent at once by one instance.
const PARALLEL: usize = 8;

/// The delay before the attempt after `attempts` failed ones: `first`,
/// doubled after each further failure, at most an hour.
pub fn retry_delay(first: Duration, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(20);
    (first * 2u32.pow(doublings)).min(MAX_DELAY)
}

/// After a failed attempt (the `attempts`-th) of an event `age` old: when
/// to try again, or `None` when it has been tried for a day.
pub fn next_attempt(first: Duration, attempts: u32, age: Duration) -> Option<Duration> {
    (age < GIVE_UP_AFTER).then(|| retry_delay(first, attempts))
}

/// The thread's handle: `stop` asks it to end and waits for it.
pub struct Delivery {
    handle: JoinHandle<()>,
}

impl Delivery {
    /// Starts the thread; it runs until `shutdown` fires. `owner` names
    /// this instance in the leases it takes.
    pub fn start(
        pool: Pool,
        settings: WebhookDelivery,
        metrics: Arc<Metrics>,
        shutdown: Shutdown,
        owner: String,
    ) -> Delivery {
        let worker = Worker {
            pool,
            settings,
            metrics,
            owner,
            agent: agent(settings.timeout),
        };
        let handle = std::thread::Builder::new()
            .name("webhooks".into())
            .spawn(move || worker.run(&shutdown))
            .expect("start the webhook delivery thread");
        Delivery { handle }
    }

    /// Waits for the thread, which ends within one receiver's timeout of
    /// the shutdown (a row it was sending stays leased and is sent again).
    pub fn join(self) {
        let _ = self.handle.join();
    }
}

fn agent(timeout: Duration) -> ureq::Agent {
    let config = outbound_config()
        .user_agent(AutoHeaderValue::Provided(Arc::new(format!(
            "creditgate/{}",
            env!("CARGO_PKG_VERSION")
        ))))
        .timeout_global(Some(timeout))
        .build();
    ureq::Agent::new_with_config(config)
}

struct Worker {
    pool: Pool,
    settings: WebhookDelivery,
    metrics: Arc<Metrics>,
    owner: String,
    agent: ureq::Agent,
}

impl Worker {
    fn run(&self, shutdown: &Shutdown) {
        let mut counted = Instant::now() - COUNT_EVERY;
        let mut failing = false;
        while !shutdown.is_triggered() {
            if counted.elapsed() >= COUNT_EVERY {
                counted = Instant::now();
                self.count();
            }
            match self.round(shutdown) {
                Ok(0) => std::thread::sleep(POLL),
                Ok(_) => failing = false,
                Err(e) => {
                    // Said once per outage, not every poll.
                    if !failing {
                        log::warn!("webhooks: cannot read the outbox: {e}");
                    }
                    failing = true;
                    std::thread::sleep(POLL * 4);
                }
            }
        }
    }

    /// Sends what is due now; returns how many were attempted. Up to
    /// `PARALLEL` at once (each is the head of a different queue, so order
    /// holds), claimed just before they are sent: a receiver that hangs
    /// until the timeout holds up the others by one timeout, not one each.
    fn round(&self, shutdown: &Shutdown) -> Result<usize, String> {
        let mut conn = self.pool.get().map_err(|e| e.to_string())?;
        let due = outbox::due(&mut **conn, BATCH).map_err(|e| error_chain(&e))?;
        let lease = self.settings.timeout.as_secs() as u32 + 5;
        let mut sent = 0;
        for chunk in due.chunks(PARALLEL) {
            if shutdown.is_triggered() {
                break;
            }
            let mut claimed = Vec::new();
            for d in chunk {
                // False: another instance took it, or it is no longer due.
                if outbox::claim(&mut conn, d.id, &self.owner, lease)
                    .map_err(|e| error_chain(&e))?
                {
                    claimed.push(d);
                }
            }
            let results: Vec<Result<(), String>> = std::thread::scope(|s| {
                let sending: Vec<_> = claimed
                    .iter()
                    .map(|d| s.spawn(move || self.send(d)))
                    .collect();
                sending
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err("the sender panicked".into()))
                    })
                    .collect()
            });
            for (d, result) in claimed.into_iter().zip(results) {
                self.settle(&mut conn, d, result)
                    .map_err(|e| error_chain(&e))?;
                sent += 1;
            }
        }
        Ok(sent)
    }

    /// One signed POST; `Err` says why it was not a delivery.
    fn send(&self, d: &Due) -> Result<(), String> {
        let key = sign::key_of(&d.secret).ok_or("the endpoint's secret is not a whsec_ secret")?;
        let id = d.message_id();
        let timestamp = Utc::now().timestamp();
        let signature = sign::signature(&key, &id, timestamp, &d.body);
        let answer = self
            .agent
            .post(&d.url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", &signature)
            .send(d.body.as_bytes());
        match answer {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("answered {}", r.status().as_u16())),
            Err(e) => Err(e.to_string()),
        }
    }

    fn settle(
        &self,
        conn: &mut crate::db::Conn,
        d: &Due,
        result: Result<(), String>,
    ) -> Result<(), crate::db::DbError> {
        let attempts = d.attempts + 1;
        match result {
            Ok(()) => {
                self.metrics.webhook_attempt("delivered");
                outbox::delivered(&mut ***conn, d.id, &self.owner)
            }
            Err(why) => {
                let age = Duration::from_secs(d.age_secs.max(0) as u64);
                let next = next_attempt(self.settings.first_retry, attempts, age);
                log::info!(
                    "webhooks: {} to {} not delivered (attempt {attempts}): {why}; {}",
                    d.message_id(),
                    d.url,
                    match next {
                        Some(t) => format!("retrying in {} ms", t.as_millis()),
                        None => "failed after a day of retries".into(),
                    }
                );
                self.metrics
                    .webhook_attempt(if next.is_some() { "retry" } else { "failed" });
                let ms = next.map(|t| t.as_millis() as u64);
                outbox::not_delivered(&mut ***conn, d.id, &self.owner, &why, ms)
            }
        }
    }

    fn count(&self) {
        let counts = self
            .pool
            .get()
            .map_err(crate::db::DbError::from)
            .and_then(|mut c| outbox::counts(&mut **c));
        if let Ok(c) = counts {
            self.metrics
                .webhook_deliveries(c.pending, c.delivered, c.failed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_start_at_the_first_double_and_stop_at_an_hour() {
        let first = Duration::from_secs(5);
        assert_eq!(retry_delay(first, 1), Duration::from_secs(5));
        assert_eq!(retry_delay(first, 2), Duration::from_secs(10));
        assert_eq!(retry_delay(first, 3), Duration::from_secs(20));
        assert_eq!(retry_delay(first, 11), MAX_DELAY);
        assert_eq!(retry_delay(first, 500), MAX_DELAY);
    }

    #[test]
    fn an_event_is_retried_for_a_day_then_failed() {
        let first = Duration::from_secs(5);
        let mut age = Duration::ZERO;
        let mut attempts = 0;
        while let Some(wait) = next_attempt(first, attempts + 1, age) {
            attempts += 1;
            age += wait;
        }
        assert!(age >= GIVE_UP_AFTER, "gave up after {age:?}");
        assert!(age < GIVE_UP_AFTER + MAX_DELAY);
        assert!(attempts > 20, "{attempts} attempts");
    }
}
