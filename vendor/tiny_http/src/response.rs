use crate::common::{HTTPVersion, Header, StatusCode};
use httpdate::HttpDate;
use std::sync::mpsc::Receiver;

use std::io::Result as IoResult;
use std::io::{self, Cursor, Error as IoError, ErrorKind, Read, Write};

use std::fs::File;

use std::convert::TryFrom;
use std::str::FromStr;
use std::time::SystemTime;

/// Object representing an HTTP response whose purpose is to be given to a `Request`.
///
/// Some headers cannot be changed. Trying to define the value
/// of one of these will have no effect:
///
///  - `Connection`
///  - `Trailer`
///  - `Transfer-Encoding`
///  - `Upgrade`
///
/// Some headers have special behaviors:
///
///  - `Content-Encoding`: If you define this header, the library
///     will assume that the data from the `Read` object has the specified encoding
///     and will just pass-through.
///
///  - `Content-Length`: The length of the data should be set manually
///     using the `Reponse` object's API. Attempting to set the value of this
///     header will be equivalent to modifying the size of the data but the header
///     itself may not be present in the final result.
///
///  - `Content-Type`: You may only set this header to one value at a time. If you
///     try to set it more than once, the existing value will be overwritten. This
///     behavior differs from the default for most headers, which is to allow them to
///     be set multiple times in the same response.
///
pub struct Response<R> {
    reader: R,
    status_code: StatusCode,
    headers: Vec<Header>,
    data_length: Option<usize>,
    chunked_threshold: Option<usize>,
}

/// A `Response` without a template parameter.
pub type ResponseBox = Response<Box<dyn Read + Send>>;

/// Transfer encoding to use when sending the message.
/// Note that only *supported* encoding are listed here.
#[derive(Copy, Clone)]
enum TransferEncoding {
    Identity,
    Chunked,
}

impl FromStr for TransferEncoding {
    type Err = ();

    fn from_str(input: &str) -> Result<TransferEncoding, ()> {
        if input.eq_ignore_ascii_case("identity") {
            Ok(TransferEncoding::Identity)
        } else if input.eq_ignore_ascii_case("chunked") {
            Ok(TransferEncoding::Chunked)
        } else {
            Err(())
        }
    }
}

/// Builds a Date: header with the current date.
fn build_date_header() -> Header {
    let d = HttpDate::from(SystemTime::now());
    Header::from_bytes(&b"Date"[..], &d.to_string().into_bytes()[..]).unwrap()
}

fn write_message_header<W>(
    mut writer: W,
    http_version: &HTTPVersion,
    status_code: &StatusCode,
    headers: &[Header],
) -> IoResult<()>
where
    W: Write,
{
    // writing status line
    write!(
        &mut writer,
        "HTTP/{}.{} {} {}\r\n",
        http_version.0,
        http_version.1,
        status_code.0,
        status_code.default_reason_phrase()
    )?;

    // writing headers
    for header in headers.iter() {
        writer.write_all(header.field.as_str().as_ref())?;
        write!(&mut writer, ": ")?;
        writer.write_all(header.value.as_str().as_ref())?;
        write!(&mut writer, "\r\n")?;
    }

    // separator between header and data
    write!(&mut writer, "\r\n")?;

    Ok(())
}

fn choose_transfer_encoding(
    status_code: StatusCode,
    _request_headers: &[Header],
    http_version: &HTTPVersion,
    entity_length: &Option<usize>,
    has_additional_headers: bool,
    chunked_threshold: usize,
) -> TransferEncoding {
    // HTTP 1.0 doesn't support other encoding
    if *http_version <= (1, 0) {
        return TransferEncoding::Identity;
    }

    // Per section 3.3.1 of RFC7230:
    // A server MUST NOT send a Transfer-Encoding header field in any response with a status code
    // of 1xx (Informational) or 204 (No Content).
    if status_code.0 < 200 || status_code.0 == 204 {
        return TransferEncoding::Identity;
    }

    // PATCHED: the request's `TE` header is not honoured any more. It
    // let a client ask for `identity`, which makes an answer of unknown
    // length be read whole into memory before anything is sent (40 clients
    // asking so for a 50 MB upstream answer: 2 GB). `TE` only offers
    // codings a client accepts; chunked is always acceptable in HTTP/1.1.

    // if we have additional headers, using chunked
    if has_additional_headers {
        return TransferEncoding::Chunked;
    }

    // if we don't have a Content-Length, or if the Content-Length is too big, using chunks writer
    if entity_length
        .as_ref()
        .map_or(true, |val| *val >= chunked_threshold)
    {
        return TransferEncoding::Chunked;
    }

    // Identity by default
    TransferEncoding::Identity
}

impl<R> Response<R>
where
    R: Read,
{
    /// Creates a new Response object.
    ///
    /// The `additional_headers` argument is a receiver that
    ///  may provide headers even after the response has been sent.
    ///
    /// All the other arguments are straight-forward.
    pub fn new(
        status_code: StatusCode,
        headers: Vec<Header>,
        data: R,
        data_length: Option<usize>,
        additional_headers: Option<Receiver<Header>>,
    ) -> Response<R> {
        let mut response = Response {
            reader: data,
            status_code,
            headers: Vec::with_capacity(16),
            data_length,
            chunked_threshold: None,
        };

        for h in headers {
            response.add_header(h)
        }

        // dummy implementation
        if let Some(additional_headers) = additional_headers {
            for h in additional_headers.iter() {
                response.add_header(h)
            }
        }

        response
    }

    /// Set a threshold for `Content-Length` where we chose chunked
    /// transfer. Notice that chunked transfer might happen regardless of
    /// this threshold, for instance when the request headers indicate
    /// it is wanted or when there is no `Content-Length`.
    pub fn with_chunked_threshold(mut self, length: usize) -> Response<R> {
        self.chunked_threshold = Some(length);
        self
    }

    /// Convert the response into the underlying `Read` type.
    ///
    /// This is mainly useful for testing as it must consume the `Response`.
    pub fn into_reader(self) -> R {
        self.reader
    }

    /// The current `Content-Length` threshold for switching over to
    /// chunked transfer. The default is 32768 bytes. Notice that
    /// chunked transfer is mutually exclusive with sending a
    /// `Content-Length` header as per the HTTP spec.
    pub fn chunked_threshold(&self) -> usize {
        self.chunked_threshold.unwrap_or(32768)
    }

    /// Adds a header to the list.
    /// Does all the checks.
    pub fn add_header<H>(&mut self, header: H)
    where
        H: Into<Header>,
    {
        let header = header.into();

        // ignoring forbidden headers
        // PATCHED (patch 17): `Trailer` is let through, to announce the
        // fields `stage_trailer` sends in the last chunk.
        if header.field.equiv("Connection")
            || header.field.equiv("Transfer-Encoding")
            || header.field.equiv("Upgrade")
        {
            return;
        }

        // if the header is Content-Length, setting the data length
        if header.field.equiv("Content-Length") {
            if let Ok(val) = usize::from_str(header.value.as_str()) {
                self.data_length = Some(val)
            }

            return;
        // if the header is Content-Type and it's already set, overwrite it
        } else if header.field.equiv("Content-Type") {
            if let Some(content_type_header) = self
                .headers
                .iter_mut()
                .find(|h| h.field.equiv("Content-Type"))
            {
                content_type_header.value = header.value;
                return;
            }
        }

        self.headers.push(header);
    }

    /// Returns the same request, but with an additional header.
    ///
    /// Some headers cannot be modified and some other have a
    ///  special behavior. See the documentation above.
    #[inline]
    pub fn with_header<H>(mut self, header: H) -> Response<R>
    where
        H: Into<Header>,
    {
        self.add_header(header.into());
        self
    }

    /// Returns the same request, but with a different status code.
    #[inline]
    pub fn with_status_code<S>(mut self, code: S) -> Response<R>
    where
        S: Into<StatusCode>,
    {
        self.status_code = code.into();
        self
    }

    /// Returns the same request, but with different data.
    pub fn with_data<S>(self, reader: S, data_length: Option<usize>) -> Response<S>
    where
        S: Read,
    {
        Response {
            reader,
            headers: self.headers,
            status_code: self.status_code,
            data_length,
            chunked_threshold: self.chunked_threshold,
        }
    }

    /// Prints the HTTP response to a writer.
    ///
    /// This function is the one used to send the response to the client's socket.
    /// Therefore you shouldn't expect anything pretty-printed or even readable.
    ///
    /// The HTTP version and headers passed as arguments are used to
    ///  decide which features (most notably, encoding) to use.
    ///
    /// Note: does not flush the writer.
    pub fn raw_print<W: Write>(
        mut self,
        mut writer: W,
        http_version: HTTPVersion,
        request_headers: &[Header],
        do_not_send_body: bool,
        upgrade: Option<&str>,
    ) -> IoResult<()> {
        // PATCHED (patch 17): a trailer staged for an earlier answer on
        // this thread is not this one's.
        let _ = take_trailer();
        let mut transfer_encoding = Some(choose_transfer_encoding(
            self.status_code,
            request_headers,
            &http_version,
            &self.data_length,
            false, /* TODO */
            self.chunked_threshold(),
        ));

        // add `Date` if not in the headers
        if !self.headers.iter().any(|h| h.field.equiv("Date")) {
            self.headers.insert(0, build_date_header());
        }

        // add `Server` if not in the headers
        if !self.headers.iter().any(|h| h.field.equiv("Server")) {
            self.headers.insert(
                0,
                Header::from_bytes(&b"Server"[..], &b"tiny-http (Rust)"[..]).unwrap(),
            );
        }

        // handling upgrade
        if let Some(upgrade) = upgrade {
            self.headers.insert(
                0,
                Header::from_bytes(&b"Upgrade"[..], upgrade.as_bytes()).unwrap(),
            );
            self.headers.insert(
                0,
                Header::from_bytes(&b"Connection"[..], &b"upgrade"[..]).unwrap(),
            );
            transfer_encoding = None;
        }

        // if the transfer encoding is identity, the content length must be known ; therefore if
        // we don't know it, we buffer the entire response first here
        // while this is an expensive operation, it is only ever needed for clients using HTTP 1.0
        let (mut reader, data_length): (Box<dyn Read>, _) =
            match (self.data_length, transfer_encoding) {
                (Some(l), _) => (Box::new(self.reader), Some(l)),
                (None, Some(TransferEncoding::Identity)) => {
                    // PATCHED: an HTTP/1.0 client gets an answer of unknown
                    // length with its length, so it is buffered; within a
                    // bound, or the answer fails (and the connection is
                    // closed) instead of taking memory without end.
                    let mut buf = Vec::new();
                    (&mut self.reader)
                        .take(MAX_BUFFERED_ANSWER as u64 + 1)
                        .read_to_end(&mut buf)?;
                    if buf.len() > MAX_BUFFERED_ANSWER {
                        return Err(IoError::other(
                            "an answer of unknown length over the buffer bound for HTTP/1.0",
                        ));
                    }
                    let l = buf.len();
                    (Box::new(Cursor::new(buf)), Some(l))
                }
                _ => (Box::new(self.reader), None),
            };

        // checking whether to ignore the body of the response
        let do_not_send_body = do_not_send_body
            || match self.status_code.0 {
                // status code 1xx, 204 and 304 MUST not include a body
                100..=199 | 204 | 304 => true,
                _ => false,
            };

        // preparing headers for transfer
        match transfer_encoding {
            Some(TransferEncoding::Chunked) => self
                .headers
                .push(Header::from_bytes(&b"Transfer-Encoding"[..], &b"chunked"[..]).unwrap()),

            Some(TransferEncoding::Identity) => {
                assert!(data_length.is_some());
                let data_length = data_length.unwrap();

                self.headers.push(
                    Header::from_bytes(
                        &b"Content-Length"[..],
                        format!("{}", data_length).as_bytes(),
                    )
                    .unwrap(),
                )
            }

            _ => (),
        };

        // sending headers
        write_message_header(
            writer.by_ref(),
            &http_version,
            &self.status_code,
            &self.headers,
        )?;

        // sending the body
        if !do_not_send_body {
            match transfer_encoding {
                Some(TransferEncoding::Chunked) => {
                    // PATCHED: each read of the body is one chunk, written
                    // and flushed at once (patch 15); the last chunk only
                    // follows a body read to its end, so an answer cut
                    // short does not look complete (patch 9).
                    copy_flushed(&mut reader, &mut writer, None, true)?;
                    // PATCHED (patch 17): the last chunk carries the
                    // trailer the body staged before its end, if any.
                    writer.write_all(&last_chunk(&take_trailer()))?;
                }

                Some(TransferEncoding::Identity) => {
                    assert!(data_length.is_some());
                    let data_length = data_length.unwrap();

                    // PATCHED: exactly the declared length: fewer bytes would
                    // let the next answer on the connection be read as the
                    // rest of this one, more would be a second answer.
                    // Each read is written and flushed at once (patch 15).
                    if data_length >= 1 {
                        let length = Some(data_length as u64);
                        let copied = copy_flushed(&mut reader, &mut writer, length, false)?;
                        if copied != data_length as u64 {
                            return Err(IoError::new(
                                ErrorKind::UnexpectedEof,
                                "the answer's body is shorter than its length",
                            ));
                        }
                    }
                }

                _ => (),
            }
        }

        Ok(())
    }

    /// Retrieves the current value of the `Response` status code
    pub fn status_code(&self) -> StatusCode {
        self.status_code
    }

    /// Retrieves the current value of the `Response` data length
    pub fn data_length(&self) -> Option<usize> {
        self.data_length
    }

    /// Retrieves the current list of `Response` headers
    pub fn headers(&self) -> &[Header] {
        &self.headers
    }
}

impl<R> Response<R>
where
    R: Read + Send + 'static,
{
    /// Turns this response into a `Response<Box<Read + Send>>`.
    pub fn boxed(self) -> ResponseBox {
        Response {
            reader: Box::new(self.reader) as Box<dyn Read + Send>,
            status_code: self.status_code,
            headers: self.headers,
            data_length: self.data_length,
            chunked_threshold: self.chunked_threshold,
        }
    }
}

impl Response<File> {
    /// Builds a new `Response` from a `File`.
    ///
    /// The `Content-Type` will **not** be automatically detected,
    ///  you must set it yourself.
    pub fn from_file(file: File) -> Response<File> {
        let file_size = file.metadata().ok().map(|v| v.len() as usize);

        Response::new(
            StatusCode(200),
            Vec::with_capacity(0),
            file,
            file_size,
            None,
        )
    }
}

impl Response<Cursor<Vec<u8>>> {
    pub fn from_data<D>(data: D) -> Response<Cursor<Vec<u8>>>
    where
        D: Into<Vec<u8>>,
    {
        let data = data.into();
        let data_len = data.len();

        Response::new(
            StatusCode(200),
            Vec::with_capacity(0),
            Cursor::new(data),
            Some(data_len),
            None,
        )
    }

    pub fn from_string<S>(data: S) -> Response<Cursor<Vec<u8>>>
    where
        S: Into<String>,
    {
        let data = data.into();
        let data_len = data.len();

        Response::new(
            StatusCode(200),
            vec![
                Header::from_bytes(&b"Content-Type"[..], &b"text/plain; charset=UTF-8"[..])
                    .unwrap(),
            ],
            Cursor::new(data.into_bytes()),
            Some(data_len),
            None,
        )
    }
}

impl Response<io::Empty> {
    /// Builds an empty `Response` with the given status code.
    pub fn empty<S>(status_code: S) -> Response<io::Empty>
    where
        S: Into<StatusCode>,
    {
        Response::new(
            status_code.into(),
            Vec::with_capacity(0),
            io::empty(),
            Some(0),
            None,
        )
    }

    /// DEPRECATED. Use `empty` instead.
    pub fn new_empty(status_code: StatusCode) -> Response<io::Empty> {
        Response::empty(status_code)
    }
}

impl Clone for Response<io::Empty> {
    fn clone(&self) -> Response<io::Empty> {
        Response {
            reader: io::empty(),
            status_code: self.status_code,
            headers: self.headers.clone(),
            data_length: self.data_length,
            chunked_threshold: self.chunked_threshold,
        }
    }
}

/// PATCHED: the most of an answer of unknown length buffered for an
/// HTTP/1.0 client (which cannot take chunks).
pub const MAX_BUFFERED_ANSWER: usize = 1024 * 1024;

/// PATCHED: the most of the body one read asks for.
const READ_SIZE: usize = 16 * 1024;

// PATCHED (patch 17): trailer fields for the chunked answer this thread is
// writing. The body reader is read on the thread that writes the answer
// (rouille hands it over as a boxed reader, with no way to pass anything
// else), so a thread-local ties the two together.
std::thread_local! {
    static TRAILER: std::cell::RefCell<Vec<Header>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// PATCHED (patch 17): stages trailer fields for the answer being written on
/// this thread; the answer's body calls it before it returns its end (a
/// read of 0). They go out in the last chunk of a chunked answer, after the
/// body; an answer written with a `Content-Length` (or to an HTTP/1.0
/// client, or cut short) drops them. Announce them in a `Trailer` header.
pub fn stage_trailer(fields: Vec<Header>) {
    TRAILER.with(|t| *t.borrow_mut() = fields);
}

fn take_trailer() -> Vec<Header> {
    TRAILER.with(|t| std::mem::take(&mut *t.borrow_mut()))
}

/// The last chunk, with `trailer`'s fields (RFC 9112 §7.1.2).
fn last_chunk(trailer: &[Header]) -> Vec<u8> {
    let mut out = b"0\r\n".to_vec();
    for field in trailer {
        out.extend_from_slice(field.field.as_str().as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(field.value.as_str().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Room before the data for a chunk's size line (`ffffffff\r\n`).
const CHUNK_HEAD: usize = 10;

/// PATCHED (patch 15): copies `reader` to `writer` one read at a time, each
/// read written (as one chunk when `chunked`) and flushed as soon as it
/// returns, so that a streamed answer (server-sent events, a slow download)
/// reaches the client as the handler's reader yields it instead of waiting
/// in a buffer for more. A read returns what is available, so a fast body
/// still moves in large pieces: one write and one flush per read, never per
/// byte. Copies at most `limit` bytes; returns how many were copied. The
/// last chunk is the caller's to write, on success only.
fn copy_flushed<R: Read + ?Sized, W: Write>(
    reader: &mut R,
    writer: &mut W,
    limit: Option<u64>,
    chunked: bool,
) -> IoResult<u64> {
    // A short answer of known length gets a buffer of its size.
    let most = limit.map_or(READ_SIZE, |l| {
        READ_SIZE.min(usize::try_from(l).unwrap_or(usize::MAX))
    });
    let mut buf = vec![0u8; CHUNK_HEAD + most + 2];
    let mut copied = 0u64;
    loop {
        let want = match limit {
            Some(l) => most.min(usize::try_from(l - copied).unwrap_or(usize::MAX)),
            None => most,
        };
        if want == 0 {
            return Ok(copied);
        }
        let n = match reader.read(&mut buf[CHUNK_HEAD..CHUNK_HEAD + want]) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let piece = if chunked {
            // The size line right before the data, CRLF right after it:
            // the chunk goes out in one write.
            let size = format!("{n:x}\r\n");
            let start = CHUNK_HEAD - size.len();
            buf[start..CHUNK_HEAD].copy_from_slice(size.as_bytes());
            buf[CHUNK_HEAD + n..CHUNK_HEAD + n + 2].copy_from_slice(b"\r\n");
            &buf[start..CHUNK_HEAD + n + 2]
        } else {
            &buf[CHUNK_HEAD..CHUNK_HEAD + n]
        };
        writer.write_all(piece)?;
        writer.flush()?;
        copied += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Yields its pieces one read at a time, then fails if `fail`.
    struct Pieces {
        pieces: Vec<&'static [u8]>,
        fail: bool,
    }

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
            if self.pieces.is_empty() {
                return if self.fail {
                    Err(IoError::other("the source went away"))
                } else {
                    Ok(0)
                };
            }
            let piece = self.pieces.remove(0);
            buf[..piece.len()].copy_from_slice(piece);
            Ok(piece.len())
        }
    }

    /// Records what was on the wire at each flush.
    #[derive(Default)]
    struct Wire {
        bytes: Vec<u8>,
        at_flush: Vec<usize>,
    }

    impl Write for Wire {
        fn write(&mut self, buf: &[u8]) -> IoResult<usize> {
            self.bytes.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> IoResult<()> {
            self.at_flush.push(self.bytes.len());
            Ok(())
        }
    }

    fn print<R: Read>(
        reader: R,
        length: Option<usize>,
        version: HTTPVersion,
    ) -> (IoResult<()>, Wire) {
        let mut wire = Wire::default();
        let response = Response::new(StatusCode(200), vec![], reader, length, None)
            .with_chunked_threshold(usize::MAX);
        let result = response.raw_print(&mut wire, version, &[], false, None);
        (result, wire)
    }

    fn body(wire: &Wire) -> &[u8] {
        let end = wire
            .bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap();
        &wire.bytes[end + 4..]
    }

    #[test]
    fn each_read_of_a_chunked_answer_is_one_chunk_flushed_at_once() {
        let reader = Pieces {
            pieces: vec![b"data: 0\n\n", b"data: 1\n\n"],
            fail: false,
        };
        let (result, wire) = print(reader, None, HTTPVersion(1, 1));
        result.unwrap();
        assert_eq!(
            body(&wire),
            b"9\r\ndata: 0\n\n\r\n9\r\ndata: 1\n\n\r\n0\r\n\r\n"
        );
        // The head and the first chunk, then the second chunk, each flushed.
        let head = wire.bytes.len() - body(&wire).len();
        assert_eq!(wire.at_flush, vec![head + 14, head + 28]);
    }

    #[test]
    fn each_read_of_a_known_length_answer_is_flushed_at_once() {
        let reader = Pieces {
            pieces: vec![b"abc", b"defg"],
            fail: false,
        };
        let (result, wire) = print(reader, Some(7), HTTPVersion(1, 1));
        result.unwrap();
        assert_eq!(body(&wire), b"abcdefg");
        let head = wire.bytes.len() - 7;
        assert_eq!(wire.at_flush, vec![head + 3, head + 7]);
    }

    #[test]
    fn a_cut_answer_gets_no_last_chunk_and_a_short_one_is_an_error() {
        let cut = Pieces {
            pieces: vec![b"abc"],
            fail: true,
        };
        let (result, wire) = print(cut, None, HTTPVersion(1, 1));
        assert!(result.is_err());
        assert_eq!(body(&wire), b"3\r\nabc\r\n");
        let short = Pieces {
            pieces: vec![b"abc"],
            fail: false,
        };
        let (result, wire) = print(short, Some(5), HTTPVersion(1, 1));
        assert_eq!(result.unwrap_err().kind(), ErrorKind::UnexpectedEof);
        assert_eq!(body(&wire), b"abc");
    }

    /// Stages a trailer when its body ends, as a gateway body does.
    struct Trailing(Pieces, &'static str);

    impl Read for Trailing {
        fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
            let n = self.0.read(buf)?;
            if n == 0 {
                stage_trailer(vec![Header::from_bytes(self.1, "7").unwrap()]);
            }
            Ok(n)
        }
    }

    // PATCHED (patch 17)
    #[test]
    fn a_trailer_staged_at_the_end_goes_out_in_the_last_chunk_only() {
        let reader = Trailing(
            Pieces {
                pieces: vec![b"abc"],
                fail: false,
            },
            "X-Credit-Charged",
        );
        let (result, wire) = print(reader, None, HTTPVersion(1, 1));
        result.unwrap();
        assert_eq!(body(&wire), b"3\r\nabc\r\n0\r\nX-Credit-Charged: 7\r\n\r\n");
        // The next answer on this thread has none of it.
        let plain = Pieces {
            pieces: vec![b"abc"],
            fail: false,
        };
        let (result, wire) = print(plain, None, HTTPVersion(1, 1));
        result.unwrap();
        assert_eq!(body(&wire), b"3\r\nabc\r\n0\r\n\r\n");
        // A staged trailer left over (its answer had a length) is dropped
        // when the next answer starts.
        stage_trailer(vec![Header::from_bytes("X-Stale", "1").unwrap()]);
        let next = Pieces {
            pieces: vec![b"abc"],
            fail: false,
        };
        let (result, wire) = print(next, None, HTTPVersion(1, 1));
        result.unwrap();
        assert_eq!(body(&wire), b"3\r\nabc\r\n0\r\n\r\n");
    }
}
