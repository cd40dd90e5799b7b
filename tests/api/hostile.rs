//! Hostile input against the real server: malformed and malicious
//! credentials, paths, headers, bodies and methods, and clients that misbehave
//! at the socket level. Every case must be refused without a 5xx, leave every
//! row as it was, and leave a worker that serves the next paid request.
//!
//! The socket-level cases prove the tiny_http patch in
//! `vendor/tiny_http/PATCHES.md`; without it the `Content-Length:
//! 200000000000` case aborts this whole test binary.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine;
use mysql::prelude::Queryable;

use crate::support::helpers::{
    parse_response, request, send_raw, spawn_app, spawn_app_with, Resp, TestApp, TestDb,
};

/// What a hostile request may get.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// This status and this JSON `error` code.
    Error(u16, &'static str),
    /// This status (tiny_http's own answers have no JSON body).
    Status(u16),
    /// Any 4xx, or the connection closed without an answer.
    Refused,
}

struct Case {
    name: String,
    raw: Vec<u8>,
    expect: Expect,
}

/// The server plus three users: `alice` and `bob` are attacked, `probe`
/// checks after each case that a worker still serves a paid request.
struct World {
    app: TestApp,
    alice: String,
    bob: String,
    probe: String,
}

fn world() -> World {
    let app = spawn_app();
    let alice = app.db.add_user("alice", 10);
    let bob = app.db.add_user("bob", 10);
    let probe = app.db.add_user("probe", 1_000_000);
    World {
        app,
        alice,
        bob,
        probe,
    }
}

const PAID: &str = "/api/v1.0/banks_data/bofa/";

/// A request as bytes, on a connection the client closes after it.
fn http(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Vec<u8> {
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: creditgate.test\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body.unwrap_or_default());
    raw
}

fn get(path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    http("GET", path, headers, None)
}

/// A paid request with this `Authorization` value.
fn paid_with(auth: &str) -> Vec<u8> {
    get(PAID, &[("Authorization", auth)])
}

/// A head spliced from raw bytes (request line and headers), for what
/// `format!` cannot carry: bytes that are not UTF-8.
fn raw_head(parts: &[&[u8]]) -> Vec<u8> {
    let mut raw = parts.concat();
    raw.extend_from_slice(b"Host: creditgate.test\r\nConnection: close\r\n\r\n");
    raw
}

fn basic(pair: &[u8]) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// Percent-encodes all but unreserved characters and `:`, for a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn cases(w: &World) -> Vec<Case> {
    let t = w.alice.as_str();
    let admin = format!("Bearer {}", w.app.admin_token);
    let alice = format!("Bearer alice:{t}");
    let mut c: Vec<Case> = Vec::new();
    let mut add = |name: &str, raw: Vec<u8>, expect: Expect| {
        c.push(Case {
            name: name.to_string(),
            raw,
            expect,
        })
    };
    let unauthorized = Expect::Error(401, "unauthorized");
    let ambiguous = Expect::Error(400, "ambiguous_credentials");
    let invalid_bank = Expect::Error(400, "invalid_bank");
    let invalid_credit = Expect::Error(400, "invalid_credit");
    let invalid_body = Expect::Error(400, "invalid_body");
    let bad_key = Expect::Error(400, "invalid_idempotency_key");
    let not_allowed = Expect::Error(405, "method_not_allowed");

    // Credentials that are missing, malformed or not quite right.
    add("no Authorization", get(PAID, &[]), unauthorized);
    add("empty Authorization", paid_with(""), unauthorized);
    add("garbage Authorization", paid_with("garbage"), unauthorized);
    add(
        "Bearer without a colon",
        paid_with("Bearer alice"),
        unauthorized,
    );
    add(
        "Bearer and a colon alone",
        paid_with("Bearer :"),
        unauthorized,
    );
    add("a colon alone", paid_with(":"), unauthorized);
    add(
        "empty username",
        paid_with(&format!("Bearer :{t}")),
        unauthorized,
    );
    add("empty token", paid_with("Bearer alice:"), unauthorized);
    add(
        "space before the token",
        paid_with(&format!("Bearer alice: {t}")),
        unauthorized,
    );
    add(
        "space after the username",
        paid_with(&format!("Bearer alice :{t}")),
        unauthorized,
    );
    add(
        "tab inside the credentials",
        paid_with(&format!("Bearer alice:\t{t}")),
        unauthorized,
    );
    add(
        "trailing newline in a query token",
        get(&format!("{PAID}?token=alice:{t}%0A"), &[]),
        unauthorized,
    );
    add(
        "trailing newline in Basic",
        paid_with(&basic(format!("alice:{t}\n").as_bytes())),
        unauthorized,
    );
    add(
        "trailing space in Basic",
        paid_with(&basic(format!("alice:{t} ").as_bytes())),
        unauthorized,
    );
    add(
        "upper-case username",
        paid_with(&format!("Bearer ALICE:{t}")),
        unauthorized,
    );
    add(
        "upper-case token",
        paid_with(&format!("Bearer alice:{}", t.to_uppercase())),
        unauthorized,
    );
    add(
        "truncated token",
        paid_with(&format!("Bearer alice:{}", &t[..t.len() - 1])),
        unauthorized,
    );
    add(
        "token with a character appended",
        paid_with(&format!("{alice}x")),
        unauthorized,
    );
    add(
        "token with a colon appended",
        paid_with(&format!("{alice}:")),
        unauthorized,
    );
    add(
        "bob's token under alice's name",
        paid_with(&format!("Bearer alice:{}", w.bob)),
        unauthorized,
    );
    add(
        "10 KB username",
        paid_with(&format!("Bearer {}:{t}", "a".repeat(10 * 1024))),
        unauthorized,
    );
    add(
        "10 KB username in the query",
        get(&format!("{PAID}?token={}:{t}", "a".repeat(10 * 1024)), &[]),
        unauthorized,
    );
    add(
        "NUL in the username",
        paid_with(&format!("Bearer ali\0ce:{t}")),
        // A control character in a header value: the head is malformed.
        Expect::Status(400),
    );
    add(
        "CR and LF in the username (query)",
        get(&format!("{PAID}?token=ali%0D%0Ace:{t}"), &[]),
        unauthorized,
    );
    add(
        "CR and LF in the username (Basic)",
        paid_with(&basic(format!("ali\r\nce:{t}").as_bytes())),
        unauthorized,
    );
    add(
        "bare CR in a header value",
        paid_with(&format!("Bearer ali\rce:{t}")),
        // RFC 9112 §2.2: a bare CR is refused, not taken as a line end.
        Expect::Status(400),
    );

    // SQL and LIKE metacharacters where a username, token or bank goes.
    for name in [
        "' OR '1'='1",
        "alice'--",
        "alice' -- ",
        "%",
        "_",
        "al_ce",
        "ali%",
        "\\",
        "alice\\",
    ] {
        add(
            &format!("SQL metacharacters in the username {name:?}"),
            get(&format!("{PAID}?token={}:{t}", enc(name)), &[]),
            unauthorized,
        );
    }
    for token in ["' OR '1'='1", "x' OR 'x'='x", "%", "_", "\\"] {
        add(
            &format!("SQL metacharacters in the token {token:?}"),
            paid_with(&format!("Bearer alice:{token}")),
            unauthorized,
        );
    }
    for bank in [
        "bofa'%20OR%20'1'='1",
        "bofa'--",
        "%25",
        "_",
        "%5C",
        "bofa%00",
        "BO%46A",
    ] {
        add(
            &format!("metacharacters in the bank {bank:?}"),
            get(
                &format!("/api/v1.0/banks_data/{bank}/"),
                &[("Authorization", &alice)],
            ),
            invalid_bank,
        );
    }
    for bank in [
        "..%2F..",
        "..%2F..%2Fadmin%2Fv1%2Fusers",
        "%2e%2e",
        "..%5C..",
        "bofa%2F",
    ] {
        add(
            &format!("percent-encoded traversal in the bank {bank:?}"),
            get(
                &format!("/api/v1.0/banks_data/{bank}/"),
                &[("Authorization", &alice)],
            ),
            invalid_bank,
        );
    }
    add(
        "a 17-character bank",
        get(
            &format!("/api/v1.0/banks_data/{}/", "B".repeat(17)),
            &[("Authorization", &alice)],
        ),
        invalid_bank,
    );
    add(
        "literal dot-dot segments",
        get(
            "/api/v1.0/banks_data/../../admin/v1/users",
            &[("Authorization", &alice)],
        ),
        Expect::Error(404, "not_found"),
    );
    add(
        "an unknown bank",
        get("/api/v1.0/banks_data/NOPE/", &[("Authorization", &alice)]),
        Expect::Error(404, "unknown_bank"),
    );

    // Look-alike usernames: Cyrillic a, full-width a, a zero-width space.
    for name in ["\u{430}lice", "\u{ff41}lice", "alice\u{200b}", "ALİCE"] {
        add(
            &format!("homoglyph username {name:?} (query)"),
            get(&format!("{PAID}?token={}:{t}", enc(name)), &[]),
            unauthorized,
        );
        add(
            &format!("homoglyph username {name:?} (Basic)"),
            paid_with(&basic(format!("{name}:{t}").as_bytes())),
            unauthorized,
        );
    }
    // The free balance route looks users up the same way.
    for name in ["alice ", "alice\t", "\u{430}lice", "%"] {
        add(
            &format!("balance for {name:?}"),
            get(&format!("/api/v1.0/credit?token={}:{t}", enc(name)), &[]),
            unauthorized,
        );
    }
    add(
        "invalid base64 in Basic",
        paid_with("Basic !!!notbase64"),
        unauthorized,
    );
    add(
        "Basic without a colon",
        paid_with(&basic(b"alice")),
        unauthorized,
    );
    add(
        "Basic that is not UTF-8",
        paid_with(&basic(&[b'a', b':', 0xff, 0xfe])),
        unauthorized,
    );
    add(
        "Basic with nothing after it",
        paid_with("Basic "),
        unauthorized,
    );

    // Credentials in more than one place.
    add(
        "two Authorization headers",
        get(
            PAID,
            &[("Authorization", &alice), ("Authorization", &alice)],
        ),
        ambiguous,
    );
    add(
        "Authorization and ?token=",
        get(
            &format!("{PAID}?token=alice:{t}"),
            &[("Authorization", &alice)],
        ),
        ambiguous,
    );
    add(
        "two ?token=",
        get(&format!("{PAID}?token=alice:{t}&token=alice:{t}"), &[]),
        ambiguous,
    );
    add(
        "an upper-case TOKEN parameter is not a credential",
        get(&format!("{PAID}?TOKEN=alice:{t}"), &[]),
        unauthorized,
    );

    // Idempotency keys.
    let long_key = "k".repeat(129);
    let huge_key = "k".repeat(10 * 1024);
    for (name, key) in [
        ("129-character Idempotency-Key", long_key.as_str()),
        ("10 KB Idempotency-Key", huge_key.as_str()),
        ("Idempotency-Key with a space", "a b"),
        ("empty Idempotency-Key", ""),
    ] {
        add(
            name,
            get(PAID, &[("Authorization", &alice), ("Idempotency-Key", key)]),
            bad_key,
        );
    }
    add(
        "two Idempotency-Key headers",
        get(
            PAID,
            &[
                ("Authorization", &alice),
                ("Idempotency-Key", "a"),
                ("Idempotency-Key", "b"),
            ],
        ),
        bad_key,
    );

    // Admin bodies.
    let credit = "/admin/v1/users/alice/credit";
    let json = |body: &str| {
        http(
            "POST",
            credit,
            &[
                ("Authorization", &admin),
                ("Content-Type", "application/json"),
            ],
            Some(body.as_bytes()),
        )
    };
    for body in [
        r#"{"add": -11}"#,
        r#"{"add": -9223372036854775808}"#,
        r#"{"set": -1}"#,
        r#"{"add": 1.5}"#,
        // See: #26. `100.0` is a whole number now; this one is not.
        r#"{"set": 100.5}"#,
        r#"{"add": 1e309}"#,
        r#"{"set": -1e309}"#,
        r#"{"add": "5"}"#,
        r#"{"add": null}"#,
        r#"{"add": true}"#,
        r#"{"add": [5]}"#,
        r#"{"add": 9223372036854775807}"#,
        r#"{"add": 9223372036854775808}"#,
        r#"{"set": 99999999999999999999999}"#,
    ] {
        add(
            &format!("admin credit body {body}"),
            json(body),
            invalid_credit,
        );
    }
    for body in [
        "{}",
        r#"{"add": 1, "set": 1}"#,
        r#"{"add": 1, "extra": 1}"#,
        r#"{"add": }"#,
        r#"{"add" 5}"#,
        "[5]",
        "5",
        "",
        "null",
    ] {
        add(
            &format!("admin credit body {body:?}"),
            json(body),
            invalid_body,
        );
    }
    add(
        "admin credit body that is not UTF-8",
        http(
            "POST",
            credit,
            &[
                ("Authorization", &admin),
                ("Content-Type", "application/json"),
            ],
            Some(&[b'{', 0xff, b'}']),
        ),
        invalid_body,
    );
    add(
        "admin credit body over 64 KiB",
        json(&format!(
            r#"{{"add": 1, "pad": "{}"}}"#,
            "x".repeat(70 * 1024)
        )),
        invalid_body,
    );
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        add(
            &format!("admin body as {ct}"),
            http(
                "POST",
                credit,
                &[("Authorization", &admin), ("Content-Type", ct)],
                Some(br#"{"add": 1}"#),
            ),
            invalid_body,
        );
    }
    let users = |body: &str| {
        http(
            "POST",
            "/admin/v1/users",
            &[
                ("Authorization", &admin),
                ("Content-Type", "application/json"),
            ],
            Some(body.as_bytes()),
        )
    };
    add(
        "new user with credit -5",
        users(r#"{"username": "eve", "credit": -5}"#),
        invalid_credit,
    );
    add(
        "new user with credit 1e309",
        users(r#"{"username": "eve", "credit": 1e309}"#),
        invalid_credit,
    );
    add(
        "new user with a string monthly_credit",
        users(r#"{"username": "eve", "monthly_credit": "x"}"#),
        invalid_credit,
    );
    add(
        "new user named with SQL",
        users(r#"{"username": "' OR '1'='1"}"#),
        Expect::Error(400, "invalid_username"),
    );
    add(
        "new user named with a homoglyph",
        users("{\"username\": \"\u{430}lice\"}"),
        Expect::Error(400, "invalid_username"),
    );
    add(
        "new user that already exists",
        users(r#"{"username": "alice"}"#),
        Expect::Error(409, "user_exists"),
    );
    add(
        "new user with an empty imported token",
        users(r#"{"username": "eve", "token": ""}"#),
        invalid_body,
    );
    add(
        "admin traversal in a username",
        http(
            "POST",
            "/admin/v1/users/..%2Falice/credit",
            &[
                ("Authorization", &admin),
                ("Content-Type", "application/json"),
            ],
            Some(br#"{"add": 1}"#),
        ),
        Expect::Error(400, "invalid_username"),
    );
    add(
        "admin credit for an unknown user",
        http(
            "POST",
            "/admin/v1/users/nobody/credit",
            &[
                ("Authorization", &admin),
                ("Content-Type", "application/json"),
            ],
            Some(br#"{"add": 1}"#),
        ),
        Expect::Error(404, "unknown_user"),
    );

    // The admin token, wrong or in the wrong place; nothing may stop the server.
    let top_up = br#"{"add": 1000}"#;
    let a = &w.app.admin_token;
    for (name, auth) in [
        ("admin route with a user's token", alice.clone()),
        (
            "admin route with a truncated admin token",
            format!("Bearer {}", &a[..a.len() - 1]),
        ),
        (
            "admin route with an upper-case admin token",
            format!("Bearer {}", a.to_uppercase()),
        ),
        (
            "admin route with the admin token in Basic",
            basic(a.as_bytes()),
        ),
        ("admin route with the bare admin token", a.to_string()),
    ] {
        add(
            name,
            http("POST", credit, &[("Authorization", &auth)], Some(top_up)),
            unauthorized,
        );
    }
    add(
        "admin route with the admin token in the query",
        http("POST", &format!("{credit}?token={a}"), &[], Some(top_up)),
        unauthorized,
    );
    add(
        "admin route with two Authorization headers",
        http(
            "POST",
            credit,
            &[("Authorization", &admin), ("Authorization", &admin)],
            Some(top_up),
        ),
        unauthorized,
    );
    add(
        "/stopServer without a token",
        get("/stopServer", &[]),
        unauthorized,
    );
    add(
        "/stopServer with a user's token",
        http("POST", "/stopServer", &[("Authorization", &alice)], None),
        unauthorized,
    );
    add(
        "/stopServer with the admin token in the query",
        get(&format!("/stopServer?token={a}"), &[]),
        unauthorized,
    );
    add(
        "DELETE on an admin user",
        http(
            "DELETE",
            "/admin/v1/users/alice",
            &[("Authorization", &admin)],
            None,
        ),
        not_allowed,
    );

    // Methods that must never charge.
    for method in [
        "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BREW", "get",
    ] {
        add(
            &format!("{method} on the paid route"),
            http(method, PAID, &[("Authorization", &alice)], Some(b"")),
            not_allowed,
        );
    }
    add(
        "HEAD on the paid route",
        http("HEAD", PAID, &[("Authorization", &alice)], None),
        Expect::Status(405),
    );

    // Bytes that are not UTF-8 (nor ASCII) in the head.
    add(
        "non-UTF-8 bytes in the path",
        raw_head(&[b"GET /api/v1.0/banks_data/\xff\xfe/ HTTP/1.1\r\n"]),
        Expect::Status(400),
    );
    add(
        "non-UTF-8 bytes in the Authorization header",
        raw_head(&[
            b"GET /api/v1.0/banks_data/bofa/ HTTP/1.1\r\nAuthorization: Bearer \xc0\xaflice:",
            t.as_bytes(),
            b"\r\n",
        ]),
        Expect::Status(400),
    );
    add(
        "a UTF-8 homoglyph in the Authorization header",
        raw_head(&[
            "GET /api/v1.0/banks_data/bofa/ HTTP/1.1\r\nAuthorization: Bearer \u{430}lice:"
                .as_bytes(),
            t.as_bytes(),
            b"\r\n",
        ]),
        Expect::Status(400),
    );

    // Broken HTTP.
    add(
        "a garbage request line",
        b"GARBAGE\r\n\r\n".to_vec(),
        Expect::Status(400),
    );
    add(
        "a request line without a path",
        b"GET HTTP/1.1\r\n\r\n".to_vec(),
        Expect::Status(400),
    );
    add(
        "a header name with a space",
        get(PAID, &[("Bad Header", "x"), ("Authorization", &alice)]),
        Expect::Status(400),
    );
    add(
        "an unknown Expect",
        get(PAID, &[("Expect", "teapot"), ("Authorization", &alice)]),
        Expect::Status(417),
    );
    add(
        "an absolute-form target",
        get(
            "http://creditgate.test/api/v1.0/banks_data/bofa/",
            &[("Authorization", &alice)],
        ),
        Expect::Error(404, "not_found"),
    );
    add(
        "Idempotency-Key with a NUL",
        get(
            PAID,
            &[("Authorization", &alice), ("Idempotency-Key", "a\0b")],
        ),
        Expect::Status(400),
    );
    // Framing (RFC 9112 §6): anything two parsers could read two ways is
    // refused at the edge, with the connection closed. See: #18
    for (name, headers) in [
        ("a negative Content-Length", vec![("Content-Length", "-1")]),
        ("Content-Length +5", vec![("Content-Length", "+5")]),
        ("Content-Length 5, 6", vec![("Content-Length", "5, 6")]),
        ("Content-Length 4 4", vec![("Content-Length", "4 4")]),
        (
            "an overflowing Content-Length",
            vec![("Content-Length", "99999999999999999999999")],
        ),
        (
            "two different Content-Length headers",
            vec![("Content-Length", "5"), ("Content-Length", "6")],
        ),
        (
            "Content-Length and Transfer-Encoding",
            vec![("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
        ),
        (
            "Transfer-Encoding xchunked",
            vec![("Transfer-Encoding", "xchunked")],
        ),
        (
            "Transfer-Encoding gzip, chunked",
            vec![("Transfer-Encoding", "gzip, chunked")],
        ),
    ] {
        let mut headers = headers;
        headers.push(("Authorization", &alice));
        add(
            name,
            [get(PAID, &headers), b"hello".to_vec()].concat(),
            Expect::Status(400),
        );
    }
    add(
        "an obs-folded header",
        raw_head(&[
            b"GET /api/v1.0/banks_data/bofa/ HTTP/1.1\r\nAuthorization: ",
            alice.as_bytes(),
            b"\r\nX-Folded: a\r\n b\r\n",
        ]),
        Expect::Status(400),
    );
    add(
        "a space in the path",
        b"GET /api/v1.0/banks_data/bo fa/ HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        Expect::Status(400),
    );
    add(
        "a lower-case version",
        b"GET /health http/1.1\r\nHost: x\r\n\r\n".to_vec(),
        Expect::Status(400),
    );
    add(
        "an HTTP/2.0 request line",
        b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n".to_vec(),
        Expect::Status(505),
    );
    add(
        "an HTTP/3.0 request line",
        b"GET /health HTTP/3.0\r\nHost: x\r\n\r\n".to_vec(),
        Expect::Status(505),
    );
    add(
        "a broken chunked body on a GET",
        [
            get(PAID, &[("Transfer-Encoding", "chunked")]),
            b"zz\r\nnot a chunk\r\n".to_vec(),
        ]
        .concat(),
        unauthorized,
    );
    add(
        "a 100 KB body on a GET",
        http("GET", PAID, &[], Some(&vec![b'x'; 100 * 1024])),
        Expect::Refused,
    );
    add(
        "Content-Length 200000000000 with ten bytes",
        [
            get(PAID, &[("Content-Length", "200000000000")]),
            b"0123456789".to_vec(),
        ]
        .concat(),
        Expect::Refused,
    );
    add(
        "a 1 MB header",
        get(PAID, &[("X-Filler", &"x".repeat(1024 * 1024))]),
        Expect::Refused,
    );
    add(
        "20,000 small headers",
        get(PAID, &vec![("X-A", "b"); 20_000]),
        Expect::Refused,
    );
    add(
        "a 100 KB URL",
        get(&format!("{PAID}?pad={}", "x".repeat(100 * 1024)), &[]),
        Expect::Refused,
    );
    c
}

/// Every row of `table`, every value in full (`Debug` of a mysql value cuts
/// it to 8 characters, which would hide a changed timestamp or hash).
pub fn table_text(conn: &mut impl Queryable, table: &str) -> String {
    let rows: Vec<mysql::Row> = conn
        .query(format!("SELECT * FROM `{table}` ORDER BY 1, 2"))
        .unwrap();
    let mut out = format!("{table}:\n");
    for row in rows {
        for v in row.unwrap() {
            match v {
                mysql::Value::Bytes(b) => out.push_str(&String::from_utf8_lossy(&b)),
                other => out.push_str(&format!("{other:?}")),
            }
            out.push('|');
        }
        out.push('\n');
    }
    out
}

/// Every row a request could touch, as text.
fn rows(db: &TestDb) -> String {
    let mut conn = db.conn();
    ["users", "usage_daily", "credit_events", "idempotency_keys"]
        .iter()
        .map(|table| table_text(&mut **conn, table))
        .collect()
}

/// Why `answer` does not meet `expect`, if it does not.
fn mismatch(expect: Expect, answer: Option<&Resp>) -> Option<String> {
    let Some(r) = answer else {
        return match expect {
            Expect::Refused => None,
            _ => Some(format!("no answer, expected {expect:?}")),
        };
    };
    // The one 5xx a hostile request may get: 505 for an HTTP version
    // creditgate does not speak, when the case says so.
    if r.status >= 500 && !matches!(expect, Expect::Status(s) if s == r.status) {
        return Some(format!("{} {}", r.status, r.body));
    }
    let error = || {
        serde_json::from_str::<serde_json::Value>(&r.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
    };
    let ok = match expect {
        Expect::Error(status, code) => r.status == status && error().as_deref() == Some(code),
        Expect::Status(status) => r.status == status,
        Expect::Refused => (400..500).contains(&r.status),
    };
    (!ok).then(|| format!("got {} {:?}, expected {expect:?}", r.status, r.body))
}

#[test]
fn hostile_requests_are_refused_without_a_5xx_a_charge_or_a_dead_worker() {
    // Arrange
    let w = world();
    let cases = cases(&w);
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        // Act
        let before = rows(&w.app.db);
        let started = Instant::now();
        let answer = send_raw(w.app.addr, &case.raw);
        let took = started.elapsed();
        let after = rows(&w.app.db);
        // Assert: refused as expected, quickly, with no row changed...
        if let Some(why) = mismatch(case.expect, answer.as_ref()) {
            failures.push(format!("{}: {why}", case.name));
        }
        if took > Duration::from_secs(5) {
            failures.push(format!("{}: took {took:?}", case.name));
        }
        if before != after {
            failures.push(format!("{}: rows changed\n{before}{after}", case.name));
        }
        // ...and a worker still serves a paid request.
        let probe = w.app.bank("probe", &w.probe, "bofa");
        if probe.status != 200 {
            failures.push(format!(
                "{}: the next paid request got {}",
                case.name, probe.status
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(w.app.db.credit("alice"), 10);
    assert_eq!(w.app.db.credit("probe"), 1_000_000 - cases.len() as i64);
}

#[test]
fn a_legitimate_variation_of_each_form_still_works() {
    // Guards the table above against passing because everything is refused.
    let w = world();
    let t = &w.alice;
    for raw in [
        paid_with(&format!("Bearer alice:{t}")),
        paid_with(&format!("bearer alice:{t}")),
        paid_with(&basic(format!("alice:{t}").as_bytes())),
        paid_with(&format!("alice:{t}")),
        get(&format!("{PAID}?token=alice%3A{t}"), &[]),
        get(
            "/api/v1.0/banks_data/BoFa",
            &[("Authorization", &format!("Bearer alice:{t}"))],
        ),
    ] {
        let r = send_raw(w.app.addr, &raw).expect("an answer");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&raw));
    }
    assert_eq!(w.app.db.credit("alice"), 4);
}

/// Reads whatever the server sends until it closes, or `limit` passes.
pub(crate) fn read_until_closed(
    stream: &mut TcpStream,
    limit: Duration,
) -> (Vec<u8>, bool, Duration) {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) => return (out, true, started.elapsed()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (out, true, started.elapsed()),
        }
    }
    (out, false, started.elapsed())
}

pub(crate) fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).expect("connect")
}

// See: tiny-http issue #252.
#[test]
fn a_declared_200_gb_body_is_answered_and_the_connection_closed_without_draining() {
    // Arrange: a paid request that keeps the connection open and declares a
    // body it will never send.
    let w = world();
    let mut s = connect(w.app.addr);
    let head = format!(
        "GET {PAID} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer alice:{}\r\nContent-Length: 200000000000\r\n\r\n0123456789",
        w.alice
    );
    // Act
    s.write_all(head.as_bytes()).unwrap();
    let (out, closed, took) = read_until_closed(&mut s, Duration::from_secs(8));
    // Assert: answered and charged once; closed at once, not after draining
    // or after the socket timeout; the process is alive.
    let r = parse_response(&out).expect("an answer");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(closed, "the connection is still open after {took:?}");
    assert!(took < Duration::from_secs(3), "closing took {took:?}");
    assert_eq!(w.app.db.credit("alice"), 9);
    assert_eq!(w.app.bank("probe", &w.probe, "bofa").status, 200);
}

#[test]
fn a_short_unread_body_is_drained_and_the_connection_reused() {
    // Two requests on one connection, the first with a 5,000-byte body that
    // no handler reads: the second must be parsed where the body ends.
    let w = world();
    let mut s = connect(w.app.addr);
    let mut raw = b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n".to_vec();
    raw.extend(std::iter::repeat_n(b'G', 5000));
    raw.extend_from_slice(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(&raw).unwrap();
    let (out, closed, _) = read_until_closed(&mut s, Duration::from_secs(5));
    let text = String::from_utf8_lossy(&out);
    assert!(closed);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
}

#[test]
fn a_one_megabyte_header_is_refused_before_it_is_read() {
    let w = world();
    let mut s = connect(w.app.addr);
    s.write_all(format!("GET {PAID} HTTP/1.1\r\nHost: x\r\nX-Filler: ").as_bytes())
        .unwrap();
    // Send 64 KiB of the header and stop: an answer now proves the server
    // did not wait for the rest of the megabyte (or for the line's end).
    s.write_all(&vec![b'x'; 64 * 1024]).unwrap();
    let (out, closed, took) = read_until_closed(&mut s, Duration::from_secs(5));
    let r = parse_response(&out).expect("an answer");
    assert_eq!(r.status, 431);
    assert!(closed && took < Duration::from_secs(2), "{closed} {took:?}");
    assert_eq!(w.app.bank("probe", &w.probe, "bofa").status, 200);
}

#[test]
fn slow_and_silent_clients_are_cut_off_and_do_not_starve_the_workers() {
    // Arrange: a 2 s head deadline (CREDITGATE_HEAD_TIMEOUT_MS; 10 s by
    // default) and more stalled connections than the server has workers
    // (16 in tests), of three kinds: one that never finishes its head, one
    // that trickles a byte a second, and idle keep-alive connections.
    let app = spawn_app_with(&[("CREDITGATE_HEAD_TIMEOUT_MS", "2000")]);
    let probe = app.db.add_user("probe", 1_000);
    let addr = app.addr;
    let half_sent: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut s = connect(addr);
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    let idle: Vec<TcpStream> = (0..10).map(|_| connect(addr)).collect();
    let trickler = std::thread::spawn(move || {
        let mut s = connect(addr);
        let started = Instant::now();
        let mut sent = 0;
        // A byte a second, well inside the socket timeout; the head never ends.
        while started.elapsed() < Duration::from_secs(20) {
            let byte: &[u8] = if sent == 0 {
                b"GET /health HTTP/1.1\r\n"
            } else {
                b"a"
            };
            if s.write_all(byte).is_err() {
                break;
            }
            sent += 1;
            let (out, closed, _) = read_until_closed(&mut s, Duration::from_secs(1));
            if closed {
                return (parse_response(&out).map(|r| r.status), started.elapsed());
            }
        }
        (None, started.elapsed())
    });
    // Act + Assert: meanwhile a paid request is served at once.
    let started = Instant::now();
    assert_eq!(app.bank("probe", &probe, "bofa").status, 200);
    assert!(started.elapsed() < Duration::from_secs(1));
    // The half-sent heads get 408 and are closed after the head deadline.
    for mut s in half_sent {
        let (out, closed, _) = read_until_closed(&mut s, Duration::from_secs(6));
        assert!(closed, "a half-sent request is still open");
        assert_eq!(parse_response(&out).map(|r| r.status), Some(408));
    }
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1800) && waited < Duration::from_secs(6),
        "{waited:?}"
    );
    // Idle connections are closed without an answer.
    for mut s in idle {
        let (out, closed, _) = read_until_closed(&mut s, Duration::from_secs(3));
        assert!(closed && out.is_empty(), "{closed} {out:?}");
    }
    // The trickler gets 408 once its head has taken 2 s.
    let (status, took) = trickler.join().unwrap();
    assert_eq!(status, Some(408));
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert_eq!(app.bank("probe", &probe, "bofa").status, 200);
}

#[test]
fn without_an_admin_token_the_admin_api_and_stop_are_403() {
    // An empty CREDITGATE_ADMIN_TOKEN counts as unset: admin is off, and no
    // token (not even an empty one) turns it on.
    let app = spawn_app_with(&[("CREDITGATE_ADMIN_TOKEN", "")]);
    for (method, path, auth) in [
        ("GET", "/admin/v1/users", "Bearer "),
        ("GET", "/admin/v1/users", "Bearer x"),
        ("POST", "/admin/v1/users/alice/credit", "Bearer "),
        ("POST", "/stopServer", "Bearer "),
        ("GET", "/stopServer", ""),
    ] {
        let r = request(
            app.addr,
            method,
            path,
            &[("Authorization", auth)],
            Some("{}"),
        );
        assert_eq!(
            (r.status, r.error().as_str()),
            (403, "admin_disabled"),
            "{path}"
        );
    }
    assert!(!app.shutdown.is_triggered());
    assert_eq!(app.get("/health", &[]).status, 200);
}
