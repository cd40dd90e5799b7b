//! The OpenAPI document against the real router, both ways, so that neither
//! can change without the other.
//!
//! No list is kept by hand here. Requests go through `route` itself, the
//! function `handle` calls, with an `AppState` whose database is a closed
//! port (each database call fails in ~10 ms with 503; routing decides 404
//! `not_found` and 405 `method_not_allowed` before any database call, so a
//! 503 proves the router took the request):
//! 1. document → router: every documented (method, path) — path parameters
//!    filled in — must answer something other than 404 `not_found` or 405.
//! 2. router → document: every (method, path) the router answers must be a
//!    documented operation. The paths tried are the documented ones, and
//!    every prefix of them extended by `/w`, `/w/1` and `/1/w`, `w` being
//!    any string literal of the router's own source (`mod.rs`, `admin.rs`,
//!    `admin_keys.rs`) or a parameter value; with every method. So a new
//!    arm (`["users", name, "webhooks"]`, `["console"]`, `["webhooks", id]`)
//!    or a new method on an arm answers on a path tried here and fails the
//!    test until it is documented. (An arm two new literal segments away
//!    from every documented path would escape; there is none today.)
//! 3. the `error` enum of the document equals the codes of `ApiError::code`
//!    (the string literals of that function's source);
//! 4. every undocumented method on a documented path is a 405 whose `Allow`
//!    names exactly the documented methods.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rouille::Request;
use serde_json::Value;

use super::{route, Ctx};
use crate::app::AppState;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::ops::jobs::Jobs;
use crate::ops::mail::Mailer;
use crate::ops::metrics::Metrics;
use crate::ops::shutdown::Shutdown;

const ADMIN_TOKEN: &str = "drift-test-admin-token";
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
/// What a path parameter is filled with: a valid username, bank code, key
/// id, route id and job id alike.
const PARAM: &str = "1";

/// A state whose database is a closed port (also for `service_auth`'s tests).
pub(super) fn state() -> AppState {
    let config = Config::from_lookup(|name| match name {
        "CREDITGATE_ADMIN_TOKEN" => Some(ADMIN_TOKEN.into()),
        // Port 1 refuses at once: every database call fails quickly.
        "DATABASE_URL" => Some("mysql://root@127.0.0.1:1/drift".into()),
        _ => None,
    })
    .expect("config");
    let pool =
        crate::db::pool(config.database_url.expose(), 2, Duration::from_millis(10)).expect("pool");
    let metrics = Arc::new(Metrics::default());
    let mailer = Mailer::start(&config).expect("log-only mailer");
    AppState::new(
        config,
        pool,
        Arc::clone(&metrics),
        Shutdown::new(),
        Arc::new(Jobs::new(Vec::new(), metrics)),
        Arc::new(Gateway::new(1)),
        mailer,
    )
}

/// Whether the router took `method path`: anything but 404 `not_found`
/// and 405 `method_not_allowed`.
fn answers(state: &AppState, method: &str, path: &str) -> bool {
    let req = Request::fake_http(method, path, auth_for(path), Vec::new());
    let mut ctx = Ctx {
        id: 0,
        route: "other",
        user: None,
    };
    match route(state, &req, &mut ctx) {
        Ok(_) => true,
        Err(e) => !matches!(e.code(), "not_found" | "method_not_allowed"),
    }
}

/// The admin token on admin paths, a user's credentials elsewhere.
fn auth_for(path: &str) -> Vec<(String, String)> {
    let value = if path.starts_with("/admin") || path.starts_with("/stopServer") {
        format!("Bearer {ADMIN_TOKEN}")
    } else {
        "Bearer alice:cg_drift".to_string()
    };
    vec![("Authorization".into(), value)]
}

/// (method, path template) of every documented operation.
fn documented() -> Vec<(String, String)> {
    let doc = crate::openapi::document();
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if METHODS.contains(&method.to_ascii_uppercase().as_str()) {
                out.push((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    out
}

fn fill(template: &str) -> String {
    template
        .split('/')
        .map(|s| if s.starts_with('{') { PARAM } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether a concrete path is an instance of a template; one trailing
/// slash is optional on both (the router allows it where it matters, and
/// this direction only asks about paths that answered).
fn instance_of(path: &str, template: &str) -> bool {
    let trim = |s: &str| s.strip_suffix('/').unwrap_or(s).to_string();
    let (p, t) = (trim(path), trim(template));
    let (p, t): (Vec<&str>, Vec<&str>) = (p.split('/').collect(), t.split('/').collect());
    p.len() == t.len() && p.iter().zip(&t).all(|(a, b)| b.starts_with('{') || a == b)
}

/// Every string literal in the router's source that could be a path segment.
fn router_words() -> BTreeSet<String> {
    let mut words = BTreeSet::new();
    for source in [
        include_str!("mod.rs"),
        include_str!("admin.rs"),
        include_str!("admin_keys.rs"),
    ] {
        for (i, part) in source.split('"').enumerate() {
            let segment_like = !part.is_empty()
                && part.len() <= 32
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if i % 2 == 1 && segment_like {
                words.insert(part.to_string());
            }
        }
    }
    words.insert(PARAM.into());
    words
}

#[test]
fn every_documented_operation_is_routed() {
    let state = state();
    let mut missing = Vec::new();
    for (method, template) in documented() {
        let path = fill(&template);
        let mut forms = vec![path.clone()];
        if let Some(bare) = path.strip_suffix('/') {
            // Documented with its slash, answered without it too.
            forms.push(bare.to_string());
        }
        for form in forms {
            if !answers(&state, &method, &form) {
                missing.push(format!("{method} {form} (documented as {template})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "documented but the router answers 404 not_found / 405:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_routed_operation_is_documented() {
    let state = state();
    let operations = documented();
    let words = router_words();
    let mut paths: BTreeSet<String> = BTreeSet::new();
    for (_, template) in &operations {
        let filled = fill(template);
        let segments: Vec<&str> = filled.trim_start_matches('/').split('/').collect();
        paths.insert(filled.clone());
        for n in 0..=segments.len() {
            let prefix: String = segments[..n].iter().map(|s| format!("/{s}")).collect();
            for w in &words {
                paths.insert(format!("{prefix}/{w}"));
                paths.insert(format!("{prefix}/{w}/{PARAM}"));
                paths.insert(format!("{prefix}/{PARAM}/{w}"));
            }
        }
    }
    let mut undocumented = Vec::new();
    // The operator console is HTML for people, not part of the API: the
    // document leaves it out, as it does gateway routes (the operator's).
    let paths: BTreeSet<String> = paths
        .into_iter()
        .filter(|p| p != "/console" && !p.starts_with("/console/"))
        .collect();
    for path in &paths {
        for method in METHODS {
            if answers(&state, method, path)
                && !operations
                    .iter()
                    .any(|(m, t)| m == method && instance_of(path, t))
            {
                undocumented.push(format!("{method} {path}"));
            }
        }
    }
    assert!(
        paths.len() > 1000,
        "too few paths tried ({}): is the router source read?",
        paths.len()
    );
    assert!(
        undocumented.is_empty(),
        "the router answers these, but the document does not describe them:\n{}",
        undocumented.join("\n")
    );
}

#[test]
fn the_error_enum_is_every_code_the_server_sends() {
    let source = include_str!("error.rs");
    let start = source.find("pub fn code(").expect("ApiError::code");
    let end = start + source[start..].find("pub fn message(").expect("message");
    let sent: BTreeSet<&str> = source[start..end].split('"').skip(1).step_by(2).collect();
    let doc = crate::openapi::document();
    let documented: BTreeSet<&str> = doc["components"]["schemas"]["Error"]["properties"]["error"]
        ["enum"]
        .as_array()
        .expect("enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(sent, documented);
}

#[test]
fn a_405_names_the_documented_methods_in_allow() {
    let state = state();
    let operations = documented();
    let mut wrong = Vec::new();
    let templates: BTreeSet<&String> = operations.iter().map(|(_, t)| t).collect();
    for template in templates {
        let documented: BTreeSet<&str> = operations
            .iter()
            .filter(|(_, t)| t == template)
            .map(|(m, _)| m.as_str())
            .collect();
        let path = fill(template);
        for method in METHODS.iter().filter(|m| !documented.contains(*m)) {
            let mut ctx = Ctx {
                id: 0,
                route: "other",
                user: None,
            };
            // Admin paths check the token first; the 405 comes after.
            let req = Request::fake_http(*method, path.as_str(), auth_for(&path), Vec::new());
            match route(&state, &req, &mut ctx) {
                Err(super::ApiError::MethodNotAllowed { allow }) => {
                    let named: BTreeSet<&str> = allow.split(", ").collect();
                    if named != documented {
                        wrong.push(format!("{method} {path}: Allow {allow:?}"));
                    }
                }
                _ => wrong.push(format!("{method} {path}: not a 405")),
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
