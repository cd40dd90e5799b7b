use crate::connection::Connection;
use crate::util::refined_tcp_stream::Stream as RefinedStream;
use std::error::Error;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

/// A wrapper around an owned Rustls connection and corresponding stream.
///
/// Uses an internal Mutex to permit disparate reader & writer threads to access the stream independently.
pub(crate) struct RustlsStream(
    Arc<Mutex<rustls::StreamOwned<rustls::ServerConnection, Connection>>>,
    // PATCHED: how long one read may take in all (`Limits::head_timeout`).
    std::time::Duration,
);

impl RustlsStream {
    pub(crate) fn peer_addr(&mut self) -> std::io::Result<Option<SocketAddr>> {
        self.0
            .lock()
            .expect("Failed to lock SSL stream mutex")
            .sock
            .peer_addr()
    }

    pub(crate) fn shutdown(&mut self, how: Shutdown) -> std::io::Result<()> {
        self.0
            .lock()
            .expect("Failed to lock SSL stream mutex")
            .sock
            .shutdown(how)
    }
}

impl Clone for RustlsStream {
    fn clone(&self) -> Self {
        Self(self.0.clone(), self.1)
    }
}

/// PATCHED: one read, one socket operation at a time, all of them within
/// the stream's timeout. rustls's own `read` loops over socket reads until
/// a whole record is decrypted, so a client sending a record a byte every
/// few seconds held the read (and the clocks checked around it) for as long
/// as it liked.
impl Read for RustlsStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::ErrorKind;
        let mut stream = self.0.lock().expect("Failed to lock SSL stream mutex");
        let deadline = std::time::Instant::now() + self.1;
        let result = loop {
            match stream.conn.reader().read(buf) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                other => break other,
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break Err(std::io::Error::new(
                    ErrorKind::TimedOut,
                    "a TLS record arrived too slowly",
                ));
            }
            let stream = &mut *stream;
            stream.sock.set_timeouts(Some(left))?;
            while stream.conn.wants_write() {
                stream.conn.write_tls(&mut stream.sock)?;
            }
            match stream.conn.read_tls(&mut stream.sock) {
                // The peer closed: what rustls says of it (close_notify or not).
                Ok(0) => break stream.conn.reader().read(buf),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
            if let Err(e) = stream.conn.process_new_packets() {
                let _ = stream.conn.write_tls(&mut stream.sock);
                break Err(std::io::Error::new(ErrorKind::InvalidData, e));
            }
        };
        stream.sock.set_timeouts(Some(self.1))?;
        result
    }
}

impl Write for RustlsStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("Failed to lock SSL stream mutex")
            .write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0
            .lock()
            .expect("Failed to lock SSL stream mutex")
            .flush()
    }
}

pub(crate) struct RustlsContext(Arc<rustls::ServerConfig>);

impl RustlsContext {
    /// PATCHED: rustls 0.23 with the ring provider (no process-wide default
    /// provider is assumed); any PEM private key (PKCS#8, PKCS#1, SEC1); a
    /// bad certificate or key is an error, not a panic.
    pub(crate) fn from_pem(
        certificates: Vec<u8>,
        private_key: Zeroizing<Vec<u8>>,
    ) -> Result<Self, Box<dyn Error + Send + Sync>> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};

        let certificate_chain = CertificateDer::pem_slice_iter(&certificates)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("the certificate file is not PEM: {e}"))?;
        if certificate_chain.is_empty() {
            return Err("Couldn't extract certificate chain from config.".into());
        }
        let private_key = PrivateKeyDer::from_pem_slice(&private_key)
            .map_err(|e| format!("the key file holds no PEM private key: {e}"))?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls_conf = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certificate_chain, private_key)?;

        Ok(Self(Arc::new(tls_conf)))
    }

    /// PATCHED: the handshake is done here, on the connection's thread,
    /// and must be over within `handshake`: each socket read may wait only
    /// for what is left of it (rustls reads the socket many times inside
    /// one call, so a clock checked around its calls saw nothing of a
    /// handshake trickled a byte a second).
    pub(crate) fn accept(
        &self,
        mut stream: Connection,
        handshake: std::time::Duration,
    ) -> Result<RustlsStream, Box<dyn Error + Send + Sync + 'static>> {
        let mut connection = rustls::ServerConnection::new(self.0.clone())?;
        let deadline = std::time::Instant::now() + handshake;
        // One socket operation at a time (`complete_io` loops inside).
        while connection.is_handshaking() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err("TLS handshake not finished in time".into());
            }
            stream.set_timeouts(Some(left))?;
            while connection.wants_write() {
                connection.write_tls(&mut stream)?;
            }
            if connection.is_handshaking() && connection.wants_read() {
                if connection.read_tls(&mut stream)? == 0 {
                    return Err("the client closed during the TLS handshake".into());
                }
                if let Err(e) = connection.process_new_packets() {
                    // The alert goes out before the close.
                    let _ = connection.write_tls(&mut stream);
                    return Err(e.into());
                }
            }
        }
        while connection.wants_write() {
            connection.write_tls(&mut stream)?;
        }
        stream.set_timeouts(Some(handshake))?;
        Ok(RustlsStream(
            Arc::new(Mutex::new(rustls::StreamOwned::new(connection, stream))),
            handshake,
        ))
    }
}

impl From<RustlsStream> for RefinedStream {
    fn from(stream: RustlsStream) -> Self {
        Self::Https(stream)
    }
}
