//! A small real SMTP server on 127.0.0.1 for the mail tests: it speaks just
//! enough SMTP for lettre (greeting, EHLO/HELO, MAIL FROM, RCPT TO, DATA,
//! RSET, NOOP, QUIT) and records every message with its envelope. A `silent`
//! one accepts connections and never says a word, like a hung relay.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// One message as the server received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub rcpt: Vec<String>,
    /// The DATA section, dot-unstuffed, CRLF line ends.
    pub data: String,
}

impl Received {
    /// The `Subject:` header's value (unfolded).
    pub fn subject(&self) -> String {
        let head = self.data.split("\r\n\r\n").next().unwrap_or("");
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap_or_default()
            .to_string()
    }

    pub fn body(&self) -> String {
        self.data
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct State {
    messages: Vec<Received>,
    connections: usize,
    /// Open sockets of a silent server, kept so they stay open.
    held: Vec<TcpStream>,
}

pub struct SmtpServer {
    pub addr: SocketAddr,
    state: Arc<(Mutex<State>, Condvar)>,
}

impl SmtpServer {
    /// A server that answers and records.
    pub fn start() -> SmtpServer {
        SmtpServer::spawn(false)
    }

    /// A server that accepts and never answers.
    pub fn silent() -> SmtpServer {
        SmtpServer::spawn(true)
    }

    fn spawn(silent: bool) -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the SMTP port");
        let addr = listener.local_addr().unwrap();
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let shared = Arc::clone(&state);
        // The thread outlives the test; it only ever blocks on accept.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (lock, cvar) = &*shared;
                let mut s = lock.lock().unwrap();
                s.connections += 1;
                if silent {
                    s.held.push(stream);
                } else {
                    let shared = Arc::clone(&shared);
                    std::thread::spawn(move || {
                        let _ = session(stream, &shared);
                    });
                }
                cvar.notify_all();
            }
        });
        SmtpServer { addr, state }
    }

    /// What `CREDITGATE_SMTP_URL` should say: plain SMTP, no TLS.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    pub fn messages(&self) -> Vec<Received> {
        self.state.0.lock().unwrap().messages.clone()
    }

    pub fn connections(&self) -> usize {
        self.state.0.lock().unwrap().connections
    }

    /// Waits until at least `n` messages arrived, at most `limit`, and
    /// returns all of them.
    pub fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        self.wait_until(limit, |s| s.messages.len() >= n);
        self.messages()
    }

    /// Waits until at least `n` connections were made, at most `limit`.
    pub fn wait_for_connections(&self, n: usize, limit: Duration) -> usize {
        self.wait_until(limit, |s| s.connections >= n);
        self.connections()
    }

    fn wait_until(&self, limit: Duration, done: impl Fn(&State) -> bool) {
        let (lock, cvar) = &*self.state;
        let deadline = Instant::now() + limit;
        let mut s = lock.lock().unwrap();
        while !done(&s) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            s = cvar.wait_timeout(s, left).unwrap().0;
        }
    }
}

/// One SMTP conversation; records each message accepted with 250.
fn session(stream: TcpStream, shared: &(Mutex<State>, Condvar)) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    out.write_all(b"220 test-smtp ESMTP ready\r\n")?;
    let mut from = String::new();
    let mut rcpt = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            out.write_all(b"250 test-smtp\r\n")?;
        } else if let Some(arg) = upper.strip_prefix("MAIL FROM:") {
            from = address(&cmd[cmd.len() - arg.len()..]);
            rcpt.clear();
            out.write_all(b"250 OK\r\n")?;
        } else if let Some(arg) = upper.strip_prefix("RCPT TO:") {
            rcpt.push(address(&cmd[cmd.len() - arg.len()..]));
            out.write_all(b"250 OK\r\n")?;
        } else if upper == "DATA" {
            out.write_all(b"354 end with <CRLF>.<CRLF>\r\n")?;
            let mut data = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                let unstuffed = line.strip_prefix('.').unwrap_or(&line);
                data.push_str(unstuffed);
            }
            let (lock, cvar) = shared;
            lock.lock().unwrap().messages.push(Received {
                from: from.clone(),
                rcpt: std::mem::take(&mut rcpt),
                data,
            });
            cvar.notify_all();
            out.write_all(b"250 OK queued\r\n")?;
        } else if upper == "RSET" {
            rcpt.clear();
            out.write_all(b"250 OK\r\n")?;
        } else if upper == "NOOP" {
            out.write_all(b"250 OK\r\n")?;
        } else if upper == "QUIT" {
            out.write_all(b"221 bye\r\n")?;
            return Ok(());
        } else {
            out.write_all(b"502 not implemented\r\n")?;
        }
    }
}

/// `<a@b> SIZE=1` → `a@b`.
fn address(arg: &str) -> String {
    let arg = arg.trim();
    let inner = arg
        .strip_prefix('<')
        .and_then(|a| a.split_once('>'))
        .map(|(a, _)| a)
        .unwrap_or_else(|| arg.split_whitespace().next().unwrap_or(""));
    inner.to_string()
}
