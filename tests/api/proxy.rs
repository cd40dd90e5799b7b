//! A TCP proxy in front of the test MariaDB that a test can take down and
//! bring back, so that "the database goes away" is real for the code under
//! test (its pooled connections break, new ones are refused) without
//! touching the server other tests share.

#![allow(dead_code)]

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};

use crate::helpers::server_url;

#[derive(Default)]
struct State {
    up: bool,
    /// Both ends of every proxied connection, to cut them on `down`.
    open: Vec<TcpStream>,
}

pub struct DbProxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl DbProxy {
    /// A proxy to the test database server, up.
    pub fn start() -> DbProxy {
        let upstream = upstream_addr();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy port");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            up: true,
            open: Vec::new(),
        }));
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                // While down, a connection is accepted and closed at once:
                // the client sees the database hang up, as after a crash.
                if !shared.lock().unwrap().up {
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let mut s = shared.lock().unwrap();
                for end in [&client, &server] {
                    if let Ok(c) = end.try_clone() {
                        s.open.push(c);
                    }
                }
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        DbProxy { addr, state }
    }

    /// A database URL that goes through the proxy. `prefer_socket=false`:
    /// otherwise the driver, seeing 127.0.0.1, switches to the server's Unix
    /// socket and walks around the proxy.
    pub fn url(&self, db_name: &str) -> String {
        let server = server_url();
        let (scheme, rest) = server.split_once("://").unwrap();
        let user = rest.rsplit_once('@').map(|(u, _)| format!("{u}@"));
        format!(
            "{scheme}://{}{}/{db_name}?prefer_socket=false",
            user.unwrap_or_default(),
            self.addr
        )
    }

    /// Cuts every open connection and refuses new ones.
    pub fn down(&self) {
        let mut s = self.state.lock().unwrap();
        s.up = false;
        for c in s.open.drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    pub fn up(&self) {
        self.state.lock().unwrap().up = true;
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        self.down();
    }
}

/// Copies one direction until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

fn upstream_addr() -> SocketAddr {
    let server = server_url();
    let rest = server.split_once("://").unwrap().1;
    let host = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:3306")
    };
    host.to_socket_addrs()
        .expect("resolve the test database host")
        .next()
        .expect("an address for the test database host")
}
