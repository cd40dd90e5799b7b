//! One integration-test binary (one link): each module drives the real code
//! against a real MariaDB, each test in its own fresh database.

mod daemon;
mod helpers;
mod proxy;
mod smtp;

mod auth;
mod charge;
mod jobs;
mod lifecycle;
mod mail;
mod refill;
mod routes;
