//! The operator console (`/console/`) from the server side: the admin-off
//! 403, login and its cookie, the CSRF guard, changes through the same
//! domain calls (ledger actor `console`), bad input that changes nothing,
//! and the domain reads the console added, against the real database.

use chrono::{Days, Utc};
use creditgate::billing::ledger;
use creditgate::billing::usage;
use creditgate::model::Username;
use creditgate::users;
use creditgate::users::keys;

use crate::support::helpers::{request, spawn_app, spawn_app_with, Resp, TestApp};

/// A browser's part: one session cookie and the CSRF token of its pages.
struct Browser<'a> {
    app: &'a TestApp,
    cookie: String,
    csrf: String,
}

fn form_encode(fields: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".into(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn post_form(app: &TestApp, path: &str, cookie: Option<&str>, fields: &[(&str, &str)]) -> Resp {
    let body = form_encode(fields);
    let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
    let cookie_header = cookie.map(|c| format!("cg_console={c}"));
    if let Some(c) = &cookie_header {
        headers.push(("Cookie", c));
    }
    request(app.addr, "POST", path, &headers, Some(&body))
}

/// The session id a `Set-Cookie` hands out.
fn session_cookie(r: &Resp) -> Option<String> {
    let set = r.header("Set-Cookie")?;
    let value = set.split(';').next()?.strip_prefix("cg_console=")?;
    (!value.is_empty()).then(|| value.to_string())
}

fn csrf_of(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token");
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

impl<'a> Browser<'a> {
    fn login(app: &'a TestApp) -> Browser<'a> {
        let r = post_form(app, "/console/login", None, &[("token", &app.admin_token)]);
        assert_eq!(r.status, 303, "{}", r.body);
        let cookie = session_cookie(&r).expect("a session cookie");
        let mut b = Browser {
            app,
            cookie,
            csrf: String::new(),
        };
        let page = b.get("/console/");
        assert_eq!(page.status, 200, "{}", page.body);
        b.csrf = csrf_of(&page.body);
        b
    }

    fn get(&self, path: &str) -> Resp {
        let cookie = format!("cg_console={}", self.cookie);
        self.app.get(path, &[("Cookie", &cookie)])
    }

    /// POSTs a form with the session's CSRF token.
    fn post(&self, path: &str, fields: &[(&str, &str)]) -> Resp {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        post_form(self.app, path, Some(&self.cookie), &all)
    }

    /// POSTs, follows the 303 and returns the page it leads to.
    fn post_and_follow(&self, path: &str, fields: &[(&str, &str)]) -> Resp {
        let r = self.post(path, fields);
        assert_eq!(r.status, 303, "{}", r.body);
        self.get(r.header("Location").expect("a Location"))
    }
}

fn ledger_rows(app: &TestApp) -> i64 {
    app.db.scalar("SELECT COUNT(*) FROM credit_events")
}

fn name(s: &str) -> Username {
    Username::parse(s).unwrap()
}

/// Adds `calls` paid calls of `credits` in total to a user's usage on a day,
/// taking the credits off the balance so that the ledger still adds up.
fn add_usage(app: &TestApp, user: &str, days_ago: u64, calls: u64, credits: u64) {
    let day = Utc::now().date_naive() - Days::new(days_ago);
    app.db.exec(&format!(
        "INSERT INTO usage_daily (user_id, day, endpoint, calls, credits) \
         SELECT id, '{day}', 'bank:test', {calls}, {credits} FROM users WHERE username = '{user}'"
    ));
    app.db.exec(&format!(
        "UPDATE users SET credit = credit - {credits} WHERE username = '{user}'"
    ));
}

#[test]
fn console_paths_answer_403_when_the_admin_token_is_unset() {
    let app = spawn_app_with(&[("CREDITGATE_ADMIN_TOKEN", "")]);
    app.db.add_user("alice", 10);
    for path in ["/console/", "/console/login", "/console/users/alice"] {
        assert_eq!(app.get(path, &[]).status, 403, "{path}");
    }
    let r = post_form(&app, "/console/login", None, &[("token", &app.admin_token)]);
    assert_eq!(r.status, 403);
    assert!(session_cookie(&r).is_none());
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
}

#[test]
fn console_login_with_a_wrong_token_shows_the_error_and_sets_no_cookie() {
    let app = spawn_app();
    let r = post_form(&app, "/console/login", None, &[("token", "not-the-token")]);
    assert_eq!(r.status, 401);
    assert!(r.body.contains("Wrong admin token."), "{}", r.body);
    assert!(r.header("Set-Cookie").is_none(), "{:?}", r.headers);
    // No token at all is just as wrong.
    let r = post_form(&app, "/console/login", None, &[]);
    assert_eq!(r.status, 401);
    assert!(r.header("Set-Cookie").is_none());
}

#[test]
fn console_login_sets_an_http_only_strict_cookie_for_the_console_path() {
    let app = spawn_app();
    let r = post_form(&app, "/console/login", None, &[("token", &app.admin_token)]);
    assert_eq!(r.status, 303);
    assert_eq!(r.header("Location"), Some("/console/"));
    let set = r.header("Set-Cookie").unwrap();
    let attrs: Vec<&str> = set.split(';').map(str::trim).collect();
    for want in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(attrs.contains(&want), "{want} missing in {set}");
    }
    let id = session_cookie(&r).unwrap();
    assert_eq!(id.len(), 64, "256 bits as hex");
    // The token never travels in a URL, and the cookie opens the pages.
    let page = app.get("/console/", &[("Cookie", &format!("cg_console={id}"))]);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Calls per day"));
    assert!(!page.body.contains(&app.admin_token));
    assert_eq!(page.header("Cache-Control"), Some("no-store"));
    assert!(page
        .header("Content-Security-Policy")
        .unwrap()
        .starts_with("default-src 'none'"));
}

#[test]
fn console_pages_without_a_session_lead_to_the_login() {
    let app = spawn_app();
    app.db.add_user("alice", 10);
    let r = app.get("/console/users", &[]);
    assert_eq!(
        (r.status, r.header("Location")),
        (303, Some("/console/login"))
    );
    let r = app.get("/console/", &[("Cookie", "cg_console=forged")]);
    assert_eq!(r.status, 303);
    let r = post_form(
        &app,
        "/console/users/alice/credit",
        Some("forged"),
        &[("op", "add"), ("amount", "5")],
    );
    assert_eq!(r.status, 303);
    assert_eq!(app.db.credit("alice"), 10);
}

#[test]
fn console_post_without_or_with_a_wrong_csrf_token_changes_nothing() {
    let app = spawn_app();
    app.db.add_user("alice", 10);
    let b = Browser::login(&app);
    let before = ledger_rows(&app);
    for csrf in [None, Some("0".repeat(64)), Some(String::new())] {
        let mut fields = vec![("op", "add"), ("amount", "50")];
        if let Some(c) = &csrf {
            fields.push(("csrf", c));
        }
        let r = post_form(
            &app,
            "/console/users/alice/credit",
            Some(&b.cookie),
            &fields,
        );
        assert_eq!(r.status, 403, "{csrf:?}");
        assert!(r.body.contains("nothing was changed"), "{}", r.body);
    }
    let r = post_form(&app, "/console/users/alice/rotate", Some(&b.cookie), &[]);
    assert_eq!(r.status, 403);
    assert_eq!(app.db.credit("alice"), 10);
    assert_eq!(ledger_rows(&app), before);
}

#[test]
fn console_top_up_writes_a_ledger_row_with_actor_console() {
    let app = spawn_app();
    app.db.add_user("alice", 10);
    let b = Browser::login(&app);
    let page = b.post_and_follow(
        "/console/users/alice/credit",
        &[("op", "add"), ("amount", "50")],
    );
    assert!(page.body.contains("the balance is 60"), "{}", page.body);
    assert!(page.body.contains("id=\"balance\">60<"), "{}", page.body);
    assert_eq!(app.db.credit("alice"), 60);
    let (delta, after, reason, actor): (i64, i64, String, String) = {
        use mysql::prelude::Queryable;
        app.db
            .conn()
            .query_first(
                "SELECT delta, balance_after, reason, actor FROM credit_events ORDER BY id DESC LIMIT 1",
            )
            .unwrap()
            .unwrap()
    };
    assert_eq!(
        (delta, after, reason.as_str(), actor.as_str()),
        (50, 60, "top-up", "console")
    );
    // Set writes its own row, also as `console`.
    b.post_and_follow(
        "/console/users/alice/credit",
        &[("op", "set"), ("amount", "7")],
    );
    assert_eq!(app.db.credit("alice"), 7);
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM credit_events WHERE actor = 'console'"),
        2
    );
    assert!(app.db.ledger_mismatches().is_empty());
}

#[test]
fn console_bad_credit_input_shows_an_error_and_changes_nothing() {
    let app = spawn_app();
    app.db.add_user("alice", 10);
    let b = Browser::login(&app);
    let before = ledger_rows(&app);
    for (op, amount, says) in [
        ("add", "abc", "whole number"),
        ("set", "abc", "whole number"),
        ("set", "-5", "credit amount"),
        ("add", "-11", "cannot go below 0"),
        ("add", "99999999999999999999", "whole number"),
        ("mul", "2", "choose Add or Set"),
        ("add", "", "whole number"),
    ] {
        let r = b.post(
            "/console/users/alice/credit",
            &[("op", op), ("amount", amount)],
        );
        assert_eq!(r.status, 400, "{op} {amount}: {}", r.body);
        assert!(r.body.contains(says), "{op} {amount}: {}", r.body);
        // The page is the user's page again, with the balance unchanged.
        assert!(r.body.contains("id=\"balance\">10<"), "{}", r.body);
    }
    assert_eq!(app.db.credit("alice"), 10);
    assert_eq!(ledger_rows(&app), before);
    // An unknown user or a malformed name is a 404 page, not a 500.
    let r = b.post(
        "/console/users/nobody/credit",
        &[("op", "add"), ("amount", "1")],
    );
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(b.get("/console/users/a%20b").status, 404);
    assert_eq!(b.get("/console/nothing-here").status, 404);
}

#[test]
fn console_rotate_shows_the_new_token_once() {
    let app = spawn_app();
    let old = app.db.add_user("alice", 10);
    let b = Browser::login(&app);
    let page = b.post_and_follow("/console/users/alice/rotate", &[]);
    let at = page.body.find("data-secret>").expect("the token is shown") + 12;
    let token = &page.body[at..at + page.body[at..].find('<').unwrap()];
    assert!(token.starts_with("cg_"), "{token}");
    assert_eq!(app.bank("alice", token, "bofa").status, 200);
    assert_eq!(app.bank("alice", &old, "bofa").status, 401);
    let again = b.get("/console/users/alice");
    assert_eq!(again.status, 200);
    assert!(!again.body.contains(token), "shown twice");
}

/// The token shown once on a page (`data-secret`).
fn secret_of(page: &Resp) -> String {
    let at = page.body.find("data-secret>").expect("a token is shown") + 12;
    page.body[at..at + page.body[at..].find('<').unwrap()].to_string()
}

fn key_count(app: &TestApp) -> i64 {
    app.db.scalar("SELECT COUNT(*) FROM api_keys")
}

#[test]
fn console_added_key_is_shown_once_and_revoking_it_stops_it() {
    let app = spawn_app();
    let first = app.db.add_user("alice", 10);
    let b = Browser::login(&app);
    let page = b.post_and_follow(
        "/console/users/alice/keys",
        &[("label", "ci <runner>"), ("ttl", "30d")],
    );
    let token = secret_of(&page);
    assert_eq!(app.bank("alice", &token, "bofa").status, 200);
    assert!(page.body.contains("ci &lt;runner&gt;"), "{}", page.body);
    assert!(!b.get("/console/users/alice").body.contains(&token));
    let list = keys::list(&app.db.pool, &name("alice")).unwrap();
    let new = list
        .iter()
        .find(|k| k.label.as_deref() == Some("ci <runner>"))
        .unwrap();
    assert!(new.expires_at.is_some());
    let page = b.post_and_follow(&format!("/console/users/alice/keys/{}/revoke", new.id), &[]);
    assert!(page.body.contains("revoked"), "{}", page.body);
    assert_eq!(app.bank("alice", &token, "bofa").status, 401);
    assert_eq!(app.bank("alice", &first, "bofa").status, 200);
    // Revoked twice, or someone else's key: a 404 page, nothing changes.
    let again = b.post(&format!("/console/users/alice/keys/{}/revoke", new.id), &[]);
    assert_eq!(again.status, 404, "{}", again.body);
    for (label, ttl) in [("x", "soon"), ("x", "-1d"), ("a\u{7}", "")] {
        let before = key_count(&app);
        let r = b.post(
            "/console/users/alice/keys",
            &[("label", label), ("ttl", ttl)],
        );
        assert_eq!(r.status, 400, "{label} {ttl}: {}", r.body);
        assert_eq!(key_count(&app), before);
    }
}

#[test]
fn console_rotate_with_a_grace_keeps_the_old_key_working_for_a_while() {
    let app = spawn_app();
    let old = app.db.add_user("alice", 10);
    let b = Browser::login(&app);
    let page = b.post_and_follow("/console/users/alice/rotate", &[("grace", "1h")]);
    assert!(page.body.contains("work for 1h more"), "{}", page.body);
    let new = secret_of(&page);
    assert_eq!(app.bank("alice", &new, "bofa").status, 200);
    assert_eq!(app.bank("alice", &old, "bofa").status, 200);
    let before = key_count(&app);
    let r = b.post("/console/users/alice/rotate", &[("grace", "a while")]);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("a duration is"), "{}", r.body);
    assert_eq!(key_count(&app), before);
}

#[test]
fn console_rate_limit_can_be_set_and_removed_and_bad_rates_change_nothing() {
    let app = spawn_app();
    app.db.add_user("alice", 10);
    let b = Browser::login(&app);
    let limit = |app: &TestApp| {
        app.admin("GET", "/admin/v1/users/alice", None).json()["rate_limit"].clone()
    };
    let page = b.post_and_follow("/console/users/alice/limit", &[("rate", "600/min")]);
    assert!(page.body.contains("limited to 600/min"), "{}", page.body);
    assert!(page.body.contains("id=\"rate-limit\">600/min<"));
    assert_eq!(
        limit(&app),
        serde_json::json!({"quota": 600, "window_secs": 60})
    );
    for bad in ["fast", "0/s", "10/day", "2000000/s"] {
        let r = b.post("/console/users/alice/limit", &[("rate", bad)]);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert_eq!(limit(&app)["quota"], 600, "{bad}");
    }
    let users = b.get("/console/users");
    assert!(users.body.contains("600/min"), "{}", users.body);
    b.post_and_follow("/console/users/alice/limit", &[("rate", "off")]);
    assert_eq!(limit(&app), serde_json::Value::Null);
}

#[test]
fn console_keys_summary_counts_working_keys_and_the_last_use() {
    let app = spawn_app();
    let token = app.db.add_user("alice", 10);
    app.db.add_user("bob", 10);
    let alice = name("alice");
    keys::create(&app.db.pool, &alice, &keys::NewKey::default(), None).unwrap();
    let (gone, _) = keys::create(&app.db.pool, &alice, &keys::NewKey::default(), None).unwrap();
    keys::revoke(&app.db.pool, &alice, gone.id).unwrap();
    assert_eq!(app.bank("alice", &token, "bofa").status, 200);
    let summary = keys::summary(&app.db.pool, &[alice, name("bob"), name("carol")]).unwrap();
    assert_eq!(summary["alice"].working, 2);
    assert!(summary["alice"]
        .last_used_at
        .as_deref()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(summary["bob"].working, 1);
    assert_eq!(summary["bob"].last_used_at, None);
    assert!(!summary.contains_key("carol"));
    let b = Browser::login(&app);
    let page = b.get("/console/users");
    assert!(
        page.body.contains("<td class=\"num\">2</td>"),
        "{}",
        page.body
    );
}

#[test]
fn console_disable_and_enable_use_the_same_switch_as_the_cli() {
    let app = spawn_app();
    let token = app.db.add_user("alice", 10);
    let b = Browser::login(&app);
    let page = b.post_and_follow("/console/users/alice/disable", &[]);
    assert!(
        page.body.contains("alice is now disabled."),
        "{}",
        page.body
    );
    assert_eq!(app.bank("alice", &token, "bofa").status, 401);
    b.post_and_follow("/console/users/alice/enable", &[]);
    assert_eq!(app.bank("alice", &token, "bofa").status, 200);
}

#[test]
fn console_logout_ends_the_session() {
    let app = spawn_app();
    let b = Browser::login(&app);
    let r = b.post("/console/logout", &[]);
    assert_eq!(
        (r.status, r.header("Location")),
        (303, Some("/console/login"))
    );
    assert!(r.header("Set-Cookie").unwrap().contains("Max-Age=0"));
    let after = b.get("/console/");
    assert_eq!(after.status, 303, "the old cookie no longer works");
}

#[test]
fn console_wrong_tokens_trip_the_admin_brute_force_brake() {
    let app = spawn_app_with(&[("CREDITGATE_AUTH_FAILS_PER_MIN", "3")]);
    for _ in 0..3 {
        let r = post_form(&app, "/console/login", None, &[("token", "guess")]);
        assert_eq!(r.status, 401);
    }
    // Braked: even the right token waits, and the admin API is braked too.
    let r = post_form(&app, "/console/login", None, &[("token", &app.admin_token)]);
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.header("Retry-After").is_some());
    assert!(session_cookie(&r).is_none());
    assert_eq!(app.admin("GET", "/admin/v1/users", None).status, 429);
}

#[test]
fn console_users_filter_finds_users_by_part_of_their_name() {
    let app = spawn_app();
    for n in ["alice", "Alicia", "bob"] {
        app.db.add_user(n, 1);
    }
    let b = Browser::login(&app);
    let page = b.get("/console/users?q=ALI");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("href=\"/console/users/alice\""));
    assert!(page.body.contains("href=\"/console/users/Alicia\""));
    assert!(!page.body.contains("href=\"/console/users/bob\""));
    let all = b.get("/console/users");
    assert!(all.body.contains("href=\"/console/users/bob\""));
    // A LIKE wildcard is a literal character, not "anything".
    let none = b.get("/console/users?q=%25");
    assert!(none.body.contains("No user matches."), "{}", none.body);
}

#[test]
fn console_routes_can_be_added_and_removed_and_bad_ones_are_refused() {
    let app = spawn_app();
    let b = Browser::login(&app);
    let page = b.post_and_follow(
        "/console/routes",
        &[
            ("prefix", "/weather"),
            ("upstream", "http://127.0.0.1:9"),
            ("cost", "2"),
            ("methods", "GET, post"),
            ("charge_on", "non-5xx"),
            ("timeout_ms", ""),
            ("strip_prefix", "on"),
            ("max_in_flight", "12"),
        ],
    );
    assert!(page.body.contains("Route /weather"), "{}", page.body);
    let routes = app.admin("GET", "/admin/v1/routes", None).json();
    let r = &routes["routes"][0];
    assert_eq!(r["cost"], 2);
    assert_eq!(r["methods"], serde_json::json!(["GET", "POST"]));
    assert_eq!(r["charge_on"], "non-5xx");
    assert_eq!(r["timeout_ms"], 30000);
    assert_eq!(r["strip_prefix"], true);
    assert_eq!(r["max_in_flight"], 12);
    for (field, value) in [
        ("prefix", "/admin/x"),
        ("cost", "-1"),
        ("upstream", "ftp://x"),
        ("max_in_flight", "0"),
    ] {
        let mut fields = vec![("prefix", "/other"), ("upstream", "http://127.0.0.1:9")];
        fields.retain(|(k, _)| *k != field);
        fields.push((field, value));
        let r = b.post("/console/routes", &fields);
        assert_eq!(r.status, 400, "{field}={value}: {}", r.body);
        assert!(r.body.contains(&format!("invalid {field}")), "{}", r.body);
    }
    let dup = b.post(
        "/console/routes",
        &[("prefix", "/weather"), ("upstream", "http://127.0.0.1:9")],
    );
    assert_eq!(dup.status, 409);
    let id = r["id"].as_u64().unwrap();
    b.post_and_follow(&format!("/console/routes/{id}/remove"), &[]);
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM routes"), 0);
    assert_eq!(b.post("/console/routes/999/remove", &[]).status, 404);
}

#[test]
fn console_jobs_can_be_paused_resumed_and_run() {
    let app = spawn_app();
    let b = Browser::login(&app);
    let page = b.post_and_follow("/console/jobs/heartbeat/pause", &[]);
    assert!(page.body.contains("Job heartbeat paused."), "{}", page.body);
    let jobs = app.admin("GET", "/admin/v1/jobs", None).json();
    let paused = |jobs: &serde_json::Value| {
        jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == "heartbeat")
            .unwrap()["paused"]
            .clone()
    };
    assert_eq!(paused(&jobs), true);
    b.post_and_follow("/console/jobs/heartbeat/resume", &[]);
    assert_eq!(
        paused(&app.admin("GET", "/admin/v1/jobs", None).json()),
        false
    );
    let ran = b.post_and_follow("/console/jobs/monthly-refill/run", &[]);
    assert!(
        ran.body.contains("Job monthly-refill ran: ok"),
        "{}",
        ran.body
    );
    assert_eq!(b.post("/console/jobs/nope/pause", &[]).status, 404);
}

#[test]
fn console_overview_charts_one_bar_per_day_with_usage() {
    let app = spawn_app();
    let token = app.db.add_user("alice", 100);
    add_usage(&app, "alice", 3, 4, 8);
    add_usage(&app, "alice", 10, 1, 1);
    add_usage(&app, "alice", 40, 9, 9); // outside the 30 days
    for _ in 0..2 {
        assert_eq!(app.bank("alice", &token, "bofa").status, 200);
    }
    let b = Browser::login(&app);
    let page = b.get("/console/");
    // Two charts (calls, credits), three days with usage each.
    assert_eq!(
        page.body.matches("class=\"bar\"").count(),
        6,
        "{}",
        page.body
    );
    assert!(page.body.contains("id=\"today-calls\">2<"), "{}", page.body);
}

#[test]
fn console_ledger_recent_gives_the_latest_rows_newest_first() {
    let app = spawn_app();
    app.db.add_user("alice", 1);
    app.db.add_user("bob", 1);
    for n in 1..=5 {
        users::change_credit(
            &app.db.pool,
            &name("alice"),
            users::CreditChange::Add(n),
            "test",
        )
        .unwrap();
    }
    let rows = ledger::recent(&app.db.pool, &name("alice"), 3).unwrap();
    let deltas: Vec<i64> = rows.iter().map(|r| r.delta).collect();
    assert_eq!(deltas, [5, 4, 3]);
    assert_eq!(rows[0].balance_after, 16);
    assert_eq!(rows[0].reason, "top-up");
    assert!(rows[0].at.ends_with('Z'), "{}", rows[0].at);
    assert_eq!(
        ledger::recent(&app.db.pool, &name("bob"), 50)
            .unwrap()
            .len(),
        1
    );
    assert!(ledger::recent(&app.db.pool, &name("carol"), 50)
        .unwrap()
        .is_empty());
}

#[test]
fn console_usage_daily_totals_sum_per_day_overall_and_per_user() {
    let app = spawn_app();
    app.db.add_user("alice", 100);
    app.db.add_user("bob", 100);
    add_usage(&app, "alice", 1, 2, 4);
    add_usage(&app, "bob", 1, 3, 3);
    add_usage(&app, "bob", 5, 1, 1);
    add_usage(&app, "bob", 31, 7, 7);
    let today = Utc::now().date_naive();
    let from = today - Days::new(29);
    let all = usage::daily_totals(&app.db.pool, from, today, None).unwrap();
    let summary: Vec<(u64, u64, u64)> = all
        .iter()
        .map(|t| ((today - t.day).num_days() as u64, t.calls, t.credits))
        .collect();
    assert_eq!(summary, [(5, 1, 1), (1, 5, 7)]);
    let alice = usage::daily_totals(&app.db.pool, from, today, Some(&name("alice"))).unwrap();
    assert_eq!(alice.len(), 1);
    assert_eq!((alice[0].calls, alice[0].credits), (2, 4));
    let nobody = usage::daily_totals(&app.db.pool, from, today, Some(&name("carol"))).unwrap();
    assert!(nobody.is_empty());
}

#[test]
fn console_usage_last_used_is_the_last_day_with_a_paid_call() {
    let app = spawn_app();
    app.db.add_user("alice", 100);
    app.db.add_user("bob", 100);
    add_usage(&app, "alice", 9, 1, 1);
    add_usage(&app, "alice", 2, 1, 1);
    let last = usage::last_used(&app.db.pool, &[name("alice"), name("bob")]).unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last["alice"], Utc::now().date_naive() - Days::new(2));
    assert!(usage::last_used(&app.db.pool, &[]).unwrap().is_empty());
}

#[test]
fn console_users_below_allowance_are_those_under_ten_percent() {
    let app = spawn_app();
    app.db.add_user_with("low", Some(9), Some(100), None);
    app.db.add_user_with("edge", Some(10), Some(100), None);
    app.db.add_user_with("lowest", Some(0), Some(5), None);
    app.db.add_user_with("none", Some(0), None, None);
    app.db.add_user_with("zero", Some(0), Some(0), None);
    app.db
        .add_user_with("huge", Some(i64::MAX / 2), Some(i64::MAX), None);
    let low: Vec<String> = users::below_allowance(&app.db.pool, 10)
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(low, ["lowest", "low"]);
    let b = Browser::login(&app);
    let page = b.get("/console/");
    assert!(page.body.contains("href=\"/console/users/low\""));
    assert!(!page.body.contains("href=\"/console/users/edge\""));
}

#[test]
fn console_users_search_ignores_case_and_stops_at_the_limit() {
    let app = spawn_app();
    for n in ["Ann", "anna", "bob", "ann_x"] {
        app.db.add_user(n, 1);
    }
    let found: Vec<String> = users::search(&app.db.pool, "ANN", 10)
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(found, ["Ann", "ann_x", "anna"]);
    assert_eq!(users::search(&app.db.pool, "", 2).unwrap().len(), 2);
    assert_eq!(users::search(&app.db.pool, "n_", 10).unwrap().len(), 1);
}

#[test]
fn console_escapes_what_users_supplied() {
    let app = spawn_app();
    app.db.add_user("alice", 1);
    app.db
        .exec("UPDATE users SET email = '<script>x</script>@e.org' WHERE username = 'alice'");
    let b = Browser::login(&app);
    let page = b.get("/console/users/alice");
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("<script>x"), "{}", page.body);
    assert!(page.body.contains("&lt;script&gt;x"));
    let q = b.get("/console/users?q=%3Cscript%3E");
    assert!(!q.body.contains("<script>"), "{}", q.body);
}

/// Places a hold the way a service does (`POST /v1/holds` with its token)
/// and returns the hold it answered.
fn place_hold(app: &TestApp, token: &str, body: &str) -> serde_json::Value {
    let auth = format!("Bearer {token}");
    let r = request(
        app.addr,
        "POST",
        "/v1/holds",
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        Some(body),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let answer: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    answer["hold"].clone()
}

/// The text of the table row that starts at `marker` in `page`.
fn row<'p>(page: &'p str, marker: &str) -> &'p str {
    let at = page
        .find(marker)
        .unwrap_or_else(|| panic!("{marker}: {page}"));
    let rest = &page[at..];
    &rest[..rest.find("</tr>").unwrap()]
}

#[test]
fn console_user_page_shows_held_credit_and_the_open_holds() {
    let app = spawn_app();
    app.db.add_user("alice", 50);
    let (_, token) = creditgate::services::add(
        &app.db.pool,
        "svc",
        creditgate::services::Scopes::parse("charge").unwrap(),
    )
    .expect("add service");
    let b = Browser::login(&app);

    let page = b.get("/console/users/alice");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("id=\"held\">0<"), "{}", page.body);
    assert!(page.body.contains("No open holds"));

    let hold = place_hold(&app, &token, r#"{"user":"alice","amount":7}"#);
    let id = hold["id"].as_u64().expect("a hold id");
    let page = b.get("/console/users/alice");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("id=\"balance\">50<"), "{}", page.body);
    assert!(page.body.contains("id=\"held\">7<"), "{}", page.body);
    assert!(page.body.contains("id=\"available\">43<"), "{}", page.body);
    assert!(!page.body.contains("No open holds"));
    let tr = row(&page.body, &format!("data-hold=\"{id}\""));
    assert!(tr.contains(">7<"), "{tr}");
    assert!(tr.contains("<code>hold</code>"), "the default label: {tr}");
    let shown = |t: &serde_json::Value| {
        t.as_str()
            .unwrap()
            .replacen('T', " ", 1)
            .trim_end_matches('Z')
            .to_string()
    };
    assert!(tr.contains(&shown(&hold["created_at"])), "{tr} {hold}");
    assert!(tr.contains(&shown(&hold["expires_at"])), "{tr} {hold}");
    assert!(!tr.contains("past expiry"), "{tr}");

    // A second, labelled hold is listed first; the users list shows what
    // is held beside the balance.
    let second = place_hold(
        &app,
        &token,
        r#"{"user":"alice","amount":3,"endpoint":"llm:tokens"}"#,
    );
    let page = b.get("/console/users/alice");
    assert!(page.body.contains("id=\"held\">10<"), "{}", page.body);
    let newer = page
        .body
        .find(&format!("data-hold=\"{}\"", second["id"]))
        .unwrap();
    assert!(newer < page.body.find(&format!("data-hold=\"{id}\"")).unwrap());
    assert!(row(&page.body, &format!("data-hold=\"{}\"", second["id"])).contains("llm:tokens"));
    let list = b.get("/console/users");
    assert!(list.body.contains("(10 held)"), "{}", list.body);

    // Settled holds leave the table (and `held`).
    let auth = format!("Bearer {token}");
    for h in [&hold, &second] {
        let r = request(
            app.addr,
            "POST",
            &format!("/v1/holds/{}/release", h["id"]),
            &[("Authorization", auth.as_str())],
            None,
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let page = b.get("/console/users/alice");
    assert!(page.body.contains("id=\"held\">0<"), "{}", page.body);
    assert!(page.body.contains("No open holds"));
}

#[test]
fn console_marks_an_open_hold_past_its_expiry() {
    let app = spawn_app();
    app.db.add_user("alice", 20);
    // As if the expire-holds job had not run yet.
    app.db.exec(
        "INSERT INTO holds (user_id, endpoint, amount, expires_at) \
         SELECT id, 'hold', 5, NOW(3) - INTERVAL 1 MINUTE FROM users WHERE username = 'alice'",
    );
    app.db
        .exec("UPDATE users SET held = 5 WHERE username = 'alice'");
    let b = Browser::login(&app);
    let page = b.get("/console/users/alice");
    assert!(page.body.contains("id=\"held\">5<"), "{}", page.body);
    assert!(
        row(&page.body, "data-hold=").contains("past expiry"),
        "{}",
        page.body
    );
    // The domain read the page uses: only open holds, by name.
    let open = creditgate::billing::holds::open_of_user(&app.db.pool, &name("alice")).unwrap();
    assert_eq!(open.len(), 1);
    assert!(open[0].is_past_expiry());
    assert!(
        creditgate::billing::holds::open_of_user(&app.db.pool, &name("nobody"))
            .unwrap()
            .is_empty()
    );
}
