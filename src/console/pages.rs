//! The console's pages as templates over data that `views` has already
//! read: no I/O here, so a page is a pure function of what it shows.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use maud::{html, Markup};

use super::chart;
use super::layout::{bare, button, csrf_field, page, Frame, Nav};
use crate::billing::holds::{self, Hold};
use crate::billing::ledger::LedgerRow;
use crate::billing::usage::DayTotal;
use crate::gateway::routes::{ChargeOn, Route};
use crate::ops::jobs::JobView;
use crate::users::keys::{Key, KeySummary};
use crate::users::User;
use crate::webhooks::outbox::Counts;
use crate::webhooks::{EventType, Webhook};

/// What the overview shows.
pub struct Overview {
    /// Oldest first, one per day, the last is today.
    pub days: Vec<DayTotal>,
    pub low: Vec<User>,
    pub jobs: Vec<JobView>,
    /// Webhook deliveries by state, over all instances.
    pub webhooks: Counts,
}

pub struct UserList {
    pub query: String,
    pub users: Vec<User>,
    pub last_used: HashMap<String, NaiveDate>,
    pub keys: HashMap<String, KeySummary>,
    /// The list stopped at the page's limit.
    pub truncated: bool,
}

pub struct UserDetail {
    pub user: User,
    pub days: Vec<DayTotal>,
    pub ledger: Vec<LedgerRow>,
    pub last_used: Option<NaiveDate>,
    pub keys: Vec<Key>,
    /// Newest first, at most `holds::OPEN_LISTED`.
    pub holds: Vec<Hold>,
    /// When the page was read: which keys have expired.
    pub now: DateTime<Utc>,
}

pub fn login(error: Option<&str>) -> Markup {
    bare(
        "Log in",
        html! {
            div.login.card {
                h1 { "creditgate console" }
                @if let Some(e) = error {
                    div.flash.err role="alert" { (e) }
                }
                form method="post" action="/console/login" {
                    label {
                        "Admin token"
                        input type="password" name="token" autocomplete="current-password"
                            required autofocus;
                    }
                    button type="submit" { "Log in" }
                }
                p.muted { "Use the value of CREDITGATE_ADMIN_TOKEN." }
            }
        },
    )
}

pub fn admin_disabled() -> Markup {
    bare(
        "Console disabled",
        html! {
            div.login.card {
                h1 { "Console disabled" }
                p { "The console and the admin API are off: CREDITGATE_ADMIN_TOKEN is not set." }
            }
        },
    )
}

/// A page for a request that has no page of its own to show (unknown
/// path, a user that does not exist, the database down while reading).
pub fn problem(frame: &Frame<'_>, title: &str) -> Markup {
    page(title, None, frame, html! { h1 { (title) } })
}

fn charts(days: &[DayTotal]) -> Markup {
    let calls: Vec<(NaiveDate, u64)> = days.iter().map(|d| (d.day, d.calls)).collect();
    let credits: Vec<(NaiveDate, u64)> = days.iter().map(|d| (d.day, d.credits)).collect();
    html! {
        div.grid.two {
            div.calls { (chart::bars("Calls per day, last 30 days", "calls", &calls)) }
            div.credits { (chart::bars("Credits per day, last 30 days", "credits", &credits)) }
        }
    }
}

pub fn overview(frame: &Frame<'_>, o: &Overview) -> Markup {
    let today = o.days.last().copied();
    let sum = |f: fn(&DayTotal) -> u64| o.days.iter().map(f).sum::<u64>();
    let body = html! {
        h1 { "Overview" }
        section.card {
            dl.stats {
                div { dt { "Calls today" } dd #today-calls { (today.map_or(0, |t| t.calls)) } }
                div { dt { "Credits today" } dd #today-credits { (today.map_or(0, |t| t.credits)) } }
                div { dt { "Calls, 30 days" } dd { (sum(|d| d.calls)) } }
                div { dt { "Credits, 30 days" } dd { (sum(|d| d.credits)) } }
            }
        }
        section.card #usage { (charts(&o.days)) }
        section.card #low-credit {
                h2 { "Below 10 % of their monthly allowance" }
                @if o.low.is_empty() {
                    p.muted { "Nobody." }
                } @else {
                    div.scroll { table {
                        thead { tr { th { "User" } th.num { "Credit" } th.num { "Monthly" } } }
                        tbody { @for u in &o.low { tr {
                            td { (user_link(&u.username)) }
                            td.num { (credit(u)) }
                            td.num { (opt(u.monthly_credit)) }
                        } } }
                    } }
                }
        }
        section.card #webhooks {
            h2 { "Webhook deliveries" }
            dl.stats {
                div { dt { "Pending" } dd #webhooks-pending { (o.webhooks.pending) } }
                div { dt { "Delivered" } dd #webhooks-delivered { (o.webhooks.delivered) } }
                div { dt { "Failed" } dd #webhooks-failed { (o.webhooks.failed) } }
            }
        }
        // The whole width: a last result is a sentence, and half a page
        // clipped it at 1280 px (#24).
        section.card #jobs {
            h2 { "Jobs" }
            div.scroll { table {
                thead { tr { th { "Job" } th { "State" } th { "Last run (UTC)" } th { "Last result" } } }
                tbody { @for j in &o.jobs { tr {
                    td { (j.id) }
                    td { (job_state(j)) }
                    td { (when(j.last_run.as_deref(), "never")) }
                    td.wrap { (j.last_result.as_deref().unwrap_or("—")) }
                } } }
            } }
        }
    };
    page("Overview", Some(Nav::Overview), frame, body)
}

pub fn users(frame: &Frame<'_>, list: &UserList) -> Markup {
    let body = html! {
        h1 { "Users" }
        section.card {
            form.stack method="get" action="/console/users" role="search" {
                label { "Name contains" input type="search" name="q" value=(list.query); }
                button type="submit" { "Filter" }
                @if !list.query.is_empty() { a href="/console/users" { "Clear" } }
            }
        }
        section.card {
            @if list.users.is_empty() {
                p.muted { "No user matches." }
            } @else {
                div.scroll { table #users {
                    thead { tr {
                        th { "Username" } th.num { "Credit" } th.num { "Monthly" }
                        th { "Rate limit" } th.num { "Keys" } th { "Status" } th { "Last used (UTC)" }
                    } }
                    tbody { @for u in &list.users { tr {
                        td { (user_link(&u.username)) }
                        td.num { (credit(u)) }
                        td.num { (opt(u.monthly_credit)) }
                        td { (rate(u)) }
                        td.num { (list.keys.get(&u.username).map_or(0, |k| k.working)) }
                        td { (disabled_tag(u.disabled)) }
                        td { (last_used(list, &u.username)) }
                    } } }
                } }
                @if list.truncated {
                    p.muted { "Only the first " (list.users.len()) " are shown; narrow the filter." }
                }
            }
        }
        (new_user_form(frame))
    };
    page("Users", Some(Nav::Users), frame, body)
}

/// `user add`: the token is shown once, in the message after it.
fn new_user_form(frame: &Frame<'_>) -> Markup {
    let typed = |f: &str| frame.typed(f).unwrap_or("").to_string();
    html! {
        section.card #new-user {
            h2 { "Add a user" }
            form.stack method="post" action="/console/users" {
                (csrf_field(frame.csrf))
                label { "Username" input name="username" required size="16" placeholder="alice"
                    pattern="[A-Za-z0-9._-]{1,64}" value=(typed("username")); }
                label { "Credit" input name="credit" inputmode="numeric" size="8" placeholder="= monthly, or 0" value=(typed("credit")); }
                label { "Monthly allowance" input name="monthly" inputmode="numeric" size="8" placeholder="none" value=(typed("monthly")); }
                label { "Refill day" input name="refill_day" inputmode="numeric" size="3" placeholder="1" value=(typed("refill_day")); }
                label { "E-mail" input name="email" size="20" placeholder="optional" value=(typed("email")); }
                label { "Rate limit" input name="rate" size="10" placeholder="none, or 600/min" value=(typed("rate")); }
                label { "Low-credit notice below" input name="low_credit" inputmode="numeric" size="8" placeholder="none" value=(typed("low_credit")); }
                button type="submit" { "Add user" }
            }
        }
    }
}

pub fn user(frame: &Frame<'_>, d: &UserDetail) -> Markup {
    let u = &d.user;
    let body = html! {
        p { a href="/console/users" { "← Users" } }
        h1 { (u.username) " " (disabled_tag(u.disabled)) }
        section.card {
            dl.stats {
                div { dt { "Credit" } dd #balance { (u.credit) } }
                div { dt { "Held" } dd #held { (u.held) } }
                div { dt { "Available" } dd #available { (u.credit - u.held) } }
                div { dt { "Monthly" } dd { (opt(u.monthly_credit)) } }
                div { dt { "Refill day" } dd { (u.refill_day) } }
                div { dt { "Last refill" } dd { (u.credit_period.as_deref().unwrap_or("—")) } }
                div { dt { "Rate limit" } dd #rate-limit { (rate(u)) } }
                div { dt { "Low-credit notice" } dd #low-credit-at { (low_credit(u)) } }
                div { dt { "Last used" } dd { (d.last_used.map_or("never".to_string(), |d| d.to_string())) } }
            }
            p.muted {
                "Token " code { (u.token_prefix) "…" }
                " · e-mail " (u.email.as_deref().unwrap_or("none"))
                " · created " (when(Some(&u.created_at), "")) " UTC"
            }
        }
        (user_actions(frame, u))
        (hold_table(u, &d.holds))
        (key_table(frame, u, &d.keys, d.now))
        section.card #usage { (charts(&d.days)) }
        (ledger_table(&d.ledger))
    };
    page(&u.username, Some(Nav::Users), frame, body)
}

/// The user page's forms: credit, token, access.
fn user_actions(frame: &Frame<'_>, u: &User) -> Markup {
    let base = format!("/console/users/{}", u.username);
    html! {
        section.card.actions {
            section {
                h2 { "Credit" }
                form.stack method="post" action={ (base) "/credit" } {
                    (csrf_field(frame.csrf))
                    label { "Change"
                        select name="op" { option value="add" { "Add" } option value="set" { "Set to" } }
                    }
                    label { "Amount" input name="amount" inputmode="numeric" required size="10"; }
                    button type="submit" { "Apply" }
                }
            }
            section {
                h2 { "Token" }
                form.stack method="post" action={ (base) "/rotate" } {
                    (csrf_field(frame.csrf))
                    label { "Old keys work for" input name="grace" placeholder="0, or 24h" size="8"; }
                    button.quiet type="submit" { "Rotate token" }
                }
            }
            section {
                h2 { "Rate limit" }
                form.stack method="post" action={ (base) "/limit" } {
                    (csrf_field(frame.csrf))
                    label { "Requests per time"
                        input name="rate" placeholder="600/min, or off" size="12"
                            value=(u.rate_limit.map(|l| l.to_string()).unwrap_or_default());
                    }
                    button.quiet type="submit" { "Set" }
                }
            }
            section {
                h2 { "Low-credit notice" }
                form.stack method="post" action={ (base) "/notify" } {
                    (csrf_field(frame.csrf))
                    label { "Mail when the credit falls below"
                        input name="low_credit" inputmode="numeric" placeholder="50, or off" size="10"
                            value=(frame.typed("low_credit").map(str::to_string)
                                .unwrap_or_else(|| u.low_credit.map(|n| n.to_string()).unwrap_or_default()));
                    }
                    button.quiet type="submit" { "Set" }
                }
            }
            section {
                h2 { "Access" }
                @if u.disabled {
                    (button(frame.csrf, &format!("{base}/enable"), "Enable", "quiet"))
                } @else {
                    (button(frame.csrf, &format!("{base}/disable"), "Disable", "danger"))
                }
            }
        }
    }
}

/// The user's keys that are not revoked, each with a revoke button (an
/// expired key is marked so, and has nothing left to revoke), and the form
/// that adds one.
fn key_table(frame: &Frame<'_>, u: &User, keys: &[Key], now: DateTime<Utc>) -> Markup {
    let base = format!("/console/users/{}/keys", u.username);
    html! {
        section.card #keys {
            h2 { "Keys" }
            div.scroll { table {
                thead { tr {
                    th { "Id" } th { "Label" } th { "Prefix" } th { "Created (UTC)" }
                    th { "Expires (UTC)" } th { "Last used (UTC)" } th {}
                } }
                tbody { @for k in keys {
                    @let expired = has_expired(k, now);
                    tr data-key=(k.id) data-expired[expired] {
                        td { (k.id) }
                        td { (k.label.as_deref().unwrap_or("—")) }
                        td { code { (k.prefix) "…" } }
                        td { (when(Some(&k.created_at), "")) }
                        td {
                            (when(k.expires_at.as_deref(), "never"))
                            @if expired { " " span.tag.off { "expired" } }
                        }
                        td { (when(k.last_used_at.as_deref(), "never")) }
                        td { @if !expired {
                            (button(frame.csrf, &format!("{base}/{}/revoke", k.id), "Revoke", "danger"))
                        } }
                    }
                } }
            } }
            form.stack method="post" action=(base) {
                (csrf_field(frame.csrf))
                label { "Label" input name="label" size="14" placeholder="optional"; }
                label { "Expires after" input name="ttl" size="11" placeholder="never, or 30d"; }
                button.quiet type="submit" { "Add key" }
            }
        }
    }
}

/// The user's open holds: what `held` is made of. Holds belong to the
/// services that placed them, so there is nothing to do with them here.
fn hold_table(u: &User, open: &[Hold]) -> Markup {
    html! {
        section.card #holds {
            h2 { "Open holds" }
            @if open.is_empty() {
                p.muted { "No open holds" }
            } @else {
                div.scroll { table {
                    thead { tr {
                        th { "Id" } th.num { "Amount" } th { "Endpoint" }
                        th { "Created (UTC)" } th { "Expires (UTC)" }
                    } }
                    tbody { @for h in open { tr data-hold=(h.id) {
                        td { (h.id) }
                        td.num { (h.amount) }
                        td { code { (h.endpoint) } }
                        td { (when(Some(&h.created_at), "")) }
                        td {
                            (when(Some(&h.expires_at), ""))
                            @if h.is_past_expiry() { " " span.tag.off { "past expiry" } }
                        }
                    } } }
                } }
                @if open.len() >= holds::OPEN_LISTED {
                    p.muted {
                        "Only the newest " (open.len()) " are shown; " (u.held)
                        " is held by all of them."
                    }
                }
            }
        }
    }
}

/// A key whose expiry has passed no longer authenticates (a time that does
/// not parse counts as not expired: the key then still offers Revoke).
fn has_expired(k: &Key, now: DateTime<Utc>) -> bool {
    k.expires_at
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| t <= now)
}

fn ledger_table(ledger: &[LedgerRow]) -> Markup {
    html! {
        section.card #ledger {
            h2 { "Ledger, latest " (ledger.len()) " rows" }
            div.scroll { table {
                thead { tr {
                    th { "Time (UTC)" } th.num { "Change" } th.num { "Balance" }
                    th { "Reason" } th { "Actor" }
                } }
                tbody { @for r in ledger { tr {
                    td { (when(Some(&r.at), "")) }
                    td.num { (signed(r.delta)) }
                    td.num { (r.balance_after) }
                    td { (r.reason) @if let Some(p) = &r.period { " " span.muted { (p) } } }
                    td { (r.actor) }
                } } }
            } }
        }
    }
}

/// Webhook endpoints: the list with each one's events, the deliveries by
/// state, a form to add one (the secret is shown once, above).
pub fn webhooks(frame: &Frame<'_>, hooks: &[Webhook], counts: Counts) -> Markup {
    let body = html! {
        h1 { "Webhooks" }
        section.card {
            @if hooks.is_empty() {
                p.muted { "No webhook endpoints yet." }
            } @else {
                div.scroll { table #webhooks {
                    thead { tr { th.num { "ID" } th { "URL" } th { "Events" } th { "Created (UTC)" } th {} } }
                    tbody { @for w in hooks { tr {
                        td.num { (w.id) }
                        td { (w.url) }
                        td.wrap { (w.events.join(", ")) }
                        td { (when(Some(&w.created_at), "")) }
                        td { (button(frame.csrf, &format!("/console/webhooks/{}/remove", w.id), "Remove", "danger")) }
                    } } }
                } }
            }
            p.muted {
                "Deliveries: " (counts.pending) " pending, " (counts.delivered) " delivered, "
                (counts.failed) " failed."
            }
        }
        section.card {
            h2 { "Add a webhook" }
            form.stack method="post" action="/console/webhooks" {
                (csrf_field(frame.csrf))
                label { "URL" input name="url" placeholder="https://billing.example.com/hooks" required size="40"
                    value=(frame.typed("url").unwrap_or("")); }
                @for e in EventType::ALL {
                    label.check { input type="checkbox" name=(e.as_str()) value="on"
                        checked[frame.typed(e.as_str()).is_some()]; (e.as_str()) }
                }
                button type="submit" { "Add webhook" }
            }
        }
    };
    page("Webhooks", Some(Nav::Webhooks), frame, body)
}

pub fn routes(frame: &Frame<'_>, routes: &[Route]) -> Markup {
    let body = html! {
        h1 { "Routes" }
        section.card {
            @if routes.is_empty() {
                p.muted { "No gateway routes yet." }
            } @else {
                div.scroll { table #routes {
                    thead { tr {
                        th { "Prefix" } th { "Upstream" } th.num { "Cost" } th { "Methods" }
                        th { "Charge on" } th.num { "Timeout" } th { "Strip" } th.num { "In flight" } th {}
                    } }
                    tbody { @for r in routes { tr {
                        td { code { (r.prefix) } }
                        td { (r.upstream) }
                        td.num { (r.cost) }
                        td { @if r.methods.as_slice().is_empty() { "any" } @else { (r.methods.as_slice().join(", ")) } }
                        td { (r.charge_on.as_str()) }
                        td.num { (r.timeout_ms) " ms" }
                        td { @if r.strip_prefix { "yes" } @else { "no" } }
                        td.num { @if let Some(n) = r.max_in_flight { (n) } @else { span.muted { "default" } } }
                        td { (button(frame.csrf, &format!("/console/routes/{}/remove", r.id), "Remove", "danger")) }
                    } } }
                } }
            }
        }
        section.card {
            h2 { "Add a route" }
            form.stack method="post" action="/console/routes" {
                (csrf_field(frame.csrf))
                @let typed = |f: &str| frame.typed(f).unwrap_or("").to_string();
                @let charge_on = frame.typed("charge_on").unwrap_or(ChargeOn::default().as_str());
                label { "Prefix" input name="prefix" placeholder="/weather" required value=(typed("prefix")); }
                label { "Upstream" input name="upstream" placeholder="http://127.0.0.1:8080" required size="28" value=(typed("upstream")); }
                label { "Cost" input name="cost" inputmode="numeric" placeholder="1" size="5" value=(typed("cost")); }
                label { "Methods" input name="methods" placeholder="any, or GET,POST" size="12" value=(typed("methods")); }
                label { "Charge on"
                    select name="charge_on" {
                        @for c in ["2xx", "non-5xx", "always"] {
                            option value=(c) selected[c == charge_on] { (c) }
                        }
                    }
                }
                label { "Timeout (ms)" input name="timeout_ms" inputmode="numeric" placeholder="30000" size="7" value=(typed("timeout_ms")); }
                label { "Max in flight" input name="max_in_flight" inputmode="numeric" placeholder="default" size="7" value=(typed("max_in_flight")); }
                label { "Max cost (priced by the upstream)" input name="max_cost" inputmode="numeric" placeholder="fixed cost" size="7" value=(typed("max_cost")); }
                label { "Cost header" input name="cost_header" placeholder="X-Credit-Cost" size="14" value=(typed("cost_header")); }
                label.check { input type="checkbox" name="strip_prefix" value="on" checked[frame.typed("strip_prefix").is_some()]; "Strip prefix" }
                button type="submit" { "Add route" }
            }
        }
    };
    page("Routes", Some(Nav::Routes), frame, body)
}

pub fn jobs(frame: &Frame<'_>, jobs: &[JobView]) -> Markup {
    let body = html! {
        h1 { "Jobs" }
        section.card {
            div.scroll { table #jobs {
                thead { tr {
                    th { "Job" } th { "Schedule" } th { "State" } th { "Last run (UTC)" }
                    th { "Last result" } th { "Next run (UTC)" } th {}
                } }
                tbody { @for j in jobs {
                    @let base = format!("/console/jobs/{}", j.id);
                    tr data-job=(j.id) {
                        td { (j.id) }
                        td { (j.schedule) }
                        td { (job_state(j)) }
                        td { (when(j.last_run.as_deref(), "never")) }
                        td.wrap { (j.last_result.as_deref().unwrap_or("—")) }
                        td { (when(j.next_run.as_deref(), "—")) }
                        td { div.buttons {
                            @if j.paused {
                                (button(frame.csrf, &format!("{base}/resume"), "Resume", ""))
                            } @else {
                                (button(frame.csrf, &format!("{base}/pause"), "Pause", "quiet"))
                            }
                            (button(frame.csrf, &format!("{base}/run"), "Run now", "quiet"))
                        } }
                    }
                } }
            } }
        }
    };
    page("Jobs", Some(Nav::Jobs), frame, body)
}

/// An RFC 3339 UTC time as `2026-12-01 21:02:51`: shorter in a table, and
/// the column says UTC.
fn when(t: Option<&str>, none: &str) -> String {
    match t {
        Some(t) => t.replacen('T', " ", 1).trim_end_matches('Z').to_string(),
        None => none.to_string(),
    }
}

fn user_link(name: &str) -> Markup {
    // Usernames are [A-Za-z0-9._-]: safe in a path as they are.
    html! { a href={ "/console/users/" (name) } { (name) } }
}

/// The balance, and what open holds keep of it when they keep some.
fn credit(u: &User) -> Markup {
    html! {
        (u.credit)
        @if u.held != 0 { " " span.muted.held { "(" (u.held) " held)" } }
    }
}

fn low_credit(u: &User) -> String {
    u.low_credit
        .map_or("off".to_string(), |n| format!("below {n}"))
}

fn rate(u: &User) -> String {
    u.rate_limit.map_or("none".to_string(), |l| l.to_string())
}

/// A key's last use (to the minute) when known, else the last day with
/// usage (kept per day, also from before keys had one).
fn last_used(list: &UserList, name: &str) -> String {
    let key = list.keys.get(name).and_then(|k| k.last_used_at.as_deref());
    match (key, list.last_used.get(name)) {
        (Some(t), _) => when(Some(t), ""),
        (None, Some(day)) => day.to_string(),
        (None, None) => "never".to_string(),
    }
}

fn job_state(j: &JobView) -> Markup {
    html! {
        @if j.paused { span.tag.off { "paused" } } @else { span.tag.on { "active" } }
    }
}

fn disabled_tag(disabled: bool) -> Markup {
    html! {
        @if disabled { span.tag.off { "disabled" } } @else { span.tag.on { "active" } }
    }
}

fn opt(v: Option<i64>) -> String {
    v.map_or("—".to_string(), |v| v.to_string())
}

fn signed(v: i64) -> String {
    if v > 0 {
        format!("+{v}")
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::super::form;
    use super::*;

    fn frame() -> Frame<'static> {
        Frame {
            csrf: "c",
            flashes: &[],
            refill: None,
        }
    }

    fn user(name: &str) -> User {
        User {
            username: name.into(),
            token_prefix: "cg_abcde".into(),
            credit: 5,
            held: 0,
            monthly_credit: Some(100),
            refill_day: 1,
            credit_period: None,
            email: Some("<b>@x".into()),
            disabled: false,
            created_at: "2026-12-01T00:00:00Z".into(),
            rate_limit: None,
            low_credit: None,
        }
    }

    #[test]
    fn every_form_on_the_user_page_carries_the_csrf_token() {
        let d = UserDetail {
            user: user("alice"),
            days: vec![],
            ledger: vec![],
            last_used: None,
            keys: vec![],
            holds: vec![],
            now: Utc::now(),
        };
        let html = super::user(&frame(), &d).into_string();
        let posts = html.matches("method=\"post\"").count();
        assert!(posts >= 4, "{posts}");
        assert_eq!(html.matches("name=\"csrf\" value=\"c\"").count(), posts);
        assert!(html.contains("&lt;b&gt;@x"), "the e-mail is escaped");
    }

    fn detail(user: User, holds: Vec<Hold>) -> UserDetail {
        UserDetail {
            user,
            days: vec![],
            ledger: vec![],
            last_used: None,
            keys: vec![],
            holds,
            now: Utc::now(),
        }
    }

    fn hold(id: u64, amount: i64, endpoint: &str) -> Hold {
        let mut h = Hold::default();
        h.id = id;
        h.user = "alice".into();
        h.amount = amount;
        h.endpoint = endpoint.into();
        h.created_at = "2026-12-01T10:00:00.125Z".into();
        h.expires_at = "2026-12-01T10:05:00.125Z".into();
        h
    }

    #[test]
    fn the_user_page_shows_held_and_available_credit_and_the_open_holds() {
        let mut u = user("alice");
        u.credit = 50;
        u.held = 12;
        let d = detail(u, vec![hold(9, 7, "llm:<tokens>"), hold(4, 5, "hold")]);
        let html = super::user(&frame(), &d).into_string();
        assert!(html.contains("id=\"balance\">50<"), "{html}");
        assert!(html.contains("id=\"held\">12<"), "{html}");
        assert!(html.contains("id=\"available\">38<"), "{html}");
        assert!(html.contains("Open holds"));
        assert!(!html.contains("No open holds"));
        let row9 = html.find("data-hold=\"9\"").expect("hold 9's row");
        let row4 = html.find("data-hold=\"4\"").expect("hold 4's row");
        assert!(row9 < row4, "newest first, as given");
        let row = &html[row9..row4];
        assert!(row.contains(">7<"), "{row}");
        assert!(
            row.contains("llm:&lt;tokens&gt;"),
            "the label is escaped: {row}"
        );
        assert!(row.contains("2026-12-01 10:00:00.125"), "{row}");
        assert!(row.contains("2026-12-01 10:05:00.125"), "{row}");
        assert!(!row.contains("past expiry"));
        // Holds are the services' business: no form acts on them here.
        let section = &html[html.find("id=\"holds\"").unwrap()..html.find("id=\"keys\"").unwrap()];
        assert!(!section.contains("<form"), "{section}");
        assert!(!section.contains("Only the newest"));
    }

    #[test]
    fn a_user_without_holds_has_a_line_saying_so() {
        let html = super::user(&frame(), &detail(user("bob"), vec![])).into_string();
        assert!(html.contains("id=\"held\">0<"));
        assert!(html.contains("id=\"available\">5<"));
        assert!(html.contains("No open holds"));
        assert!(!html.contains("data-hold="));
    }

    #[test]
    fn a_full_list_of_holds_says_that_only_the_newest_are_shown() {
        let mut u = user("alice");
        u.credit = 1_000;
        u.held = 500;
        let many = (1..=holds::OPEN_LISTED as u64)
            .rev()
            .map(|id| hold(id, 4, "hold"))
            .collect();
        let html = super::user(&frame(), &detail(u, many)).into_string();
        assert_eq!(html.matches("data-hold=").count(), holds::OPEN_LISTED);
        assert!(html.contains("Only the newest 100 are shown; 500 is held by all of them."));
    }

    #[test]
    fn the_users_list_shows_held_credit_beside_the_balance_only_when_some_is_held() {
        let mut held = user("alice");
        held.held = 3;
        let list = UserList {
            query: String::new(),
            users: vec![held, user("bob")],
            last_used: HashMap::new(),
            keys: HashMap::new(),
            truncated: false,
        };
        let html = users(&frame(), &list).into_string();
        assert_eq!(html.matches("held)").count(), 1, "{html}");
        assert!(html.contains("(3 held)"));
    }

    #[test]
    fn the_login_page_posts_the_token_and_never_puts_it_in_a_url() {
        let html = login(Some("wrong admin token")).into_string();
        assert!(html.contains("method=\"post\" action=\"/console/login\""));
        assert!(html.contains("type=\"password\" name=\"token\""));
        assert!(html.contains("wrong admin token"));
    }

    #[test]
    fn the_users_filter_is_a_get_form_that_keeps_the_query() {
        let list = UserList {
            query: "al\"ice".into(),
            users: vec![user("alice")],
            last_used: HashMap::new(),
            keys: HashMap::new(),
            truncated: false,
        };
        let html = users(&frame(), &list).into_string();
        assert!(html.contains("method=\"get\" action=\"/console/users\""));
        assert!(html.contains("value=\"al&quot;ice\""));
        assert!(html.contains("href=\"/console/users/alice\""));
    }

    fn key(id: u64, expires_at: Option<&str>) -> Key {
        Key {
            id,
            label: None,
            prefix: "cg_k".into(),
            created_at: "2026-12-01T00:00:00Z".into(),
            expires_at: expires_at.map(str::to_string),
            last_used_at: None,
        }
    }

    // See: #24 (an expired key looked like a working one and offered Revoke).
    #[test]
    fn an_expired_key_is_marked_and_offers_no_revoke() {
        let mut d = detail(user("alice"), vec![]);
        d.now = "2026-12-07T12:00:00Z".parse().unwrap();
        d.keys = vec![
            key(1, Some("2026-12-07T11:59:59Z")),
            key(2, Some("2026-12-08T00:00:00Z")),
            key(3, None),
        ];
        let html = super::user(&frame(), &d).into_string();
        let row = |id: u64| {
            let start = html.find(&format!("data-key=\"{id}\"")).unwrap();
            let end = html[start..].find("</tr>").unwrap() + start;
            html[start..end].to_string()
        };
        assert!(row(1).contains(">expired<"), "{}", row(1));
        assert!(!row(1).contains("Revoke"), "{}", row(1));
        for id in [2, 3] {
            assert!(!row(id).contains("expired"), "{}", row(id));
            assert!(row(id).contains("Revoke"), "{}", row(id));
        }
    }

    // See: #24 (a refused route form came back empty).
    #[test]
    fn a_refused_route_form_comes_back_with_what_was_typed() {
        let typed = form::parse(
            "prefix=%2Fapi&upstream=http%3A%2F%2Fx%3A1&cost=3&charge_on=always&strip_prefix=on",
        );
        let f = Frame {
            csrf: "c",
            flashes: &[],
            refill: Some(&typed),
        };
        let html = routes(&f, &[]).into_string();
        assert!(
            html.contains("name=\"prefix\" placeholder=\"/weather\" required value=\"/api\""),
            "{html}"
        );
        assert!(html.contains("value=\"http://x:1\""), "{html}");
        assert!(html.contains("value=\"3\""), "{html}");
        assert!(html.contains("value=\"always\" selected"), "{html}");
        assert!(
            html.contains("name=\"strip_prefix\" value=\"on\" checked"),
            "{html}"
        );
        let fresh = routes(&frame(), &[]).into_string();
        assert!(fresh.contains("value=\"2xx\" selected"), "{fresh}");
        assert!(!fresh.contains("checked"), "{fresh}");
    }
}
