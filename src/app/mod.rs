//! The daemon's life cycle: start (config → database → schema → jobs →
//! bind), serve until a stop is asked for, then stop in order (socket,
//! in-flight requests, scheduler, mail). A start failure is mailed too.
//! Under systemd each step is reported (`READY=1`, `STATUS=`, `STOPPING=1`)
//! and the heartbeat pings the watchdog.

mod state;

pub use state::AppState;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Mutex;

use crate::billing::{self, bank};
use crate::config::{Config, WebhookDelivery};
use crate::db::{self, DbError, Pool};
use crate::error::error_chain;
use crate::gateway::Gateway;
use crate::http::{self, BindError, HttpServer};
use crate::idempotency;
use crate::model::Period;
use crate::ops::cluster::{self, Instance, Watch};
use crate::ops::jobs::{Job, JobError, Jobs};
use crate::ops::mail::Mailer;
use crate::ops::metrics::Metrics;
use crate::ops::notify::Systemd;
use crate::ops::shutdown::Shutdown;
use crate::ops::watchdog::Watchdog;
use crate::webhooks::deliver::Delivery;

/// How long a stop waits for in-flight requests.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long a stop (or a failed start) waits for its mail.
pub const MAIL_WAIT: Duration = Duration::from_secs(5);
/// How long the stop handler waits to learn which signal it was; it is
/// stored microseconds after the handler is woken.
const SIGNAL_NAME_WAIT: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub enum StartError {
    Mail(String),
    Db(DbError),
    Bind(BindError),
    Signals(String),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Mail(m) | StartError::Signals(m) => f.write_str(m),
            StartError::Db(e) => write!(f, "{}", error_chain(e)),
            StartError::Bind(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A started service, bound and ready to run.
pub struct App {
    server: HttpServer,
    jobs: Arc<Jobs>,
    gateway: Arc<Gateway>,
    pool: Pool,
    me: Instance,
    webhooks: WebhookDelivery,
    metrics: Arc<Metrics>,
    mailer: Mailer,
    shutdown: Shutdown,
    systemd: Systemd,
    heartbeat: Duration,
}

impl App {
    /// Everything up to and including the bind. On failure the alert list
    /// gets a mail naming the reason.
    pub fn build(config: Config, shutdown: Shutdown) -> Result<App, StartError> {
        App::build_under(config, shutdown, Systemd::default())
    }

    /// `build`, reporting to systemd what it waits on; the first trigger of
    /// `shutdown` sends `STOPPING=1`.
    pub fn build_under(
        config: Config,
        shutdown: Shutdown,
        systemd: Systemd,
    ) -> Result<App, StartError> {
        let notifier = systemd.notifier.clone();
        shutdown.on_first_trigger(move |reason| notifier.stopping(&format!("stopping: {reason}")));
        let heartbeat = config.heartbeat;
        let mailer = Mailer::start(&config).map_err(StartError::Mail)?;
        match start(config, shutdown.clone(), mailer.clone(), &systemd) {
            Ok(Started {
                server,
                jobs,
                gateway,
                pool,
                me,
                webhooks,
                metrics,
            }) => Ok(App {
                server,
                jobs,
                gateway,
                pool,
                me,
                webhooks,
                metrics,
                mailer,
                shutdown,
                systemd,
                heartbeat,
            }),
            Err(e) => {
                log::error!("start failed: {e}");
                systemd.notifier.status(&format!("start failed: {e}"));
                mailer.send_and_wait(
                    "start failed",
                    &format!("creditgate could not start: {e}"),
                    MAIL_WAIT,
                );
                // MAIL_WAIT is already spent if that mail hung; do not wait
                // for it a second time.
                mailer.stop(Duration::from_millis(100));
                Err(e)
            }
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http` or `https` (CREDITGATE_TLS_CERT).
    pub fn scheme(&self) -> &'static str {
        self.server.scheme()
    }

    /// Serves until the shutdown fires, then stops in order and returns the
    /// reason.
    pub fn run(self) -> String {
        self.arm_watchdog();
        let schedule = self.jobs.start();
        let routes = self
            .gateway
            .keep_fresh(self.pool.clone(), self.shutdown.clone());
        let delivery = Delivery::start(
            self.pool.clone(),
            self.webhooks,
            Arc::clone(&self.metrics),
            self.shutdown.clone(),
            self.me.id.clone(),
        );
        // Bound and scheduled: a request is answered from here on.
        let notifier = &self.systemd.notifier;
        notifier.ready(&format!("listening on {}://{}", self.scheme(), self.addr()));
        self.server.run(&self.shutdown, STOP_GRACE);
        notifier.status("stopping: waiting for the running job");
        schedule.stop();
        let _ = routes.join();
        notifier.status("stopping: waiting for the webhook delivery thread");
        delivery.join();
        // The requests answered during the grace: their billable answers'
        // confirmations (a lost one would be refunded at its expiry).
        self.gateway.confirm(&self.pool);
        if let Err(e) = cluster::leave(&self.pool, &self.me) {
            log::warn!("instance row not removed: {}", error_chain(&e));
        }
        let reason = self.shutdown.reason().unwrap_or_else(|| "unknown".into());
        log::info!("stopped: {reason}");
        notifier.status(&format!("stopping: sending the stop mail ({reason})"));
        self.mailer.send_and_wait(
            "stopped",
            &format!("creditgate stopped: {reason}"),
            MAIL_WAIT,
        );
        self.mailer.stop(Duration::from_millis(100));
        reason
    }

    /// With `WatchdogSec=`, each heartbeat tick pings systemd if our own
    /// `/health` answers (see `watchdog.rs`).
    fn arm_watchdog(&self) {
        let Some(interval) = self.systemd.watchdog else {
            return;
        };
        // systemd's advice: ping at least twice per interval.
        if self.heartbeat * 2 > interval {
            log::warn!(
                "CREDITGATE_HEARTBEAT_SECS ({}s) is more than half of WatchdogSec ({}s): \
                 systemd may restart a healthy service",
                self.heartbeat.as_secs(),
                interval.as_secs()
            );
        }
        let tls = self.scheme() == "https";
        let dog = Watchdog::new(self.systemd.notifier.clone(), self.addr(), tls, interval);
        self.jobs.on_tick("heartbeat", Box::new(move || dog.beat()));
    }
}

/// What `start` made.
struct Started {
    server: HttpServer,
    jobs: Arc<Jobs>,
    gateway: Arc<Gateway>,
    pool: Pool,
    me: Instance,
    webhooks: WebhookDelivery,
    metrics: Arc<Metrics>,
}

fn start(
    config: Config,
    shutdown: Shutdown,
    mailer: Mailer,
    systemd: &Systemd,
) -> Result<Started, StartError> {
    let notifier = &systemd.notifier;
    notifier.status("waiting for the database");
    let pool = db::pool(
        config.database_url.expose(),
        config.db_pool,
        config.db_timeout,
    )
    .map_err(StartError::Db)?
    .with_retry(db::Retry {
        attempts: config.db_retries,
        budget: config.db_timeout,
    });
    db::wait_until_ready(&pool, config.db_start_wait).map_err(StartError::Db)?;
    db::check_schema(&pool).map_err(StartError::Db)?;
    let metrics = Arc::new(Metrics::default());
    let webhook_metrics = Arc::clone(&metrics);
    let webhooks = config.webhooks;
    let me = Instance::this_process();
    let jobs = Arc::new(standard_jobs(&config, &pool, &mailer, &metrics, &me));
    // A refill missed while the service was down happens before the first
    // request is served.
    notifier.status("running the monthly refill");
    jobs.run_now("monthly-refill");
    // Keep-alive connections per upstream: one per worker thread.
    let gateway = Arc::new(Gateway::new(config.threads));
    gateway.reload(&pool).map_err(StartError::Db)?;
    let state = Arc::new(AppState::new(
        config,
        pool.clone(),
        metrics,
        shutdown,
        Arc::clone(&jobs),
        Arc::clone(&gateway),
        mailer.clone(),
    ));
    let server = http::bind(state).map_err(StartError::Bind)?;
    Ok(Started {
        server,
        jobs,
        gateway,
        pool,
        me,
        webhooks,
        metrics: webhook_metrics,
    })
}

/// `heartbeat` (the sample's job `main`), `monthly-refill` and
/// `expire-idempotency-keys`.
pub fn standard_jobs(
    config: &Config,
    pool: &Pool,
    mailer: &Mailer,
    metrics: &Arc<Metrics>,
    me: &Instance,
) -> Jobs {
    let heartbeat = {
        let beat = Heartbeat {
            pool: pool.clone(),
            mailer: mailer.clone(),
            metrics: Arc::clone(metrics),
            me: me.clone(),
            // Three missed beats and an instance no longer counts as live.
            live_within: config.heartbeat * 3 + Duration::from_secs(1),
            was_up: AtomicBool::new(true),
            watch: Mutex::new(Watch::default()),
        };
        Box::new(move || beat.run()) as crate::ops::jobs::JobFn
    };
    let refill = {
        let pool = pool.clone();
        Box::new(move || {
            let now = Utc::now();
            bank::refill(
                &pool,
                Period::of(now.date_naive()),
                now,
                "job:monthly-refill",
            )
            .map(|n| format!("{n} user(s) refilled"))
            .map_err(JobError::doing("refill"))
        }) as crate::ops::jobs::JobFn
    };
    // Remembered idempotent answers are only replayed for 24 h; without this
    // the table would grow by one row per keyed request forever.
    let expire = {
        let pool = pool.clone();
        Box::new(move || {
            let expiry = JobError::doing("expiry");
            let users = idempotency::store::expire(&pool).map_err(&expiry)?;
            let mut conn = pool.get().map_err(|e| expiry(e.into()))?;
            let services = idempotency::service::expire(&mut conn).map_err(&expiry)?;
            Ok(format!(
                "{} expired idempotency key(s) deleted",
                users + services
            ))
        }) as crate::ops::jobs::JobFn
    };
    // A fixed-price gateway charge left unsettled past its expiry (its
    // instance died, or its refund could not be written) is refunded.
    let refund_unsettled = {
        let pool = pool.clone();
        let metrics = Arc::clone(metrics);
        Box::new(move || {
            let n = crate::gateway::billing::refund_unsettled(&pool)
                .map_err(JobError::doing("refund"))?;
            for _ in 0..n {
                metrics.refund("unsettled");
            }
            Ok(format!("{n} unsettled charge(s) refunded"))
        }) as crate::ops::jobs::JobFn
    };
    // An open hold past its expiry still holds credit until it is
    // released: a service that never settles cannot keep it forever.
    let expire_holds = {
        let pool = pool.clone();
        let metrics = Arc::clone(metrics);
        Box::new(move || {
            let n = billing::holds::expire_due(&pool).map_err(JobError::doing("expiry"))?;
            metrics.holds_expired(n);
            Ok(format!("{n} hold(s) expired"))
        }) as crate::ops::jobs::JobFn
    };
    // Settled webhook deliveries are kept a while to be read, not forever.
    let prune_outbox = {
        let pool = pool.clone();
        Box::new(move || {
            let n = crate::webhooks::outbox::prune(&pool).map_err(JobError::doing("prune"))?;
            Ok(format!("{n} settled webhook deliveries deleted"))
        }) as crate::ops::jobs::JobFn
    };
    Jobs::new(
        vec![
            Job::new("heartbeat", config.heartbeat, heartbeat),
            Job::new("monthly-refill", Duration::from_secs(60), refill),
            Job::new("expire-idempotency-keys", Duration::from_secs(3600), expire),
            Job::new("expire-holds", Duration::from_secs(10), expire_holds),
            Job::new(
                "refund-unsettled",
                Duration::from_secs(10),
                refund_unsettled,
            ),
            Job::new(
                "prune-webhook-outbox",
                Duration::from_secs(3600),
                prune_outbox,
            ),
        ],
        Arc::clone(metrics),
    )
}

/// The `heartbeat` job's state.
struct Heartbeat {
    pool: Pool,
    mailer: Mailer,
    metrics: Arc<Metrics>,
    me: Instance,
    live_within: Duration,
    was_up: AtomicBool,
    watch: Mutex<Watch>,
}

impl Heartbeat {
    /// Pings the database and records this instance as live; mails once
    /// when the database goes down and once when it is back, and once when
    /// live instances start writing through more than one Galera node.
    fn run(&self) -> Result<String, JobError> {
        match db::ping(&self.pool) {
            Ok(()) => {
                if !self.was_up.swap(true, SeqCst) {
                    log::warn!("database is reachable again");
                    self.mailer
                        .send("database back", "The database answers again.");
                }
                self.watch_writers();
                Ok("database up".into())
            }
            Err(e) => {
                let why = error_chain(&e);
                if self.was_up.swap(false, SeqCst) {
                    log::error!("database is unreachable: {why}");
                    self.mailer.send(
                        "database down",
                        &format!("The database does not answer: {why}"),
                    );
                }
                Err(JobError {
                    doing: "database down",
                    cause: e,
                })
            }
        }
    }

    fn watch_writers(&self) {
        let beat = match cluster::beat(&self.pool, &self.me, self.live_within) {
            Ok(b) => b,
            Err(e) => {
                log::warn!("heartbeat not recorded: {}", error_chain(&e));
                return;
            }
        };
        let nodes = beat.writer_nodes;
        self.metrics.cluster_writer_nodes(nodes);
        let change = self
            .watch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(nodes);
        match change {
            Some(cluster::Change::MultiWriter(n)) => {
                log::error!(
                    "live instances write through {n} Galera nodes: multi-writer is not exact; \
                     send every instance to one node (HAProxy: one server, the others backup)"
                );
                if beat.mails {
                    self.mailer.send(
                        "multi-writer cluster",
                        &format!(
                            "Live creditgate instances write through {n} Galera nodes. Galera \
                             loses updates on a hot row written from several nodes: send every \
                             instance to one node (HAProxy with one active server and the \
                             others as backups; see docs/scaling.md, \"HAProxy in front of Galera\")."
                        ),
                    );
                }
            }
            Some(cluster::Change::SingleWriter) => {
                log::warn!("live instances write through one Galera node again");
            }
            None => {}
        }
    }
}

/// SIGINT and SIGTERM fire `shutdown` with the signal's name. ctrlc does the
/// handling; signal-hook only records which signal it was, because ctrlc does
/// not say. ctrlc must be installed first (it refuses to replace a handler);
/// signal-hook then chains onto it, but calls ctrlc's handler *before* its
/// own action, so ctrlc's thread can wake before the number is stored: it
/// waits for it, briefly.
pub fn install_signal_handlers(shutdown: Shutdown) -> Result<(), StartError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let last = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&last);
    ctrlc::set_handler(move || {
        let deadline = std::time::Instant::now() + SIGNAL_NAME_WAIT;
        let mut sig = seen.swap(0, Ordering::SeqCst);
        while sig == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
            sig = seen.swap(0, Ordering::SeqCst);
        }
        let name = match sig as i32 {
            signal_hook::consts::SIGTERM => "signal SIGTERM",
            signal_hook::consts::SIGINT => "signal SIGINT",
            signal_hook::consts::SIGHUP => "signal SIGHUP",
            _ => "signal",
        };
        log::info!("{name} received, stopping");
        shutdown.trigger(name);
    })
    .map_err(|e| StartError::Signals(format!("cannot install the signal handler: {e}")))?;
    for sig in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register_usize(sig, Arc::clone(&last), sig as usize)
            .map_err(|e| StartError::Signals(format!("cannot watch signal {sig}: {e}")))?;
    }
    Ok(())
}

/// `creditgate serve`: runs until a signal or `/stopServer`.
pub fn serve(config: Config) -> Result<(), StartError> {
    let shutdown = Shutdown::new();
    install_signal_handlers(shutdown.clone())?;
    let app = App::build_under(config, shutdown, Systemd::from_env())?;
    log::info!(
        "creditgate {} listening on {}://{}",
        env!("CARGO_PKG_VERSION"),
        app.scheme(),
        app.addr()
    );
    app.run();
    Ok(())
}
