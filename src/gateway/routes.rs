//! What a gateway route is and which route a request belongs to. Everything
//! here is pure: the operator's input (CLI, admin API, console) becomes a
//! `NewRoute` through `parse` functions, a stored route becomes a `Route`, and
//! the request flow asks `longest_match` and `upstream_path`. Storage, the
//! route cache and the upstream call live elsewhere (`gateway`, `forward`).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Serialize, Serializer};

use crate::model::ParseError;

fn err<T>(msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(msg.into()))
}

/// The paths creditgate answers itself. The router tries them before any
/// route, but a route prefix that touches one of them (equal, under, or a
/// parent of it) is refused anyway: an operator who adds `/api` should learn
/// at once that `/api/v1.0/credit` will never reach the upstream, rather than
/// find out from a confused client.
pub const BUILT_IN_PATHS: [&str; 14] = [
    "/api/v1.0/banks_data",
    "/api/v1.0/credit",
    "/health",
    "/ready",
    "/metrics",
    "/_ah/warmup",
    "/stopServer",
    "/admin",
    "/console",
    "/openapi.json",
    "/v1/whoami",
    "/v1/charge",
    "/v1/holds",
    "/v1/forward-auth",
];

const PREFIX_RULE: &str = "a route prefix is / followed by 1 to 127 characters of \
     A-Z a-z 0-9 . _ ~ / -, without //, a trailing /, or a . or .. segment";

/// A route's path prefix, e.g. `/weather`. Matching is case-sensitive, as
/// the built-in router's is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Prefix(String);

impl Prefix {
    pub fn parse(s: &str) -> Result<Prefix, ParseError> {
        let alphabet = |b: u8| b.is_ascii_alphanumeric() || b"._~/-".contains(&b);
        if !s.starts_with('/')
            || !(2..=128).contains(&s.len())
            || !s.bytes().all(alphabet)
            || s.contains("//")
            || s.ends_with('/')
            || has_dot_segment(s)
        {
            return err(format!("{PREFIX_RULE}, not {s:?}"));
        }
        if let Some(built_in) = shadowed_built_in(s) {
            return err(format!(
                "the prefix {s} overlaps the built-in path {built_in}; a route prefix \
                 must not equal, lie under or contain a built-in path"
            ));
        }
        Ok(Prefix(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The built-in path `prefix` equals, lies under, or is a parent of.
fn shadowed_built_in(prefix: &str) -> Option<&'static str> {
    BUILT_IN_PATHS
        .iter()
        .copied()
        .find(|b| matches(b, prefix) || matches(prefix, b))
}

/// Whether a `/`-separated path has a `.` or `..` segment, also written with
/// percent-escapes (`%2e`): an upstream that normalises the path would let
/// such a path climb out of its base path. The request flow refuses these
/// paths before charging; a prefix or base path never has one.
/// A request path a route refuses (404, before anything is charged): a dot
/// segment, or an encoded or back slash, which an upstream that decodes
/// `%2F` or reads `\` as `/` could turn into one.
pub fn unsafe_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    has_dot_segment(path) || lower.contains("%2f") || lower.contains("%5c") || path.contains('\\')
}

/// Why a request path is refused with 400 before anything is charged, if
/// it is: a `;` (a path parameter: Tomcat and Spring read `/a/..;/b` as
/// `/b`), an encoded `%` (decoded twice, `%252e%252e` is `..`), a bad
/// percent-escape, or escapes that are not UTF-8 (an overlong `%c0%ae` is a
/// dot to a lenient decoder).
pub fn refused_path(path: &str) -> Option<&'static str> {
    if path.contains(';') {
        return Some("a ';' in a gateway path is not passed on");
    }
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            decoded.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        let Some(byte) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
            return Some("a '%' must start an escape of two hex digits");
        };
        if byte == b'%' {
            return Some("an encoded '%' (double encoding) is not passed on");
        }
        // NUL ends a string in C-based upstreams; no path needs a control
        // character.
        if byte < 0x20 || byte == 0x7f {
            return Some("an encoded control character (such as %00) is not passed on");
        }
        decoded.push(byte);
        i += 3;
    }
    if std::str::from_utf8(&decoded).is_err() {
        return Some("percent-escapes must decode to UTF-8 (no overlong forms)");
    }
    None
}

pub fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|seg| {
        let lower = seg.to_ascii_lowercase();
        let dots = lower.replace("%2e", ".");
        dots == "." || dots == ".."
    })
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Prefix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

const UPSTREAM_RULE: &str =
    "an upstream is http://host[:port][/base] or https://host[:port][/base], \
     without user, query or fragment";

/// Where a route's requests go: scheme, host, optional port, and a base
/// path the forwarded path is appended to. Held normalised (lower-case
/// scheme and host, no trailing `/` on the base), so that its string form is
/// what is stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Upstream {
    https: bool,
    /// A DNS name, an IPv4 address, or an IPv6 address in brackets.
    host: String,
    port: Option<u16>,
    /// Empty, or `/…` without a trailing `/`.
    base: String,
}

impl Upstream {
    pub fn parse(s: &str) -> Result<Upstream, ParseError> {
        let bad = |why: &str| ParseError(format!("{UPSTREAM_RULE} ({why}), not {s:?}"));
        if s.len() > 2048 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad("visible ASCII, at most 2048 characters"));
        }
        let (scheme, rest) = s.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            _ => return Err(bad("the scheme is http or https")),
        };
        if rest.contains('?') || rest.contains('#') {
            return Err(bad("no query or fragment"));
        }
        let (authority, base) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.contains('@') {
            return Err(bad("no user or password"));
        }
        let (host, port) = parse_authority(authority).map_err(&bad)?;
        let base = parse_base(base).map_err(bad)?;
        Ok(Upstream {
            https,
            host,
            port,
            base,
        })
    }

    pub fn scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }

    /// The base path, empty or `/…`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The URL to call for `path` (which starts with `/`, see
    /// `upstream_path`) and a query string without its `?` (empty for
    /// none). The base comes first, so `/v1` and `/` give `/v1/`.
    pub fn url_for(&self, path: &str, query: &str) -> String {
        debug_assert!(path.starts_with('/'), "upstream path {path:?}");
        let slash = if path.starts_with('/') { "" } else { "/" };
        let mut url = format!("{}{}{slash}{path}", self.origin(), self.base);
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        url
    }

    fn origin(&self) -> String {
        match self.port {
            Some(port) => format!("{}://{}:{port}", self.scheme(), self.host),
            None => format!("{}://{}", self.scheme(), self.host),
        }
    }
}

/// `host[:port]` → the normalised host and the port, or why not.
fn parse_authority(authority: &str) -> Result<(String, Option<u16>), &'static str> {
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let (v6, after) = inner.split_once(']').ok_or("an IPv6 host is [addr]")?;
        v6.parse::<Ipv6Addr>().map_err(|_| "not an IPv6 address")?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or("a port follows the host after :")?,
            ),
        };
        (format!("[{}]", v6.to_ascii_lowercase()), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        (check_host(host)?.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err("the port is 1 to 65535"),
                Ok(n) => Some(n),
            }
        }
        Some(_) => return Err("the port is 1 to 65535"),
    };
    Ok((host, port))
}

/// A DNS name (labels of letters, digits, `-` and `_`, which container
/// service names use) or a dotted IPv4 address.
fn check_host(host: &str) -> Result<&str, &'static str> {
    if host.is_empty() {
        return Err("the host is not empty");
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        host.parse::<Ipv4Addr>()
            .map_err(|_| "not an IPv4 address")?;
        return Ok(host);
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if host.len() > 253 || !host.split('.').all(label_ok) {
        return Err("the host is a DNS name, an IPv4 address or [IPv6]");
    }
    Ok(host)
}

/// The base path: `""` and `"/"` mean none, one trailing `/` is dropped.
fn parse_base(base: &str) -> Result<String, &'static str> {
    let base = base.strip_suffix('/').unwrap_or(base);
    // RFC 3986 pchar plus `/`; `%` only as a complete escape.
    let pchar = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b);
    if !base.bytes().all(pchar) || !escapes_are_complete(base) {
        return Err("the base path is made of URL path characters");
    }
    if base.contains("//") || has_dot_segment(base) {
        return Err("the base path has no // and no . or .. segment");
    }
    Ok(base.to_owned())
}

fn escapes_are_complete(s: &str) -> bool {
    let b = s.as_bytes();
    (0..b.len())
        .filter(|&i| b[i] == b'%')
        .all(|i| b.len() > i + 2 && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit())
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin(), self.base)
    }
}

impl Serialize for Upstream {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Which upstream answers the user pays for; the others are refunded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChargeOn {
    /// Only a 2xx.
    #[default]
    TwoXx,
    /// Anything but a 5xx: the client's own mistakes (4xx) are billed.
    Non5xx,
    /// Every answer, whatever its status.
    Always,
}

impl ChargeOn {
    pub fn parse(s: &str) -> Result<ChargeOn, ParseError> {
        match s {
            "2xx" => Ok(ChargeOn::TwoXx),
            "non-5xx" => Ok(ChargeOn::Non5xx),
            "always" => Ok(ChargeOn::Always),
            _ => err(format!("charge_on is 2xx, non-5xx or always, not {s:?}")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChargeOn::TwoXx => "2xx",
            ChargeOn::Non5xx => "non-5xx",
            ChargeOn::Always => "always",
        }
    }

    /// Whether an upstream answer with `status` keeps the charge.
    pub fn billable(self, status: u16) -> bool {
        match self {
            ChargeOn::TwoXx => (200..300).contains(&status),
            ChargeOn::Non5xx => !(500..600).contains(&status),
            ChargeOn::Always => true,
        }
    }
}

impl Serialize for ChargeOn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The HTTP methods a route forwards; empty means any. Held upper-case and
/// without duplicates, in the order given. Methods are case-sensitive in
/// HTTP (RFC 9110 §9.1) and every registered one is upper-case, so a
/// client's `get` is not `GET` and is refused.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Methods(Vec<String>);

impl Methods {
    /// Each item is one method or a comma-separated list of them (the CLI's
    /// `--methods GET,POST`); blank items are skipped, so `[]` and `[""]`
    /// both mean any method.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Methods, ParseError> {
        let mut out: Vec<String> = Vec::new();
        for token in items.iter().flat_map(|i| i.as_ref().split(',')) {
            let token = token.trim();
            if token.is_empty() {
                continue;
            }
            if token.len() > 32 || !token.bytes().all(is_tchar) {
                return err(format!(
                    "a method is 1 to 32 characters of A-Z a-z 0-9 ! # $ % & ' * + - . ^ _ ` | ~, not {token:?}"
                ));
            }
            let upper = token.to_ascii_uppercase();
            if !out.contains(&upper) {
                out.push(upper);
            }
        }
        Ok(Methods(out))
    }

    /// An empty list allows every method.
    pub fn allows(&self, method: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|m| m == method)
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// RFC 9110 `tchar`: what a method token is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl Serialize for Methods {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

pub const DEFAULT_COST: i64 = 1;
pub const DEFAULT_TIMEOUT_MS: u32 = 30_000;
pub const MAX_TIMEOUT_MS: u32 = 600_000;
pub const MAX_IN_FLIGHT: u32 = 100_000;

/// A stored route, as the request flow uses it and the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub id: u64,
    pub prefix: Prefix,
    pub upstream: Upstream,
    pub cost: i64,
    pub methods: Methods,
    pub charge_on: ChargeOn,
    pub timeout_ms: u32,
    pub strip_prefix: bool,
    /// The route's bulkhead on one instance; `None`: half the handler
    /// threads.
    pub max_in_flight: Option<u32>,
    /// Priced by the upstream: what a request holds; `None`: the fixed
    /// `cost`, charged before forwarding.
    pub max_cost: Option<i64>,
    /// The answer header (or trailer) that states the price.
    pub cost_header: String,
    pub created_at: String,
}

/// A route the operator asked for, validated, before it has an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRoute {
    pub prefix: Prefix,
    pub upstream: Upstream,
    pub cost: i64,
    pub methods: Methods,
    pub charge_on: ChargeOn,
    pub timeout_ms: u32,
    pub strip_prefix: bool,
    pub max_in_flight: Option<u32>,
    pub max_cost: Option<i64>,
    pub cost_header: String,
}

/// A route's fields as typed by an operator or read from a row; `None` takes
/// the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawRoute {
    pub prefix: String,
    pub upstream: String,
    pub cost: Option<i64>,
    pub methods: Vec<String>,
    pub charge_on: Option<String>,
    pub timeout_ms: Option<i64>,
    pub strip_prefix: bool,
    pub max_in_flight: Option<i64>,
    pub max_cost: Option<i64>,
    pub cost_header: Option<String>,
}

/// A route field that was refused; the admin API answers 400
/// `invalid_route` with this, the CLI prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRoute {
    /// The JSON name of the field (`prefix`, `upstream`, `cost`, …).
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for InvalidRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.field, self.message)
    }
}

impl std::error::Error for InvalidRoute {}

fn invalid(field: &'static str) -> impl Fn(ParseError) -> InvalidRoute {
    move |e| InvalidRoute {
        field,
        message: e.0,
    }
}

fn invalid_msg(field: &'static str, message: impl Into<String>) -> InvalidRoute {
    InvalidRoute {
        field,
        message: message.into(),
    }
}

impl NewRoute {
    pub fn from_raw(raw: &RawRoute) -> Result<NewRoute, InvalidRoute> {
        let cost = raw.cost.unwrap_or(DEFAULT_COST);
        if cost < 0 {
            return Err(invalid_msg(
                "cost",
                format!("a cost is a whole number of credits, 0 or more, not {cost}"),
            ));
        }
        let timeout_ms = match raw.timeout_ms {
            None => DEFAULT_TIMEOUT_MS,
            Some(t) if (1..=MAX_TIMEOUT_MS as i64).contains(&t) => t as u32,
            Some(t) => {
                return Err(invalid_msg(
                    "timeout_ms",
                    format!("timeout_ms is 1 to {MAX_TIMEOUT_MS}, not {t}"),
                ))
            }
        };
        let charge_on = match &raw.charge_on {
            None => ChargeOn::default(),
            Some(s) => ChargeOn::parse(s).map_err(invalid("charge_on"))?,
        };
        let max_in_flight = match raw.max_in_flight {
            None => None,
            Some(n) if (1..=i64::from(MAX_IN_FLIGHT)).contains(&n) => Some(n as u32),
            Some(n) => {
                return Err(invalid_msg(
                    "max_in_flight",
                    format!(
                        "max_in_flight is 1 to {MAX_IN_FLIGHT} (or null for the default), not {n}"
                    ),
                ))
            }
        };
        let (max_cost, cost_header) = pricing(raw)?;
        Ok(NewRoute {
            prefix: Prefix::parse(&raw.prefix).map_err(invalid("prefix"))?,
            upstream: Upstream::parse(&raw.upstream).map_err(invalid("upstream"))?,
            cost,
            methods: Methods::parse(&raw.methods).map_err(invalid("methods"))?,
            charge_on,
            timeout_ms,
            strip_prefix: raw.strip_prefix,
            max_in_flight,
            max_cost,
            cost_header,
        })
    }

    /// The admin API's body: the route fields as JSON. A field of the wrong
    /// type or an unknown field is named in the error like a bad value, so
    /// the operator always learns which field to fix.
    pub fn from_json(body: &serde_json::Value) -> Result<NewRoute, InvalidRoute> {
        NewRoute::from_raw(&raw_from_json(body)?)
    }

    pub fn into_route(self, id: u64, created_at: String) -> Route {
        Route {
            id,
            prefix: self.prefix,
            upstream: self.upstream,
            cost: self.cost,
            methods: self.methods,
            charge_on: self.charge_on,
            timeout_ms: self.timeout_ms,
            strip_prefix: self.strip_prefix,
            max_in_flight: self.max_in_flight,
            max_cost: self.max_cost,
            cost_header: self.cost_header,
            created_at,
        }
    }
}

const ROUTE_FIELDS: [&str; 10] = [
    "max_cost",
    "cost_header",
    "prefix",
    "upstream",
    "cost",
    "methods",
    "charge_on",
    "timeout_ms",
    "strip_prefix",
    "max_in_flight",
];

fn raw_from_json(body: &serde_json::Value) -> Result<RawRoute, InvalidRoute> {
    use serde_json::Value;
    let obj = body
        .as_object()
        .ok_or_else(|| invalid_msg("body", "the body is a JSON object of route fields"))?;
    if let Some(unknown) = obj.keys().find(|k| !ROUTE_FIELDS.contains(&k.as_str())) {
        return Err(invalid_msg(
            "body",
            format!(
                "unknown field {unknown:?}; the fields are {}",
                ROUTE_FIELDS.join(", ")
            ),
        ));
    }
    let string = |field: &'static str| match obj.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(invalid_msg(field, format!("{field} is required"))),
        Some(_) => Err(invalid_msg(field, format!("{field} is a string"))),
    };
    let integer = |field: &'static str| match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => crate::model::whole_number(v)
            .map(Some)
            .ok_or_else(|| invalid_msg(field, format!("{field} is a whole number"))),
    };
    let methods = match obj.get("methods") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|m| m.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid_msg("methods", "methods is a list of strings"))?,
        Some(_) => return Err(invalid_msg("methods", "methods is a list of strings")),
    };
    let charge_on = match obj.get("charge_on") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(invalid_msg("charge_on", "charge_on is a string")),
    };
    let strip_prefix = match obj.get("strip_prefix") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid_msg("strip_prefix", "strip_prefix is true or false")),
    };
    Ok(RawRoute {
        prefix: string("prefix")?,
        upstream: string("upstream")?,
        cost: integer("cost")?,
        methods,
        charge_on,
        timeout_ms: integer("timeout_ms")?,
        strip_prefix,
        max_in_flight: integer("max_in_flight")?,
        max_cost: integer("max_cost")?,
        cost_header: match obj.get("cost_header") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(invalid_msg("cost_header", "cost_header is a string")),
        },
    })
}

/// The header a route's upstream states its price in, by default.
pub const DEFAULT_COST_HEADER: &str = "X-Credit-Cost";

/// `max_cost` (at least 1; an answer that states no price costs `cost`,
/// and no answer more than `max_cost`) and the price's header (a header
/// name).
fn pricing(raw: &RawRoute) -> Result<(Option<i64>, String), InvalidRoute> {
    let max_cost = match raw.max_cost {
        None => None,
        Some(m) if m >= 1 => Some(m),
        Some(m) => {
            return Err(invalid_msg(
                "max_cost",
                format!("max_cost is a whole number of credits, 1 or more, not {m}"),
            ))
        }
    };
    let header = raw.cost_header.as_deref().unwrap_or(DEFAULT_COST_HEADER);
    let ok = !header.is_empty() && header.len() <= 64 && header.bytes().all(is_tchar);
    if !ok {
        return Err(invalid_msg(
            "cost_header",
            format!("cost_header is a header name of 1 to 64 characters, not {header:?}"),
        ));
    }
    Ok((max_cost, header.to_string()))
}

/// Whether a request path (without its query) belongs under `prefix`: the
/// prefix itself or below it, so `/weatherx` is not under `/weather`.
pub fn matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The route a request path belongs to: the longest matching prefix wins.
pub fn longest_match<'a>(routes: &'a [Route], path: &str) -> Option<&'a Route> {
    routes
        .iter()
        .filter(|r| matches(r.prefix.as_str(), path))
        .max_by_key(|r| r.prefix.as_str().len())
}

/// The path to ask the upstream for, before its base path (which
/// `Upstream::url_for` adds): the request path, less the prefix when the
/// route strips it (`/weather` alone becomes `/`).
pub fn upstream_path(route: &Route, path: &str) -> String {
    if !route.strip_prefix {
        return path.to_owned();
    }
    debug_assert!(
        matches(route.prefix.as_str(), path),
        "{path} not under route"
    );
    match path.strip_prefix(route.prefix.as_str()) {
        Some("") => "/".to_owned(),
        Some(rest) => rest.to_owned(),
        None => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: u64, prefix: &str, upstream: &str, strip: bool) -> Route {
        let raw = RawRoute {
            prefix: prefix.into(),
            upstream: upstream.into(),
            strip_prefix: strip,
            ..RawRoute::default()
        };
        NewRoute::from_raw(&raw)
            .unwrap()
            .into_route(id, "2026-01-01T00:00:00Z".into())
    }

    #[test]
    fn prefixes_accept_the_documented_alphabet() {
        for good in [
            "/w",
            "/weather",
            "/a.b_c~d-e/f",
            "/v1/x",
            "/adminx",
            "/healthz",
        ] {
            assert!(Prefix::parse(good).is_ok(), "{good:?} was refused");
        }
        assert!(Prefix::parse(&format!("/{}", "a".repeat(127))).is_ok());
    }

    #[test]
    fn prefixes_reject_bad_shapes_and_lengths() {
        let long = format!("/{}", "a".repeat(128));
        for bad in [
            "",
            "/",
            "weather",
            "/a//b",
            "/weather/",
            "/a b",
            "/a%2e",
            "/a?b",
            "/ä",
            &long,
        ] {
            assert!(Prefix::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn prefixes_reject_dot_segments() {
        for bad in ["/.", "/..", "/a/../b", "/a/.", "/./a"] {
            assert!(Prefix::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Prefix::parse("/a..b/.c").is_ok());
    }

    #[test]
    fn prefixes_may_not_shadow_built_in_paths() {
        for bad in [
            "/health",
            "/admin",
            "/admin/v1/routes",
            "/console/x",
            "/api/v1.0/banks_data",
            "/api/v1.0/banks_data/BOFA",
            "/api/v1.0/credit",
            "/openapi.json",
            "/stopServer",
            "/_ah/warmup",
        ] {
            let e = Prefix::parse(bad).unwrap_err();
            assert!(e.0.contains("built-in"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn prefixes_may_not_be_parents_of_built_in_paths() {
        for bad in ["/api", "/api/v1.0", "/_ah"] {
            assert!(Prefix::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Prefix::parse("/api/v2").is_ok());
        assert!(Prefix::parse("/api/v1.0/other").is_ok());
    }

    #[test]
    fn upstreams_parse_and_normalise() {
        let cases = [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://h/", "http://h"),
            ("HTTPS://Api.Example.COM/v1/", "https://api.example.com/v1"),
            ("http://[::1]:9000/base", "http://[::1]:9000/base"),
            ("http://my_service:80", "http://my_service:80"),
        ];
        for (input, shown) in cases {
            let u = Upstream::parse(input).unwrap();
            assert_eq!(u.to_string(), shown);
        }
        assert_eq!(Upstream::parse("https://h").unwrap().scheme(), "https");
        assert_eq!(Upstream::parse("http://h/").unwrap().base(), "");
    }

    #[test]
    fn upstreams_reject_userinfo_query_fragment_and_bad_hosts() {
        for bad in [
            "ftp://h",
            "h:80",
            "http://",
            "http://:80",
            "http://user:pw@h",
            "http://h/?q=1",
            "http://h#frag",
            "http://h:0",
            "http://h:65536",
            "http://h:",
            "http://h:8a",
            "http://999.1.1.1",
            "http://::1",
            "http://[::g]",
            "http://-h",
            "http://h/a//b",
            "http://h/a/../b",
            "http://h/a b",
            "http://h/%zz",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn url_for_joins_base_path_and_query() {
        let bare = Upstream::parse("http://h:1").unwrap();
        assert_eq!(bare.url_for("/a/b", ""), "http://h:1/a/b");
        let based = Upstream::parse("https://h/v1").unwrap();
        assert_eq!(based.url_for("/a", "x=1&y"), "https://h/v1/a?x=1&y");
        assert_eq!(based.url_for("/", ""), "https://h/v1/");
    }

    #[test]
    fn charge_on_decides_what_is_billed() {
        let on = |s| ChargeOn::parse(s).unwrap();
        assert!(on("2xx").billable(204) && !on("2xx").billable(404));
        assert!(on("non-5xx").billable(404) && !on("non-5xx").billable(503));
        assert!(on("always").billable(503));
        assert_eq!(on("non-5xx").as_str(), "non-5xx");
        assert!(ChargeOn::parse("5xx").is_err());
        assert_eq!(ChargeOn::default(), ChargeOn::TwoXx);
    }

    #[test]
    fn methods_are_upper_cased_and_deduplicated() {
        let m = Methods::parse(&["get,POST", " get ", "propfind"]).unwrap();
        assert_eq!(m.as_slice(), ["GET", "POST", "PROPFIND"]);
        assert!(m.allows("GET") && m.allows("PROPFIND") && !m.allows("DELETE"));
        assert!(Methods::parse(&["GE T"]).is_err());
        assert!(Methods::parse(&["G(ET"]).is_err());
    }

    #[test]
    fn no_methods_means_any_method() {
        let any = Methods::parse::<&str>(&[]).unwrap();
        assert!(any.allows("DELETE") && any.allows("X-CUSTOM"));
        assert_eq!(Methods::parse(&[""]).unwrap(), any);
    }

    #[test]
    fn new_routes_take_the_documented_defaults() {
        let r = route(1, "/weather", "http://h", false);
        assert_eq!(r.cost, 1);
        assert_eq!(r.timeout_ms, 30_000);
        assert_eq!(r.charge_on, ChargeOn::TwoXx);
        assert!(r.methods.as_slice().is_empty() && !r.strip_prefix);
    }

    #[test]
    fn invalid_routes_name_the_field() {
        let base = RawRoute {
            prefix: "/w".into(),
            upstream: "http://h".into(),
            ..RawRoute::default()
        };
        let field = |raw: RawRoute| NewRoute::from_raw(&raw).unwrap_err().field;
        assert_eq!(
            field(RawRoute {
                prefix: "/health".into(),
                ..base.clone()
            }),
            "prefix"
        );
        assert_eq!(
            field(RawRoute {
                upstream: "h".into(),
                ..base.clone()
            }),
            "upstream"
        );
        assert_eq!(
            field(RawRoute {
                cost: Some(-1),
                ..base.clone()
            }),
            "cost"
        );
        assert_eq!(
            field(RawRoute {
                timeout_ms: Some(0),
                ..base.clone()
            }),
            "timeout_ms"
        );
        assert_eq!(
            field(RawRoute {
                timeout_ms: Some(600_001),
                ..base.clone()
            }),
            "timeout_ms"
        );
        assert_eq!(
            field(RawRoute {
                charge_on: Some("x".into()),
                ..base.clone()
            }),
            "charge_on"
        );
        assert_eq!(
            field(RawRoute {
                methods: vec!["a b".into()],
                ..base.clone()
            }),
            "methods"
        );
        let e = NewRoute::from_raw(&RawRoute {
            cost: Some(-1),
            ..base
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("invalid cost:"), "{e}");
    }

    #[test]
    fn json_bodies_name_the_field_of_the_wrong_type() {
        use serde_json::json;
        let field = |v| NewRoute::from_json(&v).unwrap_err().field;
        assert_eq!(field(json!({"upstream": "http://h"})), "prefix");
        assert_eq!(
            field(json!({"prefix": "/w", "upstream": "http://h", "cost": 1.5})),
            "cost"
        );
        assert_eq!(
            field(json!({"prefix": "/w", "upstream": "http://h", "cost": "1"})),
            "cost"
        );
        assert_eq!(
            field(json!({"prefix": "/w", "upstream": "http://h", "methods": "GET"})),
            "methods"
        );
        assert_eq!(
            field(json!({"prefix": "/w", "upstream": "http://h", "strip_prefix": 1})),
            "strip_prefix"
        );
        assert_eq!(
            field(json!({"prefix": "/w", "upstream": "http://h", "strip": true})),
            "body"
        );
        assert_eq!(field(json!([1])), "body");
        let ok = NewRoute::from_json(&json!({
            "prefix": "/w", "upstream": "http://h", "cost": 0, "methods": ["get"],
            "charge_on": "always", "timeout_ms": 5, "strip_prefix": true
        }))
        .unwrap();
        assert_eq!((ok.cost, ok.timeout_ms, ok.strip_prefix), (0, 5, true));
        assert_eq!(
            (ok.max_cost, ok.cost_header.as_str()),
            (None, "X-Credit-Cost")
        );
    }

    #[test]
    fn a_priced_route_holds_at_least_one_and_names_a_header() {
        use serde_json::json;
        let priced = |fields: serde_json::Value| {
            let mut body = json!({"prefix": "/w", "upstream": "http://h"});
            for (k, v) in fields.as_object().unwrap() {
                body[k] = v.clone();
            }
            NewRoute::from_json(&body)
        };
        let ok = priced(json!({"max_cost": 50, "cost_header": "X-Tokens"})).unwrap();
        assert_eq!(
            (ok.max_cost, ok.cost_header.as_str()),
            (Some(50), "X-Tokens")
        );
        for (bad, field) in [
            (json!({"max_cost": 0}), "max_cost"),
            (json!({"max_cost": -5}), "max_cost"),
            (json!({"max_cost": "5"}), "max_cost"),
            (json!({"cost_header": ""}), "cost_header"),
            (json!({"cost_header": "X Tokens"}), "cost_header"),
            (json!({"cost_header": "x".repeat(65)}), "cost_header"),
            (json!({"cost_header": 5}), "cost_header"),
        ] {
            assert_eq!(priced(bad.clone()).unwrap_err().field, field, "{bad}");
        }
    }

    #[test]
    fn routes_serialise_to_the_spec_json() {
        let mut r = route(7, "/weather", "http://h:8080/v1/", true);
        r.methods = Methods::parse(&["GET,POST"]).unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "id": 7, "prefix": "/weather", "upstream": "http://h:8080/v1", "cost": 1,
                "methods": ["GET", "POST"], "charge_on": "2xx", "timeout_ms": 30000,
                "strip_prefix": true, "max_in_flight": null, "max_cost": null,
                "cost_header": "X-Credit-Cost", "created_at": "2026-01-01T00:00:00Z"
            })
        );
    }

    #[test]
    fn a_path_matches_its_prefix_and_what_lies_under_it() {
        assert!(matches("/weather", "/weather"));
        assert!(matches("/weather", "/weather/"));
        assert!(matches("/weather", "/weather/today"));
        assert!(!matches("/weather", "/weatherx"));
        assert!(!matches("/weather", "/weathe"));
        assert!(!matches("/weather", "/Weather"));
    }

    #[test]
    fn the_longest_prefix_wins() {
        let routes = [
            route(1, "/a", "http://h", false),
            route(2, "/a/b/c", "http://h", false),
            route(3, "/a/b", "http://h", false),
        ];
        let id = |p| longest_match(&routes, p).map(|r| r.id);
        assert_eq!(id("/a/b/c/d"), Some(2));
        assert_eq!(id("/a/b/cd"), Some(3));
        assert_eq!(id("/a/x"), Some(1));
        assert_eq!(id("/ab"), None);
        assert_eq!(id("/"), None);
    }

    #[test]
    fn paths_an_upstream_could_read_another_way_are_refused() {
        for path in [
            "/w/..;/admin",
            "/w/a;jsessionid=1",
            "/w/%252e%252e/admin",
            "/w/%25",
            "/w/%c0%ae%c0%ae/admin",
            "/w/%e0%80%ae",
            "/w/%ff",
            "/w/%zz",
            "/w/%4",
            "/w/a%00.json",
            "/w/a%0d%0aX-Evil:%201",
            "/w/%7F",
        ] {
            assert!(refused_path(path).is_some(), "{path}");
        }
        for path in [
            "/w",
            "/w/a%20b",
            "/w/caf%C3%A9",
            "/w/%2e%2e",
            "/w/a-b_c.d~e",
        ] {
            assert_eq!(refused_path(path), None, "{path}");
        }
    }

    #[test]
    fn strip_prefix_removes_the_prefix_and_keeps_a_slash() {
        let strip = route(1, "/weather", "http://h", true);
        assert_eq!(upstream_path(&strip, "/weather/today"), "/today");
        assert_eq!(upstream_path(&strip, "/weather"), "/");
        assert_eq!(upstream_path(&strip, "/weather/"), "/");
        let keep = route(2, "/weather", "http://h", false);
        assert_eq!(upstream_path(&keep, "/weather/today"), "/weather/today");
    }

    #[test]
    fn strip_prefix_goes_after_the_base_path() {
        let based = route(1, "/weather", "http://h/v1", true);
        let path = upstream_path(&based, "/weather/today");
        assert_eq!(
            based.upstream.url_for(&path, "q=1"),
            "http://h/v1/today?q=1"
        );
        let keep = route(2, "/weather", "http://h/v1", false);
        let path = upstream_path(&keep, "/weather/today");
        assert_eq!(
            keep.upstream.url_for(&path, ""),
            "http://h/v1/weather/today"
        );
    }

    #[test]
    fn dot_segments_are_found_also_when_escaped() {
        for bad in ["/a/../b", "/a/%2e%2E/b", "/a/.%2e", "/.", "/a/%2E"] {
            assert!(has_dot_segment(bad), "{bad:?}");
        }
        for good in ["/a/b", "/a/.b", "/a/..b", "/a%2eb"] {
            assert!(!has_dot_segment(good), "{good:?}");
        }
    }
}
