//! POST actions: check the CSRF token, turn the form into one call of the
//! same domain function the CLI and the admin API use, then redirect (303)
//! to the page with a message. A refused form changes nothing and shows
//! its page again with the reason (4xx, never a 500).

use chrono::Utc;
use rouille::{Request, Response};

use super::error::ConsoleError;
use super::form::{self, Form};
use super::session::{self, Current, Flash};
use super::views::{self, Target};
use super::{logged_out, ACTOR};
use crate::app::AppState;
use crate::billing::ledger::Reason;
use crate::gateway::routes::{NewRoute, RawRoute};
use crate::gateway::store;
use crate::http::Ctx;
use crate::model::{
    parse_delta, parse_label, Credit, Email, ParseError, RateLimit, RefillDay, Span, Username,
};
use crate::users::keys::{self, NewKey};
use crate::users::{self, CreditChange, NewUser};
use crate::webhooks::EventType;

/// What a successful action leads to.
enum Done {
    /// Back to the page, with this message.
    Flash(Flash),
    LoggedOut,
}

pub fn post(
    state: &AppState,
    session: &Current,
    req: &Request,
    rest: &[&str],
    ctx: &Ctx,
) -> Response {
    let target = target_of(rest);
    let (form, done) = match form::read(req) {
        Ok(form) => {
            let done = if session::csrf_matches(session, form.get("csrf")) {
                act(state, rest, &form)
            } else {
                Err(ConsoleError::Csrf)
            };
            (Some(form), done)
        }
        Err(e) => (None, Err(e)),
    };
    match done {
        Ok(Done::Flash(flash)) => {
            state.console.push_flash(&session.id, flash);
            Response::redirect_303(target.url())
        }
        Ok(Done::LoggedOut) => logged_out(state, session),
        Err(e) => {
            log::info!("req={} console action refused: {e}", ctx.id);
            views::log_failure(state, ctx, &e);
            let status = e.status();
            views::render(
                state,
                session,
                &target,
                vec![Flash::error(e.to_string())],
                status,
                // A form that never reached its action (a forged one) is
                // not shown back.
                form.as_ref().filter(|_| !matches!(e, ConsoleError::Csrf)),
                ctx,
            )
        }
    }
}

/// The page an action belongs to, shown again after it.
fn target_of(rest: &[&str]) -> Target {
    match rest {
        ["users", name, ..] => Username::parse(name)
            .map(Target::User)
            .unwrap_or(Target::Users(String::new())),
        ["users"] => Target::Users(String::new()),
        ["routes", ..] => Target::Routes,
        ["webhooks", ..] => Target::Webhooks,
        ["jobs", ..] => Target::Jobs,
        _ => Target::Overview,
    }
}

fn act(state: &AppState, rest: &[&str], form: &Form) -> Result<Done, ConsoleError> {
    let flash = match rest {
        ["logout"] => return Ok(Done::LoggedOut),
        ["users", name, "credit"] => change_credit(state, &username(name)?, form)?,
        ["users", name, "rotate"] => rotate(state, &username(name)?, form)?,
        ["users", name, "keys"] => add_key(state, &username(name)?, form)?,
        ["users", name, "keys", id, "revoke"] => {
            let name = username(name)?;
            let id: u64 = id
                .parse()
                .map_err(|_| ConsoleError::NotFound(format!("no key {id:?}")))?;
            let key = keys::revoke(&state.pool, &name, id)?;
            Flash::ok(format!(
                "Key {} ({}…) of {name} revoked; it no longer works.",
                key.id, key.prefix
            ))
        }
        ["users", name, "limit"] => set_rate_limit(state, &username(name)?, form)?,
        ["users", name, "notify"] => set_low_credit(state, &username(name)?, form)?,
        ["users"] => add_user(state, form)?,
        ["users", name, action @ ("disable" | "enable")] => {
            let disable = *action == "disable";
            let user = users::set_disabled(&state.pool, &username(name)?, disable)?;
            Flash::ok(format!("{} is now {action}d.", user.username))
        }
        ["routes"] => add_route(state, form)?,
        ["routes", id, "remove"] => {
            let id: u64 = id
                .parse()
                .map_err(|_| ConsoleError::NotFound(format!("no route {id:?}")))?;
            let route = store::remove(&state.pool, id)?;
            state
                .gateway
                .reload_after_change(&state.pool, "a console change");
            Flash::ok(format!("Route {} removed.", route.prefix))
        }
        ["webhooks"] => add_webhook(state, form)?,
        ["webhooks", id, "remove"] => {
            let hook = crate::webhooks::store::remove(&state.pool, id)?;
            Flash::ok(format!(
                "Webhook {} ({}) removed; its undelivered events are failed.",
                hook.id, hook.url
            ))
        }
        ["jobs", id, action @ ("pause" | "resume" | "run")] => job(state, id, action)?,
        _ => return Err(ConsoleError::NotFound("There is no such action.".into())),
    };
    Ok(Done::Flash(flash))
}

fn username(raw: &str) -> Result<Username, ConsoleError> {
    Username::parse(raw).map_err(|_| ConsoleError::NotFound(format!("no user {raw:?}")))
}

/// `op` = `add` (any whole number, negative takes away) or `set` (0 or
/// more), `amount` the number: the CLI's `--add` / `--set`.
fn change_credit(state: &AppState, name: &Username, form: &Form) -> Result<Flash, ConsoleError> {
    let amount = form.text("amount").unwrap_or("");
    let change = match form.get("op") {
        Some("add") => CreditChange::Add(parse_delta(amount)?),
        Some("set") => CreditChange::Set(Credit::parse(amount)?),
        _ => return Err(ConsoleError::BadInput("choose Add or Set".into())),
    };
    let user = users::change_credit(&state.pool, name, change, ACTOR)?;
    Ok(Flash::ok(match change {
        CreditChange::Add(n) => format!(
            "Added {n} credit(s) to {}; the balance is {}.",
            user.username, user.credit
        ),
        CreditChange::Set(_) => format!("{}'s credit is now {}.", user.username, user.credit),
    }))
}

/// `grace`: how long the old keys keep working (`24h`; blank: not at all).
fn rotate(state: &AppState, name: &Username, form: &Form) -> Result<Flash, ConsoleError> {
    let grace = form
        .text("grace")
        .map(Span::parse)
        .transpose()?
        .unwrap_or(Span::from_secs(0));
    let token = keys::rotate(&state.pool, name, grace)?;
    let old = match form.text("grace") {
        Some(g) if !grace.get().is_zero() => format!("the old keys work for {g} more"),
        _ => "the old keys no longer work".to_string(),
    };
    Ok(Flash::ok(format!("New token for {name}; {old}.")).with_secret(token))
}

/// `label` (optional) and `ttl` (`30d`; blank: no expiry), as `key add`.
fn add_key(state: &AppState, name: &Username, form: &Form) -> Result<Flash, ConsoleError> {
    let label = form.text("label").map(parse_label).transpose()?;
    let expires_at = match form.text("ttl") {
        Some(ttl) => {
            let span = chrono::Duration::from_std(Span::parse(ttl)?.get())
                .map_err(|_| ConsoleError::BadInput(format!("a ttl of {ttl:?} is too long")))?;
            Some(Utc::now() + span)
        }
        None => None,
    };
    let (key, token) = keys::create(&state.pool, name, &NewKey { label, expires_at }, None)?;
    Ok(Flash::ok(format!("New key {} for {name}.", key.id)).with_secret(token))
}

/// `rate`: `600/min`, `10/s`, `5/h`; `off` or blank removes the limit.
fn set_rate_limit(state: &AppState, name: &Username, form: &Form) -> Result<Flash, ConsoleError> {
    let limit = match form.text("rate") {
        None | Some("off") => None,
        Some(rate) => Some(RateLimit::parse(rate)?),
    };
    let user = users::set_rate_limit(&state.pool, name, limit)?;
    Ok(Flash::ok(match user.rate_limit {
        Some(l) => format!("{name} is limited to {l}."),
        None => format!("{name} has no rate limit."),
    }))
}

/// `low_credit`: a whole number, or `off` / blank to remove the notice.
fn set_low_credit(state: &AppState, name: &Username, form: &Form) -> Result<Flash, ConsoleError> {
    let threshold = match form.text("low_credit") {
        None | Some("off") => None,
        Some(n) => Some(field(Credit::parse(n), "low-credit notice")?),
    };
    let user = users::set_low_credit(&state.pool, name, threshold)?;
    Ok(Flash::ok(match user.low_credit {
        Some(n) => format!("{name} gets a low-credit notice when the credit falls below {n}."),
        None => format!("{name} gets no low-credit notice."),
    }))
}

/// The form of `user add`; the new token is shown once, in the message.
fn add_user(state: &AppState, form: &Form) -> Result<Flash, ConsoleError> {
    let credit = |f: &str, what: &str| {
        form.text(f)
            .map(|v| field(Credit::parse(v), what))
            .transpose()
    };
    let refill_day = match number(form, "refill_day")? {
        Some(d) => field(RefillDay::parse(d), "refill day")?,
        None => RefillDay::default(),
    };
    let new = NewUser {
        username: field(
            Username::parse(form.text("username").unwrap_or("")),
            "username",
        )?,
        credit: credit("credit", "credit")?,
        monthly_credit: credit("monthly", "monthly allowance")?,
        refill_day,
        email: form
            .text("email")
            .map(|e| field(Email::parse(e), "e-mail"))
            .transpose()?,
        token: None,
        rate_limit: form
            .text("rate")
            .filter(|r| *r != "off")
            .map(|r| field(RateLimit::parse(r), "rate limit"))
            .transpose()?,
        low_credit: credit("low_credit", "low-credit notice")?,
    };
    let (user, token) = users::create(&state.pool, new, Reason::Create, ACTOR, Utc::now())?;
    Ok(Flash::ok(format!(
        "Created {} with {} credit(s); its token is shown this once:",
        user.username, user.credit
    ))
    .with_secret(token))
}

/// A field's parse error, named for the operator.
fn field<T>(parsed: Result<T, ParseError>, what: &str) -> Result<T, ConsoleError> {
    parsed.map_err(|e| ConsoleError::BadInput(format!("{what}: {e}")))
}

/// A whole number field, or `None` when left blank (the default applies).
fn number(form: &Form, field: &str) -> Result<Option<i64>, ConsoleError> {
    form.text(field)
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                ConsoleError::BadInput(format!("invalid {field}: a whole number, not {v:?}"))
            })
        })
        .transpose()
}

fn add_route(state: &AppState, form: &Form) -> Result<Flash, ConsoleError> {
    let raw = RawRoute {
        prefix: form.text("prefix").unwrap_or("").to_string(),
        upstream: form.text("upstream").unwrap_or("").to_string(),
        cost: number(form, "cost")?,
        methods: vec![form.get("methods").unwrap_or("").to_string()],
        charge_on: form.text("charge_on").map(str::to_string),
        timeout_ms: number(form, "timeout_ms")?,
        strip_prefix: form.ticked("strip_prefix"),
        max_in_flight: number(form, "max_in_flight")?,
        max_cost: number(form, "max_cost")?,
        cost_header: form.text("cost_header").map(str::to_string),
    };
    let new = NewRoute::from_raw(&raw).map_err(store::RouteError::Invalid)?;
    let route = store::add(&state.pool, new)?;
    state
        .gateway
        .reload_after_change(&state.pool, "a console change");
    Ok(Flash::ok(format!(
        "Route {} → {} added.",
        route.prefix, route.upstream
    )))
}

/// The form of `webhook add`: a URL and one checkbox per event type; the
/// signing secret is shown once, in the message.
fn add_webhook(state: &AppState, form: &Form) -> Result<Flash, ConsoleError> {
    let url = form.text("url").unwrap_or("");
    let events: Vec<EventType> = EventType::ALL
        .into_iter()
        .filter(|e| form.ticked(e.as_str()))
        .collect();
    if events.is_empty() {
        return Err(ConsoleError::BadInput("tick at least one event".into()));
    }
    let (hook, secret) = crate::webhooks::store::add(&state.pool, url, &events)?;
    Ok(Flash::ok(format!(
        "Webhook {} → {} added; its signing secret is shown this once:",
        hook.id, hook.url
    ))
    .with_secret(secret))
}

fn job(state: &AppState, id: &str, action: &str) -> Result<Flash, ConsoleError> {
    let view = match action {
        "pause" => state.jobs.pause(id),
        "resume" => state.jobs.resume(id),
        _ => state.jobs.run_now(id),
    }
    .ok_or_else(|| ConsoleError::NotFound(format!("no job {id:?}")))?;
    Ok(Flash::ok(match action {
        "pause" => format!("Job {} paused.", view.id),
        "resume" => format!("Job {} resumed.", view.id),
        _ => format!(
            "Job {} ran: {}",
            view.id,
            view.last_result.as_deref().unwrap_or("no result")
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_action_shows_the_page_it_came_from() {
        assert_eq!(
            target_of(&["users", "alice", "credit"]),
            Target::User(Username::parse("alice").unwrap())
        );
        assert_eq!(
            target_of(&["users", "a b", "credit"]),
            Target::Users(String::new())
        );
        assert_eq!(target_of(&["users"]), Target::Users(String::new()));
        assert_eq!(target_of(&["routes", "3", "remove"]), Target::Routes);
        assert_eq!(target_of(&["jobs", "heartbeat", "pause"]), Target::Jobs);
        assert_eq!(target_of(&["logout"]), Target::Overview);
    }

    #[test]
    fn a_blank_number_takes_the_default_and_text_is_refused() {
        let f = form::parse("cost=&timeout_ms=abc&x=7");
        assert_eq!(number(&f, "cost").unwrap(), None);
        assert_eq!(number(&f, "x").unwrap(), Some(7));
        let e = number(&f, "timeout_ms").unwrap_err();
        assert_eq!(e.status(), 400);
        assert!(e.to_string().contains("timeout_ms"), "{e}");
    }
}
