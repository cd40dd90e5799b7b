//! Operator routes under `/admin/v1/` and `/stopServer`, all behind the
//! admin token. They call the same functions as the CLI.

use chrono::Utc;
use rouille::{Request, Response};
use serde_json::{json, Map, Value};

use super::admin_body::{
    credit_amount, credit_number, optional_string, read_object, refuse_unknown_fields, username,
};
use super::{
    admin_keys, allow, authorization_headers, query_values, refuse_if_throttled, service_auth,
    unauthorized, ApiError, Ctx,
};
use crate::app::AppState;
use crate::auth::token;
use crate::billing::export;
use crate::billing::ledger::{self, Reason};
use crate::billing::usage::{self, Filter};
use crate::gateway::routes::{InvalidRoute, NewRoute};
use crate::gateway::store::{self, RouteError};
use crate::model::{whole_number, Day, Email, ImportedToken, RefillDay};
use crate::services::{self, Scope, Scopes, ServiceError};
use crate::users::{self, CreditChange, NewUser};
use crate::webhooks::{self, EventType, WebhookError};

/// The actor written to the ledger for changes made here.
const ACTOR: &str = "admin-api";

fn check_admin(state: &AppState, req: &Request, ctx: &mut Ctx) -> Result<(), ApiError> {
    let Some(expected) = &state.config.admin_token else {
        return Err(ApiError::AdminDisabled);
    };
    refuse_if_throttled(state, req)?;
    let given = match authorization_headers(req).as_slice() {
        [v] => token::bearer(v),
        _ => None,
    };
    match given {
        Some(t) if token::same_secret(t, expected.expose()) => {
            ctx.user = Some("admin".into());
            Ok(())
        }
        _ => {
            // Counted like every failure; the body names the admin form.
            let _ = unauthorized(state, req, ctx, &"wrong or missing admin token");
            Err(ApiError::AdminUnauthorized)
        }
    }
}

pub fn stop(state: &AppState, req: &Request, ctx: &mut Ctx) -> Result<Response, ApiError> {
    check_admin(state, req, ctx)?;
    log::info!("req={} stop requested by the admin API", ctx.id);
    state.shutdown.trigger("admin /stopServer");
    Ok(
        Response::json(&json!({ "success": true, "message": "Server is Stopping..." }))
            .with_status_code(202),
    )
}

/// `/admin/v1/<rest>`: one arm per resource, each calling one function.
pub fn route(
    state: &AppState,
    req: &Request,
    method: &str,
    rest: &[&str],
    ctx: &mut Ctx,
) -> Result<Response, ApiError> {
    if rest == ["usage", "export"] {
        // The one admin route a `read` service token may call too.
        return usage_export(state, req, method, ctx);
    }
    check_admin(state, req, ctx)?;
    match (method, rest) {
        (_, ["users"]) => {
            allow(method, &["GET", "POST"])?;
            if method == "GET" {
                list_users(state)
            } else {
                create_user(state, req)
            }
        }
        (_, ["users", name]) => {
            allow(method, &["GET"])?;
            Ok(Response::json(&users::show(&state.pool, &username(name)?)?))
        }
        (_, ["users", name, "ledger"]) => {
            allow(method, &["GET"])?;
            ledger_page(state, req, name)
        }
        (_, ["users", name, "credit"]) => {
            allow(method, &["POST"])?;
            change_credit(state, req, name)
        }
        (_, ["users", name, sub @ ("rotate" | "keys" | "limit" | "notify"), rest @ ..]) => {
            admin_keys::route(state, req, method, name, sub, rest)
        }
        (_, ["users", name, action @ ("disable" | "enable")]) => {
            allow(method, &["POST"])?;
            let user = users::set_disabled(&state.pool, &username(name)?, *action == "disable")?;
            Ok(Response::json(&user))
        }
        (_, ["usage"]) => {
            allow(method, &["GET"])?;
            let rows = usage::report(&state.pool, &usage_filter(req)?)?;
            Ok(Response::json(&json!({ "rows": rows })))
        }
        (_, ["jobs"]) => {
            allow(method, &["GET"])?;
            Ok(Response::json(&json!({ "jobs": state.jobs.list() })))
        }
        (_, ["jobs", id, action @ ("pause" | "resume" | "run")]) => {
            allow(method, &["POST"])?;
            job_action(state, id, action)
        }
        (_, ["routes"]) => {
            allow(method, &["GET", "POST"])?;
            if method == "GET" {
                Ok(Response::json(
                    &json!({ "routes": store::list(&state.pool)? }),
                ))
            } else {
                add_route(state, req)
            }
        }
        (_, ["routes", id]) => {
            allow(method, &["DELETE"])?;
            remove_route(state, id)
        }
        (_, ["services"]) => {
            allow(method, &["GET", "POST"])?;
            if method == "GET" {
                let list = services::list(&state.pool)?;
                Ok(Response::json(&json!({ "services": list })))
            } else {
                add_service(state, req)
            }
        }
        (_, ["services", name]) => {
            allow(method, &["DELETE"])?;
            Ok(Response::json(&services::revoke(&state.pool, name)?))
        }
        (_, ["webhooks"]) => {
            allow(method, &["GET", "POST"])?;
            if method == "GET" {
                let list = webhooks::store::list(&state.pool)?;
                Ok(Response::json(&json!({ "webhooks": list })))
            } else {
                add_webhook(state, req)
            }
        }
        (_, ["webhooks", id]) => {
            allow(method, &["DELETE"])?;
            Ok(Response::json(&webhooks::store::remove(&state.pool, id)?))
        }
        _ => Err(ApiError::NotFound),
    }
}

fn list_users(state: &AppState) -> Result<Response, ApiError> {
    let list = users::list(&state.pool)?;
    Ok(Response::json(&json!({ "users": list })))
}

fn create_user(state: &AppState, req: &Request) -> Result<Response, ApiError> {
    let new = new_user(read_object(req)?)?;
    let (user, token) = users::create(&state.pool, new, Reason::Create, ACTOR, Utc::now())?;
    let mut body = serde_json::to_value(&user).expect("users serialise");
    body["token"] = Value::String(token);
    Ok(Response::json(&body).with_status_code(201))
}

fn change_credit(state: &AppState, req: &Request, name: &str) -> Result<Response, ApiError> {
    let name = username(name)?;
    let change = credit_change(read_object(req)?)?;
    Ok(Response::json(&users::change_credit(
        &state.pool,
        &name,
        change,
        ACTOR,
    )?))
}

fn add_route(state: &AppState, req: &Request) -> Result<Response, ApiError> {
    let body = read_object(req).map_err(|e| match e {
        // read_object calls an out-of-range number a credit amount; in a
        // route body it may be any field.
        ApiError::InvalidCredit(message) => RouteError::Invalid(InvalidRoute {
            field: "body",
            message,
        })
        .into(),
        e => e,
    })?;
    let new = NewRoute::from_json(&Value::Object(body)).map_err(RouteError::Invalid)?;
    let route = store::add(&state.pool, new)?;
    state.gateway.reload_after_change(&state.pool, "a change");
    Ok(Response::json(&route).with_status_code(201))
}

fn remove_route(state: &AppState, id: &str) -> Result<Response, ApiError> {
    let id: u64 = id
        .parse()
        .map_err(|_| RouteError::Unknown(format!("{id:?}")))?;
    let route = store::remove(&state.pool, id)?;
    state.gateway.reload_after_change(&state.pool, "a change");
    Ok(Response::json(&route))
}

/// `{"name", "scopes"}` → 201 with the service and its token, shown this
/// once. `scopes` is a list (`["charge", "read"]`) or the CLI's comma form.
fn add_service(state: &AppState, req: &Request) -> Result<Response, ApiError> {
    let invalid = |m: &str| ApiError::from(ServiceError::Invalid(m.into()));
    let body = read_object(req).map_err(|e| match e {
        // read_object calls an out-of-range number a credit amount; a
        // service body has no amounts.
        ApiError::InvalidCredit(m) => ApiError::from(ServiceError::Invalid(m)),
        e => e,
    })?;
    refuse_unknown_fields(&body, &["name", "scopes"])?;
    let Some(Value::String(name)) = body.get("name") else {
        return Err(invalid("name is required, as a string"));
    };
    let scopes = match body.get("scopes") {
        Some(Value::String(s)) => Scopes::parse(s)?,
        Some(Value::Array(items)) => {
            let names: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            Scopes::from_names(names.ok_or_else(|| invalid("scopes are names, as strings"))?)?
        }
        _ => {
            return Err(invalid(
                "scopes is required: [\"charge\", \"read\"] or \"charge,read\"",
            ))
        }
    };
    let (info, token) = services::add(&state.pool, name, scopes)?;
    let mut out = serde_json::to_value(&info).expect("services serialise");
    out["token"] = Value::String(token);
    Ok(Response::json(&out).with_status_code(201))
}

/// `{"url", "events"}` → 201 with the endpoint and its signing secret,
/// shown this once. `events` is a list or the CLI's comma form.
fn add_webhook(state: &AppState, req: &Request) -> Result<Response, ApiError> {
    let invalid = |m: &str| ApiError::from(WebhookError::Invalid(m.into()));
    let body = read_object(req).map_err(|e| match e {
        // read_object calls an out-of-range number a credit amount; a
        // webhook body has no amounts.
        ApiError::InvalidCredit(m) => ApiError::from(WebhookError::Invalid(m)),
        e => e,
    })?;
    refuse_unknown_fields(&body, &["url", "events"])?;
    let Some(Value::String(url)) = body.get("url") else {
        return Err(invalid("url is required, as a string"));
    };
    let events = match body.get("events") {
        Some(Value::String(s)) => webhooks::store::parse_events(s)?,
        Some(Value::Array(items)) => {
            let names: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            let names = names.ok_or_else(|| invalid("events are names, as strings"))?;
            EventType::from_names(names).map_err(|m| invalid(&m))?
        }
        _ => {
            return Err(invalid(
                "events is required: [\"credit.low\", …] or \"credit.low,…\"",
            ))
        }
    };
    let (hook, secret) = webhooks::store::add(&state.pool, url, &events)?;
    let mut out = serde_json::to_value(&hook).expect("webhooks serialise");
    out["secret"] = Value::String(secret);
    Ok(Response::json(&out).with_status_code(201))
}

fn job_action(state: &AppState, id: &str, action: &str) -> Result<Response, ApiError> {
    let view = match action {
        "pause" => state.jobs.pause(id),
        "resume" => state.jobs.resume(id),
        _ => state.jobs.run_now(id),
    };
    Ok(Response::json(
        &view.ok_or_else(|| ApiError::UnknownJob(id.to_string()))?,
    ))
}

fn new_user(body: Map<String, Value>) -> Result<NewUser, ApiError> {
    refuse_unknown_fields(
        &body,
        &[
            "username",
            "credit",
            "monthly_credit",
            "refill_day",
            "email",
            "token",
            "rate_limit",
            "low_credit",
        ],
    )?;
    let name = match body.get("username") {
        Some(Value::String(s)) => username(s)?,
        _ => {
            return Err(ApiError::InvalidUsername(crate::model::ParseError(
                "username is required, as a string".into(),
            )))
        }
    };
    // `"credit": null` is refused (a user has a balance); a null
    // `monthly_credit` means no allowance.
    let credit = body
        .get("credit")
        .map(|v| credit_amount("credit", v))
        .transpose()?;
    let monthly_credit = match body.get("monthly_credit") {
        None | Some(Value::Null) => None,
        Some(v) => Some(credit_amount("monthly_credit", v)?),
    };
    let refill_day = match body.get("refill_day") {
        None | Some(Value::Null) => RefillDay::default(),
        Some(v) => whole_number(v)
            .and_then(|n| RefillDay::parse(n).ok())
            .ok_or_else(|| {
                ApiError::InvalidBody("refill_day must be a whole number from 1 to 31".into())
            })?,
    };
    let invalid = |e: crate::model::ParseError| ApiError::InvalidBody(e.to_string());
    let token = optional_string(&body, "token")?
        .map(|t| ImportedToken::parse(&t).map_err(invalid))
        .transpose()?;
    let email = optional_string(&body, "email")?
        .map(|e| Email::parse(&e).map_err(invalid))
        .transpose()?;
    let rate_limit = match body.get("rate_limit") {
        None | Some(Value::Null) => None,
        Some(Value::Object(r)) => admin_keys::rate_limit(r)?,
        Some(_) => {
            return Err(ApiError::InvalidRate(
                "rate_limit is {\"quota\": N, \"window_secs\": W} or null".into(),
            ))
        }
    };
    let low_credit = match body.get("low_credit") {
        None | Some(Value::Null) => None,
        Some(v) => Some(credit_amount("low_credit", v)?),
    };
    Ok(NewUser {
        username: name,
        credit,
        monthly_credit,
        refill_day,
        email,
        token,
        rate_limit,
        low_credit,
    })
}

fn credit_change(body: Map<String, Value>) -> Result<CreditChange, ApiError> {
    refuse_unknown_fields(&body, &["add", "set"])?;
    match (body.get("add"), body.get("set")) {
        (Some(v), None) => Ok(CreditChange::Add(credit_number("add", v)?)),
        (None, Some(v)) => Ok(CreditChange::Set(credit_amount("set", v)?)),
        _ => Err(ApiError::InvalidBody(
            "send exactly one of {\"add\": N} or {\"set\": N}".into(),
        )),
    }
}

/// `?limit=1..1000` (100) and `?before=<id>` (the previous page's
/// `next_before`): one page of the user's ledger, newest first.
fn ledger_page(state: &AppState, req: &Request, name: &str) -> Result<Response, ApiError> {
    let name = username(name)?;
    let number = |field: &str, max: u64| -> Result<Option<u64>, ApiError> {
        let Some(v) = query_values(req.raw_query_string(), field)
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        match v.parse::<u64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
            _ => Err(ApiError::InvalidBody(format!(
                "{field}: a whole number from 1 to {max}, not {v:?}"
            ))),
        }
    };
    let limit =
        number("limit", ledger::MAX_PAGE.into())?.map_or(ledger::DEFAULT_PAGE, |n| n as u32);
    let before = number("before", i64::MAX as u64)?;
    match ledger::page(&state.pool, &name, limit, before)? {
        Some(page) => Ok(Response::json(&page)),
        None => Err(users::UserError::Unknown(name.as_str().to_string()).into()),
    }
}

/// `GET /admin/v1/usage/export?from=&to=&format=`: the admin token, or a
/// service token with the `read` scope; the rows streamed as they are read.
fn usage_export(
    state: &AppState,
    req: &Request,
    method: &str,
    ctx: &mut Ctx,
) -> Result<Response, ApiError> {
    let service_token = match authorization_headers(req).as_slice() {
        [v] => token::bearer(v).is_some_and(|t| t.starts_with(services::TOKEN_KIND)),
        _ => false,
    };
    if service_token {
        service_auth::service(state, req, ctx, Scope::Read)?;
    } else {
        check_admin(state, req, ctx)?;
    }
    allow(method, &["GET"])?;
    let one = |name: &str| {
        query_values(req.raw_query_string(), name)
            .into_iter()
            .next()
    };
    let range = export::Range::parse(one("from").as_deref(), one("to").as_deref())?;
    let format = export::Format::parse(one("format").as_deref())?;
    let slot = state.exports.take().ok_or(ApiError::ExportsBusy)?;
    let body = export::stream(&state.pool, range, format, slot)?;
    Ok(Response {
        status_code: 200,
        headers: vec![("Content-Type".into(), format.content_type().into())],
        data: rouille::ResponseBody::from_reader(body),
        upgrade: None,
    })
}

fn usage_filter(req: &Request) -> Result<Filter, ApiError> {
    let one = |name: &str| {
        query_values(req.raw_query_string(), name)
            .into_iter()
            .next()
            .filter(|v| !v.is_empty())
    };
    let day = |name: &str| {
        one(name)
            .map(|v| Day::parse(&v).map_err(|e| ApiError::InvalidBody(format!("{name}: {e}"))))
            .transpose()
    };
    Ok(Filter {
        user: one("user").map(|u| username(&u)).transpose()?,
        from: day("from")?,
        to: day("to")?,
    })
}
