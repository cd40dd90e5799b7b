//! Gateway routes: any HTTP API put behind creditgate's metering (SPEC,
//! "Gateway routes"). `routes` holds the pure rules (what a route is, which
//! route a path belongs to, what path the upstream sees); `forward` holds the
//! upstream call and the header rules in and out. The request flow (match →
//! charge → forward → refund) and the route table cache come on top of these.

pub mod forward;
pub mod routes;
pub mod store;
pub mod billing;
