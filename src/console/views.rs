//! GET pages: which page a path names, and the domain reads that fill it.
//! A page that cannot be read (an unknown user, the database down) is shown
//! as a problem page with the reason, never a 500.

use chrono::{Days, Utc};
use maud::Markup;
use rouille::{Request, Response};

use super::error::ConsoleError;
use super::form::Form;
use super::layout::Frame;
use super::session::{Current, Flash};
use super::{chart, html, pages};
use crate::app::AppState;
use crate::billing::holds;
use crate::billing::ledger;
use crate::billing::usage;
use crate::gateway::store;
use crate::http::Ctx;
use crate::model::Username;
use crate::users;
use crate::users::keys;

/// Days in the usage charts.
const CHART_DAYS: u32 = 30;
/// Rows in the user page's ledger.
const LEDGER_ROWS: u32 = 50;
/// Rows in the users table.
const USERS_SHOWN: u32 = 200;
/// The overview lists users below this share of their allowance.
const LOW_PERCENT: u32 = 10;

/// A console page, by what it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Overview,
    /// The users list, filtered by this text.
    Users(String),
    User(Username),
    Routes,
    Webhooks,
    Jobs,
}

impl Target {
    pub fn url(&self) -> String {
        match self {
            Target::Overview => "/console/".into(),
            Target::Users(_) => "/console/users".into(),
            Target::User(name) => format!("/console/users/{name}"),
            Target::Routes => "/console/routes".into(),
            Target::Webhooks => "/console/webhooks".into(),
            Target::Jobs => "/console/jobs".into(),
        }
    }
}

/// The page a GET path names.
fn target(req: &Request, rest: &[&str]) -> Result<Target, ConsoleError> {
    let not_found = || ConsoleError::NotFound("There is no such console page.".into());
    match rest {
        [""] => Ok(Target::Overview),
        ["users"] => {
            let q: String = req.get_param("q").unwrap_or_default();
            Ok(Target::Users(q.trim().chars().take(64).collect()))
        }
        ["users", name] => Username::parse(name)
            .map(Target::User)
            .map_err(|_| not_found()),
        ["routes"] => Ok(Target::Routes),
        ["webhooks"] => Ok(Target::Webhooks),
        ["jobs"] => Ok(Target::Jobs),
        _ => Err(not_found()),
    }
}

pub fn get(
    state: &AppState,
    session: &Current,
    req: &Request,
    rest: &[&str],
    ctx: &Ctx,
) -> Response {
    // Messages are taken once: a new token in one is never shown again.
    let flashes = state.console.take_flashes(&session.id);
    match target(req, rest) {
        Ok(t) => render(state, session, &t, flashes, 200, None, ctx),
        Err(e) => problem(state, session, e, flashes, ctx),
    }
}

/// Draws a page with these messages and status (200, or the status of the
/// error a form just got, with that form so its fields keep their values).
pub fn render(
    state: &AppState,
    session: &Current,
    target: &Target,
    flashes: Vec<Flash>,
    status: u16,
    refill: Option<&Form>,
    ctx: &Ctx,
) -> Response {
    let frame = Frame {
        csrf: &session.csrf,
        flashes: &flashes,
        refill,
    };
    match read(state, target, &frame) {
        Ok(markup) => html(status, markup),
        Err(e) => problem(state, session, e, flashes, ctx),
    }
}

fn problem(
    state: &AppState,
    session: &Current,
    e: ConsoleError,
    mut flashes: Vec<Flash>,
    ctx: &Ctx,
) -> Response {
    log_failure(state, ctx, &e);
    flashes.push(Flash::error(e.to_string()));
    let frame = Frame {
        csrf: &session.csrf,
        flashes: &flashes,
        refill: None,
    };
    let title = match e.status() {
        404 => "Not found",
        503 => "Unavailable",
        _ => "Something went wrong",
    };
    let response = html(e.status(), pages::problem(&frame, title));
    if e.status() == 503 {
        response.with_additional_header("Retry-After", "2")
    } else {
        response
    }
}

/// A database failure is counted and logged with its cause; the page only
/// says to try again.
pub fn log_failure(state: &AppState, ctx: &Ctx, e: &ConsoleError) {
    if let ConsoleError::Db(db) = e {
        state.metrics.db_error();
        log::error!("req={} console: {}", ctx.id, crate::error::error_chain(db));
    }
}

fn read(state: &AppState, target: &Target, frame: &Frame<'_>) -> Result<Markup, ConsoleError> {
    let pool = &state.pool;
    let today = Utc::now().date_naive();
    let from = today
        .checked_sub_days(Days::new((CHART_DAYS - 1).into()))
        .unwrap_or(today);
    let days = |user: Option<&Username>| -> Result<_, ConsoleError> {
        let totals = usage::daily_totals(pool, from, today, user)?;
        Ok(chart::fill_days(&totals, today, CHART_DAYS))
    };
    Ok(match target {
        Target::Overview => pages::overview(
            frame,
            &pages::Overview {
                days: days(None)?,
                low: users::below_allowance(pool, LOW_PERCENT)?,
                jobs: state.jobs.list(),
                webhooks: crate::webhooks::outbox::counts_of(pool)?,
            },
        ),
        Target::Users(query) => {
            let mut list = users::search(pool, query, USERS_SHOWN + 1)?;
            let truncated = list.len() > USERS_SHOWN as usize;
            list.truncate(USERS_SHOWN as usize);
            let names: Vec<Username> = list
                .iter()
                .filter_map(|u| Username::parse(&u.username).ok())
                .collect();
            let last_used = usage::last_used(pool, &names)?;
            pages::users(
                frame,
                &pages::UserList {
                    query: query.clone(),
                    users: list,
                    last_used,
                    keys: keys::summary(pool, &names)?,
                    truncated,
                },
            )
        }
        Target::User(name) => {
            let user = users::show(pool, name)?;
            let last_used = usage::last_used(pool, std::slice::from_ref(name))?;
            pages::user(
                frame,
                &pages::UserDetail {
                    user,
                    days: days(Some(name))?,
                    ledger: ledger::recent(pool, name, LEDGER_ROWS)?,
                    last_used: last_used.get(name.as_str()).copied(),
                    keys: keys::list(pool, name)?,
                    holds: holds::open_of_user(pool, name)?,
                    now: Utc::now(),
                },
            )
        }
        Target::Routes => pages::routes(frame, &store::list(pool)?),
        Target::Webhooks => pages::webhooks(
            frame,
            &crate::webhooks::store::list(pool)?,
            crate::webhooks::outbox::counts_of(pool)?,
        ),
        Target::Jobs => pages::jobs(frame, &state.jobs.list()),
    })
}
