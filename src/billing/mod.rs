//! Money: every paid request — a bank lookup, one of a coalesced batch, a
//! gateway route's call — goes through ONE decision (`decide`, pure) and
//! ONE module that does the SQL of charging on the locked row (`account`).
//! The coming charge API, holds and group charging call the same two, so
//! that the rules of what a request costs and when it is refused are
//! written once.

pub mod account;
pub mod decide;

pub use decide::{decide, Insufficient, Outcome, Verdict};
