//! Every error a client can get, mapped to its status, code and headers in
//! ONE place. Clients get a short message; the cause goes to the log.

use rouille::Response;
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    Unauthorized,
    AmbiguousCredentials,
    InsufficientCredit {
        credit: i64,
        cost: i64,
        retry_after: Option<u64>,
    },
    InvalidBank,
    UnknownBank,
    Unavailable,
    NotFound,
    MethodNotAllowed,
    HeadersTooLarge,
    InvalidIdempotencyKey,
    TooManyFailures {
        retry_after: u64,
    },
    AdminDisabled,
    UserExists(String),
    UnknownUser(String),
    InvalidUsername,
    InvalidCredit(String),
    InvalidBody(String),
    UnknownJob(String),
    Internal,
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::Unauthorized => 401,
            ApiError::AmbiguousCredentials
            | ApiError::InvalidBank
            | ApiError::InvalidIdempotencyKey
            | ApiError::InvalidUsername
            | ApiError::InvalidCredit(_)
            | ApiError::InvalidBody(_) => 400,
            ApiError::InsufficientCredit { .. } => 402,
            ApiError::AdminDisabled => 403,
            ApiError::UnknownBank
            | ApiError::NotFound
            | ApiError::UnknownUser(_)
            | ApiError::UnknownJob(_) => 404,
            ApiError::MethodNotAllowed => 405,
            ApiError::UserExists(_) => 409,
            ApiError::TooManyFailures { .. } => 429,
            ApiError::HeadersTooLarge => 431,
            ApiError::Internal => 500,
            ApiError::Unavailable => 503,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::AmbiguousCredentials => "ambiguous_credentials",
            ApiError::InsufficientCredit { .. } => "insufficient_credit",
            ApiError::InvalidBank => "invalid_bank",
            ApiError::UnknownBank => "unknown_bank",
            ApiError::Unavailable => "unavailable",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::HeadersTooLarge => "headers_too_large",
            ApiError::InvalidIdempotencyKey => "invalid_idempotency_key",
            ApiError::TooManyFailures { .. } => "too_many_failures",
            ApiError::AdminDisabled => "admin_disabled",
            ApiError::UserExists(_) => "user_exists",
            ApiError::UnknownUser(_) => "unknown_user",
            ApiError::InvalidUsername => "invalid_username",
            ApiError::InvalidCredit(_) => "invalid_credit",
            ApiError::InvalidBody(_) => "invalid_body",
            ApiError::UnknownJob(_) => "unknown_job",
            ApiError::Internal => "internal",
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::Unauthorized => {
                "missing or invalid credentials; send Authorization: Bearer <username>:<token>"
                    .into()
            }
            ApiError::AmbiguousCredentials => {
                "credentials were sent in more than one place; send them once".into()
            }
            ApiError::InsufficientCredit { credit, cost, .. } => {
                format!("this request costs {cost} credit(s) and {credit} remain")
            }
            ApiError::InvalidBank => "a bank code is 1 to 16 characters of A-Z a-z 0-9".into(),
            ApiError::UnknownBank => "no bank with this code".into(),
            ApiError::Unavailable => "the service is temporarily unavailable; retry later".into(),
            ApiError::NotFound => "no such route".into(),
            ApiError::MethodNotAllowed => "this method is not allowed on this route".into(),
            ApiError::HeadersTooLarge => "the request headers exceed 16 KiB".into(),
            ApiError::InvalidIdempotencyKey => {
                "an Idempotency-Key is 1 to 128 visible ASCII characters".into()
            }
            ApiError::TooManyFailures { .. } => {
                "too many failed authentications from this address; retry later".into()
            }
            ApiError::AdminDisabled => {
                "the admin API is disabled: CREDITGATE_ADMIN_TOKEN is not set".into()
            }
            ApiError::UserExists(u) => format!("user {u:?} already exists"),
            ApiError::UnknownUser(u) => format!("no user {u:?}"),
            ApiError::InvalidUsername => {
                "a username is 1 to 64 characters of A-Z a-z 0-9 . _ -".into()
            }
            ApiError::InvalidCredit(m) | ApiError::InvalidBody(m) => m.clone(),
            ApiError::UnknownJob(j) => format!("no job {j:?}"),
            ApiError::Internal => "internal error".into(),
        }
    }

    pub fn response(&self) -> Response {
        let body = json!({ "error": self.code(), "message": self.message() });
        let mut r = Response::json(&body).with_status_code(self.status());
        match self {
            ApiError::Unauthorized => {
                r = r.with_additional_header("WWW-Authenticate", "Bearer realm=\"creditgate\"");
            }
            ApiError::InsufficientCredit {
                credit,
                retry_after,
                ..
            } => {
                r = r.with_additional_header("X-Credit-Remaining", credit.to_string());
                if let Some(s) = retry_after {
                    r = r.with_additional_header("Retry-After", s.to_string());
                }
            }
            ApiError::Unavailable => r = r.with_additional_header("Retry-After", "2"),
            ApiError::TooManyFailures { retry_after } => {
                r = r.with_additional_header("Retry-After", retry_after.to_string());
            }
            _ => {}
        }
        r
    }
}
