//! creditgate: a credit-metered HTTP API service. See README.md.

pub mod app;
pub mod auth;
pub mod banks;
pub mod billing;
pub mod cli;
pub mod config;
pub mod console;
pub mod db;
pub mod error;
pub mod gateway;
pub mod http;
pub mod idempotency;
pub mod model;
pub mod net;
pub mod openapi;
pub mod ops;
pub mod services;
pub mod users;
pub mod webhooks;
