//! `/v1/forward-auth` end to end: the real server asked as nginx's
//! `auth_request` and Caddy's `forward_auth` ask it (the headers they send,
//! without a body), with a gateway route whose upstream is never called.
//! Every test checks the money: what was charged, and that
//! `credit = Σ credit_events.delta − Σ usage_daily.credits`.

use serde_json::json;

use crate::support::helpers::{creditgate, in_parallel, request, spawn_app_with, Resp, TestApp};

const SECRET: &str = "fwd-test-secret-0123456789";

/// A server with the secret set, a route `/metered` (cost 1, GET and POST) to an
/// upstream nobody listens on, and alice with `credit`.
struct World {
    app: TestApp,
    token: String,
}

fn world(credit: i64) -> World {
    world_with(credit, &[("CREDITGATE_FORWARD_AUTH_SECRET", SECRET)])
}

fn world_with(credit: i64, vars: &[(&str, &str)]) -> World {
    let app = spawn_app_with(vars);
    let token = app.db.add_user("alice", credit);
    // Port 9 (discard): forward authentication never calls the upstream.
    app.add_route(
        "/metered",
        "http://127.0.0.1:9",
        json!({ "cost": 1, "methods": ["GET", "POST"] }),
    );
    World { app, token }
}

impl World {
    fn auth(&self) -> String {
        format!("Bearer alice:{}", self.token)
    }

    /// Asks as nginx does: `X-Original-Method`/`-URI`, the client's
    /// headers, the secret.
    fn nginx(&self, method: &str, uri: &str, extra: &[(&str, &str)]) -> Resp {
        let mut headers = vec![
            ("X-Creditgate-Forward-Secret", SECRET),
            ("X-Original-Method", method),
            ("X-Original-URI", uri),
        ];
        headers.extend_from_slice(extra);
        request(self.app.addr, "GET", "/v1/forward-auth", &headers, None)
    }

    fn nginx_as_alice(&self, uri: &str) -> Resp {
        let auth = self.auth();
        self.nginx("GET", uri, &[("Authorization", &auth)])
    }

    fn credit(&self) -> i64 {
        self.app.db.credit("alice")
    }

    fn assert_ledger(&self) {
        assert_eq!(self.app.db.ledger_mismatches(), vec![]);
    }
}

#[test]
fn nginx_style_headers_charge_the_routes_cost_and_name_the_user() {
    let w = world(10);
    let r = w.nginx_as_alice("/metered/things?x=1");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("X-Creditgate-User"), Some("alice"));
    assert_eq!(r.header("X-Credit-Remaining"), Some("9"));
    assert_eq!(r.json()["credit_remaining"], 9);
    assert_eq!(w.credit(), 9);
    // Usage is the route's, as if the gateway had served it.
    assert_eq!(
        w.app
            .db
            .scalar("SELECT credits FROM usage_daily WHERE endpoint = 'route:/metered'"),
        1
    );
    w.assert_ledger();
}

#[test]
fn caddy_style_headers_charge_too_with_the_token_in_the_original_query() {
    let w = world(10);
    let uri = format!("/metered/x?a=1&token=alice:{}", w.token);
    // Caddy asks with the client's method and keeps the client's headers.
    let r = request(
        w.app.addr,
        "GET",
        "/v1/forward-auth",
        &[
            ("X-Creditgate-Forward-Secret", SECRET),
            ("X-Forwarded-Method", "POST"),
            ("X-Forwarded-Uri", &uri),
            ("X-Forwarded-Proto", "http"),
        ],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("X-Credit-Remaining"), Some("9"));
    assert_eq!(w.credit(), 9);
    w.assert_ledger();
}

#[test]
fn a_missing_or_wrong_secret_is_403_and_nothing_is_charged() {
    let w = world(10);
    let auth = w.auth();
    let asked = |secret: Option<&str>| {
        let mut headers = vec![
            ("X-Original-Method", "GET"),
            ("X-Original-URI", "/metered/x"),
            ("Authorization", auth.as_str()),
        ];
        if let Some(s) = secret {
            headers.push(("X-Creditgate-Forward-Secret", s));
        }
        request(w.app.addr, "GET", "/v1/forward-auth", &headers, None)
    };
    for secret in [
        None,
        Some("wrong"),
        Some(""),
        Some(&SECRET[..SECRET.len() - 1]),
    ] {
        let r = asked(secret);
        assert_eq!(r.status, 403, "{secret:?}: {}", r.body);
        assert_eq!(r.error(), "forward_auth_forbidden");
        assert_eq!(r.header("X-Creditgate-User"), None);
    }
    assert_eq!(w.credit(), 10);
    w.assert_ledger();
}

#[test]
fn without_the_setting_the_endpoint_answers_403_to_everyone() {
    let w = world_with(10, &[]);
    let auth = w.auth();
    let r = w.nginx("GET", "/metered/x", &[("Authorization", &auth)]);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.error(), "forward_auth_disabled");
    assert_eq!(w.credit(), 10);
}

#[test]
fn no_credentials_is_401_with_www_authenticate() {
    let w = world(10);
    let r = w.nginx("GET", "/metered/x", &[]);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.error(), "unauthorized");
    assert_eq!(
        r.header("WWW-Authenticate"),
        Some("Bearer realm=\"creditgate\"")
    );
    let r = w.nginx(
        "GET",
        "/metered/x",
        &[("Authorization", "Bearer alice:cg_wrong")],
    );
    assert_eq!(r.status, 401);
    assert_eq!(w.credit(), 10);
}

#[test]
fn a_path_without_a_route_is_404_and_a_method_it_does_not_take_405() {
    let w = world(10);
    let auth = w.auth();
    let r = w.nginx("GET", "/elsewhere", &[("Authorization", &auth)]);
    assert_eq!((r.status, r.error().as_str()), (404, "not_found"));
    // Not under the prefix, though it starts like it.
    assert_eq!(w.nginx_as_alice("/meteredx").status, 404);
    let r = w.nginx("DELETE", "/metered/x", &[("Authorization", &auth)]);
    assert_eq!(r.status, 405, "{}", r.body);
    assert_eq!(r.header("Allow"), Some("GET, POST"));
    // The gateway's unsafe paths are refused here too.
    assert_eq!(w.nginx_as_alice("/metered/../admin").status, 404);
    let r = w.nginx_as_alice("/metered/a;b");
    assert_eq!((r.status, r.error().as_str()), (400, "invalid_path"));
    assert_eq!(w.credit(), 10);
}

#[test]
fn an_original_request_given_twice_differently_or_not_at_all_is_400() {
    let w = world(10);
    let auth = w.auth();
    // A client's own X-Forwarded-Uri passes through nginx: it must not pick
    // what is charged.
    let r = w.nginx(
        "GET",
        "/metered/x",
        &[("Authorization", &auth), ("X-Forwarded-Uri", "/cheap")],
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.error(), "invalid_original_request");
    let r = request(
        w.app.addr,
        "GET",
        "/v1/forward-auth",
        &[
            ("X-Creditgate-Forward-Secret", SECRET),
            ("Authorization", &auth),
        ],
        None,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(w.credit(), 10);
}

#[test]
fn out_of_credit_is_402_with_the_credit_left() {
    let w = world(1);
    assert_eq!(w.nginx_as_alice("/metered/x").status, 200);
    let r = w.nginx_as_alice("/metered/x");
    assert_eq!(r.status, 402, "{}", r.body);
    assert_eq!(r.error(), "insufficient_credit");
    assert_eq!(r.header("X-Credit-Remaining"), Some("0"));
    assert_eq!(w.credit(), 0);
    w.assert_ledger();
}

#[test]
fn over_the_rate_limit_is_429_with_retry_after_and_ratelimit_headers() {
    let w = world(100);
    creditgate(
        &w.app.db.url,
        &["user", "limit", "alice", "--rate", "2/min"],
    )
    .ok();
    let answers: Vec<Resp> = (0..3).map(|_| w.nginx_as_alice("/metered/x")).collect();
    assert_eq!(answers[0].status, 200);
    assert!(answers[0].header("RateLimit").is_some());
    let r = &answers[2];
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.error(), "rate_limited");
    assert!(r.header("Retry-After").is_some());
    assert!(r.header("RateLimit-Policy").is_some());
    assert_eq!(w.credit(), 98);
    w.assert_ledger();
}

#[test]
fn an_idempotency_key_is_charged_once_and_a_reuse_for_another_request_refused() {
    let w = world(10);
    let auth = w.auth();
    let keyed = |uri: &str| {
        w.nginx(
            "GET",
            uri,
            &[("Authorization", &auth), ("Idempotency-Key", "order-1")],
        )
    };
    let first = keyed("/metered/x");
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.header("Idempotency-Replayed"), None);
    let again = keyed("/metered/x");
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.header("Idempotency-Replayed"), Some("true"));
    assert_eq!(again.header("X-Credit-Remaining"), Some("9"));
    assert_eq!(w.credit(), 9);
    let other = keyed("/metered/y");
    assert_eq!(other.status, 422, "{}", other.body);
    assert_eq!(w.credit(), 9);
    w.assert_ledger();
}

#[test]
fn a_hundred_at_once_on_fifty_credits_pass_exactly_fifty() {
    let w = world(50);
    let (addr, auth) = (w.app.addr, w.auth());
    let statuses = in_parallel(100, move |i| {
        let uri = format!("/metered/call/{i}");
        request(
            addr,
            "GET",
            "/v1/forward-auth",
            &[
                ("X-Creditgate-Forward-Secret", SECRET),
                ("X-Original-Method", "GET"),
                ("X-Original-URI", &uri),
                ("Authorization", &auth),
            ],
            None,
        )
        .status
    });
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 402).count();
    assert_eq!((ok, refused), (50, 50), "{statuses:?}");
    assert_eq!(w.credit(), 0);
    w.assert_ledger();
}
