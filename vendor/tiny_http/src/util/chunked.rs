//! PATCHED: a strict decoder for chunked request bodies (RFC 9112 §7.1).
//!
//! The `chunked_transfer` decoder it replaces appended chunk-size bytes to a
//! `Vec` with no limit until it saw a CR (one endless size line ran the
//! process out of memory, before any body limit could count a byte), took
//! `+5` and ` 5 ` as sizes, let a bare LF end a line and could not read
//! trailers. Here every line is bounded, sizes are 1*HEXDIG without
//! overflow, lines end in CRLF only, trailers are read (and dropped) within
//! a bound, and the source's end before the last chunk is an error.

use std::convert::TryFrom;
use std::io::{Error, ErrorKind, Read, Result};

/// A chunk-size line (with its extensions) or a trailer line may be this long.
pub const MAX_LINE: usize = 4096;
/// All trailer lines together may be this long.
pub const MAX_TRAILERS: usize = 16 * 1024;

enum State {
    Size,
    Data(u64),
    DataEnd,
    Trailers(usize),
    Done,
}

pub struct Chunked<R> {
    source: R,
    state: State,
}

fn bad(why: &'static str) -> Error {
    Error::new(ErrorKind::InvalidData, why)
}

impl<R: Read> Chunked<R> {
    pub fn new(source: R) -> Chunked<R> {
        Chunked {
            source,
            state: State::Size,
        }
    }

    fn byte(&mut self) -> Result<u8> {
        let mut b = [0u8; 1];
        match self.source.read(&mut b)? {
            0 => Err(Error::new(
                ErrorKind::UnexpectedEof,
                "the chunked request body was cut short",
            )),
            _ => Ok(b[0]),
        }
    }

    /// One line without its CRLF, at most `max` bytes; a bare LF or a CR
    /// not followed by LF is an error.
    fn line(&mut self, max: usize) -> Result<Vec<u8>> {
        let mut line = Vec::new();
        loop {
            match self.byte()? {
                b'\r' => {
                    return match self.byte()? {
                        b'\n' => Ok(line),
                        _ => Err(bad("a CR not followed by LF in a chunked body")),
                    }
                }
                b'\n' => return Err(bad("a bare LF in a chunked body")),
                b if line.len() >= max => {
                    let _ = b;
                    return Err(bad("a chunk-size or trailer line too long"));
                }
                b => line.push(b),
            }
        }
    }

    /// Reads what comes before the next chunk's data (or the body's end).
    fn advance(&mut self) -> Result<()> {
        loop {
            match self.state {
                State::Size => {
                    let line = self.line(MAX_LINE)?;
                    let size = chunk_size(&line)?;
                    self.state = if size == 0 {
                        State::Trailers(0)
                    } else {
                        State::Data(size)
                    };
                }
                State::DataEnd => {
                    if self.line(0)?.is_empty() {
                        self.state = State::Size;
                    }
                }
                State::Trailers(seen) => {
                    let line = self.line(MAX_LINE)?;
                    if line.is_empty() {
                        self.state = State::Done;
                    } else if seen + line.len() > MAX_TRAILERS {
                        return Err(bad("the trailers of a chunked body are too long"));
                    } else {
                        self.state = State::Trailers(seen + line.len());
                    }
                }
                State::Data(_) | State::Done => return Ok(()),
            }
        }
    }
}

/// `1*HEXDIG [ BWS ";" chunk-ext ]`, the size without overflow.
fn chunk_size(line: &[u8]) -> Result<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(bad("a chunk size is hex digits"));
    }
    let rest = &line[digits..];
    let ext = rest.iter().position(|&b| b != b' ' && b != b'\t');
    match ext.map(|i| rest[i]) {
        None if rest.is_empty() => {}
        Some(b';') => {}
        _ => {
            return Err(bad(
                "a chunk size is followed by nothing or by ';' extensions",
            ))
        }
    }
    let hex =
        std::str::from_utf8(&line[..digits]).map_err(|_| bad("a chunk size is hex digits"))?;
    u64::from_str_radix(hex, 16).map_err(|_| bad("a chunk size overflows"))
}

impl<R: Read> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.advance()?;
        let left = match self.state {
            State::Data(left) => left,
            _ => return Ok(0),
        };
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.source.read(&mut buf[..want])?;
        if n == 0 {
            return Err(Error::new(
                ErrorKind::UnexpectedEof,
                "the chunked request body was cut short",
            ));
        }
        let left = left - n as u64;
        self.state = if left == 0 {
            State::DataEnd
        } else {
            State::Data(left)
        };
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn decode(raw: &[u8]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        Chunked::new(Cursor::new(raw.to_vec())).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn well_formed_bodies_decode() {
        assert_eq!(
            decode(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n").unwrap(),
            b"hello world"
        );
        assert_eq!(
            decode(b"A;name=v\r\n0123456789\r\n0\r\n\r\n").unwrap(),
            b"0123456789"
        );
        assert_eq!(
            decode(b"3 ;x\r\nabc\r\n0\r\nX-T: 1\r\n\r\n").unwrap(),
            b"abc"
        );
        assert_eq!(decode(b"0\r\n\r\n").unwrap(), b"");
    }

    #[test]
    fn lenient_or_hostile_framing_is_an_error() {
        for raw in [
            &b"+5\r\nhello\r\n0\r\n\r\n"[..],
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"10000000000000000\r\n",
            b"5;a\rb\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhel",
            b"5\r\nhello\r\n",
        ] {
            assert!(decode(raw).is_err(), "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn an_endless_size_line_is_refused_within_its_bound() {
        let endless = std::io::repeat(b'0');
        let mut body = Chunked::new(endless);
        let e = body.read(&mut [0u8; 16]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidData);
    }

    #[test]
    fn endless_trailers_are_refused_within_their_bound() {
        let mut raw = b"0\r\n".to_vec();
        for _ in 0..10_000 {
            raw.extend_from_slice(b"X-Trailer: 1234567890\r\n");
        }
        assert!(decode(&raw).is_err());
    }
}
