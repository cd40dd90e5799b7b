//! Test support: a real upstream HTTP server for the gateway-route tests,
//! on tiny_http and a random loopback port. One server serves every
//! behaviour, chosen by the request path, and records each request it gets
//! so a test can check what creditgate forwarded:
//! - `/status/<code>`: that status, a small JSON body;
//! - `/sleep/<ms>`: waits, then 200;
//! - `/bytes/<n>`: n bytes generated while they are sent, never held whole,
//!   with a `Content-Length` (or chunked, with `?chunked`);
//! - `/set-cookie`: 200 setting the console's cookie and another one;
//! - `/cut/<n>`: declares n bytes (or chunked, with `?chunked`), sends
//!   4 KiB (enough to pass the server's write buffer) and closes the
//!   connection: an answer cut short;
//! - `/events/<n>?every=<ms>`: a `text/event-stream` of n events
//!   `data: <i>\n\n`, one every `ms`, each written and flushed on its own
//!   (chunked, one chunk per event; with `&length`, a known
//!   `Content-Length` instead), the way LLM APIs answer; with `&cost=<n>`
//!   (and `&header=<name>`) the last chunk carries the price in a trailer
//!   `X-Credit-Cost: <n>`, the way an LLM upstream states its tokens;
//! - anything else (`/echo…`): 200 with the request described as JSON, plus
//!   `X-Upstream: yes` and the hop-by-hop `Keep-Alive: timeout=5` creditgate
//!   must strip. tiny_http refuses to send a `Connection` header of a
//!   handler's (`Response::add_header`), so stripping that one and the
//!   headers it names is covered by `gateway::forward`'s unit tests.

#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tiny_http::{Header, Request, Response, Server, StatusCode};

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, as sent.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub peer: Option<SocketAddr>,
}

impl Seen {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct Upstream {
    pub addr: SocketAddr,
    server: Arc<Server>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    accept_loop: Option<JoinHandle<()>>,
}

impl Upstream {
    pub fn start() -> Upstream {
        // Every connection comes from creditgate on 127.0.0.1: no cap.
        let limits = tiny_http::Limits {
            max_conns_per_ip: 0,
            ..tiny_http::Limits::default()
        };
        let server = limits.scope(|| Server::http("127.0.0.1:0"));
        let server = Arc::new(server.expect("bind the test upstream"));
        let addr = server.server_addr().to_ip().expect("a TCP address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let accept_loop = {
            let (server, seen, stop) = (server.clone(), seen.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match server.recv_timeout(Duration::from_millis(100)) {
                        // A thread per request, so /sleep does not hold up
                        // the requests of other tests.
                        Ok(Some(request)) => {
                            let seen = seen.clone();
                            thread::spawn(move || handle(request, &seen));
                        }
                        Ok(None) => {}
                        Err(_) => return,
                    }
                }
            })
        };
        Upstream {
            addr,
            server,
            seen,
            stop,
            accept_loop: Some(accept_loop),
        }
    }

    /// `http://127.0.0.1:<port>`, for `--upstream`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far, in order of arrival.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many TCP connections the requests so far came over. tiny_http
    /// does not report accepts, so this counts distinct client addresses
    /// (each connection has its own source port): enough to show that
    /// keep-alive connections are reused.
    pub fn connections(&self) -> usize {
        let peers: HashSet<SocketAddr> = self.seen().iter().filter_map(|s| s.peer).collect();
        peers.len()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(t) = self.accept_loop.take() {
            let _ = t.join();
        }
    }
}

fn handle(mut request: Request, seen: &Mutex<Vec<Seen>>) {
    let mut body = Vec::new();
    let _ = request.as_reader().read_to_end(&mut body);
    let record = Seen {
        method: request.method().as_str().to_string(),
        url: request.url().to_string(),
        headers: request
            .headers()
            .iter()
            .map(|h| (h.field.as_str().to_string(), h.value.as_str().to_string()))
            .collect(),
        body,
        peer: request.remote_addr().copied(),
    };
    seen.lock().unwrap().push(record.clone());
    let path = record.url.split('?').next().unwrap_or("").to_string();
    let _ = if let Some(code) = path.strip_prefix("/priced/") {
        // `/priced/<status>?cost=<n>` (and `&header=<name>`, `&sleep=<ms>`):
        // an answer that states its price, as an LLM upstream states its
        // tokens.
        let code: u16 = code.parse().unwrap_or(200);
        if let Some(ms) = query_value(&record.url, "sleep") {
            thread::sleep(Duration::from_millis(ms));
        }
        let mut response = json_response(code, r#"{"priced":true}"#.to_string());
        if let Some(cost) = query_value(&record.url, "cost") {
            let name = query_text(&record.url, "header").unwrap_or("X-Credit-Cost");
            response = response.with_header(header(name, &cost.to_string()));
        }
        request.respond(response)
    } else if let Some(code) = path.strip_prefix("/status/") {
        let code: u16 = code.parse().unwrap_or(400);
        let json = serde_json::json!({ "status": code }).to_string();
        request.respond(json_response(code, json))
    } else if let Some(ms) = path.strip_prefix("/sleep/") {
        thread::sleep(Duration::from_millis(ms.parse().unwrap_or(0)));
        request.respond(json_response(200, r#"{"slept":true}"#.to_string()))
    } else if path == "/set-cookie" {
        let json = r#"{"cookies":true}"#.to_string();
        let response = json_response(200, json)
            .with_header(header("Set-Cookie", "cg_console=forged; Path=/console"))
            .with_header(header("Set-Cookie", "theme=dark"));
        request.respond(response)
    } else if let Some(n) = path.strip_prefix("/cut/") {
        let n: usize = n.parse().unwrap_or(100);
        let chunked = record.url.ends_with("?chunked");
        // 4 KiB, then the read fails: the server closes the connection.
        let cut = io::Read::chain(io::Cursor::new(vec![b'c'; 4096]), Failing);
        let response = Response::new(StatusCode(200), vec![], cut, (!chunked).then_some(n), None)
            .with_chunked_threshold(if chunked { 0 } else { usize::MAX });
        request.respond(response)
    } else if let Some(n) = path.strip_prefix("/events/") {
        let n: usize = n.parse().unwrap_or(10);
        let every = query_value(&record.url, "every").unwrap_or(200);
        let length = record.url.contains("&length");
        let trailer = query_value(&record.url, "cost").map(|cost| {
            let name = query_text(&record.url, "header").unwrap_or("X-Credit-Cost");
            format!("{name}: {cost}\r\n")
        });
        events(request, n, Duration::from_millis(every), length, trailer);
        Ok(())
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        let n: u64 = n.parse().unwrap_or(0);
        let chunked = record.url.ends_with("?chunked");
        let response = Response::new(
            StatusCode(200),
            vec![header("Content-Type", "application/octet-stream")],
            Generated { left: n },
            (!chunked).then_some(n as usize),
            None,
        )
        // tiny_http sends a body of 32 KiB or more chunked even when its
        // length is known; here a known length is sent as Content-Length.
        .with_chunked_threshold(usize::MAX);
        request.respond(response)
    } else {
        request.respond(echo(&record))
    };
}

/// A text in the query: `?header=X-Tokens` → `X-Tokens`.
fn query_text<'a>(url: &'a str, name: &str) -> Option<&'a str> {
    let query = url.split_once('?')?.1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

/// A number in the query: `?every=200` → 200.
fn query_value(url: &str, name: &str) -> Option<u64> {
    let query = url.split_once('?')?.1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// `/events/<n>`, written by hand on the raw connection: tiny_http's own
/// answer writer is the code under test, so it must not frame these.
/// Every event is one write and one flush (one chunk when chunked).
fn events(request: Request, n: usize, every: Duration, length: bool, trailer: Option<String>) {
    let all: Vec<String> = (0..n).map(|i| format!("data: {i}\n\n")).collect();
    let framing = if length {
        let total: usize = all.iter().map(String::len).sum();
        format!("Content-Length: {total}")
    } else {
        "Transfer-Encoding: chunked".to_string()
    };
    let announced = match &trailer {
        Some(t) => format!("Trailer: {}\r\n", t.split(':').next().unwrap_or("")),
        None => String::new(),
    };
    let mut w = request.into_writer();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
         {framing}\r\n{announced}Connection: close\r\n\r\n"
    );
    let mut sent = w.write_all(head.as_bytes()).and_then(|()| w.flush());
    for (i, event) in all.iter().enumerate() {
        if sent.is_err() {
            return;
        }
        if i > 0 {
            thread::sleep(every);
        }
        let bytes = if length {
            event.clone().into_bytes()
        } else {
            format!("{:x}\r\n{event}\r\n", event.len()).into_bytes()
        };
        sent = w.write_all(&bytes).and_then(|()| w.flush());
    }
    if !length && sent.is_ok() {
        let last = format!("0\r\n{}\r\n", trailer.unwrap_or_default());
        let _ = w.write_all(last.as_bytes()).and_then(|()| w.flush());
    }
}

/// The echo answer: the request as JSON, with the headers to strip.
fn echo(seen: &Seen) -> Response<io::Cursor<Vec<u8>>> {
    let json = serde_json::json!({
        "method": seen.method,
        "url": seen.url,
        "headers": seen.headers,
        "body": String::from_utf8_lossy(&seen.body),
    });
    json_response(200, json.to_string())
        .with_header(header("X-Upstream", "yes"))
        .with_header(header("Keep-Alive", "timeout=5"))
}

fn json_response(code: u16, body: String) -> Response<io::Cursor<Vec<u8>>> {
    Response::from_string(body)
        .with_status_code(code)
        .with_header(header("Content-Type", "application/json"))
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid header")
}

/// A body whose source fails (the upstream's own source went away).
struct Failing;

impl Read for Failing {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::other("the source went away"))
    }
}

/// `left` more bytes of a repeating pattern, made as they are read.
struct Generated {
    left: u64,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.left.min(64 * 1024) as usize);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = b'a' + (i % 26) as u8;
        }
        self.left -= n as u64;
        Ok(n)
    }
}
