//! `GET /openapi.json` on the real server: served without credentials as
//! JSON, GET only, counted in metrics as route "openapi". Its agreement
//! with the router is `http::openapi_drift` (unit tests); its agreement
//! with the running server is `make test-schema` (schemathesis).

use crate::helpers::{request, spawn_app, Resp};

/// The body, de-chunked when tiny_http sent it chunked (it does over 32 KiB).
fn body(r: &Resp) -> String {
    if r.header("Transfer-Encoding") != Some("chunked") {
        return r.body.clone();
    }
    let mut out = String::new();
    let mut rest = r.body.as_str();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

#[test]
fn the_document_is_served_without_credentials_as_json() {
    let app = spawn_app();

    let r = app.get("/openapi.json", &[]);

    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let doc: serde_json::Value = serde_json::from_str(&body(&r)).expect("JSON");
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
