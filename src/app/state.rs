//! `AppState`: everything a request may touch, built once by the
//! composition root (`app`) and shared by the HTTP edge and the operator
//! console. It lives here, not in `http`, so that `console` and `http` do
//! not import each other for it.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use crate::auth::throttle::Throttle;
use crate::billing::group::Coalescer;
use crate::config::Config;
use crate::console::Sessions;
use crate::db::Pool;
use crate::gateway::Gateway;
use crate::ops::jobs::Jobs;
use crate::ops::mail::Mailer;
use crate::ops::metrics::Metrics;
use crate::ops::shutdown::Shutdown;

/// Everything a request may touch. Shared read-only but for counters.
pub struct AppState {
    pub config: Config,
    pub pool: Pool,
    pub metrics: Arc<Metrics>,
    pub throttle: Throttle,
    pub shutdown: Shutdown,
    pub jobs: Arc<Jobs>,
    pub gateway: Arc<Gateway>,
    /// The operator console's logged-in sessions (this instance's only).
    pub console: Sessions,
    /// Low-credit notices go out through it.
    pub mailer: Mailer,
    /// With CREDITGATE_COALESCE=on: waiting charges together, of one user
    /// or of many.
    pub coalescer: Option<Coalescer>,
    /// Requests inside `handle`; a stop waits for them.
    pub in_flight: AtomicUsize,
    /// Usage exports running here (each holds a pooled connection).
    pub exports: crate::billing::export::Running,
}

impl AppState {
    pub fn new(
        config: Config,
        pool: Pool,
        metrics: Arc<Metrics>,
        shutdown: Shutdown,
        jobs: Arc<Jobs>,
        gateway: Arc<Gateway>,
        mailer: Mailer,
    ) -> AppState {
        let throttle = Throttle::new(config.auth_fails_per_min);
        let coalescer = config
            .coalesce
            .then(|| Coalescer::new(config.coalesce_batches));
        AppState {
            config,
            pool,
            metrics,
            throttle,
            shutdown,
            jobs,
            gateway,
            console: Sessions::new(crate::console::SESSION_IDLE),
            mailer,
            coalescer,
            in_flight: AtomicUsize::new(0),
            exports: Default::default(),
        }
    }
}
