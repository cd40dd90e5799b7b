//! The service API's bodies (`/v1/charge`, `/v1/holds`…): a bounded JSON
//! object, unknown fields refused, the end user named once (credentials or
//! user), amounts as whole numbers in range. Parsed here, so the handlers
//! get typed requests and a bad body changes nothing.

use rouille::Request;
use serde_json::{Map, Value};

use super::admin_body::{parse_object, read_json_body, refuse_unknown_fields};
use super::ApiError;
use crate::auth::token::Credentials;
use crate::billing::account::Who;
use crate::billing::charge::MAX_AMOUNT;
use crate::billing::holds::MAX_TTL_SECS;
use crate::model::{whole_number, UsageLabel, Username};

pub struct ChargeBody {
    pub who: Who,
    pub cost: i64,
    pub endpoint: UsageLabel,
}

pub struct HoldBody {
    pub who: Who,
    pub amount: i64,
    pub ttl_secs: u32,
    pub endpoint: UsageLabel,
}

/// The body as an object; no body reads as `{}` (a release needs none).
pub fn read(req: &Request) -> Result<Map<String, Value>, ApiError> {
    let raw = read_json_body(req)?;
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    parse_object(&raw)
}

/// The body as a keyed request's fingerprint takes it: re-serialised, so
/// that spacing and the order of the fields do not make another request
/// (serde_json's map keeps them sorted). Only a keyed request needs it.
pub fn canonical(body: &Map<String, Value>) -> Vec<u8> {
    serde_json::to_vec(body).expect("a JSON object serialises")
}

pub fn charge(body: &Map<String, Value>) -> Result<ChargeBody, ApiError> {
    refuse_unknown_fields(body, &["credentials", "user", "cost", "endpoint"])?;
    Ok(ChargeBody {
        who: who(body)?,
        cost: number(body, "cost", 0, 1)?,
        endpoint: label(body, "charge")?,
    })
}

pub fn hold(body: &Map<String, Value>) -> Result<HoldBody, ApiError> {
    refuse_unknown_fields(
        body,
        &["credentials", "user", "amount", "ttl_secs", "endpoint"],
    )?;
    if !body.contains_key("amount") {
        return Err(ApiError::InvalidBody("amount is required".into()));
    }
    Ok(HoldBody {
        who: who(body)?,
        amount: number(body, "amount", 1, 0)?,
        ttl_secs: ranged(body, "ttl_secs", 1, MAX_TTL_SECS, 300)? as u32,
        endpoint: label(body, "hold")?,
    })
}

/// A capture's `amount`: the real price, 0 to 10^12.
pub fn capture(body: &Map<String, Value>) -> Result<i64, ApiError> {
    refuse_unknown_fields(body, &["amount"])?;
    if !body.contains_key("amount") {
        return Err(ApiError::InvalidBody("amount is required".into()));
    }
    number(body, "amount", 0, 0)
}

/// A release takes no fields (an empty object, or no body).
pub fn release(body: &Map<String, Value>) -> Result<(), ApiError> {
    refuse_unknown_fields(body, &[])
}

/// Exactly one of `credentials` ("<username>:<token>", as the end user
/// sent them) and `user` (a user the service authenticated itself).
fn who(body: &Map<String, Value>) -> Result<Who, ApiError> {
    match (body.get("credentials"), body.get("user")) {
        (Some(Value::String(c)), None) => match c.split_once(':') {
            Some((username, token)) if !username.is_empty() && !token.is_empty() => {
                Ok(Who::Credentials(Credentials {
                    username: username.to_string(),
                    token: token.to_string(),
                }))
            }
            _ => Err(ApiError::InvalidBody(
                "credentials are \"<username>:<token>\"".into(),
            )),
        },
        (None, Some(Value::String(u))) => Username::parse(u)
            .map(Who::User)
            .map_err(ApiError::InvalidUsername),
        (Some(_), Some(_)) => Err(ApiError::InvalidBody(
            "send credentials or user, not both".into(),
        )),
        (None, None) => Err(ApiError::InvalidBody(
            "name the user: credentials (\"<username>:<token>\") or user".into(),
        )),
        _ => Err(ApiError::InvalidBody(
            "credentials and user are strings".into(),
        )),
    }
}

/// A whole number from `min` to 10^12; `default` when absent.
fn number(body: &Map<String, Value>, field: &str, min: i64, default: i64) -> Result<i64, ApiError> {
    ranged(body, field, min, MAX_AMOUNT, default)
}

fn ranged(
    body: &Map<String, Value>,
    field: &str,
    min: i64,
    max: i64,
    default: i64,
) -> Result<i64, ApiError> {
    let Some(v) = body.get(field) else {
        return Ok(default);
    };
    match whole_number(v) {
        Some(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::InvalidBody(format!(
            "{field} must be a whole number from {min} to {max}"
        ))),
    }
}

fn label(body: &Map<String, Value>, default: &str) -> Result<UsageLabel, ApiError> {
    let raw = match body.get("endpoint") {
        None => default,
        Some(Value::String(s)) => s,
        Some(_) => return Err(ApiError::InvalidBody("endpoint is a string".into())),
    };
    UsageLabel::parse(raw).map_err(|e| ApiError::InvalidBody(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_charge_names_its_user_once_and_defaults_the_rest() {
        let c = charge(&obj(json!({"credentials": "alice:cg_x"}))).unwrap();
        assert!(matches!(c.who, Who::Credentials(ref k) if k.username == "alice"));
        assert_eq!((c.cost, c.endpoint.as_str()), (1, "charge"));
        let c = charge(&obj(json!({"user": "bob", "cost": 0, "endpoint": "llm"}))).unwrap();
        assert!(matches!(c.who, Who::User(ref u) if u.as_str() == "bob"));
        assert_eq!((c.cost, c.endpoint.as_str()), (0, "llm"));
        for bad in [
            json!({}),
            json!({"user": "a", "credentials": "a:b"}),
            json!({"credentials": "nocolon"}),
            json!({"credentials": ":t"}),
            json!({"user": 5}),
            json!({"user": "a b"}),
            json!({"user": "a", "cost": -1}),
            json!({"user": "a", "cost": 1.5}),
            json!({"user": "a", "cost": MAX_AMOUNT + 1}),
            json!({"user": "a", "cost": "3"}),
            json!({"user": "a", "endpoint": ""}),
            json!({"user": "a", "extra": 1}),
        ] {
            assert!(charge(&obj(bad.clone())).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn a_hold_needs_an_amount_of_at_least_one_and_a_bounded_ttl() {
        let h = hold(&obj(json!({"user": "a", "amount": 75}))).unwrap();
        assert_eq!(
            (h.amount, h.ttl_secs, h.endpoint.as_str()),
            (75, 300, "hold")
        );
        for bad in [
            json!({"user": "a"}),
            json!({"user": "a", "amount": 0}),
            json!({"user": "a", "amount": 1, "ttl_secs": 0}),
            json!({"user": "a", "amount": 1, "ttl_secs": 86_401}),
        ] {
            assert!(hold(&obj(bad.clone())).is_err(), "{bad} was accepted");
        }
        assert_eq!(capture(&obj(json!({"amount": 0}))).unwrap(), 0);
        assert!(capture(&obj(json!({}))).is_err());
        assert!(release(&obj(json!({}))).is_ok());
        assert!(release(&obj(json!({"amount": 1}))).is_err());
    }
}
