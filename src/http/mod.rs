//! The HTTP edge: binds the rouille server, routes, logs one line per
//! request, and stops gracefully. No SQL and no business rule here.

mod admin;
mod admin_body;
mod admin_keys;
mod api;
mod error;
pub(crate) mod extract;
mod forward_auth;
mod gateway;
mod legacy;
#[cfg(test)]
mod openapi_drift;
mod service_auth;
mod v1;
mod v1_body;

use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rouille::{Request, Response};

pub use error::ApiError;

use crate::app::AppState;

use crate::db::DbError;
use crate::error::error_chain;
use crate::ops::shutdown::Shutdown;

/// A header block over this is refused with 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Per-request facts for the access log.
pub struct Ctx {
    pub id: u64,
    pub route: &'static str,
    pub user: Option<String>,
}

type Handler = Box<dyn Fn(&Request) -> Response + Send + Sync + 'static>;

pub struct HttpServer {
    server: rouille::Server<Handler>,
    state: Arc<AppState>,
}

#[derive(Debug)]
pub struct BindError(pub String);

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BindError {}

/// Binds `state.config.bind` (port 0 picks a free one).
pub fn bind(state: Arc<AppState>) -> Result<HttpServer, BindError> {
    let addr = state.config.bind;
    let threads = state.config.threads;
    let handler_state = Arc::clone(&state);
    let handler: Handler = Box::new(move |req| handle(&handler_state, req));
    let edge = &state.config.edge;
    let proxies = edge.trusted_proxies.clone();
    let limits = tiny_http::Limits {
        head_timeout: edge.head_timeout,
        min_rate: edge.min_rate,
        max_conns_per_ip: edge.max_conns_per_ip,
        // A trusted proxy's connections carry many clients.
        exempt: (!proxies.is_empty())
            .then(|| Arc::new(move |ip: &std::net::IpAddr| proxies.trusts(ip)) as _),
    };
    let server = match &edge.tls {
        None => limits.scope(|| rouille::Server::new(addr, handler)),
        Some(files) => {
            let (cert, key) = read_tls_files(files)?;
            limits.scope(|| rouille::Server::new_ssl(addr, handler, cert, key))
        }
    }
    .map_err(|e| BindError(format!("cannot listen on {addr}: {e}")))?
    .pool_size(threads);
    Ok(HttpServer { server, state })
}

/// The PEM files of `CREDITGATE_TLS_CERT` and `CREDITGATE_TLS_KEY`; a file
/// that cannot be read is a start failure naming the variable (one that
/// does not hold PEM fails in `Server::new_ssl`, also at start).
fn read_tls_files(files: &crate::config::TlsFiles) -> Result<(Vec<u8>, Vec<u8>), BindError> {
    let read = |var: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| BindError(format!("{var}: cannot read {}: {e}", path.display())))
    };
    Ok((
        read("CREDITGATE_TLS_CERT", &files.cert)?,
        read("CREDITGATE_TLS_KEY", &files.key)?,
    ))
}

impl HttpServer {
    pub fn addr(&self) -> SocketAddr {
        self.server.server_addr()
    }

    /// `https` when creditgate serves TLS itself, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.state.config.edge.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Serves until `shutdown` fires, then lets in-flight requests finish for
    /// at most `grace` and closes the socket. While they finish, requests
    /// that arrive are still read and answered 503 (see `handle`): a client
    /// or a load balancer gets a clean "retry elsewhere" instead of a
    /// connection that is accepted and then reset when the socket closes.
    pub fn run(self, shutdown: &Shutdown, grace: Duration) {
        while !shutdown.is_triggered() {
            self.server.poll_timeout(Duration::from_millis(100));
        }
        let deadline = Instant::now() + grace;
        while self.state.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            self.server.poll_timeout(Duration::from_millis(20));
        }
        // Requests already parsed by tiny_http are answered, not dropped.
        self.server.poll_timeout(Duration::from_millis(20));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let server = self.server;
        std::thread::spawn(move || {
            server.join();
            drop(server);
            let _ = done_tx.send(());
        });
        let left = deadline.saturating_duration_since(Instant::now());
        if done_rx
            .recv_timeout(left.max(Duration::from_millis(100)))
            .is_err()
        {
            log::warn!("in-flight requests still running after {grace:?}; stopping anyway");
        }
    }
}

static NEXT_REQUEST_ID: AtomicU64 = AtomicU64::new(1);

fn handle(state: &AppState, req: &Request) -> Response {
    let start = Instant::now();
    let mut ctx = Ctx {
        id: NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed),
        route: "other",
        user: None,
    };
    state.in_flight.fetch_add(1, Ordering::SeqCst);
    let header_bytes: usize = req.headers().map(|(k, v)| k.len() + v.len() + 4).sum();
    let result = if state.shutdown.is_triggered() {
        // Stopping: nothing new is started, and nothing is charged.
        ctx.route = "stopping";
        Err(ApiError::Unavailable)
    } else if header_bytes > MAX_HEADER_BYTES {
        Err(ApiError::HeadersTooLarge)
    } else {
        panic::catch_unwind(AssertUnwindSafe(|| route(state, req, &mut ctx))).unwrap_or_else(|_| {
            log::error!(
                "req={} handler panicked (see the panic message above)",
                ctx.id
            );
            Err(ApiError::Internal)
        })
    };
    let response = result.unwrap_or_else(|e| {
        log_failure(state, &ctx, &e);
        e.response()
    });
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    state.metrics.request(ctx.route, response.status_code);
    log::info!(
        target: "access",
        "req={} {} {} {} user={} {:.1}ms",
        ctx.id,
        log_safe(req.method()),
        log_safe(&redact_query(req.raw_url())),
        response.status_code,
        ctx.user.as_deref().map(log_safe).unwrap_or_else(|| "-".into()),
        start.elapsed().as_secs_f64() * 1000.0
    );
    response
}

fn route(state: &AppState, req: &Request, ctx: &mut Ctx) -> Result<Response, ApiError> {
    let raw = req.raw_url();
    let path = raw.split('?').next().unwrap_or("");
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let method = req.method();
    match segments.as_slice() {
        ["api", "v1.0", "banks_data", bank] | ["api", "v1.0", "banks_data", bank, ""] => {
            ctx.route = "banks_data";
            allow(method, &["GET"])?;
            let answer = api::banks_data(state, req, bank, ctx);
            if state.config.legacy_answers {
                legacy::answer(answer)
            } else {
                answer
            }
        }
        ["api", "v1.0", "credit"] => {
            ctx.route = "credit";
            allow(method, &["GET"])?;
            api::balance(state, req, ctx)
        }
        ["health"] => {
            ctx.route = "health";
            allow(method, &["GET"])?;
            Ok(api::health())
        }
        ["ready"] => {
            ctx.route = "ready";
            allow(method, &["GET"])?;
            api::ready(state)
        }
        ["_ah", "warmup"] => {
            ctx.route = "warmup";
            allow(method, &["GET"])?;
            Ok(api::warmup())
        }
        ["metrics"] => {
            ctx.route = "metrics";
            allow(method, &["GET"])?;
            Ok(api::metrics(state))
        }
        ["stopServer"] => {
            ctx.route = "stop";
            allow(method, &["GET", "POST"])?;
            admin::stop(state, req, ctx)
        }
        ["v1", "whoami"] => {
            ctx.route = "whoami";
            allow(method, &["GET"])?;
            api::whoami(state, req, ctx)
        }
        ["openapi.json"] => {
            ctx.route = "openapi";
            allow(method, &["GET"])?;
            Ok(Response::from_data(
                "application/json",
                crate::openapi::text(),
            ))
        }
        ["v1", "charge"] => {
            ctx.route = "v1_charge";
            allow(method, &["POST"])?;
            v1::charge(state, req, ctx)
        }
        ["v1", "forward-auth"] => {
            // Any method: the proxy asks about every request it gets.
            ctx.route = "forward_auth";
            forward_auth::check(state, req, ctx)
        }
        ["v1", "holds"] => {
            ctx.route = "v1_holds";
            allow(method, &["POST"])?;
            v1::place_hold(state, req, ctx)
        }
        ["v1", "holds", id] => {
            ctx.route = "v1_holds";
            allow(method, &["GET"])?;
            v1::get_hold(state, req, id, ctx)
        }
        ["v1", "holds", id, action @ ("capture" | "release")] => {
            ctx.route = "v1_holds";
            allow(method, &["POST"])?;
            v1::settle_hold(state, req, id, *action == "capture", ctx)
        }
        ["admin", "v1", rest @ ..] => {
            ctx.route = "admin";
            // A trailing slash is optional here too.
            let rest = rest.strip_suffix(&[""]).unwrap_or(rest);
            admin::route(state, req, method, rest, ctx)
        }
        ["console", rest @ ..] => {
            ctx.route = "console";
            Ok(crate::console::handle(state, req, rest, ctx))
        }
        // Built-in paths come first; a route cannot shadow them anyway.
        _ => match state.gateway.route_for(path) {
            Some(r) => {
                ctx.route = "gateway";
                gateway::serve(state, req, &r, ctx)
            }
            None => {
                ctx.route = "not_found";
                Err(ApiError::NotFound)
            }
        },
    }
}

/// A database failure is counted and logged with its whole cause; the
/// client only learns that it should retry.
fn log_failure(state: &AppState, ctx: &Ctx, e: &ApiError) {
    let ApiError::Database(e) = e else { return };
    state.metrics.db_error();
    if let DbError::CommitUnknown(_) = e {
        // The one 503 that may have been charged: say so where operators
        // look, with what they need to refund it.
        state.metrics.commit_unknown();
        log::error!(
            "req={} charge in doubt for user={}: {}",
            ctx.id,
            ctx.user.as_deref().map(log_safe).unwrap_or_default(),
            error_chain(e)
        );
    } else {
        log::error!("req={} {}", ctx.id, error_chain(e));
    }
}

fn allow(method: &str, allowed: &[&str]) -> Result<(), ApiError> {
    if allowed.contains(&method) {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed {
            allow: allowed.join(", "),
        })
    }
}

/// 429 for an address that has failed to authenticate too often this
/// minute; asked before any credential is looked at (also by the console's
/// login form).
pub(crate) fn refuse_if_throttled(state: &AppState, req: &Request) -> Result<(), ApiError> {
    let now = chrono::Utc::now().timestamp() as u64;
    match state.throttle.check(client_ip(state, req), now) {
        Ok(()) => Ok(()),
        Err(retry_after) => Err(ApiError::TooManyFailures { retry_after }),
    }
}

/// Counts a failed authentication (metrics, the brake, the log) and gives
/// the one 401 every failure gets.
fn unauthorized(
    state: &AppState,
    req: &Request,
    ctx: &Ctx,
    why: &dyn std::fmt::Display,
) -> ApiError {
    count_auth_failure(state, req, ctx, why);
    ApiError::Unauthorized
}

/// Counts a failed authentication in the metrics, the brake and the log;
/// the console's login form answers with its own page.
pub(crate) fn count_auth_failure(
    state: &AppState,
    req: &Request,
    ctx: &Ctx,
    why: &dyn std::fmt::Display,
) {
    state.metrics.auth_failure();
    let now = chrono::Utc::now().timestamp() as u64;
    state.throttle.failed(client_ip(state, req), now);
    log::info!("req={} authentication failed: {why}", ctx.id);
}

/// The client's address: the socket's peer, or the address a trusted proxy
/// reports for it (`CREDITGATE_TRUSTED_PROXIES`), so that one client
/// behind a shared proxy cannot lock out everyone else behind it.
pub(crate) fn client_ip(state: &AppState, req: &Request) -> std::net::IpAddr {
    let peer = req.remote_addr().ip();
    let proxies = &state.config.edge.trusted_proxies;
    if proxies.is_empty() {
        return peer;
    }
    let forwarded: Vec<&str> = req
        .headers()
        .filter(|(k, _)| k.eq_ignore_ascii_case("X-Forwarded-For"))
        .map(|(_, v)| v)
        .collect();
    proxies.client(peer, &forwarded)
}

/// Every `Authorization` header value, in order.
fn authorization_headers(req: &Request) -> Vec<&str> {
    req.headers()
        .filter(|(k, _)| k.eq_ignore_ascii_case("Authorization"))
        .map(|(_, v)| v)
        .collect()
}

/// Every value of a query parameter of a raw query, percent-decoded.
fn query_values(raw_query: &str, name: &str) -> Vec<String> {
    raw_query
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| {
                let v = v.replace('+', " ");
                rouille::percent_encoding::percent_decode(v.as_bytes())
                    .decode_utf8_lossy()
                    .into_owned()
            })
        })
        .collect()
}

/// The raw URL with every `token=` value replaced, for the log.
pub fn redact_query(raw_url: &str) -> String {
    let Some((path, query)) = raw_url.split_once('?') else {
        return raw_url.to_string();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("token") => format!("{k}=[redacted]"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

/// A client-supplied string made safe for a one-line log: control characters
/// escaped, length bounded.
pub fn log_safe(s: &str) -> String {
    // Most values (a method, a path, a user name) need nothing escaped and
    // are short: copied whole, not char by char (~1,000 instructions each,
    // three per access line).
    if s.len() <= 200
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'\\' && b != b'"' && b != b'\'')
    {
        return s.to_string();
    }
    let mut out: String = s.chars().take(200).flat_map(char::escape_default).collect();
    if s.chars().count() > 200 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_values_are_redacted_from_logged_urls() {
        assert_eq!(
            redact_query("/a?x=1&token=alice:cg_secret&y=2"),
            "/a?x=1&token=[redacted]&y=2"
        );
        assert_eq!(redact_query("/a?TOKEN=s"), "/a?TOKEN=[redacted]");
        assert_eq!(redact_query("/a"), "/a");
    }

    #[test]
    fn plain_values_are_logged_as_escaping_would_print_them() {
        for s in [
            "GET",
            "/api/v1.0/banks_data/BOFA/?x=1",
            "alice",
            "a'b",
            "x\"y",
            "b\\s",
            "a b",
        ] {
            let escaped: String = s.chars().flat_map(char::escape_default).collect();
            assert_eq!(log_safe(s), escaped, "{s}");
        }
    }

    #[test]
    fn logged_strings_stay_on_one_line() {
        assert_eq!(log_safe("a\r\nb"), "a\\r\\nb");
        assert!(!log_safe("x\u{0}y").contains('\u{0}'));
        assert!(log_safe(&"z".repeat(10_000)).len() < 300);
    }
}
