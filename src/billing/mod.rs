//! Money: every paid request — a bank lookup, one of a coalesced batch, a
//! gateway route's call — goes through ONE decision (`decide`, pure) and
//! ONE module that does the SQL of charging on the locked row (`account`).
//! The coming charge API, holds and group charging call the same two, so
//! that the rules of what a request costs and when it is refused are
//! written once.
//!
//! - `decide`: replay? → rate limit → enough credit? → debit, one `Outcome`
//! - `account`: lock and authenticate the row, `apply` an outcome, refunds
//! - `bank`: the paid bank lookup, the balance, the monthly refill
//! - `group`: coalesced batches (waiting charges of one user or many, one commit)
//! - `charge`: the charge API (a backend charges its user from its code)
//! - `holds`: reserve credit first, capture the real price after
//! - `keyed`: a service call's transaction with its Idempotency-Key
//! - `ratelimit`: GCRA, pure; `usage` and `ledger`: the books beside the credit
//! - `export`: usage per user, key, day and endpoint, streamed as CSV or JSON

pub mod account;
pub mod bank;
pub mod charge;
pub mod decide;
pub mod export;
pub mod group;
pub mod holds;
pub mod keyed;
pub mod ledger;
pub mod ratelimit;
pub mod usage;

pub use decide::{decide, Insufficient, Outcome, Verdict};
