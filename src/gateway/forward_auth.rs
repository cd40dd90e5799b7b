//! Forward authentication: a proxy in front of some upstream (nginx
//! `auth_request`, Caddy `forward_auth`, Traefik `forwardAuth`) asks
//! creditgate whether a request may pass, and creditgate charges it as a
//! gateway route would — the route whose prefix matches the original path,
//! its cost, the user's rate limit, `Idempotency-Key` scoped by the route —
//! but forwards nothing itself. The charge is committed when the proxy is
//! told yes, before the upstream answers: there is no refund on this path.
//!
//! Here: which headers name the original request (pure, `original`), and
//! the one call (`authorize`). The shared secret, the credentials and the
//! route lookup are the HTTP layer's (`http::forward_auth`).

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::billing::{self, Charged, RouteCharge};
use super::routes::Route;
use super::GatewayError;
use crate::auth::token::Credentials;
use crate::billing::account::{LowCredit, RateState};
use crate::db::Pool;
use crate::error::error_chain;
use crate::idempotency::{self, StoredAnswer};
use crate::model::IdempotencyKey;
use crate::ops::metrics::Metrics;

/// Where nginx's `auth_request` examples put the original request.
const NGINX: (&str, &str) = ("X-Original-Method", "X-Original-URI");
/// Where Caddy's `forward_auth` and Traefik's `forwardAuth` put it.
const FORWARDED: (&str, &str) = ("X-Forwarded-Method", "X-Forwarded-Uri");

/// How long a keyed request's key says "in flight" at most: only between
/// the charge and the stored answer, two statements later.
const KEY_IN_FLIGHT: Duration = Duration::from_secs(5);

/// The request the proxy asks about, as its headers name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    pub method: String,
    /// Origin form: the raw (percent-encoded) path, then `?query` if any.
    pub uri: String,
}

impl Original {
    /// The raw path, without the query.
    pub fn path(&self) -> &str {
        self.uri.split_once('?').map_or(&self.uri, |(p, _)| p)
    }

    /// The raw query, without `?` (empty when there is none).
    pub fn raw_query(&self) -> &str {
        self.uri.split_once('?').map_or("", |(_, q)| q)
    }
}

/// Why the original request could not be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginalError {
    /// Neither header of the pair (`what`: "method" or "URI") was sent.
    Missing(&'static str),
    /// Two values that differ: both header families, or one header twice.
    /// A client's own `X-Original-URI` reaches creditgate through a proxy
    /// that sets `X-Forwarded-Uri` (and the other way round), so choosing
    /// one family would let a client pick the route it is charged for.
    Conflicting(&'static str),
    /// Not an HTTP method token.
    BadMethod,
    /// Not an origin-form URI (`/path?query`).
    BadUri,
}

impl fmt::Display for OriginalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OriginalError::Missing(what) => write!(
                f,
                "the original request's {what} is missing: send {} or {}",
                pair_names(what).0,
                pair_names(what).1
            ),
            OriginalError::Conflicting(what) => write!(
                f,
                "the original request's {what} was given twice with different values \
                 ({} and {}); the proxy must send one",
                pair_names(what).0,
                pair_names(what).1
            ),
            OriginalError::BadMethod => f.write_str("the original method is not an HTTP method"),
            OriginalError::BadUri => {
                f.write_str("the original URI must be a path starting with / (and a query)")
            }
        }
    }
}

impl std::error::Error for OriginalError {}

fn pair_names(what: &str) -> (&'static str, &'static str) {
    if what == "method" {
        (NGINX.0, FORWARDED.0)
    } else {
        (NGINX.1, FORWARDED.1)
    }
}

/// The original method and URI from the proxy's headers: nginx's
/// `X-Original-Method`/`X-Original-URI` or the `X-Forwarded-Method`/
/// `X-Forwarded-Uri` of Caddy and Traefik (names in any case). Every value
/// given must be the same; none at all is an error.
pub fn original(headers: &[(&str, &str)]) -> Result<Original, OriginalError> {
    let method = one_value(headers, [NGINX.0, FORWARDED.0], "method")?;
    let uri = one_value(headers, [NGINX.1, FORWARDED.1], "URI")?;
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if method.len() > 32 || !method.bytes().all(is_tchar) {
        return Err(OriginalError::BadMethod);
    }
    if !uri.starts_with('/')
        || uri.starts_with("//")
        || uri.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'#')
    {
        return Err(OriginalError::BadUri);
    }
    Ok(Original {
        method: method.to_string(),
        uri: uri.to_string(),
    })
}

/// The one value the headers `names` agree on (trimmed, not empty).
fn one_value<'a>(
    headers: &[(&'a str, &'a str)],
    names: [&str; 2],
    what: &'static str,
) -> Result<&'a str, OriginalError> {
    let mut found: Option<&str> = None;
    for (name, value) in headers {
        if !names.iter().any(|n| name.eq_ignore_ascii_case(n)) {
            continue;
        }
        let value = value.trim();
        match found {
            Some(v) if v != value => return Err(OriginalError::Conflicting(what)),
            _ => found = Some(value),
        }
    }
    found
        .filter(|v| !v.is_empty())
        .ok_or(OriginalError::Missing(what))
}

/// A request to authorize: the route its path matched, already checked
/// (path rules and method) by the caller.
pub struct Check<'a> {
    pub route: &'a Route,
    pub original: &'a Original,
    pub credentials: &'a Credentials,
    pub idempotency_key: Option<&'a IdempotencyKey>,
    pub request_id: u64,
    pub now: DateTime<Utc>,
}

/// The proxy may pass the request: charged now (or, under a key used
/// before for the same request, already paid).
#[derive(Debug)]
pub struct Authorized {
    pub user: String,
    pub credit_remaining: i64,
    pub replayed: bool,
    pub rate: Option<RateState>,
    pub low_credit: Option<LowCredit>,
}

/// Charges the route's cost exactly as a gateway request is charged (same
/// transaction, same usage endpoint `route:<prefix>`, same key scope and
/// fingerprint without a body). A keyed request's key is completed at once
/// with an empty 200, so that a retry of it is answered "already paid"
/// (replayed) and not charged again. Refusals are the gateway's.
pub fn authorize(
    pool: &Pool,
    metrics: &Metrics,
    req: &Check<'_>,
) -> Result<Authorized, GatewayError> {
    let route = req.route;
    let endpoint = format!("route:{}", route.prefix);
    let original = req.original;
    let fingerprint = match req.idempotency_key {
        Some(_) => idempotency::key::fingerprint(
            &original.method,
            original.path(),
            original.raw_query(),
            None,
        ),
        None => String::new(),
    };
    let charge = RouteCharge {
        credentials: req.credentials,
        endpoint: &endpoint,
        cost: route.cost,
        idempotency_key: req.idempotency_key,
        fingerprint: &fingerprint,
        now: req.now,
        in_flight_for: KEY_IN_FLIGHT,
        // The answer never passes here: a route priced by its upstream
        // costs its fixed `cost` through forward-auth.
        max_cost: None,
        // Charged before the answer, and final: nothing to settle.
        refundable: false,
    };
    let user = req.credentials.username.clone();
    let mut ticket = match billing::charge(pool, &charge)? {
        Charged::Forward(ticket) => ticket,
        Charged::Replay {
            credit_remaining,
            rate,
            ..
        } => {
            return Ok(Authorized {
                user,
                credit_remaining,
                replayed: true,
                rate,
                low_credit: None,
            })
        }
        Charged::Refused(why) => return Err(why),
    };
    metrics.credits_charged(ticket.charged);
    if ticket.keyed() {
        let paid = StoredAnswer {
            status: 200,
            headers: Vec::new(),
            body: Vec::new(),
        };
        // Charged either way; a failure here only makes a retry wait, then
        // answer 409 (never charged twice), as on a gateway route.
        let stored = billing::settle(pool, &mut ticket, KEY_IN_FLIGHT)
            .and_then(|()| billing::record_answer(pool, &ticket, Some(&paid)));
        if let Err(e) = stored {
            log::warn!(
                "req={} idempotency key not settled: {}",
                req.request_id,
                error_chain(&e)
            );
        }
    }
    Ok(Authorized {
        user,
        credit_remaining: ticket.credit_remaining,
        replayed: false,
        rate: ticket.rate,
        low_credit: ticket.low_credit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(headers: &[(&str, &str)]) -> Result<Original, OriginalError> {
        original(headers)
    }

    #[test]
    fn nginx_headers_name_the_original_request() {
        let o = from(&[
            ("X-Original-Method", "POST"),
            ("X-Original-URI", "/api/a/b?x=1&token=alice:t"),
        ])
        .unwrap();
        assert_eq!(o.method, "POST");
        assert_eq!(o.path(), "/api/a/b");
        assert_eq!(o.raw_query(), "x=1&token=alice:t");
    }

    #[test]
    fn caddy_and_traefik_headers_name_it_too_in_any_case() {
        let o = from(&[("x-forwarded-method", "GET"), ("x-forwarded-uri", "/api")]).unwrap();
        assert_eq!(
            (o.method.as_str(), o.path(), o.raw_query()),
            ("GET", "/api", "")
        );
    }

    #[test]
    fn both_families_agreeing_is_one_request() {
        let o = from(&[
            ("X-Original-Method", "GET"),
            ("X-Forwarded-Method", "GET"),
            ("X-Original-URI", "/a?q"),
            ("X-Forwarded-Uri", "/a?q"),
        ])
        .unwrap();
        assert_eq!(o.uri, "/a?q");
    }

    // A client's own X-Original-URI passes through Caddy, which sets
    // X-Forwarded-Uri: preferring either would let it pick the price.
    #[test]
    fn two_different_values_are_refused_whichever_header_they_come_from() {
        let e = from(&[
            ("X-Forwarded-Method", "GET"),
            ("X-Forwarded-Uri", "/expensive"),
            ("X-Original-URI", "/cheap"),
        ])
        .unwrap_err();
        assert_eq!(e, OriginalError::Conflicting("URI"));
        let e = from(&[
            ("X-Original-Method", "GET"),
            ("X-Original-Method", "POST"),
            ("X-Original-URI", "/a"),
        ])
        .unwrap_err();
        assert_eq!(e, OriginalError::Conflicting("method"));
    }

    #[test]
    fn a_missing_method_or_uri_is_refused() {
        assert_eq!(
            from(&[("X-Original-URI", "/a")]).unwrap_err(),
            OriginalError::Missing("method")
        );
        assert_eq!(
            from(&[("X-Original-Method", "GET"), ("X-Original-URI", " ")]).unwrap_err(),
            OriginalError::Missing("URI")
        );
        assert!(from(&[])
            .unwrap_err()
            .to_string()
            .contains("X-Forwarded-Method"));
    }

    #[test]
    fn only_a_method_token_and_an_origin_form_uri_are_taken() {
        let with = |m: &str, u: &str| from(&[("X-Original-Method", m), ("X-Original-URI", u)]);
        assert_eq!(with("G E", "/a").unwrap_err(), OriginalError::BadMethod);
        assert_eq!(
            with("GET", "http://h/a").unwrap_err(),
            OriginalError::BadUri
        );
        assert_eq!(with("GET", "//h/a").unwrap_err(), OriginalError::BadUri);
        assert_eq!(with("GET", "/a b").unwrap_err(), OriginalError::BadUri);
        assert_eq!(with("GET", "/a#frag").unwrap_err(), OriginalError::BadUri);
        assert!(with("PROPFIND", "/a/%2e?x=%20").is_ok());
    }
}
