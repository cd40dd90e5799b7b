//! A priced route's streamed answer settled at its end: the upstream may
//! state its price in a trailer of the chunked answer (an LLM knows the
//! tokens it sent only when it has sent them), so the hold stays open while
//! the body streams, and is captured when the body ends — at the trailer's
//! price, or the route's `cost` when there is none. The client gets
//! `X-Credit-Charged` and the final `X-Credit-Remaining` in its own
//! answer's trailer.
//!
//! An answer that does not reach its end (the upstream breaks off or
//! stalls past the route's timeout, the client goes away) was still
//! billable by its status: it is captured at the route's `cost` when its
//! body is dropped. A crash before that leaves the hold open; its expiry
//! releases it (an under-charge, never an over-charge).

use std::io::{self, Read};
use std::sync::Arc;

use crate::billing::account::LowCredit;
use crate::db::Pool;

use super::billing::Ticket;
use super::forward::upstream_trailer;
use super::{capture, priced, stated_price};

/// Told of a low-credit crossing found when a priced answer ends (the
/// request's handler has returned by then).
pub type LowCreditSink = Arc<dyn Fn(&LowCredit) + Send + Sync>;

/// The names of the trailer fields creditgate sends, for the answer's
/// `Trailer` header.
pub const TRAILER_FIELDS: &str = "X-Credit-Charged, X-Credit-Remaining";

/// What settles the hold once the body ends.
pub struct Settlement {
    pub pool: Pool,
    pub ticket: Ticket,
    /// The route's `cost` (no price stated) and `max_cost` (what was held).
    pub cost: i64,
    pub max_cost: i64,
    pub cost_header: String,
    pub request_id: u64,
    pub on_low_credit: Option<LowCreditSink>,
    /// Hands the client's trailer fields to the server writing the answer
    /// (called on that thread, just before the body returns its end).
    pub answer_trailer: fn(Vec<(String, String)>),
}

/// The upstream's body, settling its hold when it ends or is dropped.
pub struct PricedAtEnd {
    inner: Box<dyn Read + Send>,
    settlement: Option<Settlement>,
}

impl PricedAtEnd {
    pub fn new(inner: Box<dyn Read + Send>, settlement: Settlement) -> PricedAtEnd {
        PricedAtEnd {
            inner,
            settlement: Some(settlement),
        }
    }

    /// Captures at `stated` (or the route's cost); returns the trailer
    /// fields for the client.
    fn settle(&mut self, stated: Option<i64>) -> Option<Vec<(String, String)>> {
        let mut s = self.settlement.take()?;
        let price = priced(stated, s.cost, s.max_cost);
        capture(&s.pool, &mut s.ticket, price, s.max_cost, s.request_id);
        if let (Some(low), Some(sink)) = (&s.ticket.low_credit, &s.on_low_credit) {
            sink(low);
        }
        Some(vec![
            ("X-Credit-Charged".into(), s.ticket.charged.to_string()),
            (
                "X-Credit-Remaining".into(),
                s.ticket.credit_remaining.to_string(),
            ),
        ])
    }
}

impl Read for PricedAtEnd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let header = match &self.settlement {
                Some(s) => s.cost_header.clone(),
                None => return Ok(0),
            };
            let mut trailer = upstream_trailer();
            let stated = stated_price(&mut trailer, &header);
            let send = self.settlement.as_ref().map(|s| s.answer_trailer);
            if let (Some(fields), Some(send)) = (self.settle(stated), send) {
                send(fields);
            }
        }
        Ok(n)
    }
}

impl Drop for PricedAtEnd {
    fn drop(&mut self) {
        // Cut short: billable by its status, no price stated.
        self.settle(None);
    }
}
