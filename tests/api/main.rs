//! One integration-test binary (one link): each module drives the real code
//! against a real MariaDB, each test in its own fresh database.

mod support;

mod ratelimit;

mod admin;
mod auth;
mod bruteforce;
mod charge;
mod cli;
mod coalesce;
mod conflicts;
mod console;
mod edge;
mod export;
mod faults;
mod forward_auth;
mod gateway;
mod holds;
mod hostile;
mod import;
mod jobs;
mod keys;
mod ledger;
mod legacy;
mod lifecycle;
mod lowcredit;
mod mail;
mod metrics;
mod openapi;
mod pricing;
mod refill;
mod routes;
mod secrets;
mod services;
mod settlement;
mod streaming;
mod tls;
mod webhooks;
