//! `GET /openapi.json` on the real server: served without credentials as
//! JSON, GET only, counted in metrics as route "openapi". Its agreement
//! with the router is `http::openapi_drift` (unit tests); its agreement
//! with the running server is `make test-schema` (schemathesis).

use serde_json::json;

use std::io::{Read, Write};
use std::net::TcpStream;

use crate::support::helpers::{parse_response, request, spawn_app};

/// `GET /openapi.json`: the status, the `Content-Type` and the body, read
/// as bytes and de-chunked when tiny_http sent it chunked (it does over
/// 32 KiB). Bytes, not `Resp`'s text: a chunk may end inside a UTF-8
/// character, which a lossy text would no longer count in bytes.
fn get_document(addr: std::net::SocketAddr) -> (u16, Option<String>, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "GET /openapi.json HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = parse_response(&raw[..split + 4]).expect("a response head");
    let mut body = raw[split + 4..].to_vec();
    if head.header("Transfer-Encoding") == Some("chunked") {
        let mut out = Vec::new();
        let mut rest = body.as_slice();
        loop {
            let eol = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("chunk size line");
            let size = std::str::from_utf8(&rest[..eol]).unwrap().trim();
            let n = usize::from_str_radix(size, 16).expect("chunk size");
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + n]);
            rest = &rest[eol + 2 + n + 2..];
        }
        body = out;
    }
    let content_type = head.header("Content-Type").map(str::to_string);
    (
        head.status,
        content_type,
        String::from_utf8(body).expect("UTF-8"),
    )
}

#[test]
fn the_document_is_served_without_credentials_as_json() {
    let app = spawn_app();

    let (status, content_type, body) = get_document(app.addr);

    assert_eq!(status, 200);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let doc: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/api/v1.0/banks_data/{bank}/"]["get"].is_object());
    assert!(doc["paths"]["/admin/v1/users"]["post"].is_object());
}

#[test]
fn only_get_is_allowed_and_requests_are_counted_as_openapi() {
    let app = spawn_app();

    let post = request(app.addr, "POST", "/openapi.json", &[], Some("{}"));
    app.get("/openapi.json", &[]);
    let metrics = app.get("/metrics", &[]).body;

    assert_eq!(
        (post.status, post.error().as_str()),
        (405, "method_not_allowed")
    );
    assert_eq!(post.header("Allow"), Some("GET"));
    assert!(
        metrics.contains("route=\"openapi\",status=\"200\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("route=\"openapi\",status=\"405\"} 1\n"),
        "{metrics}"
    );
}

// Found by `make test-schema` (schemathesis' unsupported_method check):
// every 405 lacked the `Allow` header RFC 9110 §15.5.6 requires.
#[test]
fn a_405_names_every_method_of_the_path_in_allow() {
    let app = spawn_app();

    let health = request(app.addr, "TRACE", "/health", &[], None);
    let stop = request(app.addr, "PUT", "/stopServer", &[], None);
    let users = app.admin("DELETE", "/admin/v1/users", None);
    let keys = app.admin("PUT", "/admin/v1/users/alice/keys", None);

    assert_eq!((health.status, health.header("Allow")), (405, Some("GET")));
    // The method is checked before the admin token.
    assert_eq!(
        (stop.status, stop.header("Allow")),
        (405, Some("GET, POST"))
    );
    assert_eq!(
        (users.status, users.header("Allow")),
        (405, Some("GET, POST"))
    );
    assert_eq!(
        (keys.status, keys.header("Allow")),
        (405, Some("GET, POST"))
    );
}

// See: #26. JSON Schema's `integer` is any number with a zero fraction, so
// the document lets a client send `123.0` (Python's json.dumps of a float
// does); every whole number field of the admin API takes it as 123.
#[test]
fn whole_numbers_written_with_a_zero_fraction_are_integers() {
    let app = spawn_app();

    let created = app.admin(
        "POST",
        "/admin/v1/users",
        Some(
            r#"{"username": "bob", "credit": 5.0, "monthly_credit": 10.0, "refill_day": 3.0,
                "low_credit": 2.0, "rate_limit": {"quota": 3.0, "window_secs": 60.0}}"#,
        ),
    );
    let added = app.admin(
        "POST",
        "/admin/v1/users/bob/credit",
        Some(r#"{"add": 5.0}"#),
    );
    let rotated = app.admin(
        "POST",
        "/admin/v1/users/bob/rotate",
        Some(r#"{"grace_secs": 123.0}"#),
    );
    let limited = app.admin(
        "POST",
        "/admin/v1/users/bob/limit",
        Some(r#"{"window_secs": 13120.0, "quota": 1}"#),
    );
    let notified = app.admin(
        "POST",
        "/admin/v1/users/bob/notify",
        Some(r#"{"low_credit": 9227.0}"#),
    );
    let set = app.admin(
        "POST",
        "/admin/v1/users/bob/credit",
        Some(r#"{"set": 1e3}"#),
    );
    let route = app.admin(
        "POST",
        "/admin/v1/routes",
        Some(r#"{"prefix": "/w", "upstream": "http://127.0.0.1:9", "cost": 2.0, "timeout_ms": 1000.0}"#),
    );

    assert_eq!(created.status, 201, "{}", created.body);
    let c = created.json();
    assert_eq!(
        (
            &c["credit"],
            &c["monthly_credit"],
            &c["refill_day"],
            &c["low_credit"]
        ),
        (&json!(5), &json!(10), &json!(3), &json!(2))
    );
    assert_eq!(c["rate_limit"], json!({"quota": 3, "window_secs": 60}));
    assert_eq!((added.status, &added.json()["credit"]), (200, &json!(10)));
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    assert_eq!(
        (limited.status, &limited.json()["rate_limit"]),
        (200, &json!({"quota": 1, "window_secs": 13120}))
    );
    assert_eq!(
        (notified.status, &notified.json()["low_credit"]),
        (200, &json!(9227))
    );
    assert_eq!((set.status, &set.json()["credit"]), (200, &json!(1000)));
    assert_eq!(route.status, 201, "{}", route.body);
    assert_eq!(
        (&route.json()["cost"], &route.json()["timeout_ms"]),
        (&json!(2), &json!(1000))
    );
}

// See: #26. A fraction is still refused, and so is a whole number written
// as a float beyond 2^49 (`model::whole_number`): it could be read as a
// neighbour of what the client wrote.
#[test]
fn fractions_and_inexact_floats_are_still_refused() {
    let app = spawn_app();
    app.admin(
        "POST",
        "/admin/v1/users",
        Some(r#"{"username": "bob", "credit": 5}"#),
    );
    let cases = [
        (
            "/admin/v1/users/bob/credit",
            r#"{"add": 0.5}"#,
            "invalid_credit",
        ),
        (
            "/admin/v1/users/bob/credit",
            r#"{"set": 9007199254740993.0}"#,
            "invalid_credit",
        ),
        (
            "/admin/v1/users/bob/credit",
            r#"{"set": 1e17}"#,
            "invalid_credit",
        ),
        (
            "/admin/v1/users/bob/rotate",
            r#"{"grace_secs": 0.5}"#,
            "invalid_body",
        ),
        (
            "/admin/v1/users/bob/limit",
            r#"{"quota": 1, "window_secs": 1.5}"#,
            "invalid_rate",
        ),
        (
            "/admin/v1/users/bob/notify",
            r#"{"low_credit": 2.5}"#,
            "invalid_credit",
        ),
        (
            "/admin/v1/routes",
            r#"{"prefix": "/w", "upstream": "http://h", "cost": 2.5}"#,
            "invalid_route",
        ),
    ];

    for (path, body, code) in cases {
        let r = app.admin("POST", path, Some(body));

        assert_eq!((r.status, r.error().as_str()), (400, code), "{path} {body}");
    }
    assert_eq!(app.db.credit("bob"), 5);
}

// See: #26. `format: date-time` is RFC 3339, which has a leap second
// (`23:59:60`); MariaDB's DATETIME has none, and the key's expiry answered
// 503. It is read as the start of the next second.
#[test]
fn a_key_may_expire_on_a_leap_second() {
    let app = spawn_app();
    app.db.add_user("alice", 0);

    let r = app.admin(
        "POST",
        "/admin/v1/users/alice/keys",
        Some(r#"{"expires_at": "2030-06-30T23:59:60Z"}"#),
    );

    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["expires_at"], "2030-07-01T00:00:00Z");
}
