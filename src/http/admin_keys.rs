//! Admin routes for what guards a user's access: keys
//! (`/admin/v1/users/<name>/keys[/<id>]`), rotation with a grace period
//! (`…/rotate`), the rate limit (`…/limit`) and the low-credit notice
//! (`…/notify`). Each arm: extract → one domain call → JSON.

use rouille::{Request, Response};
use serde_json::{json, Map, Value};

use super::admin_body::{
    credit_amount, optional_string, read_object, refuse_unknown_fields, username,
};
use super::{allow, ApiError};
use crate::app::AppState;
use crate::model::{parse_label, parse_time, whole_number, RateLimit, Span};
use crate::users;
use crate::users::keys::{self, KeyError, NewKey};

pub fn route(
    state: &AppState,
    req: &Request,
    method: &str,
    name: &str,
    sub: &str,
    rest: &[&str],
) -> Result<Response, ApiError> {
    match (method, sub, rest) {
        (_, "rotate", []) => {
            allow(method, &["POST"])?;
            rotate(state, req, name)
        }
        (_, "keys", []) => {
            allow(method, &["GET", "POST"])?;
            if method == "GET" {
                let list = keys::list(&state.pool, &username(name)?)?;
                Ok(Response::json(&json!({ "keys": list })))
            } else {
                add_key(state, req, name)
            }
        }
        (_, "keys", [id]) => {
            allow(method, &["DELETE"])?;
            let id = id
                .parse()
                .map_err(|_| KeyError::UnknownKey(format!("{id:?}")))?;
            Ok(Response::json(&keys::revoke(
                &state.pool,
                &username(name)?,
                id,
            )?))
        }
        (_, "limit", []) => {
            allow(method, &["POST"])?;
            set_limit(state, req, name)
        }
        (_, "notify", []) => {
            allow(method, &["POST"])?;
            set_notify(state, req, name)
        }
        _ => Err(ApiError::NotFound),
    }
}

/// The body, or an empty object when there is none (`rotate` may be sent bare).
fn optional_body(req: &Request) -> Result<Map<String, Value>, ApiError> {
    let bare = req.header("Content-Length").is_none_or(|n| n.trim() == "0")
        && req.header("Transfer-Encoding").is_none();
    if bare {
        Ok(Map::new())
    } else {
        read_object(req)
    }
}

fn rotate(state: &AppState, req: &Request, name: &str) -> Result<Response, ApiError> {
    let name = username(name)?;
    let body = optional_body(req)?;
    refuse_unknown_fields(&body, &["grace_secs"])?;
    let grace = match body.get("grace_secs") {
        None | Some(Value::Null) => Span::from_secs(0),
        Some(v) => whole_number(v)
            .filter(|s| (0..=10 * 366 * 86_400).contains(s))
            .map(|s| Span::from_secs(s as u64))
            .ok_or_else(|| {
                ApiError::InvalidBody("grace_secs is a whole number of seconds, 0 or more".into())
            })?,
    };
    let token = keys::rotate(&state.pool, &name, grace)?;
    Ok(Response::json(
        &json!({ "username": name.as_str(), "token": token }),
    ))
}

fn add_key(state: &AppState, req: &Request, name: &str) -> Result<Response, ApiError> {
    let name = username(name)?;
    let body = optional_body(req)?;
    refuse_unknown_fields(&body, &["label", "expires_at"])?;
    let label = optional_string(&body, "label")?
        .map(|l| parse_label(&l).map_err(|e| ApiError::InvalidBody(e.to_string())))
        .transpose()?;
    let expires_at = optional_string(&body, "expires_at")?
        .map(|t| parse_time(&t).map_err(|e| ApiError::InvalidBody(format!("expires_at: {e}"))))
        .transpose()?;
    let (key, token) = keys::create(&state.pool, &name, &NewKey { label, expires_at }, None)?;
    let mut out = serde_json::to_value(&key).expect("keys serialise");
    out["token"] = Value::String(token);
    Ok(Response::json(&out).with_status_code(201))
}

/// `{"quota": N, "window_secs": W}`, or `{"quota": null}` for none.
pub(super) fn rate_limit(body: &Map<String, Value>) -> Result<Option<RateLimit>, ApiError> {
    refuse_unknown_fields(body, &["quota", "window_secs"])
        .map_err(|e| ApiError::InvalidRate(e.message()))?;
    let number = |field: &str| {
        body.get(field)
            .and_then(whole_number)
            .ok_or_else(|| ApiError::InvalidRate(format!("{field} must be a whole number")))
    };
    match body.get("quota") {
        // Only an explicit `"quota": null` removes a limit: a body without
        // `quota` (`{"window_secs": 60}`) is a mistake, not "no limit".
        None => Err(ApiError::InvalidRate(
            "quota is required: {\"quota\": N, \"window_secs\": W}, or {\"quota\": null} for none"
                .into(),
        )),
        Some(Value::Null) => Ok(None),
        Some(_) => RateLimit::new(number("quota")?, number("window_secs")?)
            .map(Some)
            .map_err(|e| ApiError::InvalidRate(e.to_string())),
    }
}

fn set_limit(state: &AppState, req: &Request, name: &str) -> Result<Response, ApiError> {
    let name = username(name)?;
    let limit = rate_limit(&read_object(req)?)?;
    Ok(Response::json(&users::set_rate_limit(
        &state.pool,
        &name,
        limit,
    )?))
}

fn set_notify(state: &AppState, req: &Request, name: &str) -> Result<Response, ApiError> {
    let name = username(name)?;
    let body = read_object(req)?;
    refuse_unknown_fields(&body, &["low_credit"])?;
    let threshold = match body.get("low_credit") {
        None => {
            return Err(ApiError::InvalidBody(
                "send {\"low_credit\": N} or {\"low_credit\": null}".into(),
            ))
        }
        Some(Value::Null) => None,
        Some(v) => Some(credit_amount("low_credit", v)?),
    };
    Ok(Response::json(&users::set_low_credit(
        &state.pool,
        &name,
        threshold,
    )?))
}
