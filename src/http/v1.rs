//! The service API: `/v1/charge` and `/v1/holds…`, called by backends with
//! a service token to meter their own users from their own code. Each is
//! extract (service token → key → body) → one keyed transaction
//! (`billing::keyed::run` around `billing::charge` or `billing::holds`) →
//! the answer. The answer's JSON is rendered once (`render_*`): what the
//! client gets now and what its Idempotency-Key replays are the same bytes.

use chrono::Utc;
use rouille::{Request, Response};
use serde_json::{json, Map, Value};

use super::api::{idempotency_key, notify_low_credit};
use super::service_auth::service;
use super::{v1_body, ApiError, Ctx};
use crate::app::AppState;
use crate::billing::account::{LowCredit, Who};
use crate::billing::charge::{self, ChargeRequest, Charged};
use crate::billing::holds::{self, Place, Placed, Refusal, Settle, Settled};
use crate::billing::keyed::{self, Keyed};
use crate::idempotency::key::fingerprint;
use crate::idempotency::service::{ServiceKey, StoredReply};
use crate::services::{Scope, Service};

/// The request's key and fingerprint, if it carries a key.
fn service_key<'a>(
    svc: &Service,
    key: Option<&'a crate::model::IdempotencyKey>,
    req: &Request,
    body: &Map<String, Value>,
) -> Option<ServiceKey<'a>> {
    let path = req.raw_url().split('?').next().unwrap_or("");
    key.map(|key| ServiceKey {
        service_id: svc.id,
        key,
        fingerprint: fingerprint(
            req.method(),
            path,
            req.raw_query_string(),
            Some(&v1_body::canonical(body)),
        ),
    })
}

/// A keyed call's answer: fresh (its rendering), replayed, or refused.
fn respond<T>(done: Keyed<T>, render: impl Fn(&T) -> StoredReply) -> Response {
    match done {
        Keyed::Fresh(out) => reply(render(&out)),
        Keyed::Replayed(r) => reply(r).with_additional_header("Idempotency-Replayed", "true"),
        Keyed::Reused => ApiError::IdempotencyKeyReused.response(),
    }
}

fn reply(r: StoredReply) -> Response {
    Response::from_data("application/json", r.body).with_status_code(r.status)
}

fn stored(status: u16, body: Value) -> StoredReply {
    StoredReply {
        status,
        body: body.to_string(),
    }
}

/// `POST /v1/charge`.
pub fn charge(state: &AppState, req: &Request, ctx: &mut Ctx) -> Result<Response, ApiError> {
    let svc = service(state, req, ctx, Scope::Charge)?;
    let key = idempotency_key(req)?;
    let raw = v1_body::read(req)?;
    let body = v1_body::charge(&raw)?;
    let keyed = service_key(&svc, key.as_ref(), req, &raw);
    let request = ChargeRequest {
        who: &body.who,
        cost: body.cost,
        endpoint: body.endpoint.as_str(),
        now: Utc::now(),
    };
    let name = body.who.name().to_string();
    let render = |c: &Charged| render_charge(&name, body.cost, c);
    let done = keyed::run(&state.pool, keyed.as_ref(), render, |tx, sql| {
        charge::charge(tx, sql, &request)
    })?;
    if let Keyed::Fresh(Charged::Valid {
        cost, low_credit, ..
    }) = &done
    {
        state.metrics.credits_charged(*cost);
        notify(state, low_credit);
    }
    Ok(respond(done, render))
}

fn render_charge(user: &str, cost: i64, c: &Charged) -> StoredReply {
    match c {
        Charged::Valid {
            cost,
            credit_remaining,
            ..
        } => StoredReply {
            status: 200,
            body: serde_json::to_string(&Valid {
                code: "VALID",
                cost: *cost,
                credit_remaining: *credit_remaining,
                user,
                valid: true,
            })
            .expect("an answer serialises"),
        },
        Charged::Refused(refusal) => stored(200, refused(user, "cost", cost, refusal)),
    }
}

/// The body of a charge's "yes", typed (not a `json!` map: this is every
/// paid call's answer); fields in the order a map would print them.
#[derive(serde::Serialize)]
struct Valid<'a> {
    code: &'static str,
    cost: i64,
    credit_remaining: i64,
    user: &'a str,
    valid: bool,
}

/// The body of a decided "no": the service's call worked, the user's not.
fn refused(user: &str, what: &str, amount: i64, refusal: &Refusal) -> Value {
    let now = Utc::now().timestamp();
    let (code, remaining, retry_after) = match refusal {
        Refusal::Unauthorized(_) => ("UNAUTHORIZED", None, None),
        Refusal::RateLimited {
            rate,
            credit_available,
        } => (
            "RATE_LIMITED",
            Some(*credit_available),
            Some(rate.decision.retry_after_secs),
        ),
        Refusal::Insufficient(short) => (
            "INSUFFICIENT_CREDIT",
            Some(short.credit_remaining),
            short.retry_after(now),
        ),
    };
    let mut body = json!({"valid": false, "code": code, "user": user, what: amount,
                          "credit_remaining": remaining});
    if let Some(s) = retry_after {
        body["retry_after"] = json!(s);
    }
    body
}

/// `POST /v1/holds`.
pub fn place_hold(state: &AppState, req: &Request, ctx: &mut Ctx) -> Result<Response, ApiError> {
    let svc = service(state, req, ctx, Scope::Charge)?;
    let key = idempotency_key(req)?;
    let raw = v1_body::read(req)?;
    let body = v1_body::hold(&raw)?;
    let keyed = service_key(&svc, key.as_ref(), req, &raw);
    let place = Place {
        service_id: svc.id,
        who: &body.who,
        amount: body.amount,
        ttl_secs: body.ttl_secs,
        endpoint: body.endpoint.as_str(),
        now: Utc::now(),
    };
    let render = |p: &Placed| render_placed(&body.who, body.amount, p);
    let done = keyed::run(&state.pool, keyed.as_ref(), render, |tx, sql| {
        holds::place(tx, sql, &place)
    })?;
    Ok(respond(done, render))
}

fn render_placed(who: &Who, amount: i64, p: &Placed) -> StoredReply {
    match p {
        Placed::Granted {
            hold,
            credit_available,
        } => stored(
            201,
            json!({"valid": true, "hold": hold, "credit_available": credit_available}),
        ),
        Placed::Refused(refusal) => stored(200, refused(who.name(), "amount", amount, refusal)),
        Placed::TooMany => error_reply(&ApiError::TooManyHolds),
    }
}

fn error_reply(e: &ApiError) -> StoredReply {
    stored(e.status(), e.body())
}

/// `POST /v1/holds/<id>/capture` and `/release`.
pub fn settle_hold(
    state: &AppState,
    req: &Request,
    id: &str,
    capture: bool,
    ctx: &mut Ctx,
) -> Result<Response, ApiError> {
    let svc = service(state, req, ctx, Scope::Charge)?;
    let key = idempotency_key(req)?;
    let raw = v1_body::read(req)?;
    let how = if capture {
        Settle::Capture(v1_body::capture(&raw)?)
    } else {
        v1_body::release(&raw)?;
        Settle::Release
    };
    let id = hold_id(id)?;
    let keyed = service_key(&svc, key.as_ref(), req, &raw);
    let now = Utc::now();
    let done = keyed::run(&state.pool, keyed.as_ref(), render_settled, |tx, sql| {
        holds::settle(tx, sql, svc.id, id, how, now)
    })?;
    if let Keyed::Fresh(Settled::Done {
        hold, low_credit, ..
    }) = &done
    {
        state.metrics.credits_charged(hold.captured.unwrap_or(0));
        notify(state, low_credit);
    }
    Ok(respond(done, render_settled))
}

fn render_settled(s: &Settled) -> StoredReply {
    match s {
        Settled::Done {
            hold,
            credit_remaining,
            ..
        }
        | Settled::Again {
            hold,
            credit_remaining,
        } => {
            let mut body = json!({"hold": hold, "credit_remaining": credit_remaining});
            if let (Some(c), Some(u)) = (hold.captured, hold.uncollected) {
                body["captured"] = json!(c);
                body["uncollected"] = json!(u);
            }
            stored(200, body)
        }
        Settled::AlreadySettled(hold) => {
            let e = ApiError::HoldSettled(hold.state.as_str());
            let mut body = e.body();
            body["hold"] = json!(hold);
            stored(e.status(), body)
        }
        Settled::Unknown => error_reply(&ApiError::UnknownHold),
    }
}

/// `GET /v1/holds/<id>`.
pub fn get_hold(
    state: &AppState,
    req: &Request,
    id: &str,
    ctx: &mut Ctx,
) -> Result<Response, ApiError> {
    let svc = service(state, req, ctx, Scope::Charge)?;
    let id = hold_id(id)?;
    let mut conn = state.pool.get().map_err(crate::db::DbError::from)?;
    match holds::get(&mut **conn, svc.id, id)? {
        Some(hold) => Ok(Response::json(&json!({ "hold": hold }))),
        None => Err(ApiError::UnknownHold),
    }
}

/// A hold's id from the path: digits only (`+1` is not hold 1).
fn hold_id(raw: &str) -> Result<u64, ApiError> {
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::UnknownHold);
    }
    raw.parse().map_err(|_| ApiError::UnknownHold)
}

fn notify(state: &AppState, low: &Option<LowCredit>) {
    if let Some(low) = low {
        notify_low_credit(state, low);
    }
}
