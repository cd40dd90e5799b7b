//! What every edge takes from a request the same way: a body read within a
//! size limit (the admin API's JSON, the console's forms, a gateway route's
//! body). One reader, so that the limit, the error for a body cut short and
//! the "read one byte more to tell too large" rule live once. Credentials
//! and the admin token have their one home too: `api::credentials` and
//! `auth::token::same_secret`.

use std::io::Read;
use std::time::Instant;

use rouille::Request;

/// Why a body was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Cut short, too slow (the edge's minimum rate, or past the caller's
    /// deadline) or otherwise unreadable.
    Unreadable,
    /// Over the limit (by what was read; the rest is left unread).
    TooLarge,
}

/// The whole body, at most `limit` bytes; an absent body is empty.
pub fn bounded_body(req: &Request, limit: u64) -> Result<Vec<u8>, BodyError> {
    bounded_body_by(req, limit, None)
}

/// `bounded_body`, and whole by `deadline`: the edge's minimum rate alone
/// lets a 1 MiB body take 17 minutes, holding a thread and, on a gateway
/// route, a place in its bulkhead all along.
pub fn bounded_body_by(
    req: &Request,
    limit: u64,
    deadline: Option<Instant>,
) -> Result<Vec<u8>, BodyError> {
    let mut bytes = Vec::new();
    if let Some(body) = req.data() {
        // `read_to_end` reads into the vector's spare room without zeroing
        // it first: a zeroed 8 KiB chunk per request cost ~8,000
        // instructions (callgrind), more than parsing the JSON in it.
        let mut body = ByDeadline {
            inner: body,
            deadline,
        }
        .take(limit.saturating_add(1));
        body.read_to_end(&mut bytes)
            .map_err(|_| BodyError::Unreadable)?;
        if bytes.len() as u64 > limit {
            return Err(BodyError::TooLarge);
        }
    }
    Ok(bytes)
}

/// A body that fails once `deadline` has passed (checked before each read).
struct ByDeadline<R> {
    inner: R,
    deadline: Option<Instant>,
}

impl<R: Read> Read for ByDeadline<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.deadline.is_some_and(|d| Instant::now() > d) {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(body: &[u8]) -> Request {
        Request::fake_http("POST", "/x", vec![], body.to_vec())
    }

    #[test]
    fn a_body_within_the_limit_is_read_whole() {
        assert_eq!(bounded_body(&post(b"abc"), 3), Ok(b"abc".to_vec()));
        assert_eq!(bounded_body(&post(b""), 3), Ok(Vec::new()));
    }

    #[test]
    fn one_byte_over_the_limit_is_too_large() {
        assert_eq!(bounded_body(&post(b"abcd"), 3), Err(BodyError::TooLarge));
    }

    #[test]
    fn a_body_past_its_deadline_is_unreadable() {
        let past = Some(Instant::now() - std::time::Duration::from_secs(1));
        assert_eq!(
            bounded_body_by(&post(b"abc"), 3, past),
            Err(BodyError::Unreadable)
        );
    }
}
