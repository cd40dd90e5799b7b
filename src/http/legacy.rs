//! `CREDITGATE_LEGACY_ANSWERS=on`: the bank route answers as the Flask
//! sample did, so that a script written for it runs unchanged after
//! `import-legacy`. One function maps today's answer to the sample's; the
//! handlers do not know about it. Charging, idempotency, the brake and the
//! log are untouched: this runs after them, on the answer only.

use std::io::Read;

use rouille::Response;
use serde_json::{json, Value};

use super::ApiError;

/// The sample's texts, byte for byte.
pub const NO_CREDIT: &str = "No enough credit for this account";
pub const NOT_AUTHORIZED: &str = "Access Not Authorized";

/// The sample's answer for today's: 201 `{"Data": <body>}` for a paid 200,
/// 201 `{"Status": …}` for no credit (402) and bad credentials (401, without
/// `WWW-Authenticate`). Statuses the sample never had keep today's answer.
/// `X-Credit-Remaining` (and `Idempotency-Replayed`, `RateLimit*`) stay.
pub fn answer(today: Result<Response, ApiError>) -> Result<Response, ApiError> {
    let response = match today {
        Err(ApiError::Unauthorized) => ApiError::Unauthorized.response(),
        Err(e @ ApiError::InsufficientCredit { .. }) => e.response(),
        other => other?,
    };
    let body = match response.status_code {
        200 => match json_body(response.data) {
            Some(data) => json!({ "Data": data }),
            // Cannot happen for our own JSON; say so rather than guess.
            None => return Err(ApiError::Internal),
        },
        401 => json!({ "Status": NOT_AUTHORIZED }),
        402 => json!({ "Status": NO_CREDIT }),
        _ => return Ok(response),
    };
    let mut legacy = Response::json(&body).with_status_code(201);
    for (name, value) in response.headers {
        let kept = [
            "X-Credit-Remaining",
            "Idempotency-Replayed",
            "RateLimit",
            "RateLimit-Policy",
        ];
        if kept.iter().any(|k| name.eq_ignore_ascii_case(k)) {
            legacy = legacy.with_additional_header(name, value);
        }
    }
    Ok(legacy)
}

fn json_body(data: rouille::ResponseBody) -> Option<Value> {
    let (mut reader, _) = data.into_reader_and_size();
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(r: Response) -> (u16, Value, Vec<(String, String)>) {
        let status = r.status_code;
        let headers = r
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        (status, json_body(r.data).unwrap(), headers)
    }

    #[test]
    fn a_paid_answer_becomes_201_data_and_keeps_the_credit_header() {
        let today = Response::json(&json!({ "bank": "BOFA", "credit_remaining": 9 }))
            .with_additional_header("X-Credit-Remaining", "9");
        let (status, json, headers) = body(answer(Ok(today)).unwrap());
        assert_eq!(status, 201);
        assert_eq!(
            json,
            json!({ "Data": { "bank": "BOFA", "credit_remaining": 9 } })
        );
        assert!(headers.contains(&("X-Credit-Remaining".into(), "9".into())));
    }

    #[test]
    fn no_credit_and_bad_credentials_become_the_samples_status_texts() {
        let poor = ApiError::InsufficientCredit {
            credit_remaining: 0,
            cost: 1,
            retry_after: None,
            rate: None,
        };
        let (status, json, headers) = body(answer(Err(poor)).unwrap());
        assert_eq!((status, json), (201, json!({ "Status": NO_CREDIT })));
        assert!(headers
            .iter()
            .any(|(k, v)| k == "X-Credit-Remaining" && v == "0"));
        let (status, json, headers) = body(answer(Err(ApiError::Unauthorized)).unwrap());
        assert_eq!((status, json), (201, json!({ "Status": NOT_AUTHORIZED })));
        assert!(!headers.iter().any(|(k, _)| k == "WWW-Authenticate"));
    }

    #[test]
    fn statuses_the_sample_never_had_keep_todays_answer() {
        for e in [
            ApiError::UnknownBank,
            ApiError::MethodNotAllowed {
                allow: "GET".into(),
            },
            ApiError::Unavailable,
            ApiError::TooManyFailures { retry_after: 3 },
        ] {
            let status = e.status();
            match answer(Err(e)) {
                Err(kept) => assert_eq!(kept.status(), status),
                Ok(r) => panic!("{status} became {}", r.status_code),
            }
        }
        let replayed_404 = ApiError::UnknownBank.response();
        assert_eq!(answer(Ok(replayed_404)).unwrap().status_code, 404);
    }
}
