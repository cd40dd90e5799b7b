//! creditgate serving HTTPS itself (CREDITGATE_TLS_CERT / CREDITGATE_TLS_KEY):
//! a real certificate made by `openssl` for the test (a CA and a leaf for
//! 127.0.0.1), a real rustls client that verifies it, and the edge's rules
//! on the TLS port.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::hostile::read_until_closed;
use crate::support::daemon::Daemon;
use crate::support::helpers::{parse_response, spawn_app_with, Resp, TestDb};
use crate::support::upstream::Upstream;

/// A CA and a leaf certificate for 127.0.0.1, in a fresh folder.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn new() -> Certs {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("cg-tls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ext = dir.join("leaf.ext");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &dir,
            &[
                &["req", "-x509"],
                &ec[..],
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=creditgate test CA",
                ],
            ]
            .concat(),
        );
        openssl(
            &dir,
            &[
                &["req"],
                &ec[..],
                &[
                    "-keyout",
                    "key.pem",
                    "-out",
                    "leaf.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
        );
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "cert.pem",
                "-days",
                "2",
                "-extfile",
                "leaf.ext",
            ],
        );
        Certs { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// A rustls client that trusts the test CA only.
    fn client(&self) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        let mut roots = rustls::RootCertStore::empty();
        let ca = CertificateDer::from_pem_file(self.dir.join("ca.pem")).unwrap();
        roots.add(ca).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian package openssl) makes the test certificates");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `raw` sent over TLS (the certificate verified); the answer, read until
/// the server closes.
fn https(certs: &Certs, addr: SocketAddr, raw: &str) -> Option<Resp> {
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = rustls::ClientConnection::new(certs.client(), name).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut stream = rustls::StreamOwned::new(tls, sock);
    stream.write_all(raw.as_bytes()).ok()?;
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    parse_response(&out)
}

fn get(path: &str, auth: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n")
}

#[test]
fn https_serves_paid_and_gateway_requests_and_tells_the_upstream() {
    let certs = Certs::new();
    let app = spawn_app_with(&[
        ("CREDITGATE_TLS_CERT", &certs.path("cert.pem")),
        ("CREDITGATE_TLS_KEY", &certs.path("key.pem")),
        ("CREDITGATE_HEAD_TIMEOUT_MS", "2000"),
    ]);
    let token = app.db.add_user("alice", 10);
    let auth = format!("Bearer alice:{token}");
    let upstream = Upstream::start();
    let route = json!({ "prefix": "/r", "upstream": upstream.url(), "strip_prefix": true });
    // The admin API is on the TLS port too.
    let admin = format!(
        "POST /admin/v1/routes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{route}",
        app.admin_token,
        route.to_string().len()
    );
    assert_eq!(https(&certs, app.addr, &admin).unwrap().status, 201);

    let paid = https(&certs, app.addr, &get("/api/v1.0/banks_data/bofa/", &auth)).unwrap();
    assert_eq!(paid.status, 200, "{}", paid.body);
    let routed = https(&certs, app.addr, &get("/r/echo", &auth)).unwrap();
    assert_eq!(routed.status, 200, "{}", routed.body);
    assert_eq!(
        upstream.seen()[0].header("X-Forwarded-Proto"),
        Some("https")
    );
    assert_eq!(app.db.credit("alice"), 8);

    // Plain HTTP on the TLS port gets no answer, and the port keeps serving.
    let mut plain = TcpStream::connect(app.addr).unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (out, closed, _) = read_until_closed(&mut plain, Duration::from_secs(5));
    assert!(closed && parse_response(&out).is_none());
    // The edge's rules hold on it: a strict head, 505 for HTTP/2.0.
    let h2 = https(&certs, app.addr, "GET /health HTTP/2.0\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(h2.status, 505);
    let smuggle = "GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\
                   Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert_eq!(https(&certs, app.addr, smuggle).unwrap().status, 400);
    let health = https(&certs, app.addr, &get("/health", "none")).unwrap();
    assert_eq!(health.status, 200);
    // The systemd watchdog's probe speaks TLS to a TLS port.
    let t = Duration::from_secs(2);
    assert_eq!(creditgate::ops::watchdog::probe_tls(app.addr, t), Ok(()));
    assert!(creditgate::ops::watchdog::probe(app.addr, t).is_err());
}

#[test]
fn a_client_that_never_finishes_its_handshake_is_cut_off_at_the_head_deadline() {
    let certs = Certs::new();
    let app = spawn_app_with(&[
        ("CREDITGATE_TLS_CERT", &certs.path("cert.pem")),
        ("CREDITGATE_TLS_KEY", &certs.path("key.pem")),
        ("CREDITGATE_HEAD_TIMEOUT_MS", "2000"),
    ]);
    // A TLS record header, then a byte a second: the handshake never ends.
    let mut s = TcpStream::connect(app.addr).unwrap();
    let started = Instant::now();
    let mut closed_after = None;
    for byte in [0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc] {
        if s.write_all(&[byte]).is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let (_, closed, _) = read_until_closed(&mut s, Duration::from_millis(900));
        if closed {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let took = closed_after.expect("the trickled handshake was never cut off");
    assert!(took < Duration::from_secs(4), "{took:?}");
    let ok = https(&certs, app.addr, &get("/health", "none")).unwrap();
    assert_eq!(ok.status, 200);
}

// Found by review: after the handshake, rustls read a whole record inside
// one call, so a record sent a byte a second held the head deadline off.
#[test]
fn a_request_record_trickled_after_the_handshake_is_cut_off() {
    let certs = Certs::new();
    let app = spawn_app_with(&[
        ("CREDITGATE_TLS_CERT", &certs.path("cert.pem")),
        ("CREDITGATE_TLS_KEY", &certs.path("key.pem")),
        ("CREDITGATE_HEAD_TIMEOUT_MS", "2000"),
    ]);
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = rustls::ClientConnection::new(certs.client(), name).unwrap();
    let mut sock = TcpStream::connect(app.addr).unwrap();
    while tls.is_handshaking() {
        tls.complete_io(&mut sock).unwrap();
    }
    tls.writer()
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut record = Vec::new();
    tls.write_tls(&mut record).unwrap();
    let started = Instant::now();
    let mut closed_after = None;
    for byte in record {
        if sock.write_all(&[byte]).is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let (_, closed, _) = read_until_closed(&mut sock, Duration::from_millis(900));
        if closed {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let took = closed_after.expect("the trickled record was never cut off");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let ok = https(&certs, app.addr, &get("/health", "none")).unwrap();
    assert_eq!(ok.status, 200);
}

#[test]
fn a_bad_certificate_or_key_file_is_refused_at_start() {
    let db = TestDb::new();
    let certs = Certs::new();
    let not_pem = certs.dir.join("not.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    for (cert, key, needle) in [
        (
            certs.path("missing.pem"),
            certs.path("key.pem"),
            "CREDITGATE_TLS_CERT",
        ),
        (
            certs.path("cert.pem"),
            not_pem.to_string_lossy().into_owned(),
            "key",
        ),
        (
            not_pem.to_string_lossy().into_owned(),
            certs.path("key.pem"),
            "certificate",
        ),
    ] {
        let mut daemon = Daemon::start(
            &["serve"],
            &[
                ("DATABASE_URL", db.url.as_str()),
                ("CREDITGATE_BIND", "127.0.0.1:0"),
                ("CREDITGATE_TLS_CERT", &cert),
                ("CREDITGATE_TLS_KEY", &key),
            ],
        );
        let status = daemon
            .wait_exit(Duration::from_secs(30))
            .expect("a bad TLS file ends the start");
        assert_ne!(status.code(), Some(0));
        let log = daemon.log();
        assert!(
            log.contains("start failed") && log.contains(needle),
            "{log}"
        );
    }
}
