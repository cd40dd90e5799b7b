//! creditgate: a credit-metered HTTP API service. See README.md.

pub mod account;
pub mod app;
pub mod banks;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod credit;
pub mod db;
pub mod error;
pub mod gateway;
pub mod http;
pub mod import;
pub mod jobs;
pub mod keys;
pub mod ledger;
pub mod mail;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod ratelimit;
pub mod shutdown;
pub mod throttle;
pub mod token;
pub mod usage;
pub mod users;
