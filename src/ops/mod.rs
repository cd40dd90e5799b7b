//! Running the service rather than selling it: the stop signal everyone
//! listens to (`shutdown`), named background jobs (`jobs`), alert mail
//! (`mail`), Prometheus counters (`metrics`), the log setup (`logging`),
//! systemd's notify protocol and watchdog beat (`notify`, `watchdog`), and
//! the instances of a cluster (`cluster`). No money rule lives here.

pub mod cluster;
pub mod jobs;
pub mod logging;
pub mod mail;
pub mod metrics;
pub mod notify;
pub mod shutdown;
pub mod watchdog;
