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

/// A `Reader` that reads exactly the number of bytes from a sub-reader.
///
/// If the limit is reached, it returns EOF. If the limit is not reached
/// when the destructor is called, the remaining bytes will be read and
/// thrown away, through a fixed buffer and within `MAX_DRAIN_BYTES` and
/// `MAX_DRAIN_TIME`; past those the destructor sends an error to the
/// receiver instead, so that the connection is closed.
pub struct EqualReader<R>
where
    R: Read,
{
    reader: R,
    size: usize,
    last_read_signal: Sender<IoResult<()>>,
}

impl<R> EqualReader<R>
where
    R: Read,
{
    pub fn new(reader: R, size: usize) -> (EqualReader<R>, Receiver<IoResult<()>>) {
        let (tx, rx) = channel();

        let r = EqualReader {
            reader,
            size,
            last_read_signal: tx,
        };

        (r, rx)
    }
}

impl<R> Read for EqualReader<R>
where
    R: Read,
{
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        if self.size == 0 {
            return Ok(0);
        }

        let buf = if buf.len() < self.size {
            buf
        } else {
            &mut buf[..self.size]
        };

        match self.reader.read(buf) {
            Ok(len) => {
                self.size -= len;
                Ok(len)
            }
            err @ Err(_) => err,
        }
    }
}

impl<R> Drop for EqualReader<R>
where
    R: Read,
{
    fn drop(&mut self) {
        // PATCHED: this used to allocate `vec![0; remaining]`, so a request
        // declaring `Content-Length: 200000000000` aborted the whole process
        // (tiny-http issue #252), and it read whatever length was declared.
        let mut remaining_to_read = self.size;
        if remaining_to_read == 0 {
            return;
        }
        if remaining_to_read > MAX_DRAIN_BYTES {
            let e = IoError::new(ErrorKind::Other, "unread request body too long to drain");
            self.last_read_signal.send(Err(e)).ok();
            return;
        }

        let deadline = Instant::now() + MAX_DRAIN_TIME;
        let mut buf = [0u8; 4096];
        while remaining_to_read > 0 {
            if Instant::now() > deadline {
                let e = IoError::new(ErrorKind::TimedOut, "request body drained too slowly");
                self.last_read_signal.send(Err(e)).ok();
                return;
            }
            let want = remaining_to_read.min(buf.len());
            match self.reader.read(&mut buf[..want]) {
                Err(e) => {
                    self.last_read_signal.send(Err(e)).ok();
                    break;
                }
                Ok(0) => {
                    self.last_read_signal.send(Ok(())).ok();
                    break;
                }
                Ok(other) => {
                    remaining_to_read -= other;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::EqualReader;
    use std::io::Read;

    #[test]
    fn test_limit() {
        use std::io::Cursor;

        let mut org_reader = Cursor::new("hello world".to_string().into_bytes());

        {
            let (mut equal_reader, _) = EqualReader::new(org_reader.by_ref(), 5);

            let mut string = String::new();
            equal_reader.read_to_string(&mut string).unwrap();
            assert_eq!(string, "hello");
        }

        let mut string = String::new();
        org_reader.read_to_string(&mut string).unwrap();
        assert_eq!(string, " world");
    }

    #[test]
    fn test_not_enough() {
        use std::io::Cursor;

        let mut org_reader = Cursor::new("hello world".to_string().into_bytes());

        {
            let (mut equal_reader, _) = EqualReader::new(org_reader.by_ref(), 5);

            let mut vec = [0];
            equal_reader.read_exact(&mut vec).unwrap();
            assert_eq!(vec[0], b'h');
        }

        let mut string = String::new();
        org_reader.read_to_string(&mut string).unwrap();
        assert_eq!(string, " world");
    }

    #[test]
    fn drains_a_short_unread_body_through_a_small_buffer() {
        use std::io::Cursor;

        let body = vec![b'x'; 10_000];
        let mut org_reader = Cursor::new([body.as_slice(), b"next"].concat());

        let rx = {
            let (_equal_reader, rx) = EqualReader::new(org_reader.by_ref(), body.len());
            rx
        };

        assert!(rx.try_recv().is_err(), "a completed drain reports nothing");
        let mut string = String::new();
        org_reader.read_to_string(&mut string).unwrap();
        assert_eq!(string, "next");
    }

    #[test]
    fn refuses_to_drain_a_huge_declared_body() {
        use std::io::Cursor;

        // Declares 200 GB but holds 10 bytes: the old drop allocated 200 GB.
        let mut org_reader = Cursor::new(b"0123456789".to_vec());

        let rx = {
            let (_equal_reader, rx) = EqualReader::new(org_reader.by_ref(), 200_000_000_000);
            rx
        };

        assert!(matches!(rx.try_recv(), Ok(Err(_))), "the connection must be closed");
        assert_eq!(org_reader.position(), 0, "nothing was read");
    }
}
