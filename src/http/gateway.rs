//! A request on a gateway route: extract (method, credentials, key, body)
//! → `Gateway::serve` → stream the upstream's answer back. The flow itself
//! (charge, forward, refund) lives in `crate::gateway`.

use std::borrow::Cow;
use std::io::Read;

use chrono::Utc;
use rouille::{Request, Response, ResponseBody};

use super::api::{credentials, idempotency_key, notify_low_credit};
use super::{unauthorized, ApiError, AppState, Ctx};
use crate::gateway::routes::{self, Route};
use crate::gateway::{GatewayError, Incoming, Served};
use crate::ratelimit;

pub fn serve(
    state: &AppState,
    req: &Request,
    route: &Route,
    ctx: &mut Ctx,
) -> Result<Response, ApiError> {
    let raw = req.raw_url();
    let (path, raw_query) = raw.split_once('?').unwrap_or((raw, ""));
    // Routes never hold `.` or `..`; such a path (or one with an encoded
    // slash) could climb out of the upstream's base path: it is no route's.
    if routes::unsafe_path(path) {
        return Err(ApiError::NotFound);
    }
    if !route.methods.allows(req.method()) {
        return Err(ApiError::MethodNotAllowed {
            allow: route.methods.as_slice().join(", "),
        });
    }
    let key = idempotency_key(req)?;
    let credentials = credentials(state, req, ctx)?;
    let body = read_body(req, state.config.max_body_bytes)?;
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
        peer: super::client_ip(state, req),
        request_id: ctx.id,
        now: Utc::now(),
    };
    match state.gateway.serve(&state.pool, &state.metrics, incoming) {
        Ok(served) => {
            if let Some(low) = &served.low_credit {
                notify_low_credit(state, low);
            }
            Ok(streamed(served))
        }
        Err(GatewayError::Unauthorized(why)) => Err(unauthorized(state, req, ctx, &why)),
        Err(e) => Err(e.into()),
    }
}

/// The client's body, read whole before anything is charged so that an
/// oversized one (by `Content-Length` or, chunked, while reading) is
/// refused with nothing charged. `None` when the client sent none.
fn read_body(req: &Request, limit: u64) -> Result<Option<Vec<u8>>, ApiError> {
    let declared = req.header("Content-Length");
    let chunked = req.header("Transfer-Encoding").is_some();
    if declared.is_none() && !chunked {
        return Ok(None);
    }
    if let Some(n) = declared.and_then(|v| v.trim().parse::<u64>().ok()) {
        if n > limit {
            return Err(ApiError::BodyTooLarge { limit });
        }
    }
    let mut bytes = Vec::new();
    if let Some(body) = req.data() {
        body.take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|_| ApiError::InvalidBody("the request body could not be read".into()))?;
    }
    if bytes.len() as u64 > limit {
        return Err(ApiError::BodyTooLarge { limit });
    }
    Ok(Some(bytes))
}

/// The upstream's status, headers and body, streamed as it arrives.
fn streamed(served: Served) -> Response {
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
    if served.replayed {
        headers.push(("Idempotency-Replayed".into(), "true".into()));
    }
    if let Some(rate) = &served.rate {
        for (name, value) in ratelimit::headers(rate.limit, &rate.decision) {
            headers.push((name.into(), value.into()));
        }
    }
    let data = match answer.length.and_then(|n| usize::try_from(n).ok()) {
        Some(n) => ResponseBody::from_reader_and_size(answer.body, n),
        None => ResponseBody::from_reader(answer.body),
    };
    Response {
        status_code: answer.status,
        headers,
        data,
        upgrade: None,
    }
}
