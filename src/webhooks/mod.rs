//! Webhooks (Standard Webhooks, https://www.standardwebhooks.com): tell an
//! operator's systems about money, not only a mailbox. An event is written
//! to an outbox in the same transaction as its cause, so it exists exactly
//! when the cause was committed; a delivery thread sends it, signed, and
//! retries until the receiver says 2xx or a day has passed.
//!
//! - `events`: the event types and the pure rules of when one is due
//! - `sign`: `whsec_` secrets and the `webhook-signature` (pure)
//! - `store`: endpoints: add, list, remove (the CLI, the admin API, the console)
//! - `outbox`: writing events inside their cause's transaction; the counts
//! - `deliver`: the delivery thread: claim with a lease, send, retry

pub mod deliver;
pub mod events;
pub mod outbox;
pub mod sign;
pub mod store;

pub use events::EventType;
pub use store::{Webhook, WebhookError};
