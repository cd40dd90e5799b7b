//! Streamed answers through a gateway route (SPEC, third stage):
//! `text/event-stream` and other streamed answers pass through unbuffered,
//! each chunk reaching the client as the upstream sends it. The upstream
//! (`upstream.rs`, `/events/<n>`) sends ten events 200 ms apart, each
//! written and flushed on its own, the way LLM APIs answer; the client
//! records when each event arrives.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::helpers::{spawn_app, spawn_app_with};
use crate::support::upstream::Upstream;

/// What the client saw: the head, the de-chunked body and, for each event
/// (`…\n\n`), how long after sending the request it was complete.
struct Arrivals {
    head: String,
    body: String,
    at: Vec<Duration>,
}

/// Sends `GET path` and reads the answer as it comes, de-chunking it when
/// it is chunked, stamping each event when its last byte is in.
fn arrivals(addr: SocketAddr, path: &str, auth: &str) -> Arrivals {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let sent = Instant::now();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {auth}\r\n\r\n"
    )
    .unwrap();
    let mut raw: Vec<u8> = Vec::new();
    let mut head: Option<String> = None;
    let mut chunked = false;
    let mut pos = 0; // where the undecoded part of `raw` starts
    let mut body: Vec<u8> = Vec::new();
    let mut at = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let now = sent.elapsed();
        raw.extend_from_slice(&buf[..n]);
        if head.is_none() {
            let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let h = String::from_utf8_lossy(&raw[..end + 4]).into_owned();
            chunked = h
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked");
            head = Some(h);
            pos = end + 4;
        }
        let before = body.len();
        if chunked {
            // Every complete chunk that is in.
            while let Some(line) = raw[pos..].windows(2).position(|w| w == b"\r\n") {
                let size = std::str::from_utf8(&raw[pos..pos + line]).unwrap();
                let size = usize::from_str_radix(size.split(';').next().unwrap(), 16).unwrap();
                let start = pos + line + 2;
                if raw.len() < start + size + 2 {
                    break;
                }
                body.extend_from_slice(&raw[start..start + size]);
                pos = start + size + 2;
                if size == 0 {
                    break;
                }
            }
        } else {
            body.extend_from_slice(&raw[pos..]);
            pos = raw.len();
        }
        let events = |b: &[u8]| b.windows(2).filter(|w| w == b"\n\n").count();
        let new = events(&body) - events(&body[..before]);
        at.extend(std::iter::repeat_n(now, new));
    }
    Arrivals {
        head: head.unwrap_or_default(),
        body: String::from_utf8_lossy(&body).into_owned(),
        at,
    }
}

/// Ten events sent 200 ms apart must arrive about 200 ms apart: the first
/// well before the last is sent, the last at least 1.2 s after the first,
/// and never more than 3 within 50 ms of each other.
fn assert_streamed(a: &Arrivals) {
    let ms: Vec<u128> = a.at.iter().map(Duration::as_millis).collect();
    eprintln!("arrivals (ms after the request): {ms:?}");
    assert!(a.head.starts_with("HTTP/1.1 200"), "{}", a.head);
    let expected: String = (0..10).map(|i| format!("data: {i}\n\n")).collect();
    assert_eq!(a.body, expected, "every event, whole and in order");
    assert_eq!(a.at.len(), 10, "{ms:?}");
    assert!(
        a.at[0] < Duration::from_millis(600),
        "the first event came after {ms:?}"
    );
    assert!(
        a.at[9] - a.at[0] >= Duration::from_millis(1200),
        "the events came together: {ms:?}"
    );
    for (i, t) in a.at.iter().enumerate() {
        let close = a.at[i..]
            .iter()
            .take_while(|u| **u - *t <= Duration::from_millis(50))
            .count();
        assert!(close <= 3, "{close} events within 50 ms: {ms:?}");
    }
}

fn world() -> (crate::support::helpers::TestApp, Upstream, String) {
    let app = spawn_app();
    let token = app.db.add_user("alice", 10);
    let upstream = Upstream::start();
    let r = app.add_route(
        "/llm",
        &upstream.url(),
        json!({ "cost": 1, "strip_prefix": true }),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    (app, upstream, format!("Bearer alice:{token}"))
}

#[test]
fn an_event_stream_reaches_the_client_event_by_event() {
    let (app, upstream, auth) = world();
    // The control: straight from the upstream, the events come spread out.
    assert_streamed(&arrivals(upstream.addr, "/events/10?every=200", "-"));
    let a = arrivals(app.addr, "/llm/events/10?every=200", &auth);
    assert!(
        a.head
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{}",
        a.head
    );
    assert_streamed(&a);
    // Charged once, on the status line, as for any answer.
    assert_eq!(app.db.credit("alice"), 9);
    assert_eq!(app.db.ledger_mismatches(), vec![]);
}

#[test]
fn a_known_length_answer_written_slowly_passes_through_as_it_arrives() {
    let (app, _upstream, auth) = world();
    let a = arrivals(app.addr, "/llm/events/10?every=200&length", &auth);
    assert!(
        a.head.to_ascii_lowercase().contains("content-length: 90"),
        "{}",
        a.head
    );
    assert_streamed(&a);
    assert_eq!(app.db.credit("alice"), 9);
    assert_eq!(app.db.ledger_mismatches(), vec![]);
}

/// The minimum rate is the client's to keep, not the upstream's: a stream
/// that trickles for longer than the grace (here 1 s, at 45 B/s against
/// 1 KiB/s) is not cut while its client takes every byte at once.
#[test]
fn a_stream_slower_than_the_minimum_rate_is_not_cut_for_it() {
    let app = spawn_app_with(&[("CREDITGATE_HEAD_TIMEOUT_MS", "1000")]);
    let token = app.db.add_user("alice", 10);
    let upstream = Upstream::start();
    let r = app.add_route(
        "/llm",
        &upstream.url(),
        json!({ "cost": 1, "strip_prefix": true }),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let auth = format!("Bearer alice:{token}");
    for path in [
        "/llm/events/15?every=200",
        "/llm/events/15?every=200&length",
    ] {
        let a = arrivals(app.addr, path, &auth);
        let ms: Vec<u128> = a.at.iter().map(Duration::as_millis).collect();
        eprintln!("{path}: {ms:?}");
        let expected: String = (0..15).map(|i| format!("data: {i}\n\n")).collect();
        assert_eq!(a.body, expected, "{path}: cut at {ms:?}");
    }
    assert_eq!(app.db.credit("alice"), 8);
}
