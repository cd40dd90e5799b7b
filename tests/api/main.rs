//! One integration-test binary (one link): each module drives the real code
//! against a real MariaDB, each test in its own fresh database.

mod helpers;

mod admin;
mod auth;
mod bruteforce;
mod charge;
mod cli;
mod faults;
mod hostile;
mod import;
mod ledger;
mod metrics;
mod proxy;
mod routes;
mod secrets;
