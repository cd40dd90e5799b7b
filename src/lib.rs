//! creditgate: a credit-metered HTTP API service. See README.md.

pub mod app;
pub mod auth;
pub mod banks;
pub mod billing;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod console;
pub mod db;
pub mod error;
pub mod gateway;
pub mod http;
pub mod idempotency;
pub mod jobs;
pub mod logging;
pub mod mail;
pub mod metrics;
pub mod model;
pub mod net;
pub mod notify;
pub mod openapi;
pub mod shutdown;
pub mod users;
pub mod watchdog;
