//! Test support: a TCP proxy between a server under test and MariaDB, so a
//! test can make the database vanish (`cut`: every live connection closed,
//! new ones refused) and come back (`restore`) while the real MariaDB and
//! other tests carry on. Connection-level only; it never looks at the bytes.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::support::helpers::server_url;

pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: SocketAddr,
    stop: AtomicBool,
    next_id: AtomicU64,
    /// The listener (None while cut) and both ends of every live connection,
    /// under one lock so that `cut` cannot miss a connection being accepted.
    state: Mutex<State>,
}

struct State {
    listener: Option<TcpListener>,
    live: HashMap<u64, (TcpStream, TcpStream)>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = listen(SocketAddr::from(([127, 0, 0, 1], 0)));
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            stop: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            state: Mutex::new(State {
                listener: Some(listener),
                live: HashMap::new(),
            }),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || accept_loop(&shared))
        };
        Proxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// A proxy in front of the test MariaDB server.
    pub fn to_test_server() -> Proxy {
        use std::net::ToSocketAddrs;
        let server = server_url();
        let rest = server.split_once("://").expect("a mysql:// URL").1;
        let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        let upstream = host
            .to_socket_addrs()
            .expect("the test database address")
            .next()
            .expect("an address for the test database");
        Proxy::start(upstream)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The URL of database `db_name` through this proxy.
    /// `prefer_socket=false`: by default the mysql crate switches a
    /// connection to 127.0.0.1 over to the server's Unix socket, which would
    /// bypass the proxy.
    pub fn url(&self, db_name: &str) -> String {
        let server = server_url();
        let rest = server.split_once("://").expect("a mysql:// URL").1;
        let user = rest.split_once('@').map(|(u, _)| format!("{u}@"));
        format!(
            "mysql://{}127.0.0.1:{}/{db_name}?prefer_socket=false",
            user.unwrap_or_default(),
            self.port()
        )
    }

    /// The database is gone: live connections are closed and the port
    /// refuses new ones (the listening socket is closed, not just ignored).
    pub fn cut(&self) {
        let mut state = self.shared.lock();
        state.listener = None;
        for (_, (client, server)) in state.live.drain() {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
    }

    /// The database is back, on the same port.
    pub fn restore(&self) {
        let mut state = self.shared.lock();
        if state.listener.is_none() {
            state.listener = Some(listen(self.addr));
        }
    }

    /// Connections currently forwarded.
    pub fn live(&self) -> usize {
        self.shared.lock().live.len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.cut();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn listen(addr: SocketAddr) -> TcpListener {
    // std sets SO_REUSEADDR, so the port can be taken again after a cut.
    let listener = TcpListener::bind(addr).expect("proxy listens");
    // Polled, so that the accept loop never sleeps inside accept() while
    // `cut` wants the lock.
    listener.set_nonblocking(true).unwrap();
    listener
}

fn accept_loop(shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let accepted = {
            let mut state = shared.lock();
            let accepted = match &state.listener {
                Some(l) => l.accept(),
                None => Err(ErrorKind::WouldBlock.into()),
            };
            match accepted {
                Ok((client, _)) => match TcpStream::connect(shared.upstream) {
                    Ok(server) => {
                        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
                        let _ = client.set_nonblocking(false);
                        let pair = (client.try_clone().unwrap(), server.try_clone().unwrap());
                        state.live.insert(id, pair);
                        Some((id, client, server))
                    }
                    Err(_) => None, // dropping `client` closes it
                },
                Err(_) => None,
            }
        };
        match accepted {
            Some((id, client, server)) => pump(shared, id, client, server),
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Copies both ways; when either way ends, the whole connection is closed,
/// as a database connection cannot live half-open.
fn pump(shared: &Arc<Shared>, id: u64, client: TcpStream, server: TcpStream) {
    let ways = [
        (client.try_clone().unwrap(), server.try_clone().unwrap()),
        (server, client),
    ];
    for (mut from, mut to) in ways {
        let shared = Arc::clone(shared);
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
            shared.lock().live.remove(&id);
        });
    }
}
