//! The upstream call of a gateway route, and the header rules on the way in
//! and out. The header and query rules are plain functions; `Client` wraps
//! one `ureq` agent (shared by every request, so keep-alive connections to an
//! upstream are reused) and streams bodies both ways without buffering them.
//! Deciding what to forward (which route, whether the user may pay) and what
//! to do with a failure (refund, 502/504) is the request flow's job.

use std::fmt;
use std::io::{self, Read};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ureq::config::AutoHeaderValue;
use ureq::config::ConfigBuilder;
use ureq::http;
use ureq::tls::{RootCerts, TlsConfig};
use ureq::typestate::AgentScope;
use ureq::SendBody;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// plus `Proxy-Authenticate`, their response-side twin. A header that a
/// `Connection` header names is one of them too.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Incoming headers never passed on: `Host` and `Content-Length` are the
/// client library's to set for the upstream connection; `Expect` was
/// already answered by our own server, and passing it on would make the
/// client wait for the upstream's `100 Continue`; then the ones creditgate
/// adds itself (`added_headers`), so a client cannot forge them; then the
/// ones an upstream (or a framework in it) may trust for the client's
/// address or for the real path (`X-Original-URL` and `X-Rewrite-URL` make
/// IIS and Symfony route by the header, not the path that was charged).
const NOT_FORWARDED: [&str; 13] = [
    "host",
    "content-length",
    "expect",
    "x-creditgate-user",
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-real-ip",
    "true-client-ip",
    "x-original-url",
    "x-rewrite-url",
];

/// Cookies an upstream may not set through creditgate: the console's
/// session (`console::session::COOKIE`; a test keeps the two in step), so
/// an upstream on the same host cannot plant or clear an operator's login.
pub const RESERVED_COOKIES: [&str; 1] = ["cg_console"];

/// Answer headers only creditgate sets: an upstream's own would forge or
/// duplicate what the client reads about its credit and limit.
const OURS: [&str; 4] = [
    "x-credit-remaining",
    "idempotency-replayed",
    "ratelimit",
    "ratelimit-policy",
];

/// The header names listed in every `Connection` header, lower-case.
fn connection_named(headers: &[(&str, &str)]) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

fn is_hop_by_hop(name: &str, named: &[String]) -> bool {
    let lower = name.to_ascii_lowercase();
    HOP_BY_HOP.contains(&lower.as_str()) || named.contains(&lower)
}

/// A header that can be written as one line: a token name, and a value
/// without CR, LF or other control characters (tab aside). Values come from
/// parsed requests and validated names, so this refuses nothing in
/// practice; it keeps header injection impossible even if that changes.
pub fn header_safe(name: &str, value: &str) -> bool {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    !name.is_empty()
        && name.bytes().all(tchar)
        && value
            .bytes()
            .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// The client's headers that go on to the upstream: all end-to-end ones
/// except the credentials (`Authorization` when it carried them), in order.
pub fn request_headers(
    incoming: &[(&str, &str)],
    drop_authorization: bool,
) -> Vec<(String, String)> {
    let named = connection_named(incoming);
    incoming
        .iter()
        .filter(|(n, v)| {
            let lower = n.to_ascii_lowercase();
            let credentials = drop_authorization && lower == "authorization";
            let dropped = is_hop_by_hop(n, &named) || NOT_FORWARDED.contains(&lower.as_str());
            !dropped && !credentials && header_safe(n, v)
        })
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// The headers creditgate adds for the upstream: `X-Forwarded-For` (the
/// client's own list, if it sent one, with the peer appended),
/// `X-Forwarded-Proto`, `X-Forwarded-Host` (the Host the client asked for),
/// `X-Creditgate-User` and `X-Request-Id`.
pub fn added_headers(
    incoming: &[(&str, &str)],
    peer: IpAddr,
    secure: bool,
    user: &str,
    request_id: &str,
) -> Vec<(String, String)> {
    let named = connection_named(incoming);
    let mut chain: Vec<&str> = incoming
        .iter()
        .filter(|(n, v)| n.eq_ignore_ascii_case("x-forwarded-for") && header_safe(n, v))
        .filter(|(n, _)| !is_hop_by_hop(n, &named))
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
        .collect();
    let peer = peer.to_string();
    chain.push(&peer);
    let mut out = vec![
        ("X-Forwarded-For".to_string(), chain.join(", ")),
        // How the client reached creditgate (CREDITGATE_TLS_CERT: HTTPS).
        (
            "X-Forwarded-Proto".to_string(),
            if secure { "https" } else { "http" }.to_string(),
        ),
    ];
    if let Some((_, host)) = incoming
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("host"))
    {
        out.push(("X-Forwarded-Host".to_string(), host.to_string()));
    }
    out.push(("X-Creditgate-User".to_string(), user.to_string()));
    out.push(("X-Request-Id".to_string(), request_id.to_string()));
    out.retain(|(n, v)| header_safe(n, v));
    out
}

/// The upstream's headers that go back to the client: all but hop-by-hop
/// ones and `Content-Length` (our server frames the body itself; the length
/// is in `Answer::length`).
pub fn response_headers(upstream: &[(&str, &str)]) -> Vec<(String, String)> {
    let named = connection_named(upstream);
    upstream
        .iter()
        .filter(|(n, v)| {
            !is_hop_by_hop(n, &named)
                && !n.eq_ignore_ascii_case("content-length")
                && !OURS.iter().any(|o| n.eq_ignore_ascii_case(o))
                && !sets_reserved_cookie(n, v)
                && header_safe(n, v)
        })
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// A `Set-Cookie` for one of `RESERVED_COOKIES` (the name is what comes
/// before the first `=`, trimmed; matched without case, as browsers differ).
fn sets_reserved_cookie(name: &str, value: &str) -> bool {
    // `Set-Cookie2` is obsolete (RFC 6265), but some clients still read it.
    (name.eq_ignore_ascii_case("set-cookie") || name.eq_ignore_ascii_case("set-cookie2"))
        && value.split_once('=').is_some_and(|(cookie, _)| {
            RESERVED_COOKIES
                .iter()
                .any(|r| cookie.trim().eq_ignore_ascii_case(r))
        })
}

/// The query string for the upstream: the client's, less every `token`
/// parameter (the credentials), otherwise byte for byte. The name is
/// matched case-insensitively and also percent-decoded (`%74oken`), wider
/// than what authenticates, so that no spelling of a token leaves.
pub fn forward_query(raw_query: &str) -> String {
    if raw_query.is_empty() {
        return String::new();
    }
    raw_query
        .split('&')
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(k, _)| k);
            !percent_decoded(name).eq_ignore_ascii_case(b"token")
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_decoded(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if let (b'%', Some(h), Some(l)) = (
            b[i],
            b.get(i + 1).and_then(|&c| hex(c)),
            b.get(i + 2).and_then(|&c| hex(c)),
        ) {
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// The client's body, streamed on as it is read. `length` is the client's
/// `Content-Length` (sent on as such); without it the body goes out chunked.
pub struct RequestBody {
    pub reader: Box<dyn Read + Send>,
    pub length: Option<u64>,
}

/// One request for the upstream, already shaped by the rules above.
pub struct Outgoing {
    pub method: String,
    /// From `Upstream::url_for`.
    pub url: String,
    /// `request_headers` followed by `added_headers`.
    pub headers: Vec<(String, String)>,
    /// `None` when the client sent no body (no `Content-Length`, not chunked).
    pub body: Option<RequestBody>,
    /// The route's `timeout_ms`: from connecting until the answer's last byte.
    pub timeout: Duration,
}

/// The upstream's answer. The body is read from the upstream as the caller
/// reads it; the connection goes back to the pool once it is read to the end.
pub struct Answer {
    pub status: u16,
    /// Already filtered by `response_headers`; names are lower-case (the
    /// `http` crate's `HeaderMap` keeps them so), values as sent.
    pub headers: Vec<(String, String)>,
    /// The body's length when the upstream gave one (not for `HEAD`, 204, 304).
    pub length: Option<u64>,
    /// Still bound by the request's deadline: a body that stalls past it
    /// ends in an `io::Error` of kind `TimedOut`.
    pub body: Box<dyn Read + Send + 'static>,
}

/// Why no answer came from the upstream.
#[derive(Debug)]
pub enum ForwardError {
    /// Could not connect, resolve, or talk to it (refused, reset, TLS,
    /// a broken answer): 502 `upstream_unavailable`.
    Unavailable(String),
    /// No complete answer head within the route's timeout: 504
    /// `upstream_timeout`.
    Timeout,
    /// The request could not be expressed (method or URL not valid HTTP);
    /// nothing was sent.
    Invalid(String),
    /// Reading the client's body failed (it went away, or a size limit the
    /// caller's reader enforces): the original error, for the caller to map
    /// (413 `body_too_large`, or nothing to answer).
    ClientBody(io::Error),
}

impl fmt::Display for ForwardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardError::Unavailable(why) => write!(f, "upstream unavailable: {why}"),
            ForwardError::Timeout => f.write_str("upstream did not answer in time"),
            ForwardError::Invalid(why) => write!(f, "request cannot be forwarded: {why}"),
            ForwardError::ClientBody(e) => write!(f, "reading the client's body: {e}"),
        }
    }
}

impl std::error::Error for ForwardError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ForwardError::ClientBody(e) => Some(e),
            _ => None,
        }
    }
}

/// How creditgate calls out over HTTP, to an upstream or a webhook
/// receiver alike; each caller adds its own headers, pools and timeouts.
pub fn outbound_config() -> ConfigBuilder<AgentScope> {
    let tls = TlsConfig::builder()
        // https is verified against the system's roots (an operator adds a
        // private CA there), through rustls-platform-verifier; ureq's
        // default would be its bundled Mozilla list (webpki-roots).
        .root_certs(RootCerts::PlatformVerifier)
        .build();
    ureq::Agent::config_builder()
        // A 4xx/5xx is an answer (to pass on, or to retry), not an error.
        .http_status_as_error(false)
        // A redirect is not followed: a gateway's client follows it
        // itself, and for a webhook it is not a delivery (retried).
        .max_redirects(0)
        // ureq reads HTTP(S)_PROXY/ALL_PROXY by default; the other end is
        // called directly, whatever the environment says.
        .proxy(None)
        .tls_config(tls)
}

/// The upstream HTTP client: one per process, shared by all request threads
/// (cloning it is cheap and shares the pool).
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
}

impl Client {
    /// `idle_per_host`: keep-alive connections kept per upstream; about the
    /// number of request threads, so that a busy upstream is not reconnected
    /// to on every request (ureq keeps 3 by default).
    pub fn new(idle_per_host: usize) -> Client {
        let config = outbound_config()
            // ureq adds these when absent; a proxy adds nothing of its own.
            .user_agent(AutoHeaderValue::None)
            .accept(AutoHeaderValue::None)
            .accept_encoding(AutoHeaderValue::None)
            // PROPFIND, PURGE, …: any method token is forwarded.
            .allow_non_standard_methods(true)
            .max_idle_connections_per_host(idle_per_host.max(1))
            .max_idle_connections(idle_per_host.max(1) * 8)
            .build();
        Client {
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// Sends one request and returns as soon as the answer's head is in;
    /// the body is read through `Answer::body`.
    pub fn send(&self, out: Outgoing) -> Result<Answer, ForwardError> {
        // A trailer an earlier answer left on this thread is not this one's.
        let _ = upstream_trailer();
        let client_failure = Arc::new(Mutex::new(None));
        let request = self.request(out, &client_failure)?;
        match self.agent.run(request) {
            Ok(response) => Ok(answer(response)),
            Err(e) => Err(classify(
                e,
                client_failure.lock().expect("not poisoned").take(),
            )),
        }
    }

    fn request(
        &self,
        out: Outgoing,
        client_failure: &Arc<Mutex<Option<io::Error>>>,
    ) -> Result<http::Request<SendBody<'static>>, ForwardError> {
        let method = http::Method::from_bytes(out.method.as_bytes())
            .map_err(|_| ForwardError::Invalid(format!("method {:?}", out.method)))?;
        let mut builder = http::Request::builder()
            .method(method)
            .uri(out.url.as_str());
        for (name, value) in &out.headers {
            // The rules above already refuse what `http` would; a header
            // refused here anyway is dropped rather than failing the call.
            match (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(value),
            ) {
                (Ok(n), Ok(v)) => builder = builder.header(n, v),
                _ => log::debug!("gateway: header {name:?} not forwardable, dropped"),
            }
        }
        // Through `Agent::run`, any body that is not `none()` is sent, GET
        // and HEAD included (ureq's builder API would refuse it without
        // `force_send_body`).
        let body = match out.body {
            None => SendBody::none(),
            Some(body) => {
                if let Some(n) = body.length {
                    builder = builder.header(http::header::CONTENT_LENGTH, n);
                }
                SendBody::from_owned_reader(Watched {
                    inner: body.reader,
                    failure: client_failure.clone(),
                })
            }
        };
        let request = builder
            .body(body)
            .map_err(|e| ForwardError::Invalid(e.to_string()))?;
        Ok(self
            .agent
            .configure_request(request)
            .timeout_global(Some(out.timeout))
            .build())
    }
}

fn answer(response: http::Response<ureq::Body>) -> Answer {
    let (parts, body) = response.into_parts();
    let raw: Vec<(&str, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let pairs: Vec<(&str, &str)> = raw.iter().map(|(n, v)| (*n, v.as_str())).collect();
    Answer {
        status: parts.status.as_u16(),
        headers: response_headers(&pairs),
        length: body.content_length(),
        body: Box::new(AnswerBody(body.into_reader())),
    }
}

/// The trailer fields (name, value) of the chunked answer body this thread
/// has just read to its end, taken (a second call returns none); empty
/// when it had none. Call it when `Answer::body` has returned its end, on
/// the thread that read it: ureq does not pass trailers on, so the vendored
/// ureq-proto keeps them per thread (vendor/ureq-proto/PATCHES.md).
pub fn upstream_trailer() -> Vec<(String, String)> {
    ureq_proto::take_trailer()
}

/// The upstream's body as read by the caller. ureq reports its deadline
/// passing mid-body as an `io::Error` of kind `Other` wrapping
/// `ureq::Error::Timeout`; it is given kind `TimedOut` here so the caller
/// can tell a stalled upstream from a broken one without knowing ureq.
struct AnswerBody(ureq::BodyReader<'static>);

impl Read for AnswerBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| {
            if is_timeout(&e) {
                io::Error::new(io::ErrorKind::TimedOut, e.to_string())
            } else {
                e
            }
        })
    }
}

fn is_timeout(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut
        || e.get_ref()
            .and_then(|inner| inner.downcast_ref::<ureq::Error>())
            .is_some_and(|u| matches!(u, ureq::Error::Timeout(_)))
}

/// ureq's error as the request flow needs it. A failure of the client's own
/// body reader reaches ureq as an I/O error like any socket error, so the
/// reader records it (`Watched`) and it is told apart here.
fn classify(e: ureq::Error, client_failure: Option<io::Error>) -> ForwardError {
    if let Some(original) = client_failure {
        return ForwardError::ClientBody(original);
    }
    match e {
        ureq::Error::Timeout(_) => ForwardError::Timeout,
        ureq::Error::Io(io) if is_timeout(&io) => ForwardError::Timeout,
        ureq::Error::Http(e) => ForwardError::Invalid(e.to_string()),
        ureq::Error::BadUri(e) => ForwardError::Invalid(e),
        other => ForwardError::Unavailable(other.to_string()),
    }
}

/// The client's body reader, remembering the error it failed with.
struct Watched {
    inner: Box<dyn Read + Send>,
    failure: Arc<Mutex<Option<io::Error>>>,
}

impl Read for Watched {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => {
                let copy = io::Error::new(e.kind(), e.to_string());
                *self.failure.lock().expect("not poisoned") = Some(e);
                Err(copy)
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_cannot_set_the_headers_creditgate_answers_with() {
        let kept = response_headers(&[
            ("X-Credit-Remaining", "999999"),
            ("idempotency-replayed", "true"),
            ("RateLimit", "\"user\";r=100;t=0"),
            ("RateLimit-Policy", "\"user\";q=1;w=1"),
            ("Content-Type", "application/json"),
        ]);
        assert_eq!(
            kept,
            vec![("Content-Type".to_string(), "application/json".to_string())]
        );
    }
    use std::io::{BufRead, BufReader, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::thread;
    use std::time::Instant;

    fn has(headers: &[(String, String)], name: &str) -> bool {
        headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    fn value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn request_headers_drop_hop_by_hop_credentials_and_our_own() {
        let incoming = [
            ("Host", "gw:8000"),
            ("Connection", "keep-alive, X-Secret"),
            ("X-Secret", "s"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Upgrade", "h2c"),
            ("Proxy-Authorization", "Basic x"),
            ("Transfer-Encoding", "chunked"),
            ("Trailer", "X-T"),
            ("Content-Length", "3"),
            ("Expect", "100-continue"),
            ("Authorization", "Bearer alice:t"),
            ("X-Creditgate-User", "root"),
            ("X-Request-Id", "forged"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("Accept", "application/json"),
            ("Content-Type", "text/plain"),
            ("X-Custom", "1"),
        ];
        let out = request_headers(&incoming, true);
        let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Accept", "Content-Type", "X-Custom"]);
        let kept = request_headers(&incoming, false);
        assert_eq!(value(&kept, "authorization"), Some("Bearer alice:t"));
    }

    #[test]
    fn added_headers_append_the_peer_to_forwarded_for() {
        let incoming = [
            ("host", "api.example.com"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
        ];
        let peer: IpAddr = "192.0.2.7".parse().unwrap();
        let out = added_headers(&incoming, peer, false, "alice", "r-42");
        assert_eq!(
            value(&out, "x-forwarded-for"),
            Some("10.0.0.1, 10.0.0.2, 192.0.2.7")
        );
        assert_eq!(value(&out, "x-forwarded-proto"), Some("http"));
        assert_eq!(value(&out, "x-forwarded-host"), Some("api.example.com"));
        assert_eq!(value(&out, "x-creditgate-user"), Some("alice"));
        assert_eq!(value(&out, "x-request-id"), Some("r-42"));
        let alone = added_headers(&[], "::1".parse().unwrap(), true, "bob", "r");
        assert_eq!(value(&alone, "x-forwarded-for"), Some("::1"));
        assert_eq!(value(&alone, "x-forwarded-proto"), Some("https"));
        assert!(!has(&alone, "x-forwarded-host"));
    }

    #[test]
    fn headers_with_line_breaks_are_never_passed_on() {
        let out = added_headers(
            &[("Host", "a\r\nX-Evil: 1")],
            "::1".parse().unwrap(),
            false,
            "u",
            "r",
        );
        assert!(!has(&out, "x-forwarded-host"));
        assert!(request_headers(&[("X-A", "1\n2"), ("Bad Name", "v")], false).is_empty());
        assert!(response_headers(&[("X-A", "1\r2")]).is_empty());
    }

    #[test]
    fn response_headers_drop_hop_by_hop_and_length() {
        let upstream = [
            ("Content-Type", "application/json"),
            ("Content-Length", "10"),
            ("Transfer-Encoding", "chunked"),
            ("Connection", "close, X-Conn"),
            ("X-Conn", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Set-Cookie", "a=1"),
            ("Set-Cookie", "b=2"),
        ];
        let out = response_headers(&upstream);
        let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Content-Type", "Set-Cookie", "Set-Cookie"]);
    }

    #[test]
    fn an_upstream_cannot_set_the_consoles_cookie() {
        let upstream = [
            ("Set-Cookie", "cg_console=forged; Path=/console"),
            ("set-cookie", " CG_CONSOLE =x"),
            ("Set-Cookie2", "cg_console=forged; Version=1"),
            ("Set-Cookie", "cg_console_other=1"),
            ("Set-Cookie", "theme=dark"),
        ];
        let out = response_headers(&upstream);
        let values: Vec<&str> = out.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(values, ["cg_console_other=1", "theme=dark"]);
    }

    #[test]
    fn client_forwarding_and_rewrite_headers_are_not_passed_on() {
        let incoming = [
            ("Forwarded", "for=1.2.3.4"),
            ("X-Real-IP", "1.2.3.4"),
            ("True-Client-IP", "1.2.3.4"),
            ("X-Original-URL", "/admin"),
            ("X-Rewrite-URL", "/admin"),
            ("Accept", "*/*"),
        ];
        let out = request_headers(&incoming, true);
        let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Accept"]);
    }

    #[test]
    fn forward_query_removes_every_token_and_keeps_the_rest() {
        assert_eq!(forward_query(""), "");
        assert_eq!(forward_query("token=a:b"), "");
        assert_eq!(
            forward_query("x=1&token=a:b&TOKEN=c&y=%20+2&token&%74oken=d&tokens=e"),
            "x=1&y=%20+2&tokens=e"
        );
        assert_eq!(forward_query("a=1&&b=&c"), "a=1&&b=&c");
    }

    // ---- the client, against loopback upstreams ----

    /// One request as an upstream saw it: the head (request line and
    /// headers) and the de-chunked body.
    struct Seen {
        head: String,
        body: Vec<u8>,
    }

    /// Reads one HTTP/1.1 request; `None` when the connection closed.
    fn read_request(r: &mut BufReader<TcpStream>) -> Option<Seen> {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let lower = head.to_ascii_lowercase();
        let mut body = Vec::new();
        if let Some(n) = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
        {
            body.resize(n.trim().parse().unwrap(), 0);
            r.read_exact(&mut body).ok()?;
        } else if lower.contains("transfer-encoding: chunked") {
            loop {
                let mut size = String::new();
                r.read_line(&mut size).ok()?;
                let n = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0; n + 2];
                r.read_exact(&mut chunk).ok()?;
                body.extend_from_slice(&chunk[..n]);
                if n == 0 {
                    break;
                }
            }
        }
        Some(Seen { head, body })
    }

    struct Upstream {
        addr: SocketAddr,
        accepts: Arc<AtomicUsize>,
        seen: mpsc::Receiver<Seen>,
    }

    /// A loopback upstream answering every request with `reply` (raw bytes
    /// written as they are; an empty reply means say nothing and hold on).
    fn upstream(reply: &'static [u8]) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let (tx, seen) = mpsc::channel();
        let counter = accepts.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                counter.fetch_add(1, Ordering::SeqCst);
                let tx = tx.clone();
                thread::spawn(move || serve(stream, reply, tx));
            }
        });
        Upstream {
            addr,
            accepts,
            seen,
        }
    }

    fn serve(stream: TcpStream, reply: &[u8], tx: mpsc::Sender<Seen>) {
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        while let Some(seen) = read_request(&mut reader) {
            let _ = tx.send(seen);
            if reply.is_empty() {
                thread::sleep(Duration::from_secs(5));
                return;
            }
            if writer.write_all(reply).is_err() {
                return;
            }
        }
    }

    fn get(addr: SocketAddr, path: &str) -> Outgoing {
        Outgoing {
            method: "GET".into(),
            url: format!("http://{addr}{path}"),
            headers: vec![],
            body: None,
            timeout: Duration::from_secs(2),
        }
    }

    fn read_all(answer: Answer) -> String {
        let mut s = String::new();
        let mut body = answer.body;
        body.read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn an_error_status_and_its_headers_pass_through() {
        let up = upstream(
            b"HTTP/1.1 503 Service Unavailable\r\nX-Foo: bar\r\nConnection: keep-alive\r\n\
              Keep-Alive: timeout=5\r\nContent-Length: 5\r\n\r\noops!",
        );
        let answer = Client::new(2).send(get(up.addr, "/x")).unwrap();
        assert_eq!(answer.status, 503);
        assert_eq!(value(&answer.headers, "x-foo"), Some("bar"));
        for gone in ["connection", "keep-alive", "content-length"] {
            assert!(!has(&answer.headers, gone), "{gone} passed");
        }
        assert_eq!(answer.length, Some(5));
        assert_eq!(read_all(answer), "oops!");
    }

    #[test]
    fn a_chunked_upstream_body_arrives_de_chunked() {
        let up = upstream(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        );
        let answer = Client::new(2).send(get(up.addr, "/")).unwrap();
        assert!(!has(&answer.headers, "transfer-encoding"));
        assert_eq!(answer.length, None);
        assert_eq!(read_all(answer), "hello world");
    }

    #[test]
    fn a_refused_connection_is_unavailable() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        // The listener is dropped: nothing listens on addr any more.
        match Client::new(2).send(get(addr, "/")) {
            Err(ForwardError::Unavailable(why)) => assert!(!why.is_empty()),
            other => panic!("{:?}", other.map(|a| a.status)),
        }
    }

    #[test]
    fn a_silent_upstream_times_out_in_about_the_timeout() {
        let up = upstream(b"");
        let mut out = get(up.addr, "/");
        out.timeout = Duration::from_millis(300);
        let start = Instant::now();
        let result = Client::new(2).send(out);
        let took = start.elapsed();
        assert!(
            matches!(result, Err(ForwardError::Timeout)),
            "{:?}",
            result.err()
        );
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
            "{took:?}"
        );
    }

    #[test]
    fn a_stalled_body_fails_within_the_same_deadline() {
        let up = upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this");
        let mut out = get(up.addr, "/");
        out.timeout = Duration::from_millis(300);
        let start = Instant::now();
        let mut body = Client::new(2).send(out).unwrap().body;
        let e = io::copy(&mut body, &mut io::sink()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(start.elapsed() < Duration::from_millis(1500));
    }

    #[test]
    fn sequential_requests_reuse_one_connection() {
        let up = upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let client = Client::new(2);
        for _ in 0..3 {
            assert_eq!(read_all(client.send(get(up.addr, "/")).unwrap()), "ok");
        }
        assert_eq!(up.accepts.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_request_goes_out_as_given_and_nothing_is_added() {
        let up = upstream(b"HTTP/1.1 204 No Content\r\n\r\n");
        let client = Client::new(2);
        let mut out = get(up.addr, "/a/b?x=1&y");
        out.method = "PURGE".into();
        out.headers = vec![("X-Custom".into(), "1".into())];
        assert_eq!(client.send(out).unwrap().status, 204);
        let seen = up.seen.recv().unwrap();
        let lines: Vec<&str> = seen.head.lines().collect();
        assert_eq!(lines[0], "PURGE /a/b?x=1&y HTTP/1.1");
        let lower = seen.head.to_ascii_lowercase();
        assert!(lower.contains(&format!("host: {}", up.addr)), "{lower}");
        assert!(lower.contains("x-custom: 1"), "{lower}");
        for added in [
            "user-agent",
            "accept",
            "accept-encoding",
            "content-length",
            "transfer-encoding",
        ] {
            assert!(
                !lower.contains(&format!("\n{added}:")),
                "{added} added: {lower}"
            );
        }
    }

    #[test]
    fn a_body_is_sent_on_get_too_with_its_length_or_chunked() {
        let up = upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        let client = Client::new(2);
        let mut known = get(up.addr, "/");
        known.body = Some(RequestBody {
            reader: Box::new(io::Cursor::new(b"hello".to_vec())),
            length: Some(5),
        });
        client.send(known).unwrap();
        let seen = up.seen.recv().unwrap();
        assert!(seen.head.to_ascii_lowercase().contains("content-length: 5"));
        assert_eq!(seen.body, b"hello");
        let mut unknown = get(up.addr, "/");
        unknown.method = "POST".into();
        unknown.body = Some(RequestBody {
            reader: Box::new(io::Cursor::new(b"streamed".to_vec())),
            length: None,
        });
        client.send(unknown).unwrap();
        let seen = up.seen.recv().unwrap();
        assert!(seen
            .head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"));
        assert_eq!(seen.body, b"streamed");
    }

    #[test]
    fn a_failing_client_body_is_told_apart_from_the_upstream() {
        struct TooLarge;
        impl Read for TooLarge {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("body_too_large"))
            }
        }
        let up = upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        let mut out = get(up.addr, "/");
        out.method = "POST".into();
        out.body = Some(RequestBody {
            reader: Box::new(TooLarge),
            length: None,
        });
        match Client::new(2).send(out) {
            Err(ForwardError::ClientBody(e)) => assert_eq!(e.to_string(), "body_too_large"),
            other => panic!("{:?}", other.map(|a| a.status)),
        }
    }

    #[test]
    fn a_method_that_is_not_a_token_is_invalid() {
        let mut out = get("127.0.0.1:9".parse().unwrap(), "/");
        out.method = "GE T".into();
        assert!(matches!(
            Client::new(1).send(out),
            Err(ForwardError::Invalid(_))
        ));
    }
}
