//! `/v1/forward-auth` (any method): a proxy's question "may this request
//! pass?" — extract (the proxy's secret, the original request, its route,
//! key and credentials) → `gateway::forward_auth::authorize` → 200 with the
//! headers the proxy copies, or the usual 401/402/429.

use chrono::Utc;
use rouille::{Request, Response};
use serde_json::json;

use super::api::{credentials_with_query, idempotency_key, notify_low_credit};
use super::error::with_rate;
use super::gateway::{allow_method, refuse_path};
use super::{unauthorized, ApiError, Ctx};
use crate::app::AppState;
use crate::auth::token::same_secret;
use crate::gateway::forward_auth::{self, Authorized, Check};
use crate::gateway::GatewayError;

/// The header the proxy presents `CREDITGATE_FORWARD_AUTH_SECRET` in.
pub const SECRET_HEADER: &str = "X-Creditgate-Forward-Secret";

pub fn check(state: &AppState, req: &Request, ctx: &mut Ctx) -> Result<Response, ApiError> {
    proxy_only(state, req)?;
    let headers: Vec<(&str, &str)> = req.headers().collect();
    let original = forward_auth::original(&headers).map_err(ApiError::InvalidOriginal)?;
    refuse_path(original.path())?;
    let route = state
        .gateway
        .route_for(original.path())
        .ok_or(ApiError::NotFound)?;
    allow_method(&route, &original.method)?;
    let key = idempotency_key(req)?;
    let credentials = credentials_with_query(state, req, original.raw_query(), ctx)?;
    let check = Check {
        route: &route,
        original: &original,
        credentials: &credentials,
        idempotency_key: key.as_ref(),
        request_id: ctx.id,
        now: Utc::now(),
    };
    match forward_auth::authorize(&state.pool, &state.metrics, &check) {
        Ok(authorized) => {
            if let Some(low) = &authorized.low_credit {
                notify_low_credit(state, low);
            }
            Ok(allowed(&authorized))
        }
        Err(GatewayError::Unauthorized(why)) => Err(unauthorized(state, req, ctx, &why)),
        Err(e) => Err(e.into()),
    }
}

/// Only the proxy, which knows the secret, may ask: a client calling the
/// endpoint directly could otherwise spend its own credit on nothing, or
/// probe tokens past the proxy's logs. One header, compared in constant
/// time.
fn proxy_only(state: &AppState, req: &Request) -> Result<(), ApiError> {
    let Some(secret) = &state.config.forward_auth_secret else {
        return Err(ApiError::ForwardAuthDisabled);
    };
    let mut given = req
        .headers()
        .filter(|(k, _)| k.eq_ignore_ascii_case(SECRET_HEADER))
        .map(|(_, v)| v);
    match (given.next(), given.next()) {
        (Some(v), None) if same_secret(v, secret.expose()) => Ok(()),
        _ => Err(ApiError::ForwardAuthForbidden),
    }
}

/// 200: the headers a proxy copies (`X-Creditgate-User` to the upstream,
/// `X-Credit-Remaining` to the client), the rate limit's, and a small body.
fn allowed(a: &Authorized) -> Response {
    let mut r = Response::json(&json!({
        "user": a.user,
        "credit_remaining": a.credit_remaining,
    }))
    .with_additional_header("X-Creditgate-User", a.user.clone())
    .with_additional_header("X-Credit-Remaining", a.credit_remaining.to_string())
    .with_additional_header("Cache-Control", "no-store");
    if a.replayed {
        r = r.with_additional_header("Idempotency-Replayed", "true");
    }
    with_rate(r, a.rate.as_ref())
}
