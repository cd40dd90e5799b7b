//! One integration-test binary (one link): each module drives the real code
//! against a real MariaDB, each test in its own fresh database.

mod helpers;

mod auth;
mod bruteforce;
mod charge;
mod faults;
mod hostile;
mod proxy;
mod routes;
mod secrets;
