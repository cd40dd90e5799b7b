//! Every error a client can get, mapped to its status, code and headers in
//! ONE place. Domain errors arrive through the `From` impls below, and a
//! client's message is the domain error's own `Display`, written once where
//! the rule lives. Database failures reach clients as an opaque 503; their
//! cause goes to the log (see `http::log_failure`).

use rouille::Response;
use serde_json::json;

use crate::billing::account::RateState;
use crate::billing::export::ExportError;
use crate::billing::ratelimit;
use crate::billing::Insufficient;
use crate::db::DbError;
use crate::gateway::forward_auth::OriginalError;
use crate::gateway::store::RouteError;
use crate::gateway::{GatewayError, Unanswered};
use crate::model::ParseError;
use crate::services::{Scope, ServiceError};
use crate::users::keys::KeyError;
use crate::users::UserError;
use crate::webhooks::WebhookError;

#[derive(Debug)]
pub enum ApiError {
    Unauthorized,
    /// A wrong or missing admin token: the same 401 body as `Unauthorized`,
    /// with a message naming the admin form.
    AdminUnauthorized,
    /// No, a wrong or a revoked service token on a `/v1/` route: the same
    /// 401 body as `Unauthorized`, with a message about service tokens.
    ServiceUnauthorized,
    /// A valid service token without the scope the route needs: 403.
    ScopeDenied(Scope),
    Service(ServiceError),
    Webhook(WebhookError),
    AmbiguousCredentials,
    InsufficientCredit {
        credit_remaining: i64,
        cost: i64,
        retry_after: Option<u64>,
        /// A limited user's 402 still carries the RateLimit headers.
        rate: Option<RateState>,
    },
    /// Over the user's rate limit: 429 with Retry-After and RateLimit*.
    RateLimited(RateState),
    Key(KeyError),
    InvalidRate(String),
    InvalidBank(ParseError),
    UnknownBank,
    /// Stopping, or nothing to serve with: retry later.
    Unavailable,
    /// The database failed; clients see `Unavailable`.
    Database(DbError),
    NotFound,
    /// `allow`: the `Allow` header, the methods the path does answer
    /// (RFC 9110 §15.5.6 requires it on a 405).
    MethodNotAllowed {
        allow: String,
    },
    HeadersTooLarge,
    InvalidIdempotencyKey(ParseError),
    TooManyFailures {
        retry_after: u64,
    },
    AdminDisabled,
    User(UserError),
    InvalidUsername(ParseError),
    InvalidCredit(String),
    InvalidBody(String),
    /// A usage export's days or format: 400 `invalid_range` or
    /// `invalid_format`.
    Export(ExportError),
    UnknownJob(String),
    Route(RouteError),
    /// A gateway request body over `CREDITGATE_MAX_BODY_BYTES`.
    BodyTooLarge {
        limit: u64,
    },
    /// The same Idempotency-Key is still in flight on a gateway route.
    IdempotencyInProgress,
    /// A gateway route's upstream could not be reached (refunded).
    UpstreamUnavailable(Unanswered),
    /// A gateway route's upstream did not answer in time (refunded).
    UpstreamTimeout(Unanswered),
    /// The route's bulkhead is full: nothing charged or forwarded.
    RouteBusy,
    /// `export::MAX_RUNNING` usage exports are running on this instance.
    ExportsBusy,
    /// A body on GET, HEAD, OPTIONS or DELETE to a gateway route.
    BodyNotAllowed,
    /// A gateway path an upstream could read another way (`;`, `%25`,
    /// overlong or invalid UTF-8): refused before anything is charged.
    InvalidPath(&'static str),
    /// The same Idempotency-Key with another request (method, path, query,
    /// body): 422, nothing charged.
    IdempotencyKeyReused,
    /// No hold with this id made by the calling service.
    UnknownHold,
    /// The hold was settled otherwise before (its state named): 409.
    HoldSettled(&'static str),
    /// The user has as many open holds as a user may.
    TooManyHolds,
    /// The first answer under this key was too large to store: a retry
    /// cannot be answered without forwarding it again.
    IdempotencyAnswerNotStored,
    /// `/v1/forward-auth` while `CREDITGATE_FORWARD_AUTH_SECRET` is unset.
    ForwardAuthDisabled,
    /// `/v1/forward-auth` without the proxy's secret, or a wrong one.
    ForwardAuthForbidden,
    /// The proxy did not say (or said twice, differently) which request
    /// it asks about.
    InvalidOriginal(OriginalError),
    Internal,
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Db(e) => ApiError::Database(e),
            e => ApiError::Key(e),
        }
    }
}

impl From<GatewayError> for ApiError {
    fn from(e: GatewayError) -> Self {
        match e {
            // The HTTP layer counts and logs a failed authentication itself.
            GatewayError::Unauthorized(_) => ApiError::Unauthorized,
            GatewayError::Insufficient(short, rate) => {
                ApiError::insufficient(&short, rate, chrono::Utc::now())
            }
            GatewayError::RateLimited(rate) => ApiError::RateLimited(rate),
            GatewayError::InProgress => ApiError::IdempotencyInProgress,
            GatewayError::KeyReused => ApiError::IdempotencyKeyReused,
            GatewayError::AnswerNotStored => ApiError::IdempotencyAnswerNotStored,
            GatewayError::Unreachable(u) => ApiError::UpstreamUnavailable(u),
            GatewayError::Timeout(u) => ApiError::UpstreamTimeout(u),
            GatewayError::Db(e) => ApiError::Database(e),
        }
    }
}

impl ApiError {
    /// The one 402: what `billing::decide` said is short, for a bank
    /// lookup (its answer or its replay) and a gateway route alike. `now`
    /// turns the refill moment into a Retry-After; `rate` is a limited
    /// user's state, whose headers a 402 carries too.
    pub fn insufficient(
        short: &Insufficient,
        rate: Option<RateState>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> ApiError {
        ApiError::InsufficientCredit {
            credit_remaining: short.credit_remaining,
            cost: short.cost,
            retry_after: short.retry_after(now.timestamp()),
            rate,
        }
    }
}

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::Db(e) => ApiError::Database(e),
            e => ApiError::Route(e),
        }
    }
}

impl From<ExportError> for ApiError {
    fn from(e: ExportError) -> ApiError {
        ApiError::Export(e)
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        ApiError::Database(e)
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Db(e) => ApiError::Database(e),
            e => ApiError::Service(e),
        }
    }
}

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::Db(e) => ApiError::Database(e),
            e => ApiError::Webhook(e),
        }
    }
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::Db(e) => ApiError::Database(e),
            e => ApiError::User(e),
        }
    }
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::Unauthorized
            | ApiError::AdminUnauthorized
            | ApiError::ServiceUnauthorized => 401,
            ApiError::AmbiguousCredentials
            | ApiError::Service(ServiceError::Invalid(_))
            | ApiError::Webhook(WebhookError::Invalid(_))
            | ApiError::InvalidBank(_)
            | ApiError::InvalidIdempotencyKey(_)
            | ApiError::InvalidUsername(_)
            | ApiError::InvalidCredit(_)
            | ApiError::User(UserError::InvalidCredit(_))
            | ApiError::Route(RouteError::Invalid(_))
            | ApiError::Key(KeyError::TooMany)
            | ApiError::InvalidRate(_)
            | ApiError::BodyNotAllowed
            | ApiError::InvalidPath(_)
            | ApiError::TooManyHolds
            | ApiError::InvalidOriginal(_)
            | ApiError::InvalidBody(_)
            | ApiError::Export(_) => 400,
            ApiError::InsufficientCredit { .. } => 402,
            ApiError::AdminDisabled
            | ApiError::ScopeDenied(_)
            | ApiError::ForwardAuthDisabled
            | ApiError::ForwardAuthForbidden => 403,
            ApiError::UnknownBank
            | ApiError::NotFound
            | ApiError::User(UserError::Unknown(_))
            | ApiError::Route(RouteError::Unknown(_))
            | ApiError::Key(KeyError::UnknownUser(_))
            | ApiError::Key(KeyError::UnknownKey(_))
            | ApiError::Service(ServiceError::Unknown(_))
            | ApiError::Webhook(WebhookError::Unknown(_))
            | ApiError::UnknownHold
            | ApiError::UnknownJob(_) => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::User(UserError::Exists(_))
            | ApiError::Route(RouteError::Exists(_))
            | ApiError::Service(ServiceError::Exists(_))
            | ApiError::IdempotencyInProgress
            | ApiError::HoldSettled(_)
            | ApiError::IdempotencyAnswerNotStored => 409,
            ApiError::BodyTooLarge { .. } => 413,
            ApiError::IdempotencyKeyReused => 422,
            ApiError::TooManyFailures { .. } | ApiError::RateLimited(_) => 429,
            ApiError::HeadersTooLarge => 431,
            ApiError::Internal => 500,
            ApiError::UpstreamUnavailable(_) => 502,
            ApiError::UpstreamTimeout(_) => 504,
            ApiError::Unavailable
            | ApiError::RouteBusy
            | ApiError::ExportsBusy
            | ApiError::Database(_)
            | ApiError::User(UserError::Db(_))
            | ApiError::Route(RouteError::Db(_))
            | ApiError::Service(ServiceError::Db(_))
            | ApiError::Webhook(WebhookError::Db(_))
            | ApiError::Key(KeyError::Db(_)) => 503,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized
            | ApiError::AdminUnauthorized
            | ApiError::ServiceUnauthorized => "unauthorized",
            ApiError::ScopeDenied(_) => "scope_denied",
            ApiError::Service(ServiceError::Invalid(_)) => "invalid_service",
            ApiError::Service(ServiceError::Exists(_)) => "service_exists",
            ApiError::Service(ServiceError::Unknown(_)) => "unknown_service",
            ApiError::Webhook(WebhookError::Invalid(_)) => "invalid_webhook",
            ApiError::Webhook(WebhookError::Unknown(_)) => "unknown_webhook",
            ApiError::AmbiguousCredentials => "ambiguous_credentials",
            ApiError::InsufficientCredit { .. } => "insufficient_credit",
            ApiError::InvalidBank(_) => "invalid_bank",
            ApiError::UnknownBank => "unknown_bank",
            ApiError::Unavailable
            | ApiError::Database(_)
            | ApiError::User(UserError::Db(_))
            | ApiError::Route(RouteError::Db(_))
            | ApiError::Service(ServiceError::Db(_))
            | ApiError::Webhook(WebhookError::Db(_))
            | ApiError::Key(KeyError::Db(_)) => "unavailable",
            ApiError::RateLimited(_) => "rate_limited",
            ApiError::Key(KeyError::TooMany) => "too_many_keys",
            ApiError::Key(KeyError::UnknownKey(_)) => "unknown_key",
            ApiError::Key(KeyError::UnknownUser(_)) => "unknown_user",
            ApiError::InvalidRate(_) => "invalid_rate",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::HeadersTooLarge => "headers_too_large",
            ApiError::InvalidIdempotencyKey(_) => "invalid_idempotency_key",
            ApiError::TooManyFailures { .. } => "too_many_failures",
            ApiError::AdminDisabled => "admin_disabled",
            ApiError::User(UserError::Exists(_)) => "user_exists",
            ApiError::User(UserError::Unknown(_)) => "unknown_user",
            ApiError::InvalidUsername(_) => "invalid_username",
            ApiError::InvalidCredit(_) | ApiError::User(UserError::InvalidCredit(_)) => {
                "invalid_credit"
            }
            ApiError::InvalidBody(_) => "invalid_body",
            ApiError::Export(ExportError::UnknownFormat(_)) => "invalid_format",
            ApiError::Export(_) => "invalid_range",
            ApiError::UnknownJob(_) => "unknown_job",
            ApiError::Route(RouteError::Invalid(_)) => "invalid_route",
            ApiError::Route(RouteError::Exists(_)) => "route_exists",
            ApiError::Route(RouteError::Unknown(_)) => "unknown_route",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::IdempotencyInProgress => "idempotency_in_progress",
            ApiError::UpstreamUnavailable(_) => "upstream_unavailable",
            ApiError::UpstreamTimeout(_) => "upstream_timeout",
            ApiError::RouteBusy => "route_busy",
            ApiError::ExportsBusy => "exports_busy",
            ApiError::BodyNotAllowed => "body_not_allowed",
            ApiError::InvalidPath(_) => "invalid_path",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::IdempotencyAnswerNotStored => "idempotency_answer_not_stored",
            ApiError::UnknownHold => "unknown_hold",
            ApiError::HoldSettled(_) => "hold_settled",
            ApiError::TooManyHolds => "too_many_holds",
            ApiError::ForwardAuthDisabled => "forward_auth_disabled",
            ApiError::ForwardAuthForbidden => "forward_auth_forbidden",
            ApiError::InvalidOriginal(_) => "invalid_original_request",
            ApiError::Internal => "internal",
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::Unauthorized => {
                "missing or invalid credentials; send Authorization: Bearer <username>:<token>"
                    .into()
            }
            ApiError::AdminUnauthorized => {
                "missing or invalid admin token; send Authorization: Bearer <admin token> \
                 (the value of CREDITGATE_ADMIN_TOKEN)"
                    .into()
            }
            ApiError::ServiceUnauthorized => {
                "missing or invalid service token; send one Authorization: Bearer cgs_<token> header"
                    .into()
            }
            ApiError::ScopeDenied(scope) => {
                format!("this service token lacks the \"{scope}\" scope this route needs")
            }
            ApiError::AmbiguousCredentials => {
                "credentials were sent in more than one place; send them once".into()
            }
            ApiError::InsufficientCredit {
                credit_remaining,
                cost,
                ..
            } => {
                format!("this request costs {cost} credit(s) and {credit_remaining} remain")
            }
            ApiError::InvalidBank(e)
            | ApiError::InvalidIdempotencyKey(e)
            | ApiError::InvalidUsername(e) => e.to_string(),
            ApiError::UnknownBank => "no bank with this code".into(),
            ApiError::Unavailable
            | ApiError::Database(_)
            | ApiError::User(UserError::Db(_))
            | ApiError::Route(RouteError::Db(_))
            | ApiError::Service(ServiceError::Db(_))
            | ApiError::Key(KeyError::Db(_)) => {
                "the service is temporarily unavailable; retry later".into()
            }
            ApiError::RateLimited(r) => format!(
                "over this user's rate limit of {}; retry after {} s",
                r.limit, r.decision.retry_after_secs
            ),
            ApiError::Key(e) => e.to_string(),
            ApiError::InvalidRate(m) => m.clone(),
            ApiError::NotFound => "no such route".into(),
            ApiError::MethodNotAllowed { .. } => "this method is not allowed on this route".into(),
            ApiError::HeadersTooLarge => "the request headers exceed 16 KiB".into(),
            ApiError::TooManyFailures { .. } => {
                "too many failed authentications from this address; retry later".into()
            }
            ApiError::AdminDisabled => {
                "the admin API is disabled: CREDITGATE_ADMIN_TOKEN is not set".into()
            }
            ApiError::User(e) => e.to_string(),
            ApiError::Service(e) => e.to_string(),
            ApiError::Webhook(e) => e.to_string(),
            ApiError::InvalidCredit(m) | ApiError::InvalidBody(m) => m.clone(),
            ApiError::Export(e) => e.to_string(),
            ApiError::UnknownJob(j) => format!("no job {j:?}"),
            ApiError::Route(e) => e.to_string(),
            ApiError::BodyTooLarge { limit } => {
                format!("the request body is over {limit} bytes; nothing was charged")
            }
            ApiError::IdempotencyInProgress => {
                "a request with this Idempotency-Key is still in flight; retry in a second".into()
            }
            ApiError::UpstreamUnavailable(u) => {
                format!("the upstream could not be reached; {}", refund_note(u))
            }
            ApiError::UpstreamTimeout(u) => {
                format!("the upstream did not answer in time; {}", refund_note(u))
            }
            ApiError::ExportsBusy => format!(
                "{} usage exports are running on this instance, as many as may; retry in a second",
                crate::billing::export::MAX_RUNNING
            ),
            ApiError::RouteBusy => {
                "this route has as many requests in flight as it may; nothing was charged, \
                 retry in a second"
                    .into()
            }
            ApiError::BodyNotAllowed => {
                "a GET, HEAD, OPTIONS or DELETE request to a gateway route carries no body".into()
            }
            ApiError::InvalidPath(why) => format!("the path is refused: {why}"),
            ApiError::IdempotencyKeyReused => {
                "this Idempotency-Key was used with a different request (method, path, query or \
                 body); use a new key for a new request; nothing was charged"
                    .into()
            }
            ApiError::IdempotencyAnswerNotStored => {
                "the first answer under this Idempotency-Key was too large to store, so it \
                 cannot be replayed; nothing was charged or forwarded"
                    .into()
            }
            ApiError::UnknownHold => "this service has no hold with this id".into(),
            ApiError::HoldSettled(state) => format!(
                "the hold is already {state}; a capture or release settles a hold once"
            ),
            ApiError::TooManyHolds => format!(
                "this user has {} open holds, as many as a user may; capture or release some",
                crate::billing::holds::MAX_OPEN_PER_USER
            ),
            ApiError::ForwardAuthDisabled => {
                "forward authentication is disabled: CREDITGATE_FORWARD_AUTH_SECRET is not set"
                    .into()
            }
            ApiError::ForwardAuthForbidden => {
                "only the proxy may call this endpoint: X-Creditgate-Forward-Secret is missing \
                 or wrong"
                    .into()
            }
            ApiError::InvalidOriginal(e) => e.to_string(),
            ApiError::Internal => "internal error".into(),
        }
    }

    /// The JSON body every error answers with.
    pub fn body(&self) -> serde_json::Value {
        let mut body = json!({ "error": self.code(), "message": self.message() });
        if let ApiError::HoldSettled(state) = self {
            body["state"] = json!(state);
        }
        body
    }

    pub fn response(&self) -> Response {
        let mut r = Response::json(&self.body()).with_status_code(self.status());
        match self {
            ApiError::Unauthorized
            | ApiError::AdminUnauthorized
            | ApiError::ServiceUnauthorized => {
                r = r.with_additional_header("WWW-Authenticate", "Bearer realm=\"creditgate\"");
            }
            ApiError::InsufficientCredit {
                credit_remaining,
                retry_after,
                rate,
                ..
            } => {
                r = r.with_additional_header("X-Credit-Remaining", credit_remaining.to_string());
                if let Some(s) = retry_after {
                    r = r.with_additional_header("Retry-After", s.to_string());
                }
                r = with_rate(r, rate.as_ref());
            }
            ApiError::RateLimited(rate) => {
                r = r.with_additional_header(
                    "Retry-After",
                    rate.decision.retry_after_secs.to_string(),
                );
                r = with_rate(r, Some(rate));
            }
            ApiError::MethodNotAllowed { allow } => {
                r = r.with_additional_header("Allow", allow.clone())
            }
            ApiError::TooManyFailures { retry_after } => {
                r = r.with_additional_header("Retry-After", retry_after.to_string());
            }
            ApiError::IdempotencyInProgress | ApiError::RouteBusy | ApiError::ExportsBusy => {
                r = r.with_additional_header("Retry-After", "1")
            }
            ApiError::UpstreamUnavailable(u) | ApiError::UpstreamTimeout(u) => {
                r = r.with_additional_header("X-Credit-Remaining", u.credit_remaining.to_string());
                r = with_rate(r, u.rate.as_ref());
            }
            _ if self.status() == 503 => r = r.with_additional_header("Retry-After", "2"),
            _ => {}
        }
        r
    }
}

fn refund_note(u: &Unanswered) -> &'static str {
    if u.refunded {
        "the charge was refunded"
    } else {
        "the refund could not be written now; it is made within minutes"
    }
}

/// The `RateLimit-Policy` and `RateLimit` headers of a limited user.
pub fn with_rate(mut r: Response, rate: Option<&RateState>) -> Response {
    if let Some(rate) = rate {
        for (name, value) in ratelimit::headers(rate.limit, &rate.decision) {
            r = r.with_additional_header(name, value);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_errors_keep_their_own_words() {
        let e = ApiError::from(UserError::Exists("alice".into()));
        assert_eq!((e.status(), e.code()), (409, "user_exists"));
        assert_eq!(e.message(), UserError::Exists("alice".into()).to_string());
    }

    #[test]
    fn parse_errors_are_the_message() {
        let why = crate::model::Username::parse("a b").unwrap_err();
        let e = ApiError::InvalidUsername(why.clone());
        assert_eq!(e.message(), why.to_string());
    }

    #[test]
    fn database_failures_are_opaque_503s_with_retry_after() {
        let e = ApiError::from(DbError::MigrationLocked);
        assert_eq!((e.status(), e.code()), (503, "unavailable"));
        assert!(!e.message().contains("lock"));
        let r = e.response();
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| k == "Retry-After" && v == "2"));
    }
}
