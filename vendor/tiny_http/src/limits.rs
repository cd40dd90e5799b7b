//! PATCHED: the limits one server holds its clients to, and the clocks that
//! enforce them on bodies and answers.
//!
//! rouille builds its tiny_http server with `Server::http(addr)`, which
//! takes no configuration; several servers with different limits live in
//! one process (creditgate's tests). So the limits travel by a scoped,
//! thread-local value: `Limits::scope(limits, || rouille::Server::new(…))`
//! hands them to the server created inside the closure on this thread, and
//! nothing else sees them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::io::{Error as IoError, ErrorKind, Read, Result as IoResult, Write};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Which client addresses the per-address connection cap leaves alone
/// (creditgate: its trusted proxies, whose connections carry many clients).
pub type Exempt = Arc<dyn Fn(&IpAddr) -> bool + Send + Sync>;

#[derive(Clone)]
pub struct Limits {
    /// A request head must be complete this long after its first byte; also
    /// the socket's timeout between two bytes (and for an idle keep-alive
    /// connection), and the grace a body or an answer gets before
    /// `min_rate` applies.
    pub head_timeout: Duration,
    /// After the grace, a request body must arrive and an answer be taken
    /// at this many bytes a second on average, or the connection is cut.
    pub min_rate: u64,
    /// Connections one client address may hold at once; more are closed at
    /// once. 0 = no cap.
    pub max_conns_per_ip: usize,
    pub exempt: Option<Exempt>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head_timeout: Duration::from_secs(10),
            min_rate: 1024,
            max_conns_per_ip: 64,
            exempt: None,
        }
    }
}

impl fmt::Debug for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limits")
            .field("head_timeout", &self.head_timeout)
            .field("min_rate", &self.min_rate)
            .field("max_conns_per_ip", &self.max_conns_per_ip)
            .field("exempt", &self.exempt.is_some())
            .finish()
    }
}

thread_local! {
    static SCOPED: RefCell<Option<Limits>> = const { RefCell::new(None) };
}

impl Limits {
    /// Runs `f` with `self` as the limits of any server it creates on this
    /// thread.
    pub fn scope<T>(self, f: impl FnOnce() -> T) -> T {
        let before = SCOPED.with(|s| s.replace(Some(self)));
        let out = f();
        SCOPED.with(|s| *s.borrow_mut() = before);
        out
    }

    /// The scoped limits, or the defaults.
    pub(crate) fn current() -> Limits {
        SCOPED.with(|s| s.borrow().clone()).unwrap_or_default()
    }
}

/// The clock of one body or one answer: `head_timeout` of grace, then
/// `min_rate` on average. Checked before and after each socket operation,
/// which the socket's own timeout bounds.
#[derive(Debug)]
pub(crate) struct RateClock {
    grace: Duration,
    min_rate: u64,
    started: Option<Instant>,
    bytes: u64,
    /// PATCHED (patch 16): an answer's clock counts only the time spent in
    /// socket operations (`Some`), not the time the handler's body took to
    /// yield its bytes: a slow upstream streaming through is not a slow
    /// reader.
    busy: Option<Duration>,
}

impl RateClock {
    pub(crate) fn new(limits: &Limits) -> RateClock {
        RateClock {
            grace: limits.head_timeout,
            min_rate: limits.min_rate,
            started: None,
            bytes: 0,
            busy: None,
        }
    }

    /// The clock of an answer: only the time spent writing counts.
    pub(crate) fn for_answer(limits: &Limits) -> RateClock {
        RateClock {
            busy: Some(Duration::ZERO),
            ..RateClock::new(limits)
        }
    }

    fn check(&mut self, what: &str) -> IoResult<()> {
        let started = *self.started.get_or_insert_with(Instant::now);
        let taken = self.busy.unwrap_or_else(|| started.elapsed());
        if taken > allowance(self.grace, self.min_rate, self.bytes) {
            return Err(IoError::new(
                ErrorKind::TimedOut,
                format!("{what} slower than the minimum rate"),
            ));
        }
        Ok(())
    }

    fn advance(&mut self, n: usize) {
        self.bytes = self.bytes.saturating_add(n as u64);
    }

    /// Runs one socket operation, counting its time for an answer's clock.
    fn timed<T>(&mut self, op: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = op();
        if let Some(busy) = self.busy.as_mut() {
            *busy += start.elapsed();
        }
        out
    }
}

/// How long `bytes` may take from the start of a body or an answer.
fn allowance(grace: Duration, min_rate: u64, bytes: u64) -> Duration {
    grace + Duration::from_millis(bytes.saturating_mul(1000) / min_rate.max(1))
}

/// A request body's reader held to its `RateClock`.
pub(crate) struct SlowBodyGuard<R> {
    pub(crate) inner: R,
    pub(crate) clock: RateClock,
}

impl<R: Read> Read for SlowBodyGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        self.clock.check("request body")?;
        let n = self.inner.read(buf)?;
        self.clock.advance(n);
        self.clock.check("request body")?;
        Ok(n)
    }
}

/// An answer's writer held to its `RateClock`: a client that does not take
/// its answer is cut off like one that does not send its body.
pub(crate) struct SlowReaderGuard<W> {
    pub(crate) inner: W,
    pub(crate) clock: RateClock,
}

impl<W: Write> Write for SlowReaderGuard<W> {
    fn write(&mut self, buf: &[u8]) -> IoResult<usize> {
        self.clock.check("answer")?;
        let inner = &mut self.inner;
        let n = self.clock.timed(|| inner.write(buf))?;
        self.clock.advance(n);
        self.clock.check("answer")?;
        Ok(n)
    }

    fn flush(&mut self) -> IoResult<()> {
        self.clock.check("answer")?;
        let inner = &mut self.inner;
        self.clock.timed(|| inner.flush())?;
        self.clock.check("answer")
    }
}

/// Open connections per client address, for `max_conns_per_ip`.
#[derive(Clone, Default)]
pub(crate) struct ConnCounter {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One admitted connection; gives its place back when dropped.
pub(crate) struct ConnSlot {
    counter: Option<(ConnCounter, IpAddr)>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Some((counter, ip)) = self.counter.take() {
            let mut open = counter.open.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = open.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&ip);
                }
            }
        }
    }
}

impl ConnCounter {
    /// A slot for a new connection from `ip`, or `None` when that address
    /// already holds its share.
    pub(crate) fn admit(&self, ip: Option<IpAddr>, limits: &Limits) -> Option<ConnSlot> {
        let ip = match ip {
            Some(ip) if limits.max_conns_per_ip > 0 => ip,
            _ => return Some(ConnSlot { counter: None }),
        };
        if limits.exempt.as_ref().is_some_and(|exempt| exempt(&ip)) {
            return Some(ConnSlot { counter: None });
        }
        let ip = client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= limits.max_conns_per_ip {
            return None;
        }
        *n += 1;
        Some(ConnSlot {
            counter: Some((self.clone(), ip)),
        })
    }
}

/// The address a connection is counted under: an IPv4 address (also when
/// a dual-stack socket reports it IPv4-mapped), or an IPv6 address's /64,
/// the block one IPv6 host is usually given whole (counting each of its
/// addresses gave one host as many connections as it liked).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn limits(grace_ms: u64, rate: u64, cap: usize) -> Limits {
        Limits {
            head_timeout: Duration::from_millis(grace_ms),
            min_rate: rate,
            max_conns_per_ip: cap,
            exempt: None,
        }
    }

    #[test]
    fn a_fast_body_passes_its_clock() {
        let mut r = SlowBodyGuard {
            inner: Cursor::new(vec![7u8; 10_000]),
            clock: RateClock::new(&limits(1000, 1024, 0)),
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 10_000);
    }

    #[test]
    fn a_body_slower_than_the_minimum_rate_is_cut_after_the_grace() {
        let mut r = SlowBodyGuard {
            inner: Cursor::new(vec![7u8; 100]),
            clock: RateClock::new(&limits(50, 1024, 0)),
        };
        let mut byte = [0u8; 1];
        r.read_exact(&mut byte).unwrap();
        std::thread::sleep(Duration::from_millis(80));
        let e = r.read_exact(&mut byte).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::TimedOut);
    }

    /// Writes that each take `ms`.
    struct SlowSocket(u64);

    impl Write for SlowSocket {
        fn write(&mut self, buf: &[u8]) -> IoResult<usize> {
            std::thread::sleep(Duration::from_millis(self.0));
            Ok(buf.len())
        }
        fn flush(&mut self) -> IoResult<()> {
            Ok(())
        }
    }

    #[test]
    fn an_answer_is_timed_by_its_writes_not_by_the_waits_between_them() {
        // A handler's body yielding a byte every 30 ms, taken at once.
        let mut w = SlowReaderGuard {
            inner: SlowSocket(0),
            clock: RateClock::for_answer(&limits(50, 1024, 0)),
        };
        for _ in 0..5 {
            w.write_all(b"x").unwrap();
            w.flush().unwrap();
            std::thread::sleep(Duration::from_millis(30));
        }
        // A client that takes a byte every 30 ms is still cut.
        let mut w = SlowReaderGuard {
            inner: SlowSocket(30),
            clock: RateClock::for_answer(&limits(50, 1024, 0)),
        };
        let cut = (0..5).find_map(|_| w.write_all(b"x").err()).unwrap();
        assert_eq!(cut.kind(), ErrorKind::TimedOut);
    }

    #[test]
    fn the_allowance_grows_with_the_bytes_moved() {
        let grace = Duration::from_secs(10);
        assert_eq!(allowance(grace, 1024, 0), grace);
        assert_eq!(allowance(grace, 1024, 10 * 1024), Duration::from_secs(20));
    }

    #[test]
    fn an_address_gets_its_share_of_connections_and_no_more() {
        let counter = ConnCounter::default();
        let l = limits(1, 1, 2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = counter.admit(Some(ip), &l).unwrap();
        let _b = counter.admit(Some(ip), &l).unwrap();
        assert!(counter.admit(Some(ip), &l).is_none());
        assert!(counter
            .admit(Some("10.0.0.2".parse().unwrap()), &l)
            .is_some());
        drop(a);
        assert!(counter.admit(Some(ip), &l).is_some());
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_64_block() {
        let counter = ConnCounter::default();
        let l = limits(1, 1, 2);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let _a = counter.admit(Some(a), &l).unwrap();
        let _b = counter.admit(Some(b), &l).unwrap();
        assert!(counter
            .admit(Some("2001:db8:1:2::3".parse().unwrap()), &l)
            .is_none());
        assert!(counter
            .admit(Some("2001:db8:1:3::1".parse().unwrap()), &l)
            .is_some());
        // An IPv4-mapped peer is its IPv4 address.
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let _c = counter.admit(Some(v4), &l).unwrap();
        let _d = counter.admit(Some(mapped), &l).unwrap();
        assert!(counter.admit(Some(v4), &l).is_none());
    }

    #[test]
    fn exempt_addresses_are_not_counted() {
        let counter = ConnCounter::default();
        let mut l = limits(1, 1, 1);
        l.exempt = Some(Arc::new(|ip: &IpAddr| ip.is_loopback()));
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let _a = counter.admit(Some(lo), &l).unwrap();
        assert!(counter.admit(Some(lo), &l).is_some());
    }

    #[test]
    fn scoped_limits_reach_only_the_scope() {
        let l = limits(1234, 5, 6);
        let inside = l.scope(Limits::current);
        assert_eq!(inside.head_timeout, Duration::from_millis(1234));
        assert_eq!(Limits::current().head_timeout, Duration::from_secs(10));
    }
}
