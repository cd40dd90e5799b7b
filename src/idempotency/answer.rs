//! The stored first answer of a billed, keyed gateway request, so that a
//! retry with the same key and request is answered from it instead of
//! being forwarded again (forwarding it again gave one credit unlimited
//! upstream calls and repeated a POST's effect at the upstream).
//!
//! `Recorder` wraps the answer's body on its way to the client: it keeps a
//! copy up to the limit and, when the body ends, hands the whole answer (or
//! "too large", or "cut short") to a callback that writes it down. The
//! stored form is one JSON line (status and headers) and then the body,
//! in the key's `answer` column.

use std::io::{self, Read};

use serde::{Deserialize, Serialize};

/// An answer as stored and replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl StoredAnswer {
    pub fn encode(&self) -> Vec<u8> {
        let head = Head {
            status: self.status,
            headers: self.headers.clone(),
        };
        let mut out = serde_json::to_vec(&head).expect("a head serialises");
        out.push(b'\n');
        out.extend_from_slice(&self.body);
        out
    }

    /// `None` for bytes that are not a stored answer.
    pub fn decode(bytes: &[u8]) -> Option<StoredAnswer> {
        let end = bytes.iter().position(|&b| b == b'\n')?;
        let head: Head = serde_json::from_slice(&bytes[..end]).ok()?;
        Some(StoredAnswer {
            status: head.status,
            headers: head.headers,
            body: bytes[end + 1..].to_vec(),
        })
    }
}

/// How the recorded body ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// Whole, and within the limit: store it.
    Whole(StoredAnswer),
    /// Whole, but over the limit: a retry is answered 409.
    TooLarge,
    /// Cut short (the upstream failed, or the client went away).
    Cut,
}

type Done = Box<dyn FnOnce(Recorded) + Send>;

/// Passes a body through, keeping a copy of up to `limit` bytes; calls
/// `done` once, when the body ends (its end read, or its declared `length`
/// passed on: the server stops reading there) or the recorder is dropped.
pub struct Recorder<R> {
    inner: R,
    status: u16,
    headers: Vec<(String, String)>,
    copy: Option<Vec<u8>>,
    limit: u64,
    length: Option<u64>,
    seen: u64,
    done: Option<Done>,
}

impl<R: Read> Recorder<R> {
    pub fn new(
        inner: R,
        status: u16,
        headers: Vec<(String, String)>,
        length: Option<u64>,
        limit: u64,
        done: impl FnOnce(Recorded) + Send + 'static,
    ) -> Recorder<R> {
        Recorder {
            inner,
            status,
            headers,
            copy: Some(Vec::new()),
            limit,
            length,
            seen: 0,
            done: Some(Box::new(done)),
        }
    }

    fn whole(&mut self) -> Recorded {
        match self.copy.take() {
            Some(body) => Recorded::Whole(StoredAnswer {
                status: self.status,
                headers: std::mem::take(&mut self.headers),
                body,
            }),
            None => Recorded::TooLarge,
        }
    }

    fn finish(&mut self, how: impl FnOnce(&mut Self) -> Recorded) {
        if self.done.is_some() {
            let recorded = how(self);
            if let Some(done) = self.done.take() {
                done(recorded);
            }
        }
    }
}

impl<R: Read> Read for Recorder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) => {
                self.finish(|_| Recorded::Cut);
                return Err(e);
            }
        };
        if n == 0 && !buf.is_empty() {
            self.finish(Self::whole);
            return Ok(0);
        }
        if let Some(copy) = self.copy.as_mut() {
            if (copy.len() + n) as u64 > self.limit {
                self.copy = None;
            } else {
                copy.extend_from_slice(&buf[..n]);
            }
        }
        self.seen += n as u64;
        if self.length == Some(self.seen) {
            self.finish(Self::whole);
        }
        Ok(n)
    }
}

impl<R> Drop for Recorder<R> {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done(Recorded::Cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::sync::mpsc;

    fn answer() -> StoredAnswer {
        StoredAnswer {
            status: 201,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: b"line one\nline two\n\x00\xff".to_vec(),
        }
    }

    #[test]
    fn an_answer_round_trips_byte_for_byte() {
        let a = answer();
        assert_eq!(StoredAnswer::decode(&a.encode()), Some(a));
        assert_eq!(StoredAnswer::decode(b"not json\nbody"), None);
        assert_eq!(StoredAnswer::decode(b"no newline"), None);
    }

    fn record(body: &[u8], limit: u64, read_all: bool) -> Recorded {
        record_with(body, None, limit, read_all)
    }

    fn record_with(body: &[u8], length: Option<u64>, limit: u64, read_all: bool) -> Recorded {
        let (tx, rx) = mpsc::channel();
        let mut r = Recorder::new(
            Cursor::new(body.to_vec()),
            201,
            answer().headers,
            length,
            limit,
            move |rec| tx.send(rec).unwrap(),
        );
        let mut out = Vec::new();
        if read_all {
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, body, "the client gets the body unchanged");
        } else {
            let mut some = [0u8; 3];
            r.read_exact(&mut some).unwrap();
        }
        drop(r);
        let got = rx.recv().unwrap();
        assert!(rx.try_recv().is_err(), "done is called once");
        got
    }

    #[test]
    fn a_whole_body_within_the_limit_is_recorded() {
        let body = answer().body;
        assert_eq!(record(&body, 1024, true), Recorded::Whole(answer()));
        assert_eq!(
            record(&body, body.len() as u64, true),
            Recorded::Whole(answer())
        );
    }

    #[test]
    fn a_body_of_its_declared_length_is_whole_without_its_end_being_read() {
        // The server copies exactly the declared length and stops reading.
        let body = answer().body;
        let (tx, rx) = mpsc::channel();
        let r = Recorder::new(
            Cursor::new(body.clone()),
            201,
            answer().headers,
            Some(body.len() as u64),
            1024,
            move |rec| tx.send(rec).unwrap(),
        );
        let mut out = Vec::new();
        r.take(body.len() as u64).read_to_end(&mut out).unwrap();
        assert_eq!(rx.recv().unwrap(), Recorded::Whole(answer()));
        assert_eq!(record_with(b"abcdef", Some(10), 1024, false), Recorded::Cut);
    }

    #[test]
    fn a_body_over_the_limit_is_passed_on_but_not_recorded() {
        assert_eq!(record(&[7u8; 5000], 4999, true), Recorded::TooLarge);
    }

    #[test]
    fn a_body_not_read_to_its_end_is_cut() {
        assert_eq!(record(b"abcdef", 1024, false), Recorded::Cut);
    }
}
