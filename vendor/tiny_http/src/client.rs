use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufRead, BufReader, BufWriter, ErrorKind, Read};

use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::common::{HTTPVersion, Header, StatusCode};
use crate::head::{self, Head, HeadError};
use crate::limits::Limits;
use crate::request::Conn;
use crate::util::RefinedTcpStream;
use crate::util::{BodyLeft, SequentialReader, SequentialReaderBuilder, SequentialWriterBuilder};
use crate::Request;

/// PATCHED: a request head (request line plus headers) longer than this is
/// refused while it is read, with 414 when the request line alone is too
/// long and 431 otherwise, and the connection is closed. Without a limit a
/// 50 MB header line was read into memory whole.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// A ClientConnection is an object that will store a socket to a client
/// and return Request objects.
pub struct ClientConnection {
    // PATCHED: what every request of this connection is given (address,
    // limits, the closer).
    conn: Conn,

    // sequence of Readers to the stream, so that the data is not read in
    //  the wrong order
    source: SequentialReaderBuilder<BufReader<HeadClock<RefinedTcpStream>>>,

    // sequence of Writers to the stream, to avoid writing response #2 before
    //  response #1
    sink: SequentialWriterBuilder<BufWriter<RefinedTcpStream>>,

    // Reader to read the next header from
    next_header_source: SequentialReader<BufReader<HeadClock<RefinedTcpStream>>>,

    // PATCHED: the deadline of the head being read, checked by `HeadClock`.
    head_deadline: Arc<Mutex<Option<Instant>>>,

    // set to true if we know that the previous request is the last one
    no_more_requests: bool,

    // PATCHED: the first head has not been read yet. On a TLS connection
    // its deadline runs from the end of the handshake (which has its own,
    // `RustlsContext::accept`), also while no byte of it has come.
    first: bool,

    // PATCHED: what the previous request's body reader left unread, to be
    // drained here (or the connection closed) before the next head.
    previous_body: Option<Receiver<BodyLeft>>,
}

/// Error that can happen when reading a request.
#[derive(Debug)]
enum ReadError {
    /// PATCHED: the head is malformed, not HTTP/1.x, or has too many lines.
    BadHead(HeadError),
    /// PATCHED: the body's framing is ambiguous (RFC 9112 §6): 400.
    BadFraming(HTTPVersion),
    /// the client sent an unrecognized `Expect` header
    ExpectationFailed(HTTPVersion),
    /// PATCHED: the head is over `MAX_HEAD_BYTES` (414 or 431).
    HeadTooLarge(StatusCode),
    /// PATCHED: the client started a head and did not finish it in time.
    HeadTimeout,
    /// PATCHED: the previous request left a body that was not drained.
    BodyNotDrained,
    /// The connection ended, or an idle keep-alive connection timed out.
    Closed,
}

impl ReadError {
    /// PATCHED: the answer before the connection is closed, if any (an idle
    /// connection, a closed one or an undrained body get none).
    fn answer(&self) -> Option<(StatusCode, HTTPVersion)> {
        let v11 = HTTPVersion(1, 1);
        match self {
            ReadError::BadHead(e) => Some((e.status(), v11)),
            ReadError::BadFraming(v) => Some((StatusCode(400), v.clone())),
            ReadError::ExpectationFailed(v) => Some((StatusCode(417), v.clone())),
            ReadError::HeadTooLarge(status) => Some((*status, v11)),
            ReadError::HeadTimeout => Some((StatusCode(408), v11)),
            ReadError::BodyNotDrained | ReadError::Closed => None,
        }
    }
}

/// PATCHED: the socket as the readers see it, checking the deadline of the
/// request head being read (if any) before and after each read of the
/// socket. Between two socket reads the bytes come from the buffer and no
/// time passes, so this holds a head to its deadline as a check at every
/// byte did, without reading the clock per byte.
struct HeadClock<R> {
    inner: R,
    deadline: Arc<Mutex<Option<Instant>>>,
}

impl<R: Read> Read for HeadClock<R> {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        let deadline = *self.deadline.lock().unwrap_or_else(|e| e.into_inner());
        let past = || deadline.is_some_and(|d| Instant::now() > d);
        let timed_out = || IoError::new(ErrorKind::TimedOut, "request head deadline passed");
        if past() {
            return Err(timed_out());
        }
        let n = self.inner.read(buf)?;
        if past() {
            return Err(timed_out());
        }
        Ok(n)
    }
}

impl ClientConnection {
    /// Creates a new `ClientConnection` that takes ownership of the `TcpStream`.
    pub fn new(
        write_socket: RefinedTcpStream,
        mut read_socket: RefinedTcpStream,
        limits: Limits,
    ) -> ClientConnection {
        let remote_addr = read_socket.peer_addr().ok().flatten();
        let conn = Conn {
            secure: read_socket.secure(),
            remote_addr,
            limits,
            closer: Some(read_socket.closer()),
        };

        let handshake_deadline = conn
            .secure
            .then(|| Instant::now() + conn.limits.head_timeout);
        let head_deadline = Arc::new(Mutex::new(handshake_deadline));
        let read_socket = HeadClock {
            inner: read_socket,
            deadline: Arc::clone(&head_deadline),
        };
        let mut source = SequentialReaderBuilder::new(BufReader::with_capacity(1024, read_socket));
        let first_header = source.next().unwrap();

        ClientConnection {
            conn,
            source,
            sink: SequentialWriterBuilder::new(BufWriter::with_capacity(1024, write_socket)),
            next_header_source: first_header,
            head_deadline,
            no_more_requests: false,
            first: true,
            previous_body: None,
        }
    }

    /// PATCHED: sets (or, with `None`, lifts) the deadline `HeadClock` checks.
    fn set_head_deadline(&self, deadline: Option<Instant>) {
        *self.head_deadline.lock().unwrap_or_else(|e| e.into_inner()) = deadline;
    }

    /// PATCHED: reads one head from the buffer and parses it with
    /// `httparse` (see `head`), within `MAX_HEAD_BYTES` and, from its first
    /// byte, `head_timeout`. Only the head's bytes are consumed: what
    /// follows is the body's. `deadline_set`: the head's deadline is
    /// already running (a TLS connection's first head).
    fn read_head(&mut self, deadline_set: bool) -> Result<Head, ReadError> {
        let mut head = Vec::new();
        loop {
            let chunk = match self.next_header_source.fill_buf() {
                Ok([]) if head.is_empty() => return Err(ReadError::Closed),
                // Closed in the middle of a head.
                Ok([]) => return Err(ReadError::BadHead(HeadError::Malformed)),
                Ok(chunk) => chunk,
                Err(e)
                    if !head.is_empty()
                        && matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    return Err(ReadError::HeadTimeout)
                }
                Err(_) => return Err(ReadError::Closed),
            };
            let take = chunk.len().min(MAX_HEAD_BYTES - head.len());
            let before = head.len();
            head.extend_from_slice(&chunk[..take]);
            if before == 0 && !deadline_set {
                // The head's first bytes: from now on `HeadClock` holds the
                // rest of it to the deadline.
                self.set_head_deadline(Some(Instant::now() + self.conn.limits.head_timeout));
            }
            // A head can only end at a line's end: parse again only when a
            // newline came (a client sending a byte per packet made this
            // re-parse the whole head per byte).
            if !head[before..].contains(&b'\n') && head.len() < MAX_HEAD_BYTES {
                self.next_header_source.consume(take);
                continue;
            }
            match head::parse(&head) {
                Ok(Some((parsed, len))) => {
                    self.next_header_source.consume(len - before);
                    return Ok(parsed);
                }
                Ok(None) if head.len() < MAX_HEAD_BYTES => self.next_header_source.consume(take),
                Ok(None) => {
                    let status = if head.contains(&b'\n') { 431 } else { 414 };
                    return Err(ReadError::HeadTooLarge(StatusCode(status)));
                }
                Err(e) => return Err(ReadError::BadHead(e)),
            }
        }
    }

    /// Reads a request from the stream.
    /// Blocks until the header has been read.
    fn read(&mut self) -> Result<Request, ReadError> {
        // PATCHED: no deadline until the next head's first byte (an idle
        // keep-alive connection waits under the socket timeout only); the
        // first head of a TLS connection keeps the one set when the
        // connection was made.
        let deadline_set = std::mem::take(&mut self.first) && self.conn.secure;
        if !deadline_set {
            self.set_head_deadline(None);
        }
        // PATCHED: waits until the previous request's body reader is gone,
        // and drains what it left here, on this connection's thread; if it
        // cannot, what follows is body, not a request.
        if let Some(previous) = self.previous_body.take() {
            if let Ok(left) = previous.recv() {
                if crate::util::drain(left).is_err() {
                    return Err(ReadError::BodyNotDrained);
                }
            }
        }

        let head = self.read_head(deadline_set)?;
        // PATCHED: the head is complete; the body has its own clock.
        self.set_head_deadline(None);
        let framing = head::framing(&head.headers, &head.version)
            .map_err(|()| ReadError::BadFraming(head.version.clone()))?;

        // building the writer for the request
        let writer = self.sink.next().unwrap();

        // follow-up for next potential request
        let mut data_source = self.source.next().unwrap();
        std::mem::swap(&mut self.next_header_source, &mut data_source);

        // building the next reader
        let version = head.version.clone();
        let mut request =
            crate::request::new_request(&self.conn, head, framing, data_source, writer)
                .map_err(|_| ReadError::ExpectationFailed(version))?;
        self.previous_body = request.body_left.take();

        // return the request
        Ok(request)
    }
}

impl Iterator for ClientConnection {
    type Item = Request;

    /// Blocks until the next Request is available.
    /// Returns None when no new Requests will come from the client.
    fn next(&mut self) -> Option<Request> {
        use crate::Response;

        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        if self.no_more_requests {
            return None;
        }

        let rq = match self.read() {
            Ok(rq) => rq,
            // PATCHED: every refused head gets its answer, then the
            // connection is closed, since where the next request would start
            // is unknown. (The 505 for `HTTP/2.0` used to be written while
            // the request still held the writer before it: a deadlock that
            // kept the thread and its descriptors forever.)
            Err(e) => {
                if let Some((status, version)) = e.answer() {
                    let writer = self.sink.next().unwrap();
                    let close = Header::from_bytes(&b"Connection"[..], &b"close"[..]).unwrap();
                    Response::from_string(status.default_reason_phrase())
                        .with_status_code(status)
                        .with_header(close)
                        .raw_print(writer, version, &[], false, None)
                        .ok();
                }
                return None;
            }
        };

        // updating the status of the connection
        // PATCHED: "upgrade" is no longer special: upgrades are not served.
        let connection_header = rq
            .headers()
            .iter()
            .find(|h| h.field.equiv("Connection"))
            .map(|h| h.value.as_str().to_ascii_lowercase());
        let v10 = *rq.http_version() == HTTPVersion(1, 0);
        self.no_more_requests = match connection_header {
            Some(ref val) if val.contains("close") => true,
            Some(ref val) => v10 && !val.contains("keep-alive"),
            None => v10,
        };

        Some(rq)
    }
}
