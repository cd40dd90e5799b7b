//! The systemd notify protocol (`sd_notify(3)`): one datagram of
//! `KEY=value` lines sent to the Unix socket named by `$NOTIFY_SOCKET`, so
//! that a `Type=notify` unit knows when the service is ready, when it stops,
//! what it is waiting on, and (with `WatchdogSec=`) that it is still alive.
//!
//! A few lines of std rather than a crate: the protocol is one `sendto`,
//! and std already names abstract sockets (`@name`). Without
//! `$NOTIFY_SOCKET` (a terminal, the tests, another init) every call does
//! nothing. What counts as "alive" is decided elsewhere (`watchdog.rs`).

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

/// What systemd asked of this process: where to report, and how often to
/// ping the watchdog (None: no `WatchdogSec=`).
#[derive(Clone, Default)]
pub struct Systemd {
    pub notifier: Notifier,
    pub watchdog: Option<Duration>,
}

impl Systemd {
    pub fn from_env() -> Systemd {
        let notifier = Notifier::from_env();
        // Pings without a socket to send them to would be useless work.
        let watchdog = watchdog_interval().filter(|_| notifier.is_enabled());
        Systemd { notifier, watchdog }
    }
}

/// Where notifications go; cheap to clone. Disabled when the service was
/// not started by systemd with `Type=notify`.
#[derive(Clone, Default)]
pub struct Notifier {
    target: Option<Arc<Target>>,
}

struct Target {
    socket: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; a value that is not a usable socket name is
    /// logged and leaves the notifier disabled (systemd then times the
    /// start out, which says more than a refused start would).
    pub fn from_env() -> Notifier {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(path) => Notifier::to_socket(&path).unwrap_or_else(|e| {
                log::warn!("NOTIFY_SOCKET={path:?} is not usable: {e}");
                Notifier::disabled()
            }),
            None => Notifier::disabled(),
        }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier::default()
    }

    /// Sends to `path`: a file system path, or `@name` for an abstract
    /// socket (systemd uses one in some containers).
    pub fn to_socket(path: &OsStr) -> io::Result<Notifier> {
        let bytes = path.as_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None if bytes.starts_with(b"/") => SocketAddr::from_pathname(path)?,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "neither an absolute path nor an @abstract name",
                ))
            }
        };
        let socket = UnixDatagram::unbound()?;
        Ok(Notifier {
            target: Some(Arc::new(Target { socket, addr })),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` (newline-separated `KEY=value` assignments) as one
    /// datagram. A failure is logged, never fatal: systemd judges a service
    /// that stops talking by its timeouts.
    pub fn send(&self, state: &str) {
        let Some(t) = &self.target else { return };
        if let Err(e) = t.socket.send_to_addr(state.as_bytes(), &t.addr) {
            log::warn!("systemd notification not sent ({}): {e}", first_key(state));
        }
    }

    /// The service answers requests: `systemctl start` returns now.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// The service has begun to stop.
    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    /// What the service is doing or waiting on (`systemctl status` shows it).
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// "Still alive", for `WatchdogSec=`.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }
}

/// The watchdog interval systemd expects pings within, when it is meant for
/// this process: `$WATCHDOG_USEC`, unless `$WATCHDOG_PID` names another.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    parse_watchdog(usec.as_deref(), pid.as_deref(), std::process::id())
}

fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(me) {
            return None;
        }
    }
    match usec?.trim().parse::<u64>() {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(Duration::from_micros(n)),
    }
}

/// A `STATUS=` value ends at the first newline (the next line would be read
/// as another assignment).
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

fn first_key(state: &str) -> &str {
    state.split(['=', '\n']).next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A bound datagram socket in a fresh folder, as systemd would offer.
    fn listener(name: &str) -> (UnixDatagram, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "cg-notify-{}-{name}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        (sock, path)
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("a datagram");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn ready_stopping_status_and_watchdog_arrive_as_one_datagram_each() {
        let (sock, path) = listener("path");
        let n = Notifier::to_socket(path.as_os_str()).unwrap();
        assert!(n.is_enabled());
        n.ready("listening on http://127.0.0.1:5000");
        n.status("stopping: waiting for\nthe running job");
        n.stopping("signal SIGTERM");
        n.watchdog();
        assert_eq!(
            recv(&sock),
            "READY=1\nSTATUS=listening on http://127.0.0.1:5000"
        );
        assert_eq!(recv(&sock), "STATUS=stopping: waiting for the running job");
        assert_eq!(recv(&sock), "STOPPING=1\nSTATUS=signal SIGTERM");
        assert_eq!(recv(&sock), "WATCHDOG=1");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn an_abstract_socket_name_starting_with_at_is_reached() {
        let name = format!("cg-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let n = Notifier::to_socket(OsStr::new(&format!("@{name}"))).unwrap();
        n.ready("up");
        assert_eq!(recv(&sock), "READY=1\nSTATUS=up");
    }

    #[test]
    fn a_relative_path_is_refused_and_a_disabled_notifier_sends_nothing() {
        assert!(Notifier::to_socket(OsStr::new("run/notify")).is_err());
        let n = Notifier::disabled();
        assert!(!n.is_enabled());
        n.ready("nobody listens"); // must not panic or block
    }

    #[test]
    fn a_missing_socket_is_not_fatal() {
        let (sock, path) = listener("gone");
        let n = Notifier::to_socket(path.as_os_str()).unwrap();
        drop(sock);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
        n.ready("the socket is gone"); // logged, not a panic
    }

    #[test]
    fn the_watchdog_interval_is_read_for_this_process_only() {
        assert_eq!(
            parse_watchdog(Some("30000000"), None, 42),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_watchdog(Some("30000000"), Some("42"), 42),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_watchdog(Some("30000000"), Some("41"), 42), None);
        assert_eq!(parse_watchdog(Some("0"), None, 42), None);
        assert_eq!(parse_watchdog(Some("soon"), None, 42), None);
        assert_eq!(parse_watchdog(None, Some("42"), 42), None);
    }
}
