//! The brute-force brake seen from outside: failures are counted per client
//! address, so one address being throttled leaves another alone, and wrong
//! admin tokens (admin API and /stopServer) count like wrong user tokens.
//! Distinct clients are real sockets bound to 127.0.0.x: the whole of
//! 127.0.0.0/8 is loopback on Linux.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use crate::support::helpers::{parse_response, spawn_app_with, Resp, TestApp};

/// One request, sent from `source` (port chosen by the kernel).
fn from(source: [u8; 4], app: &TestApp, method: &str, path: &str, auth: &str) -> Resp {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let local = SocketAddr::from((Ipv4Addr::from(source), 0));
    socket.bind(&local.into()).expect("bind a loopback address");
    socket.connect(&app.addr.into()).expect("connect");
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {auth}\r\nContent-Length: 0\r\n\r\n"
    );
    stream.write_all(raw.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    parse_response(&out).expect("an answer")
}

const PAID: &str = "/api/v1.0/banks_data/bofa/";
const A: [u8; 4] = [127, 0, 0, 2];
const B: [u8; 4] = [127, 0, 0, 3];
const C: [u8; 4] = [127, 0, 0, 4];

#[test]
fn a_throttled_address_leaves_other_addresses_alone() {
    // Arrange
    let app = spawn_app_with(&[("CREDITGATE_AUTH_FAILS_PER_MIN", "3")]);
    let token = app.db.add_user("alice", 10);
    let right = format!("Bearer alice:{token}");
    let wrong = "Bearer alice:cg_wrong";
    // Act: A fails three times.
    for _ in 0..3 {
        assert_eq!(from(A, &app, "GET", PAID, wrong).status, 401);
    }
    let a = from(A, &app, "GET", PAID, &right);
    let b = from(B, &app, "GET", PAID, &right);
    // Assert: A is refused even with the right token, B is served.
    assert_eq!((a.status, a.error().as_str()), (429, "too_many_failures"));
    assert!(a.header("Retry-After").is_some());
    assert_eq!(b.status, 200, "{}", b.body);
    // And B's own failures throttle B, not C.
    for _ in 0..3 {
        assert_eq!(from(B, &app, "GET", PAID, wrong).status, 401);
    }
    assert_eq!(from(B, &app, "GET", PAID, &right).status, 429);
    assert_eq!(from(C, &app, "GET", PAID, &right).status, 200);
    assert_eq!(app.db.credit("alice"), 8);
}

#[test]
fn wrong_admin_tokens_count_towards_the_limit() {
    let app = spawn_app_with(&[("CREDITGATE_AUTH_FAILS_PER_MIN", "3")]);
    let token = app.db.add_user("alice", 10);
    let user = format!("Bearer alice:{token}");
    let admin = format!("Bearer {}", app.admin_token);
    let wrong_admin = "Bearer cg_not_the_admin_token";
    // Three wrong admin tokens from A, on the admin API and on /stopServer.
    assert_eq!(
        from(A, &app, "GET", "/admin/v1/users", wrong_admin).status,
        401
    );
    assert_eq!(
        from(A, &app, "POST", "/stopServer", wrong_admin).status,
        401
    );
    assert_eq!(from(A, &app, "GET", "/stopServer", wrong_admin).status, 401);
    // A is now refused everywhere, even with the right tokens, and the stop
    // it asks for does not happen.
    for (method, path, auth) in [
        ("GET", "/admin/v1/users", admin.as_str()),
        ("POST", "/stopServer", admin.as_str()),
        ("GET", PAID, user.as_str()),
    ] {
        let r = from(A, &app, method, path, auth);
        assert_eq!(
            (r.status, r.error().as_str()),
            (429, "too_many_failures"),
            "{path}"
        );
    }
    assert!(!app.shutdown.is_triggered());
    // Mixed failures add up: two user tokens and one admin token from B.
    assert_eq!(
        from(B, &app, "GET", PAID, "Bearer alice:cg_wrong").status,
        401
    );
    assert_eq!(
        from(B, &app, "GET", "/api/v1.0/credit", "Bearer alice:cg_wrong").status,
        401
    );
    assert_eq!(
        from(B, &app, "GET", "/admin/v1/users", wrong_admin).status,
        401
    );
    assert_eq!(from(B, &app, "GET", "/admin/v1/users", &admin).status, 429);
    // C is untouched.
    assert_eq!(from(C, &app, "GET", "/admin/v1/users", &admin).status, 200);
    assert_eq!(app.db.credit("alice"), 10);
}
