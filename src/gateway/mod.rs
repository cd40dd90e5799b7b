//! Gateway routes: any HTTP API put behind creditgate's metering, each
//! route a prefix, an upstream and a price per call. `routes` holds the pure rules (what a route is, which
//! route a path belongs to, what path the upstream sees); `forward` the
//! upstream call and the header rules; `store` the `routes` table;
//! `billing` the charge and the refund. This file holds the route table
//! (and `banks::Cache`, the bank route's prices) every request reads (refreshed from the database every `REFRESH`, so a
//! route added on one instance reaches all of them) and the request flow:
//! charge → forward → refund when the answer is not billable.
//! `forward_auth` charges as a route does for a proxy that forwards itself.
//!
//! No HTTP server type appears here: `http::gateway` turns a rouille request
//! into an `Incoming` and a `Served` into a response.

pub mod at_end;
pub mod billing;
pub mod bulkhead;
pub mod forward;
pub mod forward_auth;
pub mod routes;
pub mod store;

use std::fmt;
use std::io::Cursor;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::auth::token::Credentials;
use crate::billing::account::{AuthFailure, LowCredit, RateState};
use crate::billing::Insufficient;
use crate::db::{DbError, Pool};
use crate::error::error_chain;
use crate::idempotency::{self, Recorded, Recorder, StoredAnswer};
use crate::model::IdempotencyKey;
use crate::ops::metrics::Metrics;
use crate::ops::shutdown::Shutdown;
use at_end::{LowCreditSink, PricedAtEnd, Settlement};
use billing::{Charged, RouteCharge, Ticket};
use bulkhead::Bulkheads;
use forward::{Client, ForwardError, Outgoing, RequestBody};
use routes::Route;

/// How often every instance re-reads the `routes` table. A change reaches
/// all instances within this (a route change must reach every instance
/// within 5 s, without a restart).
pub const REFRESH: Duration = Duration::from_secs(2);

/// The ledger actor of a refund.
const REFUND_ACTOR: &str = "gateway";

/// How often a refund is tried when the database fails before its COMMIT.
const REFUND_TRIES: u32 = 3;

/// The routes and the upstream client, shared by every request thread.
pub struct Gateway {
    routes: RwLock<Arc<Vec<Route>>>,
    /// The bank route's priced resources, kept fresh with the routes.
    banks: crate::banks::Cache,
    client: Client,
    /// How many requests each route may have in flight here.
    pub bulkheads: Arc<Bulkheads>,
    /// Billable answers whose unsettled-charge rows are to be deleted.
    pub confirmations: Arc<billing::Confirmations>,
}

/// A request on a route, as the HTTP layer extracted it.
pub struct Incoming<'a> {
    pub route: &'a Route,
    pub method: &'a str,
    /// The raw (still percent-encoded) path, without the query.
    pub path: &'a str,
    pub raw_query: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub credentials: &'a Credentials,
    pub idempotency_key: Option<&'a IdempotencyKey>,
    /// `None` when the client sent no body at all.
    pub body: Option<Vec<u8>>,
    pub peer: IpAddr,
    /// creditgate serves TLS itself (`CREDITGATE_TLS_CERT`), so the client
    /// came over it: `X-Forwarded-Proto: https`. (Behind a TLS-terminating
    /// proxy this is false; the proxy says so in its own headers.)
    pub secure: bool,
    pub request_id: u64,
    pub now: DateTime<Utc>,
    /// The largest answer stored for a keyed request's replays.
    pub store_answer_up_to: u64,
    /// A priced answer settled at its end (`at_end`): where its low-credit
    /// crossing goes, and how its trailer reaches the client.
    pub on_low_credit: Option<LowCreditSink>,
    pub answer_trailer: fn(Vec<(String, String)>),
}

/// The upstream's answer, to stream back.
pub struct Served {
    pub answer: forward::Answer,
    pub credit_remaining: i64,
    pub replayed: bool,
    /// The user's rate limit, for the headers.
    pub rate: Option<RateState>,
    /// The charge crossed the user's low-credit threshold.
    pub low_credit: Option<LowCredit>,
    /// On a route priced by its upstream: what this answer was charged
    /// (`X-Credit-Charged`).
    pub charged: Option<i64>,
    /// The price is settled when the body ends (`at_end`): the charge and
    /// the final balance follow in the answer's trailer.
    pub priced_at_end: bool,
}

#[derive(Debug)]
pub enum GatewayError {
    Unauthorized(AuthFailure),
    Insufficient(Insufficient, Option<RateState>),
    RateLimited(RateState),
    InProgress,
    /// The key was used with another request (422).
    KeyReused,
    /// A retry of a billed request whose answer was not stored (409).
    AnswerNotStored,
    /// Refunded (when `refunded`); the credit after it.
    Unreachable(Unanswered),
    /// Refunded (when `refunded`); the credit after it.
    Timeout(Unanswered),
    Db(DbError),
}

/// A request the upstream did not answer: the refund's result, for the
/// client's answer (a refund that failed is logged, and not claimed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unanswered {
    pub credit_remaining: i64,
    pub refunded: bool,
    pub rate: Option<RateState>,
}

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GatewayError::Unauthorized(why) => write!(f, "{why}"),
            GatewayError::Insufficient(..) => f.write_str("insufficient credit"),
            GatewayError::InProgress => f.write_str("idempotency key in flight"),
            GatewayError::KeyReused => f.write_str("idempotency key reused"),
            GatewayError::AnswerNotStored => f.write_str("idempotent answer not stored"),
            GatewayError::RateLimited(_) => f.write_str("rate limited"),
            GatewayError::Unreachable(_) => f.write_str("upstream unreachable"),
            GatewayError::Timeout(_) => f.write_str("upstream timed out"),
            GatewayError::Db(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for GatewayError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            GatewayError::Db(e) => Some(e),
            _ => None,
        }
    }
}

impl From<DbError> for GatewayError {
    fn from(e: DbError) -> Self {
        GatewayError::Db(e)
    }
}

impl Gateway {
    /// For `threads` handler threads: as many keep-alive connections kept
    /// per upstream, and the bulkheads sized from them.
    pub fn new(threads: usize) -> Gateway {
        Gateway {
            routes: RwLock::new(Arc::new(Vec::new())),
            banks: crate::banks::Cache::new(),
            client: Client::new(threads),
            bulkheads: Arc::new(Bulkheads::new(threads)),
            confirmations: Arc::default(),
        }
    }

    /// The route a request path belongs to, if any.
    pub fn route_for(&self, path: &str) -> Option<Route> {
        let routes = Arc::clone(&self.routes.read().unwrap_or_else(|e| e.into_inner()));
        routes::longest_match(&routes, path).cloned()
    }

    /// Re-reads the `routes` table (and the banks); on failure the ones in
    /// use stay.
    pub fn reload(&self, pool: &Pool) -> Result<(), DbError> {
        let fresh = Arc::new(store::list(pool)?);
        *self.routes.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        self.banks.reload(pool)
    }

    /// The banks, in memory (`banks::Cache`).
    pub fn banks(&self) -> &crate::banks::Cache {
        &self.banks
    }

    /// After a route change (`by`: the admin API, the console): this
    /// instance serves it at once, the others within `REFRESH`. A failed
    /// reload is logged, not answered: the change itself was made.
    pub fn reload_after_change(&self, pool: &Pool, by: &str) {
        if let Err(e) = self.reload(pool) {
            log::warn!(
                "routes not reloaded after {by}: {}",
                crate::error::error_chain(&e)
            );
        }
    }

    /// Reloads every `REFRESH` until `shutdown` fires.
    pub fn keep_fresh(self: &Arc<Self>, pool: Pool, shutdown: Shutdown) -> JoinHandle<()> {
        let gateway = Arc::clone(self);
        std::thread::Builder::new()
            .name("routes".into())
            .spawn(move || {
                let mut last = Instant::now();
                let mut failing = false;
                while !shutdown.is_triggered() {
                    std::thread::sleep(Duration::from_millis(100));
                    gateway.confirm(&pool);
                    if last.elapsed() < REFRESH {
                        continue;
                    }
                    last = Instant::now();
                    match gateway.reload(&pool) {
                        Ok(()) => failing = false,
                        // Said once per outage, not every 2 s.
                        Err(e) if !failing => {
                            failing = true;
                            log::warn!(
                                "routes not refreshed, keeping the last ones: {}",
                                error_chain(&e)
                            );
                        }
                        Err(_) => {}
                    }
                }
            })
            .expect("start the route refresh thread")
    }

    /// Writes the billable answers' confirmations (every 100 ms, and once
    /// more when stopping): a failed batch stays for the next.
    pub fn confirm(&self, pool: &Pool) {
        if let Err(e) = self.confirmations.flush(pool) {
            log::warn!(
                "billable answers not confirmed yet, retrying: {}",
                error_chain(&e)
            );
        }
    }

    /// Charges, forwards, and refunds when the answer is not billable; a
    /// retry of a billed keyed request is answered from its stored answer.
    pub fn serve(
        &self,
        pool: &Pool,
        metrics: &Metrics,
        req: Incoming<'_>,
    ) -> Result<Served, GatewayError> {
        let route = req.route;
        let endpoint = format!("route:{}", route.prefix);
        let timeout = Duration::from_millis(route.timeout_ms.into());
        // Only a keyed request is ever compared with another.
        let fingerprint = match req.idempotency_key {
            Some(_) => idempotency::key::fingerprint(
                req.method,
                req.path,
                req.raw_query,
                req.body.as_deref(),
            ),
            None => String::new(),
        };
        let charge = RouteCharge {
            credentials: req.credentials,
            endpoint: &endpoint,
            cost: route.cost,
            idempotency_key: req.idempotency_key,
            fingerprint: &fingerprint,
            now: req.now,
            in_flight_for: timeout + Duration::from_secs(5),
            max_cost: route.max_cost,
            refundable: true,
        };
        let ticket = match billing::charge(pool, &charge)? {
            Charged::Forward(ticket) => ticket,
            Charged::Replay {
                answer,
                credit_remaining,
                rate,
            } => return Ok(replayed(answer, credit_remaining, rate)),
            Charged::Refused(why) => return Err(why),
        };
        metrics.credits_charged(ticket.charged);
        self.forward(pool, metrics, &req, ticket, timeout)
    }

    /// Forwards a charged request and settles or refunds it by the answer.
    fn forward(
        &self,
        pool: &Pool,
        metrics: &Metrics,
        req: &Incoming<'_>,
        mut ticket: Ticket,
        timeout: Duration,
    ) -> Result<Served, GatewayError> {
        let route = req.route;
        let started = Instant::now();
        let sent = self.client.send(outgoing(req, timeout));
        let prefix = route.prefix.as_str();
        match sent {
            Ok(mut answer) => {
                metrics.upstream(prefix, &answer.status.to_string(), started.elapsed());
                // The upstream's price is for creditgate, not the client.
                let stated = match route.max_cost {
                    Some(_) => stated_price(&mut answer.headers, &route.cost_header),
                    None => None,
                };
                if !route.charge_on.billable(answer.status) {
                    let credit_remaining = refund(pool, metrics, &ticket, prefix, req.request_id).0;
                    // Refunded: the threshold was not crossed after all.
                    return Ok(Served {
                        answer,
                        credit_remaining,
                        replayed: false,
                        rate: ticket.rate,
                        low_credit: None,
                        charged: ticket.hold.map(|_| 0),
                        priced_at_end: false,
                    });
                }
                let at_end = match route.max_cost {
                    // No price in the head of a streamed answer: it may
                    // come in the trailer; the hold stays open till then.
                    Some(max_cost) if stated.is_none() && streams(&answer, req.method) => {
                        Some(max_cost)
                    }
                    Some(max_cost) => {
                        let price = priced(stated, route.cost, max_cost);
                        capture(pool, &mut ticket, price, max_cost, req.request_id);
                        None
                    }
                    None => None,
                };
                if let Some(id) = ticket.unsettled {
                    self.confirmations.billed(id);
                }
                let settled = billing::settle(pool, &mut ticket, timeout + Duration::from_secs(5));
                if let Some(max_cost) = at_end {
                    answer.body = Box::new(PricedAtEnd::new(
                        answer.body,
                        Settlement {
                            pool: pool.clone(),
                            ticket: ticket.clone(),
                            cost: route.cost,
                            max_cost,
                            cost_header: route.cost_header.clone(),
                            request_id: req.request_id,
                            on_low_credit: req.on_low_credit.clone(),
                            answer_trailer: req.answer_trailer,
                        },
                    ));
                }
                match settled {
                    Ok(()) if ticket.keyed() => {
                        answer = recorded(pool.clone(), ticket.clone(), answer, req)
                    }
                    Ok(()) => {}
                    // The key's pending row counts as billed (and not
                    // stored) once it expires, so a retry is never
                    // forwarded again; it only waits longer.
                    Err(e) => log::warn!(
                        "req={} idempotency key not settled: {}",
                        req.request_id,
                        error_chain(&e)
                    ),
                }
                Ok(Served {
                    answer,
                    credit_remaining: ticket.credit_remaining,
                    replayed: false,
                    rate: ticket.rate,
                    low_credit: ticket.low_credit.clone(),
                    charged: ticket
                        .hold
                        .filter(|_| at_end.is_none())
                        .map(|_| ticket.charged),
                    priced_at_end: at_end.is_some(),
                })
            }
            Err(e) => Err(self.unanswered(pool, metrics, req, &ticket, e, started)),
        }
    }

    /// The upstream gave no answer: refund, and say why.
    fn unanswered(
        &self,
        pool: &Pool,
        metrics: &Metrics,
        req: &Incoming<'_>,
        ticket: &Ticket,
        e: ForwardError,
        started: Instant,
    ) -> GatewayError {
        let prefix = req.route.prefix.as_str();
        let label = match e {
            ForwardError::Timeout => "timeout",
            _ => "unavailable",
        };
        metrics.upstream(prefix, label, started.elapsed());
        log::warn!("req={} route {prefix}: {e}", req.request_id);
        let (credit_remaining, refunded) = refund(pool, metrics, ticket, prefix, req.request_id);
        let unanswered = Unanswered {
            credit_remaining,
            refunded,
            rate: ticket.rate,
        };
        match e {
            ForwardError::Timeout => GatewayError::Timeout(unanswered),
            _ => GatewayError::Unreachable(unanswered),
        }
    }
}

/// A retry's answer: the first one, as stored.
fn replayed(answer: StoredAnswer, credit_remaining: i64, rate: Option<RateState>) -> Served {
    Served {
        answer: forward::Answer {
            status: answer.status,
            headers: answer.headers,
            length: Some(answer.body.len() as u64),
            body: Box::new(Cursor::new(answer.body)),
        },
        credit_remaining,
        replayed: true,
        rate,
        low_credit: None,
        charged: None,
        priced_at_end: false,
    }
}

/// The price an answer states in `header` (removed from the headers the
/// client gets, whatever it says): a whole number of credits, else none.
pub(crate) fn stated_price(headers: &mut Vec<(String, String)>, header: &str) -> Option<i64> {
    let mut stated = None;
    headers.retain(|(name, value)| {
        if !name.eq_ignore_ascii_case(header) {
            return true;
        }
        stated = stated.or_else(|| value.trim().parse::<i64>().ok().filter(|n| *n >= 0));
        false
    });
    stated
}

/// An answer whose body is streamed to its end with no length known
/// before: it may carry a trailer. One without a body (`HEAD`, 204, 304)
/// or with a `Content-Length` cannot.
fn streams(answer: &forward::Answer, method: &str) -> bool {
    answer.length.is_none() && method != "HEAD" && !matches!(answer.status, 204 | 304)
}

/// What a priced answer costs: the price it states, or the route's `cost`
/// when it states none, never more than the `max_cost` that was held.
pub(crate) fn priced(stated: Option<i64>, cost: i64, max_cost: i64) -> i64 {
    stated.unwrap_or(cost).clamp(0, max_cost)
}

/// Captures a priced request at `price`. A capture that cannot be written
/// now is tried again on a thread until it is written or the hold expires
/// (then the expiry releases it: an under-charge, never an over-charge):
/// nothing owed lives only in this request's memory.
pub(crate) fn capture(pool: &Pool, ticket: &mut Ticket, price: i64, held: i64, request_id: u64) {
    match billing::capture(pool, ticket, price) {
        Ok(()) => {}
        Err(e) => {
            log::warn!(
                "req={request_id} capture of {price} credit(s) not written yet, retrying: {}",
                error_chain(&e)
            );
            // Answered as the capture will be: the price, the balance
            // before it (the hold's amount back, the price off).
            ticket.charged = price;
            ticket.credit_remaining += held - price;
            settle_later(pool.clone(), ticket.clone(), Some(price), request_id);
        }
    }
}

/// Tries a hold's settlement (`Some(price)`: capture, `None`: release)
/// again, with growing pauses, until it is written or the hold is no longer
/// open.
fn settle_later(pool: Pool, mut ticket: Ticket, price: Option<i64>, request_id: u64) {
    let spawned = std::thread::Builder::new()
        .name("settle".into())
        .spawn(move || {
            let mut pause = Duration::from_millis(500);
            loop {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(30));
                let done = match price {
                    Some(p) => billing::capture(&pool, &mut ticket, p),
                    None => billing::release(&pool, &ticket).map(|_| ()),
                };
                match done {
                    Ok(()) => return log::info!("req={request_id} hold settled on a retry"),
                    Err(_) if billing::hold_open(&pool, &ticket).unwrap_or(true) => continue,
                    Err(_) => return,
                }
            }
        });
    if let Err(e) = spawned {
        log::error!("req={request_id} no thread to settle the hold later (its expiry will): {e}");
    }
}

/// The billed answer of a keyed request, its body recorded on the way to
/// the client and stored when it ends, for the key's retries.
fn recorded(
    pool: Pool,
    ticket: Ticket,
    answer: forward::Answer,
    req: &Incoming<'_>,
) -> forward::Answer {
    let request_id = req.request_id;
    // A failed write leaves the key "streaming" until its deadline, then it
    // answers 409: never forwarded again, never charged twice.
    let store = move |stored: Option<&StoredAnswer>| {
        if let Err(e) = billing::record_answer(&pool, &ticket, stored) {
            log::warn!(
                "req={request_id} answer for idempotent replays not stored: {}",
                error_chain(&e)
            );
        }
    };
    // An answer without a body (HEAD, 204, 304, a length of 0) is never
    // read by the server, so nothing would tell the recorder it ended:
    // store it as it is, now.
    let bodiless = req.method == "HEAD" || matches!(answer.status, 204 | 304);
    if bodiless || answer.length == Some(0) {
        store(Some(&StoredAnswer {
            status: answer.status,
            headers: answer.headers.clone(),
            body: Vec::new(),
        }));
        return answer;
    }
    let body = Recorder::new(
        answer.body,
        answer.status,
        answer.headers.clone(),
        answer.length,
        req.store_answer_up_to,
        move |recorded| match &recorded {
            Recorded::Whole(a) => store(Some(a)),
            Recorded::TooLarge | Recorded::Cut => store(None),
        },
    );
    forward::Answer {
        body: Box::new(body),
        ..answer
    }
}

/// The request as the upstream gets it: same method, the path without the
/// prefix when the route strips it, the query without `token=`, and the
/// forwarding headers.
fn outgoing(req: &Incoming<'_>, timeout: Duration) -> Outgoing {
    let path = routes::upstream_path(req.route, req.path);
    let query = forward::forward_query(req.raw_query);
    // Authorization, when present, is what carried the credentials: with
    // both it and ?token= the request was refused as ambiguous.
    let mut headers = forward::request_headers(req.headers, true);
    headers.extend(forward::added_headers(
        req.headers,
        req.peer,
        req.secure,
        &req.credentials.username,
        &req.request_id.to_string(),
    ));
    Outgoing {
        method: req.method.to_string(),
        url: req.route.upstream.url_for(&path, &query),
        headers,
        body: req.body.clone().map(|b| RequestBody {
            length: Some(b.len() as u64),
            reader: Box::new(Cursor::new(b)),
        }),
        timeout,
    }
}

/// Refunds the ticket, retrying a failure that happened before COMMIT (a
/// failed COMMIT may have applied: retrying it could refund twice). Returns
/// the credit after it and true, or the charged balance and false when it
/// could not be done (logged as an error with what is owed).
fn refund(
    pool: &Pool,
    metrics: &Metrics,
    ticket: &Ticket,
    prefix: &str,
    request_id: u64,
) -> (i64, bool) {
    if ticket.hold.is_some() {
        // A priced request: nothing was charged; its hold is released.
        return match billing::release(pool, ticket) {
            Ok(credit) => {
                metrics.refund(prefix);
                (credit, true)
            }
            Err(e) => {
                log::warn!(
                    "req={request_id} hold not released yet, retrying: {}",
                    error_chain(&e)
                );
                settle_later(pool.clone(), ticket.clone(), None, request_id);
                (ticket.credit_remaining, false)
            }
        };
    }
    let mut tries = 0;
    loop {
        tries += 1;
        match billing::refund(pool, ticket, REFUND_ACTOR) {
            Ok(credit) => {
                metrics.refund(prefix);
                return (credit, true);
            }
            Err(e) => {
                metrics.db_error();
                let in_doubt = matches!(e, DbError::CommitUnknown(_));
                if in_doubt || tries >= REFUND_TRIES {
                    // Not lost: the charge's unsettled record stays, and
                    // the refund-unsettled job refunds it at its expiry
                    // (if this refund did commit, it took the record along).
                    log::warn!(
                        "req={request_id} refund of {} credit(s) to user id {} {} now; \
                         its unsettled record refunds it at expiry: {}",
                        ticket.charged,
                        ticket.user_id,
                        if in_doubt { "in doubt" } else { "not written" },
                        error_chain(&e)
                    );
                    return (ticket.credit_remaining, false);
                }
                std::thread::sleep(Duration::from_millis(50 * u64::from(tries)));
            }
        }
    }
}
