//! The operator console under `/console/`: HTML pages served by the same
//! rouille server as the API, for what operators otherwise do with the CLI
//! or the admin API. It changes nothing itself: every action calls the same
//! domain function as those two (with ledger actor `console`).
//!
//! Access: the admin token, typed into a login form (never in a URL), buys
//! an in-memory session (see `session` — sessions are per instance: behind a
//! load balancer, use sticky sessions). Without `CREDITGATE_ADMIN_TOKEN`
//! every console path answers 403. A wrong token counts as a failed admin
//! authentication, so the brute-force brake of the API covers the form too.
//! Every POST but the login carries the session's CSRF token; the login form
//! has none, since forging it would need the admin token itself.
//!
//! Every answer here is `Cache-Control: no-store` (after logging out, Back
//! shows nothing) and carries a policy that lets the page load nothing and
//! run no script: the console has none.
//!
//! Layout: `views` reads what a page shows and `pages` draws it; `actions`
//! turns a form into one domain call and a message for the next page.

mod actions;
mod chart;
mod error;
mod form;
mod layout;
mod pages;
mod session;
mod views;

use std::time::Instant;

use maud::Markup;
use rouille::{Request, Response};

pub use error::ConsoleError;
pub use session::{Sessions, IDLE as SESSION_IDLE};

use crate::app::AppState;
use crate::auth::token;
use crate::http::{count_auth_failure, refuse_if_throttled, ApiError, Ctx};
use session::Current;

/// The ledger's actor for changes made here.
pub const ACTOR: &str = "console";

/// Answers every request under `/console`; `rest` is the path after it,
/// split at `/` (`/console/` is `[""]`).
pub fn handle(state: &AppState, req: &Request, rest: &[&str], ctx: &mut Ctx) -> Response {
    let response = if state.config.admin_token.is_none() {
        html(403, pages::admin_disabled())
    } else {
        dispatch(state, req, rest, ctx)
    };
    harden(response)
}

fn dispatch(state: &AppState, req: &Request, rest: &[&str], ctx: &mut Ctx) -> Response {
    // `/console/users/` is `/console/users`; `/console/` stays the overview.
    let rest = match rest {
        [head @ .., ""] if !head.is_empty() => head,
        _ => rest,
    };
    match (req.method(), rest) {
        (_, []) => Response::redirect_303("/console/"),
        ("GET", ["login"]) => match current(state, req) {
            Some(_) => Response::redirect_303("/console/"),
            None => html(200, pages::login(None)),
        },
        ("POST", ["login"]) => login(state, req, ctx),
        (_, ["login"]) => method_not_allowed(),
        (method, _) => {
            // Without a session nothing is shown and nothing changes.
            let Some(session) = current(state, req) else {
                return Response::redirect_303("/console/login");
            };
            ctx.user = Some("console".into());
            match method {
                "GET" => views::get(state, &session, req, rest, ctx),
                "POST" => actions::post(state, &session, req, rest, ctx),
                _ => method_not_allowed(),
            }
        }
    }
}

/// The request's live session, if its cookie names one.
fn current(state: &AppState, req: &Request) -> Option<Current> {
    let id = session::id_from_cookie(req.header("Cookie")?)?;
    state.console.touch(id, Instant::now())
}

fn login(state: &AppState, req: &Request, ctx: &Ctx) -> Response {
    if let Err(ApiError::TooManyFailures { retry_after }) = refuse_if_throttled(state, req) {
        let e = ConsoleError::Throttled { retry_after };
        return html(e.status(), pages::login(Some(&e.to_string())))
            .with_additional_header("Retry-After", retry_after.to_string());
    }
    let form = match form::read(req) {
        Ok(form) => form,
        Err(e) => return html(e.status(), pages::login(Some(&e.to_string()))),
    };
    let expected = state.config.admin_token.as_ref().map(|t| t.expose());
    let right = match (form.get("token"), expected) {
        (Some(given), Some(expected)) => token::same_secret(given, expected),
        _ => false,
    };
    if !right {
        count_auth_failure(state, req, ctx, &"wrong admin token on the console login");
        return html(401, pages::login(Some("Wrong admin token.")));
    }
    if let Some(old) = current(state, req) {
        state.console.end(&old.id);
    }
    let new = state.console.start(Instant::now());
    log::info!("req={} console login", ctx.id);
    Response::redirect_303("/console/")
        .with_additional_header("Set-Cookie", session::set_cookie(&new.id, is_https(req)))
}

/// Ends the session and makes the browser forget its cookie.
fn logged_out(state: &AppState, session: &Current) -> Response {
    state.console.end(&session.id);
    Response::redirect_303("/console/login")
        .with_additional_header("Set-Cookie", session::clear_cookie())
}

/// The cookie gets `Secure` when a TLS proxy in front says the browser
/// used https.
fn is_https(req: &Request) -> bool {
    req.header("X-Forwarded-Proto")
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

fn html(status: u16, markup: Markup) -> Response {
    Response::html(markup.into_string()).with_status_code(status)
}

fn method_not_allowed() -> Response {
    Response::text("method not allowed\n").with_status_code(405)
}

/// Headers every console answer carries, pages and redirects alike.
fn harden(response: Response) -> Response {
    response
        .with_unique_header("Cache-Control", "no-store")
        .with_unique_header("Content-Security-Policy", layout::content_security_policy())
        .with_unique_header("X-Frame-Options", "DENY")
        .with_unique_header("X-Content-Type-Options", "nosniff")
        .with_unique_header("Referrer-Policy", "no-referrer")
}
