//! Gateway routes end to end: the real server in front of a real upstream
//! on loopback (`upstream.rs`), routes added through the admin API or the
//! CLI. Every test checks the money too: what was charged, what was
//! refunded, and that `credit = Σ credit_events.delta − Σ usage_daily.credits`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::daemon::Daemon;
use crate::support::helpers::{
    creditgate, in_parallel, request, send_raw, spawn_app, spawn_app_with, Resp, TestApp, TestDb,
    TestServer,
};
use crate::support::upstream::Upstream;

/// A server, an upstream, and alice with `credit`.
struct World {
    app: TestApp,
    upstream: Upstream,
    token: String,
}

fn world(credit: i64) -> World {
    world_on(spawn_app(), credit)
}

/// `world` on a server the test configured.
fn world_on(app: TestApp, credit: i64) -> World {
    let token = app.db.add_user("alice", credit);
    World {
        app,
        upstream: Upstream::start(),
        token,
    }
}

impl World {
    /// Adds a route through the admin API; `fields` are merged over
    /// `{"prefix", "upstream"}` pointing at the test upstream.
    fn route(&self, prefix: &str, fields: Value) -> Value {
        self.app
            .add_route(prefix, &self.upstream.url(), fields)
            .json()
    }

    fn auth(&self) -> String {
        format!("Bearer alice:{}", self.token)
    }

    fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> Resp {
        let auth = self.auth();
        let mut all = vec![("Authorization", auth.as_str())];
        all.extend_from_slice(headers);
        request(self.app.addr, method, path, &all, body)
    }

    fn get(&self, path: &str) -> Resp {
        self.call("GET", path, &[], None)
    }

    fn credit(&self) -> i64 {
        self.app.db.credit("alice")
    }

    fn refunds(&self) -> i64 {
        self.app
            .db
            .scalar("SELECT COUNT(*) FROM credit_events WHERE reason = 'refund'")
    }

    fn assert_ledger(&self) {
        assert_eq!(self.app.db.ledger_mismatches(), vec![]);
    }
}

fn echoed(r: &Resp) -> Value {
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

fn echoed_header<'a>(echo: &'a Value, name: &str) -> Vec<&'a str> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|h| h[1].as_str().unwrap())
        .collect()
}

#[test]
fn a_route_charges_forwards_and_answers_with_the_credit_left() {
    let w = world(10);
    w.route("/weather", json!({ "cost": 3 }));
    let r = w.get("/weather/today?city=Oslo");
    let echo = echoed(&r);
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["url"], "/weather/today?city=Oslo");
    assert_eq!(r.header("X-Credit-Remaining"), Some("7"));
    assert_eq!(r.header("X-Upstream"), Some("yes"), "upstream headers pass");
    assert_eq!(w.credit(), 7);
    assert_eq!(
        w.app
            .db
            .scalar("SELECT credits FROM usage_daily WHERE endpoint = 'route:/weather'"),
        3
    );
    w.assert_ledger();
}

#[test]
fn the_path_is_stripped_and_joined_to_the_base_as_configured() {
    let w = world(10);
    let base = format!("{}/v1", w.upstream.url());
    w.route("/kept", json!({ "upstream": base }));
    w.route("/strip", json!({ "upstream": base, "strip_prefix": true }));
    assert_eq!(echoed(&w.get("/kept/a/b"))["url"], "/v1/kept/a/b");
    assert_eq!(echoed(&w.get("/strip/a/b"))["url"], "/v1/a/b");
    assert_eq!(echoed(&w.get("/strip"))["url"], "/v1/");
    // Not under the prefix: another path, no route.
    assert_eq!(w.get("/stripped").status, 404);
    assert_eq!(w.credit(), 7);
}

#[test]
fn the_longest_prefix_wins() {
    let w = world(10);
    w.route("/a", json!({ "cost": 1 }));
    w.route("/a/b", json!({ "cost": 4 }));
    echoed(&w.get("/a/b/c"));
    assert_eq!(w.credit(), 6);
    echoed(&w.get("/a/x"));
    assert_eq!(w.credit(), 5);
}

#[test]
fn the_token_leaves_the_query_and_the_credentials_leave_the_headers() {
    let w = world(10);
    w.route("/q", json!({}));
    let path = format!("/q/x?a=1&token=alice:{}&b=two%20words", w.token);
    let r = request(w.app.addr, "GET", &path, &[("X-Custom", "kept")], None);
    let echo = echoed(&r);
    assert_eq!(echo["url"], "/q/x?a=1&b=two%20words");
    let via_header = echoed(&w.call("GET", "/q/y", &[("X-Custom", "kept")], None));
    for e in [&echo, &via_header] {
        assert!(echoed_header(e, "Authorization").is_empty(), "{e}");
        assert_eq!(echoed_header(e, "X-Custom"), vec!["kept"]);
        assert!(
            !e.to_string().contains(&w.token),
            "the token reached the upstream"
        );
    }
}

#[test]
fn forwarding_headers_are_added_and_forged_ones_replaced() {
    let w = world(10);
    w.route("/h", json!({}));
    let r = w.call(
        "GET",
        "/h",
        &[
            ("X-Creditgate-User", "admin"),
            ("X-Request-Id", "forged"),
            ("X-Forwarded-For", "203.0.113.7"),
            ("Connection", "close, X-Drop-Me"),
            ("X-Drop-Me", "hop"),
            ("Keep-Alive", "timeout=1"),
            ("TE", "trailers"),
        ],
        None,
    );
    let echo = echoed(&r);
    assert_eq!(echoed_header(&echo, "X-Creditgate-User"), vec!["alice"]);
    assert_eq!(
        echoed_header(&echo, "X-Forwarded-For"),
        vec!["203.0.113.7, 127.0.0.1"]
    );
    assert_eq!(echoed_header(&echo, "X-Forwarded-Proto"), vec!["http"]);
    assert_eq!(
        echoed_header(&echo, "X-Forwarded-Host"),
        vec![w.app.addr.to_string().as_str()]
    );
    let id = echoed_header(&echo, "X-Request-Id");
    assert_eq!(id.len(), 1);
    assert!(id[0].parse::<u64>().is_ok(), "{id:?}");
    assert_eq!(
        echoed_header(&echo, "Host"),
        vec![w.upstream.addr.to_string().as_str()]
    );
    for gone in ["X-Drop-Me", "Keep-Alive", "TE"] {
        assert!(
            echoed_header(&echo, gone).is_empty(),
            "{gone} was forwarded"
        );
    }
    assert_eq!(
        r.header("Keep-Alive"),
        None,
        "hop-by-hop answer header passed"
    );
}

#[test]
fn method_and_body_are_passed_on() {
    let w = world(10);
    w.route("/m", json!({}));
    for method in ["POST", "PUT", "PATCH"] {
        let echo = echoed(&w.call(
            method,
            "/m/items",
            &[("Content-Type", "application/json")],
            Some(r#"{"n":1}"#),
        ));
        assert_eq!(echo["method"], method);
        assert_eq!(echo["body"], r#"{"n":1}"#);
    }
    assert_eq!(
        echoed(&w.call("DELETE", "/m/items", &[], None))["method"],
        "DELETE"
    );
    // A chunked body arrives whole.
    let raw = format!(
        "POST /m/c HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {}\r\n\
         Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        w.auth()
    );
    let echo = echoed(&send_raw(w.app.addr, raw.as_bytes()).unwrap());
    assert_eq!(echo["body"], "hello world");
    assert_eq!(w.credit(), 5);
}

// See: #18 — a body on a method whose body an upstream may ignore would be
// read there as the next request, uncharged.
#[test]
fn a_body_on_get_head_options_or_delete_is_refused_uncharged() {
    let w = world(10);
    w.route("/m", json!({}));
    for method in ["GET", "HEAD", "OPTIONS", "DELETE"] {
        let r = w.call(
            method,
            "/m/x",
            &[],
            Some("GET /m/smuggled HTTP/1.1\r\n\r\n"),
        );
        assert_eq!(r.status, 400, "{method}");
        if method != "HEAD" {
            assert_eq!(r.error(), "body_not_allowed");
        }
    }
    // An empty body is no body.
    echoed(&w.call("GET", "/m/x", &[("Content-Length", "0")], None));
    assert_eq!(w.credit(), 9);
    assert_eq!(w.upstream.seen().len(), 1);
}

#[test]
fn a_method_the_route_does_not_allow_is_405_uncharged_and_not_forwarded() {
    let w = world(10);
    w.route("/ro", json!({ "methods": ["GET", "PUT"] }));
    let r = w.call("POST", "/ro", &[], Some("{}"));
    assert_eq!((r.status, r.error().as_str()), (405, "method_not_allowed"));
    // RFC 9110 §15.5.6: a 405 names the methods that are allowed.
    assert_eq!(r.header("Allow"), Some("GET, PUT"));
    echoed(&w.get("/ro"));
    assert_eq!(w.credit(), 9);
    assert_eq!(w.upstream.seen().len(), 1);
}

#[test]
fn bad_credentials_and_no_credit_forward_nothing() {
    let w = world(1);
    w.route("/p", json!({ "cost": 2 }));
    let none = request(w.app.addr, "GET", "/p", &[], None);
    assert_eq!(none.status, 401);
    assert!(none.header("WWW-Authenticate").is_some());
    let wrong = request(
        w.app.addr,
        "GET",
        "/p",
        &[("Authorization", "Bearer alice:cg_wrong")],
        None,
    );
    assert_eq!(wrong.status, 401);
    let both = request(
        w.app.addr,
        "GET",
        &format!("/p?token=alice:{}", w.token),
        &[("Authorization", &w.auth())],
        None,
    );
    assert_eq!(
        (both.status, both.error().as_str()),
        (400, "ambiguous_credentials")
    );
    let poor = w.get("/p");
    assert_eq!(
        (poor.status, poor.error().as_str()),
        (402, "insufficient_credit")
    );
    assert_eq!(poor.header("X-Credit-Remaining"), Some("1"));
    assert!(w.upstream.seen().is_empty(), "something was forwarded");
    assert_eq!(w.credit(), 1);
}

#[test]
fn upstream_statuses_pass_through_and_are_billed_by_charge_on() {
    // (charge_on, upstream status, billed)
    let cases = [
        ("2xx", 200, true),
        ("2xx", 404, false),
        ("2xx", 500, false),
        ("non-5xx", 404, true),
        ("non-5xx", 500, false),
        ("always", 500, true),
        ("always", 503, true),
    ];
    for (i, (charge_on, status, billed)) in cases.iter().enumerate() {
        let w = world(10);
        w.route(
            "/s",
            json!({ "cost": 2, "charge_on": charge_on, "strip_prefix": true }),
        );
        let r = w.get(&format!("/s/status/{status}"));
        assert_eq!(r.status, *status, "case {i}");
        let want = if *billed { 8 } else { 10 };
        assert_eq!(w.credit(), want, "case {i}: {charge_on} {status}");
        assert_eq!(
            r.header("X-Credit-Remaining"),
            Some(want.to_string().as_str())
        );
        assert_eq!(w.refunds(), if *billed { 0 } else { 1 }, "case {i}");
        w.assert_ledger();
    }
}

#[test]
fn a_refund_takes_the_usage_credits_back_but_keeps_the_call() {
    let w = world(10);
    w.route("/s", json!({ "cost": 3, "strip_prefix": true }));
    assert_eq!(w.get("/s/status/500").status, 500);
    let (calls, credits): (i64, i64) = {
        use mysql::prelude::Queryable;
        w.app
            .db
            .conn()
            .query_first("SELECT calls, credits FROM usage_daily")
            .unwrap()
            .unwrap()
    };
    assert_eq!((calls, credits), (1, 0));
    let (delta, after, actor): (i64, i64, String) = {
        use mysql::prelude::Queryable;
        w.app
            .db
            .conn()
            .query_first(
                "SELECT delta, balance_after, actor FROM credit_events WHERE reason = 'refund'",
            )
            .unwrap()
            .unwrap()
    };
    assert_eq!((delta, after, actor.as_str()), (0, 10, "gateway"));
    w.assert_ledger();
}

#[test]
fn an_unreachable_upstream_is_502_and_refunded() {
    let w = world(10);
    // A port that was free a moment ago: nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    w.route(
        "/down",
        json!({ "upstream": format!("http://{closed}"), "cost": 4 }),
    );
    let r = w.get("/down/x");
    assert_eq!(
        (r.status, r.error().as_str()),
        (502, "upstream_unavailable")
    );
    assert_eq!(r.header("X-Credit-Remaining"), Some("10"));
    assert_eq!(w.credit(), 10);
    assert_eq!(w.refunds(), 1);
    w.assert_ledger();
}

#[test]
fn an_upstream_that_never_answers_is_504_after_the_timeout_and_refunded() {
    let w = world(10);
    // Accepts and reads, never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().flatten() {
            held.push(s);
        }
    });
    w.route(
        "/slow",
        json!({ "upstream": format!("http://{addr}"), "timeout_ms": 500, "cost": 2 }),
    );
    let started = Instant::now();
    let r = w.get("/slow");
    let took = started.elapsed();
    assert_eq!((r.status, r.error().as_str()), (504, "upstream_timeout"));
    assert!(took >= Duration::from_millis(450), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(w.credit(), 10);
    assert_eq!(w.refunds(), 1);
    w.assert_ledger();
}

#[test]
fn an_oversized_body_is_413_before_any_charge() {
    let app = crate::support::helpers::spawn_app_with(&[("CREDITGATE_MAX_BODY_BYTES", "1000")]);
    let token = app.db.add_user("alice", 10);
    let upstream = Upstream::start();
    let body = json!({ "prefix": "/b", "upstream": upstream.url() }).to_string();
    assert_eq!(
        app.admin("POST", "/admin/v1/routes", Some(&body)).status,
        201
    );
    let auth = format!("Bearer alice:{token}");
    let big = "x".repeat(1001);
    let r = request(
        app.addr,
        "POST",
        "/b",
        &[("Authorization", &auth)],
        Some(&big),
    );
    assert_eq!((r.status, r.error().as_str()), (413, "body_too_large"));
    // Chunked, so only reading it tells.
    let chunk = "y".repeat(600);
    let raw = format!(
        "POST /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {auth}\r\n\
         Transfer-Encoding: chunked\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    let r = send_raw(app.addr, raw.as_bytes()).unwrap();
    assert_eq!((r.status, r.error().as_str()), (413, "body_too_large"));
    let fits = "z".repeat(1000);
    let r = request(
        app.addr,
        "POST",
        "/b",
        &[("Authorization", &auth)],
        Some(&fits),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(app.db.credit("alice"), 9);
    assert_eq!(upstream.seen().len(), 1);
}

#[test]
fn hostile_paths_and_headers_reach_nothing_uncharged() {
    let w = world(100);
    w.route("/weather", json!({ "strip_prefix": true }));
    let before = w.credit();
    for path in [
        "/weather/../admin/v1/users",
        "/weather/./x",
        "/weather/%2e%2e/admin",
        "/weather/%2E./x",
        "/weather/a\\..\\admin",
    ] {
        let r = w.get(path);
        assert_eq!(r.status, 404, "{path}: {}", r.body);
    }
    assert!(w.upstream.seen().is_empty());
    assert_eq!(w.credit(), before);
    // An encoded slash is not a path separator: not under the prefix.
    assert_eq!(w.get("/weather%2Fx").status, 404);
    // Encoded or back slashes could become separators upstream: refused.
    for path in ["/weather/a%2Fb", "/weather/..%2fadmin", "/weather/a%5cb"] {
        assert_eq!(w.get(path).status, 404, "{path}");
    }
    // Other encodings are kept as sent; the upstream decides what they mean.
    assert_eq!(echoed(&w.get("/weather/a%20b"))["url"], "/a%20b");
    // A header value cannot smuggle a second header line in.
    let raw = format!(
        "GET /weather HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {}\r\n\
         X-Creditgate-User: bob\r\nX-Evil: a\rX-Injected: 1\r\n\r\n",
        w.auth()
    );
    let r = send_raw(w.app.addr, raw.as_bytes()).unwrap();
    assert!(r.status < 500, "{}", r.status);
    for seen in w.upstream.seen() {
        assert!(seen.header("X-Injected").is_none());
        assert_eq!(seen.header("X-Creditgate-User"), Some("alice"));
    }
    let forwarded = w.upstream.seen().len() as i64;
    assert_eq!(w.credit(), before - forwarded, "every forward was charged");
    w.assert_ledger();
}

#[test]
fn a_slow_body_is_not_charged_until_it_has_arrived() {
    let w = world(10);
    w.route("/slowbody", json!({}));
    let mut s = TcpStream::connect(w.app.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /slowbody HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {}\r\n\
         Content-Length: 10\r\n\r\nhello",
        w.auth()
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(w.credit(), 10, "charged before the body arrived");
    assert!(w.upstream.seen().is_empty());
    s.write_all(b"world").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let r = crate::support::helpers::parse_response(&out).unwrap();
    assert_eq!(echoed(&r)["body"], "helloworld");
    assert_eq!(w.credit(), 9);
}

// See: #18 — a replay used to be forwarded again: one credit bought
// unlimited upstream calls, and a POST's effect was repeated upstream.
#[test]
fn a_billed_request_retried_with_its_key_is_answered_from_the_stored_answer() {
    let w = world(10);
    w.route("/i", json!({ "cost": 2, "strip_prefix": true }));
    let send = || {
        w.call(
            "POST",
            "/i/echo",
            &[("Idempotency-Key", "order-1")],
            Some("a"),
        )
    };
    let first = send();
    assert_eq!(first.status, 200);
    assert_eq!(first.header("Idempotency-Replayed"), None);
    for _ in 0..4 {
        let again = send();
        assert_eq!(again.status, 200);
        assert_eq!(again.header("Idempotency-Replayed"), Some("true"));
        assert_eq!(again.header("X-Credit-Remaining"), Some("8"));
        // The first answer, byte for byte, with its end-to-end headers.
        assert_eq!(again.body, first.body);
        assert_eq!(again.header("X-Upstream"), Some("yes"));
        assert_eq!(again.header("Keep-Alive"), None);
    }
    assert_eq!(w.upstream.seen().len(), 1, "five sends, one upstream call");
    assert_eq!(w.credit(), 8);
    // A refunded request's key starts afresh.
    assert_eq!(
        w.call("GET", "/i/status/500", &[("Idempotency-Key", "k2")], None)
            .status,
        500
    );
    let retry = w.call("GET", "/i/status/200", &[("Idempotency-Key", "k2")], None);
    assert_eq!(retry.header("Idempotency-Replayed"), None);
    assert_eq!(w.credit(), 6);
    w.assert_ledger();
}

// Found by review: an answer without a body is never read by the server,
// so it was never recorded and every retry got 409.
#[test]
fn a_billed_answer_without_a_body_is_replayed_too() {
    let w = world(10);
    w.route("/i", json!({ "cost": 1, "strip_prefix": true }));
    for (method, path) in [("POST", "/i/status/204"), ("HEAD", "/i/echo")] {
        let key = format!("k-{method}");
        let send = || w.call(method, path, &[("Idempotency-Key", &key)], None);
        let first = send();
        let again = send();
        assert_eq!(again.status, first.status, "{method} {path}");
        assert_eq!(
            again.header("Idempotency-Replayed"),
            Some("true"),
            "{method}"
        );
    }
    assert_eq!(w.upstream.seen().len(), 2, "each forwarded once");
    assert_eq!(w.credit(), 8);
    w.assert_ledger();
}

#[test]
fn an_answer_too_large_to_store_makes_a_retry_409_not_a_second_call() {
    let app = spawn_app_with(&[("CREDITGATE_IDEMPOTENT_ANSWER_BYTES", "100")]);
    let w = world_on(app, 10);
    w.route("/i", json!({ "cost": 1, "strip_prefix": true }));
    let big = w.call("GET", "/i/bytes/5000", &[("Idempotency-Key", "big")], None);
    assert_eq!((big.status, big.body.len()), (200, 5000));
    let again = w.call("GET", "/i/bytes/5000", &[("Idempotency-Key", "big")], None);
    assert_eq!(
        (again.status, again.error().as_str()),
        (409, "idempotency_answer_not_stored")
    );
    // A small one under another key is stored and replayed.
    w.call("GET", "/i/bytes/50", &[("Idempotency-Key", "small")], None);
    let replay = w.call("GET", "/i/bytes/50", &[("Idempotency-Key", "small")], None);
    assert_eq!(replay.header("Idempotency-Replayed"), Some("true"));
    assert_eq!(replay.body.len(), 50);
    assert_eq!(w.upstream.seen().len(), 2);
    assert_eq!(w.credit(), 8);
    w.assert_ledger();
}

#[test]
fn a_retry_while_the_first_is_in_flight_is_409() {
    let w = world(10);
    w.route("/i", json!({ "cost": 1, "strip_prefix": true }));
    let addr = w.app.addr;
    let auth = w.auth();
    let first = std::thread::spawn(move || {
        request(
            addr,
            "GET",
            "/i/sleep/1500",
            &[("Authorization", &auth), ("Idempotency-Key", "slow-1")],
            None,
        )
    });
    std::thread::sleep(Duration::from_millis(400));
    let second = w.call(
        "GET",
        "/i/sleep/1500",
        &[("Idempotency-Key", "slow-1")],
        None,
    );
    assert_eq!(
        (second.status, second.error().as_str()),
        (409, "idempotency_in_progress")
    );
    assert_eq!(second.header("Retry-After"), Some("1"));
    assert_eq!(first.join().unwrap().status, 200);
    assert_eq!(w.credit(), 9);
    assert_eq!(w.upstream.seen().len(), 1);
}

#[test]
fn concurrent_mixed_answers_charge_exactly_the_billed_ones() {
    // Arrange: 32 clients; even requests get 200 (billed), odd ones 500
    // (refunded); credit runs out half way.
    let w = world(300);
    w.route("/mix", json!({ "cost": 2, "strip_prefix": true }));
    let (addr, auth) = (w.app.addr, w.auth());
    // Act
    let answers: Vec<Vec<(u16, u16)>> = in_parallel(32, move |i| {
        (0..12)
            .map(|n| {
                let want = if (i + n) % 2 == 0 { 200 } else { 500 };
                let r = request(
                    addr,
                    "GET",
                    &format!("/mix/status/{want}"),
                    &[("Authorization", &auth)],
                    None,
                );
                (want, r.status)
            })
            .collect()
    });
    // Assert
    let all: Vec<(u16, u16)> = answers.into_iter().flatten().collect();
    let billed = all.iter().filter(|(_, got)| *got == 200).count() as i64;
    let refunded = all.iter().filter(|(_, got)| *got == 500).count() as i64;
    let refused = all.iter().filter(|(_, got)| *got == 402).count() as i64;
    assert_eq!(billed + refunded + refused, 32 * 12, "{all:?}");
    assert!(all.iter().all(|(want, got)| got == want || *got == 402));
    assert_eq!(w.credit(), 300 - 2 * billed);
    assert!(w.credit() >= 0);
    assert_eq!(w.refunds(), refunded);
    assert_eq!(
        w.upstream.seen().len() as i64,
        billed + refunded,
        "forwarded uncharged"
    );
    assert!(refused > 0, "the credit should have run out");
    assert_eq!(
        w.app
            .db
            .scalar("SELECT SUM(calls) FROM usage_daily WHERE endpoint = 'route:/mix'"),
        billed + refunded
    );
    w.assert_ledger();
}

#[test]
fn a_route_added_on_one_instance_is_served_by_another_within_5_s() {
    let w = world(10);
    let other = TestServer::start(&w.app.db.url, &[]);
    w.route("/late", json!({}));
    let auth = w.auth();
    let started = Instant::now();
    loop {
        let r = request(
            other.addr,
            "GET",
            "/late",
            &[("Authorization", &auth)],
            None,
        );
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 404);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not seen after 5 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // And removed the same way.
    let id = w.upstream.seen().len();
    assert_eq!(id, 1);
    let routes = w.app.admin("GET", "/admin/v1/routes", None).json();
    let rid = routes["routes"][0]["id"].as_u64().unwrap();
    assert_eq!(
        w.app
            .admin("DELETE", &format!("/admin/v1/routes/{rid}"), None)
            .status,
        200
    );
    let started = Instant::now();
    while request(
        other.addr,
        "GET",
        "/late",
        &[("Authorization", &auth)],
        None,
    )
    .status
        != 404
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still served after 5 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_admin_api_adds_lists_and_removes_routes_and_names_bad_fields() {
    let w = world(0);
    let made = w.route(
        "/r1",
        json!({ "cost": 0, "methods": ["get", "POST"], "timeout_ms": 900 }),
    );
    let keys: Vec<&str> = made
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for k in [
        "id",
        "prefix",
        "upstream",
        "cost",
        "methods",
        "charge_on",
        "timeout_ms",
        "strip_prefix",
        "created_at",
    ] {
        assert!(keys.contains(&k), "{k} missing from {made}");
    }
    assert_eq!(made["methods"], json!(["GET", "POST"]));
    assert_eq!(made["charge_on"], "2xx");
    let again = json!({ "prefix": "/r1", "upstream": w.upstream.url() }).to_string();
    let r = w.app.admin("POST", "/admin/v1/routes", Some(&again));
    assert_eq!((r.status, r.error().as_str()), (409, "route_exists"));
    for (body, field) in [
        (
            json!({ "prefix": "/admin/x", "upstream": "http://h" }),
            "prefix",
        ),
        (
            json!({ "prefix": "/api/v1.0/credit", "upstream": "http://h" }),
            "prefix",
        ),
        (json!({ "prefix": "/x/", "upstream": "http://h" }), "prefix"),
        (json!({ "prefix": "/x", "upstream": "ftp://h" }), "upstream"),
        (
            json!({ "prefix": "/x", "upstream": "http://h", "cost": -1 }),
            "cost",
        ),
        (
            json!({ "prefix": "/x", "upstream": "http://h", "charge_on": "3xx" }),
            "charge_on",
        ),
        (
            json!({ "prefix": "/x", "upstream": "http://h", "timeout_ms": 0 }),
            "timeout_ms",
        ),
    ] {
        let r = w
            .app
            .admin("POST", "/admin/v1/routes", Some(&body.to_string()));
        assert_eq!(
            (r.status, r.error().as_str()),
            (400, "invalid_route"),
            "{body}"
        );
        assert!(
            r.json()["message"].as_str().unwrap().contains(field),
            "{}",
            r.body
        );
    }
    let list = w.app.admin("GET", "/admin/v1/routes", None).json();
    assert_eq!(list["routes"].as_array().unwrap().len(), 1);
    let gone = w.app.admin("DELETE", "/admin/v1/routes/999", None);
    assert_eq!((gone.status, gone.error().as_str()), (404, "unknown_route"));
    let id = made["id"].as_u64().unwrap();
    let removed = w
        .app
        .admin("DELETE", &format!("/admin/v1/routes/{id}"), None);
    assert_eq!(removed.json()["prefix"], "/r1");
    assert_eq!(w.get("/r1").status, 404, "removed routes stop at once here");
}

#[test]
fn the_cli_adds_lists_and_removes_routes() {
    let db = TestDb::new();
    creditgate(
        &db.url,
        &[
            "route",
            "add",
            "/cli",
            "--upstream",
            "http://127.0.0.1:9/base",
            "--cost",
            "2",
            "--methods",
            "GET,post",
            "--strip-prefix",
        ],
    )
    .ok();
    let list = creditgate(&db.url, &["route", "list", "--json"]);
    let v: Value = serde_json::from_str(&list.ok().stdout).unwrap();
    assert_eq!(v["routes"][0]["upstream"], "http://127.0.0.1:9/base");
    assert_eq!(v["routes"][0]["methods"], json!(["GET", "POST"]));
    assert_eq!(v["routes"][0]["strip_prefix"], true);
    let table = creditgate(&db.url, &["route", "list"]);
    assert!(table.ok().stdout.contains("/cli"));
    let dup = creditgate(&db.url, &["route", "add", "/cli", "--upstream", "http://h"]);
    assert!(dup.failed().contains("already exists"), "{dup:?}");
    let bad = creditgate(
        &db.url,
        &["route", "add", "/health", "--upstream", "http://h"],
    );
    assert!(bad.failed().contains("prefix"), "{bad:?}");
    creditgate(&db.url, &["route", "remove", "/cli"]).ok();
    let missing = creditgate(&db.url, &["route", "remove", "/cli"]);
    assert!(missing.failed().contains("no route"), "{missing:?}");
}

#[test]
fn upstream_metrics_count_calls_and_refunds() {
    let w = world(10);
    w.route("/mm", json!({ "strip_prefix": true }));
    w.get("/mm/status/200");
    w.get("/mm/status/500");
    let text = request(w.app.addr, "GET", "/metrics", &[], None).body;
    let families = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("valid exposition text");
    let value = |name: &str, status: Option<&str>| {
        families
            .samples
            .iter()
            .find(|s| {
                s.metric == name
                    && s.labels.get("route") == Some("/mm")
                    && status.is_none_or(|st| s.labels.get("status") == Some(st))
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) => v,
                _ => -1.0,
            })
    };
    assert_eq!(
        value("creditgate_upstream_requests_total", Some("200")),
        Some(1.0)
    );
    assert_eq!(
        value("creditgate_upstream_requests_total", Some("500")),
        Some(1.0)
    );
    assert_eq!(value("creditgate_refunds_total", None), Some(1.0));
    assert!(
        text.contains("creditgate_upstream_seconds_count 2"),
        "{text}"
    );
}

/// Resident memory of a process, in bytes: (now, peak).
fn rss(pid: i32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
            * 1024
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

/// Reads a whole answer and counts its body bytes, holding none of them.
fn count_body(addr: SocketAddr, path: &str, auth: &str) -> (String, u64) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {auth}\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n as u64,
        }
    }
    (String::from_utf8_lossy(&head).into_owned(), total)
}

#[test]
fn a_100_mb_answer_streams_through_with_little_memory() {
    let db = TestDb::new();
    let token = db.add_user("alice", 10);
    let upstream = Upstream::start();
    let admin = "streaming-admin-token";
    let daemon = Daemon::start(
        &["serve"],
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("CREDITGATE_BIND", "127.0.0.1:0"),
            ("CREDITGATE_ADMIN_TOKEN", admin),
        ],
    );
    let addr = daemon.addr();
    let body = json!({ "prefix": "/big", "upstream": upstream.url(), "strip_prefix": true });
    let r = request(
        addr,
        "POST",
        "/admin/v1/routes",
        &[("Authorization", &format!("Bearer {admin}"))],
        Some(&body.to_string()),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let auth = format!("Bearer alice:{token}");
    // Warm up: threads, pools and buffers exist before the measurement.
    count_body(addr, "/big/bytes/1000000", &auth);
    let (before, _) = rss(daemon.pid());
    let (head, both_lengths) = count_body(addr, "/big/bytes/100000000", &auth);
    let (chunked_head, chunked) = count_body(addr, "/big/bytes/100000000?chunked", &auth);
    let (_, peak) = rss(daemon.pid());
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(chunked_head.starts_with("HTTP/1.1 200"), "{chunked_head}");
    assert!(both_lengths >= 100_000_000, "{both_lengths}");
    assert!(chunked >= 100_000_000, "{chunked}");
    let growth = peak.saturating_sub(before);
    eprintln!(
        "rss before {} KB, peak {} KB, growth {} KB",
        before >> 10,
        peak >> 10,
        growth >> 10
    );
    assert!(growth < 20 << 20, "RSS grew by {} MB", growth >> 20);
    assert_eq!(db.credit("alice"), 7);
}

#[test]
fn a_key_is_the_same_request_only_on_its_own_route_with_the_same_content() {
    let w = world(20);
    w.route("/k", json!({ "cost": 2, "strip_prefix": true }));
    w.route("/other", json!({ "cost": 5, "strip_prefix": true }));
    let post =
        |path: &str, body: &str| w.call("POST", path, &[("Idempotency-Key", "K1")], Some(body));
    // The bank route's answer under K1 is its own.
    let bank = w.call(
        "GET",
        "/api/v1.0/banks_data/BOFA/",
        &[("Idempotency-Key", "K1")],
        None,
    );
    assert_eq!(bank.status, 200);
    assert_eq!(post("/k/echo", "a").status, 200);
    assert_eq!(w.credit(), 20 - 1 - 2);
    // Another route under the same key: a new request (keys are scoped by
    // route). Another body on the same route: refused, as the IETF
    // Idempotency-Key draft says, and nothing charged or forwarded.
    let other = post("/other/echo", "a");
    assert_eq!(other.header("Idempotency-Replayed"), None);
    let changed = post("/k/echo", "b");
    assert_eq!(
        (changed.status, changed.error().as_str()),
        (422, "idempotency_key_reused")
    );
    assert_eq!(w.credit(), 20 - 1 - 2 - 5);
    // The same request is a replay; the bank route still replays its own.
    assert_eq!(
        post("/k/echo", "a").header("Idempotency-Replayed"),
        Some("true")
    );
    let again = w.call(
        "GET",
        "/api/v1.0/banks_data/BOFA/",
        &[("Idempotency-Key", "K1")],
        None,
    );
    assert_eq!(again.header("Idempotency-Replayed"), Some("true"));
    assert_eq!(w.credit(), 12);
    assert_eq!(w.upstream.seen().len(), 2);
    w.assert_ledger();
}

#[test]
fn a_route_with_the_longest_prefix_charges_and_refunds() {
    let w = world(10);
    let prefix = format!("/{}", "p".repeat(127));
    w.route(&prefix, json!({ "cost": 3, "strip_prefix": true }));
    assert_eq!(w.get(&format!("{prefix}/status/200")).status, 200);
    assert_eq!(w.get(&format!("{prefix}/status/500")).status, 500);
    assert_eq!(w.credit(), 7);
    assert_eq!(w.refunds(), 1);
    w.assert_ledger();
}
