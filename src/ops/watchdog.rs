//! The systemd watchdog's beat: on each scheduler tick of the `heartbeat`
//! job, ask our own HTTP server for `/health` and tell systemd
//! `WATCHDOG=1` only when it answers 200 in time. The tick proves the
//! scheduler thread runs; the answer proves the accept loop, the connection
//! thread and a worker run. A hung process then stops pinging and systemd
//! restarts it after `WatchdogSec=`.
//!
//! The database is left out on purpose: it being down is not this process
//! hanging, and a restart would not bring it back (the heartbeat job mails
//! about that instead). Sending is `notify.rs`'s job.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::ops::notify::Notifier;

pub struct Watchdog {
    notifier: Notifier,
    addr: SocketAddr,
    /// The server speaks TLS (CREDITGATE_TLS_CERT): so does the probe.
    tls: bool,
    timeout: Duration,
}

impl Watchdog {
    /// Probes the server listening on `listen` and gives each probe a third
    /// of the watchdog `interval`: a server saturated with slow requests
    /// still gets two or three ticks to answer before systemd gives up.
    pub fn new(notifier: Notifier, listen: SocketAddr, tls: bool, interval: Duration) -> Watchdog {
        Watchdog {
            notifier,
            addr: probe_addr(listen),
            tls,
            timeout: (interval / 3).max(Duration::from_millis(100)),
        }
    }

    /// One beat: `WATCHDOG=1` if `/health` answers, a log line if not.
    pub fn beat(&self) {
        let probed = if self.tls {
            probe_tls(self.addr, self.timeout)
        } else {
            probe(self.addr, self.timeout)
        };
        match probed {
            Ok(()) => self.notifier.watchdog(),
            Err(why) => log::error!(
                "watchdog: http://{}/health did not answer 200 within {:?} ({why}); \
                 not telling systemd this process is alive",
                self.addr,
                self.timeout
            ),
        }
    }
}

/// A wildcard listen address is reached through loopback.
fn probe_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// `GET /health` over a fresh connection; Ok on a 200 status line.
pub fn probe(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    ask_health(connect(addr, timeout)?)
}

/// `probe` over TLS. The certificate is not checked: this is the process
/// asking itself over loopback whether it still answers, and nothing
/// secret is sent; the operator's certificate may name a host that does
/// not resolve here.
pub fn probe_tls(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyCertificate))
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    ask_health(rustls::StreamOwned::new(tls, connect(addr, timeout)?))
}

fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    let conn = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(timeout))
        .and_then(|()| conn.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// The probe's own server, whatever certificate it shows.
#[derive(Debug)]
struct AnyCertificate;

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn ask_health(mut conn: impl Read + Write) -> Result<(), String> {
    conn.write_all(
        b"GET /health HTTP/1.1\r\nHost: localhost\r\nUser-Agent: creditgate-watchdog\r\n\
          Connection: close\r\n\r\n",
    )
    .map_err(|e| e.to_string())?;
    // The status line is all we need; it fits in the first read or two.
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = conn.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or("").trim();
    match line.split(' ').nth(1) {
        Some("200") => Ok(()),
        _ if line.is_empty() => Err("connection closed without an answer".into()),
        _ => Err(format!("answered {line:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::unix::net::UnixDatagram;

    /// A one-shot server on a free loopback port that reads the request and
    /// answers `reply` (or nothing, holding the connection open).
    fn server(reply: Option<&'static str>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            match reply {
                Some(r) => conn.write_all(r.as_bytes()).unwrap(),
                None => std::thread::sleep(Duration::from_secs(3)),
            }
        });
        addr
    }

    const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}";

    #[test]
    fn a_200_passes_and_a_503_or_silence_fails() {
        let t = Duration::from_millis(500);
        assert_eq!(probe(server(Some(OK)), t), Ok(()));
        let busy = probe(server(Some("HTTP/1.1 503 Service Unavailable\r\n\r\n")), t);
        assert!(busy.unwrap_err().contains("503"));
        let started = std::time::Instant::now();
        assert!(probe(server(None), t).is_err());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "waited past the timeout"
        );
    }

    #[test]
    fn nothing_listening_fails() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap(); // dropped: the port is closed again
        assert!(probe(addr, Duration::from_millis(500)).is_err());
    }

    #[test]
    fn a_wildcard_listen_address_is_probed_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:5000".parse().unwrap();
        let v6: SocketAddr = "[::]:5000".parse().unwrap();
        let own: SocketAddr = "10.1.2.3:5000".parse().unwrap();
        assert_eq!(probe_addr(v4), "127.0.0.1:5000".parse().unwrap());
        assert_eq!(probe_addr(v6), "[::1]:5000".parse().unwrap());
        assert_eq!(probe_addr(own), own);
    }

    #[test]
    fn a_beat_pings_systemd_only_when_health_answers() {
        let dir = std::env::temp_dir().join(format!("cg-watchdog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let systemd = UnixDatagram::bind(&path).unwrap();
        systemd.set_nonblocking(true).unwrap();
        let notifier = Notifier::to_socket(path.as_os_str()).unwrap();
        let interval = Duration::from_millis(1500);

        Watchdog::new(notifier.clone(), server(None), false, interval).beat();
        let mut buf = [0u8; 64];
        assert!(
            systemd.recv(&mut buf).is_err(),
            "pinged for a silent server"
        );

        Watchdog::new(notifier, server(Some(OK)), false, interval).beat();
        let n = systemd.recv(&mut buf).expect("a ping");
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
