use std::io::Read;
use std::io::Result as IoResult;
use std::io::{Error as IoError, ErrorKind};
use std::sync::mpsc::channel;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

/// PATCHED: an unread body of at most this many bytes is drained so that the
/// connection can carry the next request; a longer one is not read at all,
/// and the connection is closed instead (see `ClientConnection`).
pub const MAX_DRAIN_BYTES: usize = 64 * 1024;

/// PATCHED: draining gives up after this long (each read is further bounded
/// by the socket's read timeout), so a client that trickles its body cannot
/// hold the thread that drops the request.
pub const MAX_DRAIN_TIME: Duration = Duration::from_secs(2);

/// PATCHED: what a request's body reader leaves behind when it is dropped,
/// sent to the connection's thread (nothing sent: the body was read whole).
/// The connection's thread, not the handler's, drains an unread body, so a
/// client that trickles the body of a refused request holds no handler.
pub enum BodyLeft {
    /// This many bytes of the body are unread; the reader to drain them.
    Unread(Box<dyn Read + Send>, usize),
    /// The body cannot be skipped (cut short, failed, or chunked and not
    /// read to its end): what follows on the stream is not a request.
    Broken,
}

/// A `Reader` that reads exactly the number of bytes from a sub-reader.
///
/// If the limit is reached, it returns EOF. PATCHED: if the sub-reader ends
/// before the limit (the client sent less than it declared and closed),
/// that is an error, not a short body taken as whole. When dropped before
/// the limit, the reader and what is left go to the connection's thread
/// (`BodyLeft`).
pub struct EqualReader<R>
where
    R: Read + Send + 'static,
{
    reader: Option<R>,
    size: usize,
    broken: bool,
    last_read_signal: Sender<BodyLeft>,
}

impl<R> EqualReader<R>
where
    R: Read + Send + 'static,
{
    pub fn new(reader: R, size: usize) -> (EqualReader<R>, Receiver<BodyLeft>) {
        let (tx, rx) = channel();

        let r = EqualReader {
            reader: Some(reader),
            size,
            broken: false,
            last_read_signal: tx,
        };

        (r, rx)
    }
}

impl<R> Read for EqualReader<R>
where
    R: Read + Send + 'static,
{
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        if self.size == 0 || buf.is_empty() {
            return Ok(0);
        }
        let reader = self.reader.as_mut().expect("present until dropped");

        let buf = if buf.len() < self.size {
            buf
        } else {
            &mut buf[..self.size]
        };

        match reader.read(buf) {
            Ok(0) => {
                self.broken = true;
                Err(IoError::new(
                    ErrorKind::UnexpectedEof,
                    "the request body is shorter than its Content-Length",
                ))
            }
            Ok(len) => {
                self.size -= len;
                Ok(len)
            }
            Err(e) => {
                self.broken = true;
                Err(e)
            }
        }
    }
}

impl<R> Drop for EqualReader<R>
where
    R: Read + Send + 'static,
{
    fn drop(&mut self) {
        if self.size == 0 {
            return;
        }
        let left = match self.reader.take() {
            Some(reader) if !self.broken => BodyLeft::Unread(Box::new(reader), self.size),
            _ => BodyLeft::Broken,
        };
        self.last_read_signal.send(left).ok();
    }
}

/// PATCHED: drains an unread body on the connection's thread, through a
/// fixed buffer (this used to allocate `vec![0; remaining]`, so a request
/// declaring `Content-Length: 200000000000` aborted the whole process,
/// tiny-http issue #252), and only within `MAX_DRAIN_BYTES` and
/// `MAX_DRAIN_TIME`; `Err` means the connection must be closed.
pub fn drain(left: BodyLeft) -> IoResult<()> {
    let (mut reader, mut remaining) = match left {
        BodyLeft::Unread(reader, remaining) => (reader, remaining),
        BodyLeft::Broken => return Err(IoError::other("request body broken")),
    };
    if remaining > MAX_DRAIN_BYTES {
        return Err(IoError::new(
            ErrorKind::Other,
            "unread request body too long to drain",
        ));
    }
    let deadline = Instant::now() + MAX_DRAIN_TIME;
    let mut buf = [0u8; 4096];
    while remaining > 0 {
        if Instant::now() > deadline {
            return Err(IoError::new(
                ErrorKind::TimedOut,
                "request body drained too slowly",
            ));
        }
        let want = remaining.min(buf.len());
        match reader.read(&mut buf[..want])? {
            0 => {
                return Err(IoError::new(
                    ErrorKind::UnexpectedEof,
                    "request body cut short",
                ))
            }
            n => remaining -= n,
        }
    }
    Ok(())
}

/// PATCHED: a chunked body, decoded strictly (`util::chunked`). Not read to
/// its end, it cannot be skipped: `Broken`.
pub struct ChunkedBody<R: Read> {
    decoder: super::chunked::Chunked<R>,
    done: bool,
    last_read_signal: Sender<BodyLeft>,
}

impl<R: Read> ChunkedBody<R> {
    pub fn new(source: R) -> (ChunkedBody<R>, Receiver<BodyLeft>) {
        let (tx, rx) = channel();
        let body = ChunkedBody {
            decoder: super::chunked::Chunked::new(source),
            done: false,
            last_read_signal: tx,
        };
        (body, rx)
    }
}

impl<R: Read> Read for ChunkedBody<R> {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let n = self.decoder.read(buf)?;
        self.done = n == 0;
        Ok(n)
    }
}

impl<R: Read> Drop for ChunkedBody<R> {
    fn drop(&mut self) {
        if !self.done {
            self.last_read_signal.send(BodyLeft::Broken).ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{drain, BodyLeft, ChunkedBody, EqualReader};
    use std::io::{Cursor, ErrorKind, Read};

    #[test]
    fn test_limit() {
        let mut org_reader = Cursor::new("hello world".to_string().into_bytes());
        let (mut equal_reader, _) = EqualReader::new(org_reader.clone(), 5);
        let mut string = String::new();
        equal_reader.read_to_string(&mut string).unwrap();
        assert_eq!(string, "hello");
        org_reader.set_position(5);
        let mut rest = String::new();
        org_reader.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, " world");
    }

    #[test]
    fn a_body_shorter_than_declared_is_an_error() {
        let (mut r, rx) = EqualReader::new(Cursor::new(b"abc".to_vec()), 5);
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
        drop(r);
        assert!(matches!(rx.try_recv(), Ok(BodyLeft::Broken)));
    }

    #[test]
    fn an_unread_body_goes_to_the_connection_to_be_drained() {
        let body = vec![b'x'; 10_000];
        let (mut r, rx) =
            EqualReader::new(Cursor::new([body.as_slice(), b"next"].concat()), 10_000);
        let mut first = [0u8; 10];
        r.read_exact(&mut first).unwrap();
        drop(r);
        let left = rx.try_recv().expect("something is left");
        assert!(matches!(left, BodyLeft::Unread(_, 9_990)));
        drain(left).unwrap();
    }

    #[test]
    fn a_body_read_whole_leaves_nothing() {
        let (mut r, rx) = EqualReader::new(Cursor::new(b"abc".to_vec()), 3);
        r.read_to_end(&mut Vec::new()).unwrap();
        drop(r);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn refuses_to_drain_a_huge_declared_body() {
        // Declares 200 GB but holds 10 bytes: the old drop allocated 200 GB.
        let (r, rx) = EqualReader::new(Cursor::new(b"0123456789".to_vec()), 200_000_000_000);
        drop(r);
        assert!(
            drain(rx.try_recv().unwrap()).is_err(),
            "the connection must be closed"
        );
    }

    #[test]
    fn a_complete_chunked_body_reads_to_its_end() {
        let (mut r, rx) = ChunkedBody::new(Cursor::new(b"3\r\nabc\r\n0\r\n\r\nNEXT".to_vec()));
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc");
        drop(r);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_chunked_body_cut_mid_chunk_is_an_error() {
        let (mut r, rx) = ChunkedBody::new(Cursor::new(b"a\r\nabc".to_vec()));
        let e = r.read_to_end(&mut Vec::new()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
        drop(r);
        assert!(matches!(rx.try_recv(), Ok(BodyLeft::Broken)));
    }
}
