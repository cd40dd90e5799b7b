//! The client-facing routes: the paid bank lookup, the free balance, and the
//! probes. Each is extract → one call → map the result.

use chrono::Utc;
use rouille::{Request, Response};
use serde::Serialize;
use serde_json::json;

use super::error::with_rate;
use super::{
    authorization_headers, refuse_if_throttled, service_auth, unauthorized, ApiError, Ctx,
};
use crate::app::AppState;
use crate::auth::token::{Credentials, CredentialsError};
use crate::banks::BankData;
use crate::billing::account::LowCredit;
use crate::billing::bank::{self, Answer, AuthFailure, Charge, ChargeOutcome};
use crate::billing::group;
use crate::db;
use crate::model::{BankCode, IdempotencyKey, ParseError};
use crate::ops::mail::Mailer;

pub fn banks_data(
    state: &AppState,
    req: &Request,
    bank: &str,
    ctx: &mut Ctx,
) -> Result<Response, ApiError> {
    let key = idempotency_key(req)?;
    let credentials = credentials(state, req, ctx)?;
    let bank = BankCode::parse(bank).map_err(ApiError::InvalidBank)?;
    let now = Utc::now();
    let charge = Charge {
        credentials: &credentials,
        bank: &bank,
        idempotency_key: key.as_ref(),
        now,
    };
    let outcome = match &state.coalescer {
        None => bank::charge(&state.pool, state.gateway.banks(), &charge)?,
        Some(c) => c.charge(
            &state.pool,
            state.gateway.banks(),
            &state.metrics,
            group::Request {
                credentials: credentials.clone(),
                bank: bank.clone(),
                idempotency_key: key.clone(),
                now,
            },
        )?,
    };
    match outcome {
        ChargeOutcome::Unauthorized(why) => Err(unauthorized(state, req, ctx, &why)),
        ChargeOutcome::RateLimited(rate) => Err(ApiError::RateLimited(rate)),
        ChargeOutcome::KeyReused => Err(ApiError::IdempotencyKeyReused),
        ChargeOutcome::Answered {
            answer,
            replayed,
            rate,
            low_credit,
        } => {
            if let Some(low) = low_credit {
                notify_low_credit(state, &low);
            }
            let mut response = answer_response(state, answer, replayed, now);
            if replayed {
                response = response.with_additional_header("Idempotency-Replayed", "true");
            }
            Ok(with_rate(response, rate.as_ref()))
        }
    }
}

/// The body of a paid bank lookup, serialised once; its fields in the
/// order `json!` printed them (by name), as they always came.
#[derive(Serialize)]
struct PaidBody<'a> {
    bank: &'a str,
    bic: Option<&'a str>,
    country: Option<&'a str>,
    credit_remaining: i64,
    data: &'a BankData,
    name: &'a str,
}

/// The response for a decided (or replayed) bank lookup.
fn answer_response(
    state: &AppState,
    answer: Answer,
    replayed: bool,
    now: chrono::DateTime<Utc>,
) -> Response {
    match answer {
        Answer::Charged {
            bank,
            credit_remaining,
        } => {
            if !replayed {
                state.metrics.credits_charged(bank.cost);
            }
            Response::json(&PaidBody {
                bank: &bank.code,
                bic: bank.bic.as_deref(),
                country: bank.country.as_deref(),
                credit_remaining,
                data: &bank.data,
                name: &bank.name,
            })
            .with_additional_header("X-Credit-Remaining", credit_remaining.to_string())
        }
        Answer::InsufficientCredit(short) => ApiError::insufficient(&short, None, now).response(),
        Answer::UnknownBank => ApiError::UnknownBank.response(),
    }
}

/// The one mail of a low-credit notice: to the user and the alert list,
/// queued for the mailer thread (the request does not wait for it).
pub(super) fn notify_low_credit(state: &AppState, low: &LowCredit) {
    notify_low_credit_by(&state.mailer, low);
}

/// The same, by `mailer` alone (a notice found after the handler returned).
pub(super) fn notify_low_credit_by(mailer: &Mailer, low: &LowCredit) {
    log::info!(
        "user={} credit {} fell below the low-credit threshold {}",
        super::log_safe(&low.username),
        low.credit,
        low.threshold
    );
    mailer.send_also_to(
        low.email.as_deref(),
        &format!("low credit: {}", low.username),
        &format!(
            "The credit of {} is {}, below its low-credit threshold of {}.\n\
             Top up with: creditgate user credit {} --add N",
            low.username, low.credit, low.threshold, low.username
        ),
    );
}

/// `GET /api/v1.0/credit`: the caller's own balance.
pub fn balance(state: &AppState, req: &Request, ctx: &mut Ctx) -> Result<Response, ApiError> {
    let credentials = credentials(state, req, ctx)?;
    match bank::balance(&state.pool, &credentials, Utc::now())? {
        Ok(balance) => Ok(Response::json(&balance)),
        Err(why) => Err(unauthorized(state, req, ctx, &why)),
    }
}

/// `GET /v1/whoami`: the calling service and its scopes, so that a backend
/// can check its token before it charges anyone (any valid token: no scope
/// needed).
pub fn whoami(state: &AppState, req: &Request, ctx: &mut Ctx) -> Result<Response, ApiError> {
    let service = service_auth::any_service(state, req, ctx)?;
    Ok(Response::json(
        &json!({ "service": service.name, "scopes": service.scopes }),
    ))
}

pub fn health() -> Response {
    Response::json(&json!({ "status": "ok" }))
}

pub fn ready(state: &AppState) -> Result<Response, ApiError> {
    db::ping(&state.pool)?;
    Ok(Response::json(&json!({ "status": "ok" })))
}

pub fn warmup() -> Response {
    Response::text("").with_status_code(200)
}

pub fn metrics(state: &AppState) -> Response {
    let s = state.pool.state();
    let gauges = crate::ops::metrics::PoolGauges {
        in_use: s.connections - s.idle_connections,
        idle: s.idle_connections,
        max: state.pool.max_size(),
    };
    Response::from_data("text/plain; version=0.0.4", state.metrics.render(gauges))
}

/// The optional `Idempotency-Key`; present but malformed (or sent twice) is 400.
pub(super) fn idempotency_key(req: &Request) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = req
        .headers()
        .filter(|(k, _)| k.eq_ignore_ascii_case("Idempotency-Key"))
        .map(|(_, v)| v);
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => IdempotencyKey::parse(v)
            .map(Some)
            .map_err(ApiError::InvalidIdempotencyKey),
        (Some(_), Some(_)) => Err(ApiError::InvalidIdempotencyKey(ParseError(
            "send one Idempotency-Key, not several".into(),
        ))),
    }
}

/// The caller's credentials from any accepted place; refuses an address that
/// has failed too often this minute before looking at them.
pub(super) fn credentials(
    state: &AppState,
    req: &Request,
    ctx: &mut Ctx,
) -> Result<Credentials, ApiError> {
    credentials_with_query(state, req, req.raw_query_string(), ctx)
}

/// `credentials`, with `?token=` looked for in `raw_query` instead of the
/// request's own query: a proxy's forward-auth request carries the
/// client's query in a header.
pub(super) fn credentials_with_query(
    state: &AppState,
    req: &Request,
    raw_query: &str,
    ctx: &mut Ctx,
) -> Result<Credentials, ApiError> {
    refuse_if_throttled(state, req)?;
    let headers = authorization_headers(req);
    let query: Vec<String> = if state.config.query_token {
        super::query_values(raw_query, "token")
    } else {
        Vec::new()
    };
    let query: Vec<&str> = query.iter().map(String::as_str).collect();
    match Credentials::parse(&headers, &query) {
        Ok(c) => {
            ctx.user = Some(c.username.clone());
            Ok(c)
        }
        Err(CredentialsError::Ambiguous) => Err(ApiError::AmbiguousCredentials),
        Err(CredentialsError::Missing) => {
            Err(unauthorized(state, req, ctx, &AuthFailure::NoCredentials))
        }
    }
}
