//! The admin API's body rules, shared by the user and route routes
//! (`admin`) and the key routes (`admin_keys`): a bounded JSON object,
//! unknown fields refused, credit amounts as whole numbers. Its own file so
//! that `admin` and `admin_keys` do not import each other.

use rouille::Request;
use serde_json::{Map, Value};

use super::extract::{bounded_body, BodyError};
use super::ApiError;
use crate::model::{whole_number, Credit, Username};

/// Admin bodies are small; anything bigger is refused unread.
const MAX_BODY_BYTES: u64 = 64 * 1024;

pub(super) fn username(raw: &str) -> Result<Username, ApiError> {
    Username::parse(raw).map_err(ApiError::InvalidUsername)
}

/// The request body as a JSON object: at most 64 KiB, `application/json`.
pub(super) fn read_object(req: &Request) -> Result<Map<String, Value>, ApiError> {
    parse_object(&read_json_body(req)?)
}

/// The body's bytes: at most 64 KiB, `application/json` if a type is given.
pub(super) fn read_json_body(req: &Request) -> Result<Vec<u8>, ApiError> {
    if let Some(ct) = req.header("Content-Type") {
        if !ct
            .trim()
            .to_ascii_lowercase()
            .starts_with("application/json")
        {
            return Err(ApiError::InvalidBody(
                "send the body as Content-Type: application/json".into(),
            ));
        }
    }
    bounded_body(req, MAX_BODY_BYTES).map_err(|e| match e {
        BodyError::Unreadable => ApiError::InvalidBody("the body could not be read".into()),
        BodyError::TooLarge => ApiError::InvalidBody("the body is over 64 KiB".into()),
    })
}

/// A body as a JSON object.
pub(super) fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::InvalidBody(
            "the body must be a JSON object".into(),
        )),
        // serde_json refuses numbers beyond f64 (such as 1e309) while
        // parsing, before we can see which field held them; in our bodies
        // only credit amounts are numbers.
        Err(e) if e.to_string().starts_with("number out of range") => Err(ApiError::InvalidCredit(
            "credit amounts are whole numbers within i64".into(),
        )),
        Err(e) => Err(ApiError::InvalidBody(format!(
            "the body is not valid JSON: {e}"
        ))),
    }
}

/// A number to add: a whole number within i64 (`5.0` included, see
/// `model::whole_number`). Fractions, strings, null and overflows are
/// refused.
pub(super) fn credit_number(field: &str, v: &Value) -> Result<i64, ApiError> {
    whole_number(v).ok_or_else(|| {
        ApiError::InvalidCredit(format!("{field} must be a whole number within i64"))
    })
}

/// A credit amount: a JSON integer from 0 to i64's maximum.
pub(super) fn credit_amount(field: &str, v: &Value) -> Result<Credit, ApiError> {
    Credit::new(credit_number(field, v)?)
        .map_err(|e| ApiError::InvalidCredit(format!("{field}: {e}")))
}

pub(super) fn refuse_unknown_fields(
    body: &Map<String, Value>,
    known: &[&str],
) -> Result<(), ApiError> {
    match body.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ApiError::InvalidBody(format!(
            "unknown field {k:?}; expected one of {known:?}"
        ))),
        None => Ok(()),
    }
}

pub(super) fn optional_string(
    body: &Map<String, Value>,
    field: &str,
) -> Result<Option<String>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::InvalidBody(format!("{field} must be a string"))),
    }
}
