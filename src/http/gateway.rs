//! A request on a gateway route: extract (method, credentials, key, body)
//! → `Gateway::serve` → stream the upstream's answer back. The flow itself
//! (charge, forward, refund) lives in `crate::gateway`.

use std::borrow::Cow;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rouille::{Request, Response, ResponseBody};

use super::api::{credentials, idempotency_key, notify_low_credit, notify_low_credit_by};
use super::extract::{bounded_body_by, BodyError};
use super::{unauthorized, ApiError, Ctx};
use crate::app::AppState;
use crate::billing::account::LowCredit;
use crate::billing::ratelimit;
use crate::gateway::at_end::{self, LowCreditSink};
use crate::gateway::billing;
use crate::gateway::bulkhead::Permit;
use crate::gateway::routes::{self, Route};
use crate::gateway::{GatewayError, Incoming, Served};

/// The order is the edge's defence: nothing that costs a thread for long
/// (reading a body, calling the upstream) happens before the cheap
/// refusals, the route's bulkhead and the credentials.
pub fn serve(
    state: &AppState,
    req: &Request,
    route: &Route,
    ctx: &mut Ctx,
) -> Result<Response, ApiError> {
    let raw = req.raw_url();
    let (path, raw_query) = raw.split_once('?').unwrap_or((raw, ""));
    refuse_path(path)?;
    allow_method(route, req.method())?;
    let has_body = has_body(req);
    // A body-ignoring upstream would read it as the next request.
    if has_body && ["GET", "HEAD", "OPTIONS", "DELETE"].contains(&req.method()) {
        return Err(ApiError::BodyNotAllowed);
    }
    let permit = state
        .gateway
        .bulkheads
        .enter(route.id, route.max_in_flight)
        .ok_or(ApiError::RouteBusy)?;
    let key = idempotency_key(req)?;
    let credentials = credentials(state, req, ctx)?;
    if has_body {
        match billing::authenticate(&state.pool, &credentials)? {
            Ok(()) => {}
            Err(why) => return Err(unauthorized(state, req, ctx, &why)),
        }
    }
    // The body gets the head's grace and the route's own timeout, in all.
    let deadline = Instant::now()
        + state.config.edge.head_timeout
        + Duration::from_millis(route.timeout_ms.into());
    let body = read_body(req, state.config.max_body_bytes, deadline)?;
    let headers: Vec<(&str, &str)> = req.headers().collect();
    let incoming = Incoming {
        route,
        method: req.method(),
        path,
        raw_query,
        headers: &headers,
        credentials: &credentials,
        idempotency_key: key.as_ref(),
        body,
        peer: req.remote_addr().ip(),
        secure: state.config.edge.tls.is_some(),
        request_id: ctx.id,
        now: Utc::now(),
        store_answer_up_to: state.config.edge.idempotent_answer_bytes,
        on_low_credit: route.max_cost.map(|_| low_credit_sink(state)),
        answer_trailer: send_trailer,
    };
    match state.gateway.serve(&state.pool, &state.metrics, incoming) {
        Ok(served) => {
            if let Some(low) = &served.low_credit {
                notify_low_credit(state, low);
            }
            Ok(streamed(served, permit))
        }
        Err(GatewayError::Unauthorized(why)) => Err(unauthorized(state, req, ctx, &why)),
        Err(e) => Err(e.into()),
    }
}

/// The paths no route serves, refused before anything is charged (also
/// the original path a proxy asks `/v1/forward-auth` about).
pub(super) fn refuse_path(path: &str) -> Result<(), ApiError> {
    // Routes never hold `.` or `..`; such a path (or one with an encoded
    // slash) could climb out of the upstream's base path: it is no route's.
    if routes::unsafe_path(path) {
        return Err(ApiError::NotFound);
    }
    match routes::refused_path(path) {
        Some(why) => Err(ApiError::InvalidPath(why)),
        None => Ok(()),
    }
}

/// 405 with the route's methods in `Allow` for any other method.
pub(super) fn allow_method(route: &Route, method: &str) -> Result<(), ApiError> {
    if route.methods.allows(method) {
        return Ok(());
    }
    Err(ApiError::MethodNotAllowed {
        allow: route.methods.as_slice().join(", "),
    })
}

/// The client declared a body (a length above 0, or chunked framing; the
/// edge has refused every other framing already).
fn has_body(req: &Request) -> bool {
    let length = req.header("Content-Length").map(str::trim);
    req.header("Transfer-Encoding").is_some() || length.is_some_and(|l| l != "0")
}

/// The client's body, read whole before anything is charged so that an
/// oversized one (by `Content-Length` or, chunked, while reading) is
/// refused with nothing charged, and one cut short (or too slow: the edge
/// holds it to the minimum rate) is never forwarded. `None` when the
/// client sent none.
fn read_body(req: &Request, limit: u64, deadline: Instant) -> Result<Option<Vec<u8>>, ApiError> {
    if !has_body(req) && req.header("Content-Length").is_none() {
        return Ok(None);
    }
    if let Some(n) = req
        .header("Content-Length")
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        if n > limit {
            return Err(ApiError::BodyTooLarge { limit });
        }
    }
    match bounded_body_by(req, limit, Some(deadline)) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(BodyError::TooLarge) => Err(ApiError::BodyTooLarge { limit }),
        Err(BodyError::Unreadable) => Err(ApiError::InvalidBody(
            "the request body was cut short or sent too slowly".into(),
        )),
    }
}

/// The upstream's status, headers and body, streamed as it arrives; the
/// route's bulkhead place is held until the body is done.
fn streamed(served: Served, permit: Permit) -> Response {
    let answer = served.answer;
    let mut headers: Vec<(Cow<'static, str>, Cow<'static, str>)> = answer
        .headers
        .into_iter()
        .map(|(n, v)| (Cow::Owned(n), Cow::Owned(v)))
        .collect();
    headers.push((
        "X-Credit-Remaining".into(),
        served.credit_remaining.to_string().into(),
    ));
    if let Some(charged) = served.charged {
        headers.push(("X-Credit-Charged".into(), charged.to_string().into()));
    }
    if served.priced_at_end {
        headers.push(("Trailer".into(), at_end::TRAILER_FIELDS.into()));
    }
    if served.replayed {
        headers.push(("Idempotency-Replayed".into(), "true".into()));
    }
    if let Some(rate) = &served.rate {
        for (name, value) in ratelimit::headers(rate.limit, &rate.decision) {
            headers.push((name.into(), value.into()));
        }
    }
    let body = Held {
        inner: answer.body,
        _permit: permit,
    };
    let data = match answer.length.and_then(|n| usize::try_from(n).ok()) {
        Some(n) => ResponseBody::from_reader_and_size(body, n),
        None => ResponseBody::from_reader(body),
    };
    Response {
        status_code: answer.status,
        headers,
        data,
        upgrade: None,
    }
}

/// A priced answer's low-credit crossing, found when its body ends (after
/// this handler has returned): mailed as the handler would have.
fn low_credit_sink(state: &AppState) -> LowCreditSink {
    let mailer = state.mailer.clone();
    Arc::new(move |low: &LowCredit| notify_low_credit_by(&mailer, low))
}

/// Hands a priced answer's trailer to the vendored tiny_http writing the
/// answer on this thread (its patch 17): it goes out in the last chunk.
fn send_trailer(fields: Vec<(String, String)>) {
    let headers = fields
        .into_iter()
        .filter_map(|(n, v)| tiny_http::Header::from_bytes(n.as_bytes(), v.as_bytes()).ok())
        .collect();
    tiny_http::stage_trailer(headers);
}

/// A body that holds its route's bulkhead place until it is dropped.
struct Held<R> {
    inner: R,
    _permit: Permit,
}

impl<R: Read> Read for Held<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}
