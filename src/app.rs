//! The daemon's life cycle: start (config → database → schema → jobs →
//! bind), serve until a stop is asked for, then stop in order (socket,
//! in-flight requests, scheduler, mail). A start failure is mailed too.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::config::Config;
use crate::credit;
use crate::db::{self, DbError, Pool};
use crate::error::error_chain;
use crate::gateway::Gateway;
use crate::http::{self, AppState, BindError, HttpServer};
use crate::jobs::{Job, Jobs};
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::model::Period;
use crate::shutdown::Shutdown;

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
    mailer: Mailer,
    shutdown: Shutdown,
}

impl App {
    /// Everything up to and including the bind. On failure the alert list
    /// gets a mail naming the reason.
    pub fn build(config: Config, shutdown: Shutdown) -> Result<App, StartError> {
        let mailer = Mailer::start(&config).map_err(StartError::Mail)?;
        match start(config, shutdown.clone(), mailer.clone()) {
            Ok(Started {
                server,
                jobs,
                gateway,
                pool,
            }) => Ok(App {
                server,
                jobs,
                gateway,
                pool,
                mailer,
                shutdown,
            }),
            Err(e) => {
                log::error!("start failed: {e}");
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

    /// Serves until the shutdown fires, then stops in order and returns the
    /// reason.
    pub fn run(self) -> String {
        let schedule = self.jobs.start();
        let routes = self
            .gateway
            .keep_fresh(self.pool.clone(), self.shutdown.clone());
        self.server.run(&self.shutdown, STOP_GRACE);
        schedule.stop();
        let _ = routes.join();
        let reason = self.shutdown.reason().unwrap_or_else(|| "unknown".into());
        log::info!("stopped: {reason}");
        self.mailer.send_and_wait(
            "stopped",
            &format!("creditgate stopped: {reason}"),
            MAIL_WAIT,
        );
        self.mailer.stop(Duration::from_millis(100));
        reason
    }
}

/// What `start` made.
struct Started {
    server: HttpServer,
    jobs: Arc<Jobs>,
    gateway: Arc<Gateway>,
    pool: Pool,
}

fn start(config: Config, shutdown: Shutdown, mailer: Mailer) -> Result<Started, StartError> {
    let pool = db::pool(
        config.database_url.expose(),
        config.db_pool,
        config.db_timeout,
    )
    .map_err(StartError::Db)?;
    db::wait_until_ready(&pool, config.db_start_wait).map_err(StartError::Db)?;
    db::check_schema(&pool).map_err(StartError::Db)?;
    let metrics = Arc::new(Metrics::default());
    let jobs = Arc::new(standard_jobs(&config, &pool, &mailer, &metrics));
    // A refill missed while the service was down happens before the first
    // request is served.
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
    ));
    let server = http::bind(state).map_err(StartError::Bind)?;
    Ok(Started {
        server,
        jobs,
        gateway,
        pool,
    })
}

/// `heartbeat` (the sample's job `main`), `monthly-refill` and
/// `expire-idempotency-keys`.
pub fn standard_jobs(
    config: &Config,
    pool: &Pool,
    mailer: &Mailer,
    metrics: &Arc<Metrics>,
) -> Jobs {
    let heartbeat = {
        let pool = pool.clone();
        let mailer = mailer.clone();
        let was_up = std::sync::atomic::AtomicBool::new(true);
        Box::new(move || heartbeat(&pool, &mailer, &was_up)) as crate::jobs::JobFn
    };
    let refill = {
        let pool = pool.clone();
        Box::new(move || {
            let now = Utc::now();
            credit::refill(
                &pool,
                Period::of(now.date_naive()),
                now,
                "job:monthly-refill",
            )
            .map(|n| format!("{n} user(s) refilled"))
            .map_err(|e| error_chain(&e))
        }) as crate::jobs::JobFn
    };
    // Remembered idempotent answers are only replayed for 24 h; without this
    // the table would grow by one row per keyed request forever.
    let expire = {
        let pool = pool.clone();
        Box::new(move || {
            credit::expire_idempotency_keys(&pool)
                .map(|n| format!("{n} expired idempotency key(s) deleted"))
                .map_err(|e| error_chain(&e))
        }) as crate::jobs::JobFn
    };
    Jobs::new(
        vec![
            Job::new("heartbeat", config.heartbeat, heartbeat),
            Job::new("monthly-refill", Duration::from_secs(60), refill),
            Job::new("expire-idempotency-keys", Duration::from_secs(3600), expire),
        ],
        Arc::clone(metrics),
    )
}

/// Pings the database; mails once when it goes down and once when it is
/// back, not on every tick.
fn heartbeat(
    pool: &Pool,
    mailer: &Mailer,
    was_up: &std::sync::atomic::AtomicBool,
) -> Result<String, String> {
    use std::sync::atomic::Ordering::SeqCst;
    match db::ping(pool) {
        Ok(()) => {
            if !was_up.swap(true, SeqCst) {
                log::warn!("database is reachable again");
                mailer.send("database back", "The database answers again.");
            }
            Ok("database up".into())
        }
        Err(e) => {
            let why = error_chain(&e);
            if was_up.swap(false, SeqCst) {
                log::error!("database is unreachable: {why}");
                mailer.send(
                    "database down",
                    &format!("The database does not answer: {why}"),
                );
            }
            Err(format!("database down: {why}"))
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
    let app = App::build(config, shutdown)?;
    log::info!(
        "creditgate {} listening on http://{}",
        env!("CARGO_PKG_VERSION"),
        app.addr()
    );
    app.run();
    Ok(())
}
