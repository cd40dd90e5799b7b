use ascii::AsciiString;

use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufReader, BufWriter, ErrorKind, Read};

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{HTTPVersion, Method, StatusCode};
use crate::util::RefinedTcpStream;
use crate::util::{SequentialReader, SequentialReaderBuilder, SequentialWriterBuilder};
use crate::Request;

/// PATCHED: a request head (request line plus headers) longer than this is
/// refused while it is read, with 414 when the request line alone is too
/// long and 431 otherwise, and the connection is closed. Without a limit a
/// 50 MB header line was read into memory whole.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

/// PATCHED: a client that has started a request head must finish it within
/// this long, or gets 408 and the connection is closed; the socket's read
/// timeout alone would let it send a byte every few seconds forever.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(20);

/// A ClientConnection is an object that will store a socket to a client
/// and return Request objects.
pub struct ClientConnection {
    // address of the client
    remote_addr: IoResult<Option<SocketAddr>>,

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

    // PATCHED: reports whether the previous request's unread body was
    // drained; if not, the stream is mid-body and must be closed.
    previous_body: Option<Receiver<IoResult<()>>>,

    // true if the connection goes through SSL
    secure: bool,
}

/// Error that can happen when reading a request.
#[derive(Debug)]
enum ReadError {
    WrongRequestLine,
    WrongHeader(HTTPVersion),
    /// the client sent an unrecognized `Expect` header
    ExpectationFailed(HTTPVersion),
    /// PATCHED: the head is over `MAX_HEAD_BYTES` (414 or 431).
    HeadTooLarge(StatusCode),
    /// PATCHED: the client started a head and did not finish it in time.
    HeadTimeout,
    /// PATCHED: the head holds bytes that are not ASCII.
    NotAscii,
    /// PATCHED: the previous request left a body that was not drained.
    BodyNotDrained,
    ReadIoError(IoError),
}

/// PATCHED: the socket as the readers see it, checking the deadline of the
/// request head being read (if any) before and after each read of the
/// socket. Between two socket reads the bytes come from the buffer and no
/// time passes, so this holds a head to `HEAD_TIMEOUT` as a check at every
/// byte did, without reading the clock per byte (that was 14,000 of a paid
/// request's 128,000 instructions in creditgate, by callgrind).
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

/// PATCHED: what one request head may still spend.
struct HeadBudget {
    bytes_left: usize,
    started: Option<Instant>,
}

impl ClientConnection {
    /// Creates a new `ClientConnection` that takes ownership of the `TcpStream`.
    pub fn new(
        write_socket: RefinedTcpStream,
        mut read_socket: RefinedTcpStream,
    ) -> ClientConnection {
        let remote_addr = read_socket.peer_addr();
        let secure = read_socket.secure();

        let head_deadline = Arc::new(Mutex::new(None));
        let read_socket = HeadClock {
            inner: read_socket,
            deadline: Arc::clone(&head_deadline),
        };
        let mut source = SequentialReaderBuilder::new(BufReader::with_capacity(1024, read_socket));
        let first_header = source.next().unwrap();

        ClientConnection {
            source,
            sink: SequentialWriterBuilder::new(BufWriter::with_capacity(1024, write_socket)),
            remote_addr,
            next_header_source: first_header,
            head_deadline,
            no_more_requests: false,
            previous_body: None,
            secure,
        }
    }

    /// true if the connection is HTTPS
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Reads the next line from self.next_header_source.
    ///
    /// Reads until `CRLF` is reached. The next read will start
    ///  at the first byte of the new line.
    ///
    /// PATCHED: spends `budget`, and refuses a line that does not fit in it
    /// with `too_large`.
    fn read_next_line(
        &mut self,
        budget: &mut HeadBudget,
        too_large: StatusCode,
    ) -> Result<AsciiString, ReadError> {
        let mut buf = Vec::new();
        let mut prev_byte_was_cr = false;

        loop {
            let byte = self.next_header_source.by_ref().bytes().next();

            let byte = match byte {
                Some(Ok(b)) => b,
                // the socket's read timeout fired in the middle of a head
                Some(Err(e))
                    if budget.started.is_some()
                        && matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    return Err(ReadError::HeadTimeout)
                }
                Some(Err(e)) => return Err(ReadError::ReadIoError(e)),
                None => {
                    return Err(ReadError::ReadIoError(IoError::new(
                        ErrorKind::ConnectionAborted,
                        "Unexpected EOF",
                    )))
                }
            };

            if budget.started.is_none() {
                // The head's first byte: from now on `HeadClock` holds the
                // rest of it to the deadline.
                let now = Instant::now();
                budget.started = Some(now);
                self.set_head_deadline(Some(now + HEAD_TIMEOUT));
            }
            if budget.bytes_left == 0 {
                return Err(ReadError::HeadTooLarge(too_large));
            }
            budget.bytes_left -= 1;

            if byte == b'\n' && prev_byte_was_cr {
                buf.pop(); // removing the '\r'
                return AsciiString::from_ascii(buf).map_err(|_| ReadError::NotAscii);
            }

            prev_byte_was_cr = byte == b'\r';

            buf.push(byte);
        }
    }

    /// PATCHED: sets (or, with `None`, lifts) the deadline `HeadClock` checks.
    fn set_head_deadline(&self, deadline: Option<Instant>) {
        *self.head_deadline.lock().unwrap_or_else(|e| e.into_inner()) = deadline;
    }

    /// Reads a request from the stream.
    /// Blocks until the header has been read.
    fn read(&mut self) -> Result<Request, ReadError> {
        // PATCHED: no deadline until the next head's first byte (an idle
        // keep-alive connection waits under the socket timeout only).
        self.set_head_deadline(None);
        // PATCHED: waits until the previous request's body reader is gone;
        // if it gave up draining, what follows is body, not a request.
        if let Some(drained) = self.previous_body.take() {
            if let Ok(Err(_)) = drained.recv() {
                return Err(ReadError::BodyNotDrained);
            }
        }

        let mut budget = HeadBudget {
            bytes_left: MAX_HEAD_BYTES,
            started: None,
        };

        let (method, path, version, headers) = {
            // reading the request line
            let (method, path, version) = {
                let line = self.read_next_line(&mut budget, StatusCode(414))?;

                parse_request_line(
                    line.as_str().trim(), // TODO: remove this conversion
                )?
            };

            // getting all headers
            let headers = {
                let mut headers = Vec::new();
                loop {
                    let line = self.read_next_line(&mut budget, StatusCode(431))?;

                    if line.is_empty() {
                        break;
                    };
                    headers.push(match FromStr::from_str(line.as_str().trim()) {
                        // TODO: remove this conversion
                        Ok(h) => h,
                        _ => return Err(ReadError::WrongHeader(version)),
                    });
                }

                headers
            };

            (method, path, version, headers)
        };
        // PATCHED: the head is complete; the body is not held to its deadline.
        self.set_head_deadline(None);

        // building the writer for the request
        let writer = self.sink.next().unwrap();

        // follow-up for next potential request
        let mut data_source = self.source.next().unwrap();
        std::mem::swap(&mut self.next_header_source, &mut data_source);

        // building the next reader
        let mut request = crate::request::new_request(
            self.secure,
            method,
            path,
            version.clone(),
            headers,
            *self.remote_addr.as_ref().unwrap(),
            data_source,
            writer,
        )
        .map_err(|e| {
            use crate::request;
            match e {
                request::RequestCreationError::CreationIoError(e) => ReadError::ReadIoError(e),
                request::RequestCreationError::ExpectationFailed => {
                    ReadError::ExpectationFailed(version)
                }
            }
        })?;
        self.previous_body = request.body_drained.take();

        // return the request
        Ok(request)
    }
}

impl Iterator for ClientConnection {
    type Item = Request;

    /// Blocks until the next Request is available.
    /// Returns None when no new Requests will come from the client.
    fn next(&mut self) -> Option<Request> {
        use crate::{Response, StatusCode};

        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        if self.no_more_requests {
            return None;
        }

        loop {
            let rq = match self.read() {
                Err(ReadError::WrongRequestLine) => {
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(400));
                    response
                        .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                        .ok();
                    return None; // we don't know where the next request would start,
                                 // se we have to close
                }

                Err(ReadError::WrongHeader(ver)) => {
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(400));
                    response.raw_print(writer, ver, &[], false, None).ok();
                    return None; // we don't know where the next request would start,
                                 // se we have to close
                }

                // PATCHED: refused heads get an answer, then the connection is
                // closed, since the rest of what the client sends is unread.
                Err(ReadError::HeadTooLarge(status)) => {
                    let writer = self.sink.next().unwrap();
                    let response = Response::from_string(status.default_reason_phrase())
                        .with_status_code(status);
                    response
                        .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                        .ok();
                    return None;
                }

                Err(ReadError::NotAscii) => {
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(400));
                    response
                        .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                        .ok();
                    return None;
                }

                Err(ReadError::HeadTimeout) => {
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(408));
                    response
                        .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                        .ok();
                    return None;
                }

                // PATCHED: the previous response is already sent; just close.
                Err(ReadError::BodyNotDrained) => return None,

                Err(ReadError::ReadIoError(ref err)) if err.kind() == ErrorKind::TimedOut => {
                    // request timeout
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(408));
                    response
                        .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                        .ok();
                    return None; // closing the connection
                }

                Err(ReadError::ExpectationFailed(ver)) => {
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(417));
                    response.raw_print(writer, ver, &[], true, None).ok();
                    return None; // TODO: should be recoverable, but needs handling in case of body
                }

                Err(ReadError::ReadIoError(_)) => return None,

                Ok(rq) => rq,
            };

            // checking HTTP version
            if *rq.http_version() > (1, 1) {
                let writer = self.sink.next().unwrap();
                let response = Response::from_string(
                    "This server only supports HTTP versions 1.0 and 1.1".to_owned(),
                )
                .with_status_code(StatusCode(505));
                response
                    .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                    .ok();
                continue;
            }

            // updating the status of the connection
            let connection_header = rq
                .headers()
                .iter()
                .find(|h| h.field.equiv("Connection"))
                .map(|h| h.value.as_str());

            let lowercase = connection_header.map(|h| h.to_ascii_lowercase());

            match lowercase {
                Some(ref val) if val.contains("close") => self.no_more_requests = true,
                Some(ref val) if val.contains("upgrade") => self.no_more_requests = true,
                Some(ref val)
                    if !val.contains("keep-alive") && *rq.http_version() == HTTPVersion(1, 0) =>
                {
                    self.no_more_requests = true
                }
                None if *rq.http_version() == HTTPVersion(1, 0) => self.no_more_requests = true,
                _ => (),
            };

            // returning the request
            return Some(rq);
        }
    }
}

/// Parses a "HTTP/1.1" string.
fn parse_http_version(version: &str) -> Result<HTTPVersion, ReadError> {
    let (major, minor) = match version {
        "HTTP/0.9" => (0, 9),
        "HTTP/1.0" => (1, 0),
        "HTTP/1.1" => (1, 1),
        "HTTP/2.0" => (2, 0),
        "HTTP/3.0" => (3, 0),
        _ => return Err(ReadError::WrongRequestLine),
    };

    Ok(HTTPVersion(major, minor))
}

/// Parses the request line of the request.
/// eg. GET / HTTP/1.1
fn parse_request_line(line: &str) -> Result<(Method, String, HTTPVersion), ReadError> {
    let mut parts = line.split(' ');

    let method = parts.next().and_then(|w| w.parse().ok());
    let path = parts.next().map(ToOwned::to_owned);
    let version = parts.next().and_then(|w| parse_http_version(w).ok());

    method
        .and_then(|method| Some((method, path?, version?)))
        .ok_or(ReadError::WrongRequestLine)
}

#[cfg(test)]
mod test {
    #[test]
    fn test_parse_request_line() {
        let (method, path, ver) = super::parse_request_line("GET /hello HTTP/1.1").unwrap();

        assert!(method == crate::Method::Get);
        assert!(path == "/hello");
        assert!(ver == crate::common::HTTPVersion(1, 1));

        assert!(super::parse_request_line("GET /hello").is_err());
        assert!(super::parse_request_line("qsd qsd qsd").is_err());
    }
}
