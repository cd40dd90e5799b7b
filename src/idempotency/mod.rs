//! `Idempotency-Key`: a domain concept with its own persistence, not a side
//! table of the charge. A key is remembered per user for 24 h in
//! `idempotency_keys`; what a retry under it gets depends on the path:
//!
//! - the bank route stores its decided `Answer` and replays it (`store`);
//! - a gateway route scopes the key by the route (`key::scoped`), compares
//!   requests by a fingerprint (`key::fingerprint`: a key reused with
//!   another request is refused), marks the key in flight while the
//!   upstream answers (`state`), and stores the first billed answer itself
//!   (`answer`) to replay it without forwarding again.
//!
//! The money decision (`billing::decide`) only sees what a key answers; the
//! rules of when it answers, and the SQL, are here.

pub mod answer;
pub mod key;
pub mod service;
pub mod state;
pub mod store;

pub use answer::{Recorded, Recorder, StoredAnswer};
pub use state::{Claim, KeyAnswer};
