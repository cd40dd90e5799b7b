//! PATCHED: the request head, parsed strictly, and the body's framing.
//!
//! The original parser read the head byte by byte and was lenient where
//! leniency lets one request hide inside another: it turned obs-folded
//! lines into headers, let a bare CR pass, took `+44` as a length and
//! `44, 45` or `-1` as "no body", and decoded any `Transfer-Encoding` as
//! chunked. The head is now parsed by `httparse` (the parser under hyper,
//! strict by default: obs-fold, bare CR and bad tokens are errors) from
//! the connection's buffer in one pass, and `framing` decides the body's
//! length as RFC 9112 §6 says, refusing everything ambiguous.

use ascii::AsciiString;

use crate::common::{HTTPVersion, Header, HeaderField, Method, StatusCode};

/// At most this many header lines; more is answered 431.
pub(crate) const MAX_HEADERS: usize = 128;

/// A parsed request head.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) version: HTTPVersion,
    pub(crate) headers: Vec<Header>,
}

/// Why a head is refused; each is answered and the connection closed,
/// since where the next request would start is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadError {
    /// Malformed (obs-fold, bare CR, bad token, not ASCII, …): 400.
    Malformed,
    /// Not HTTP/1.0 or 1.1: 505.
    Version,
    /// Too many header lines: 431.
    TooManyHeaders,
}

impl HeadError {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            HeadError::Malformed => StatusCode(400),
            HeadError::Version => StatusCode(505),
            HeadError::TooManyHeaders => StatusCode(431),
        }
    }
}

/// `Ok(None)`: the head is not complete yet. `Ok(Some((head, len)))`: the
/// head is the first `len` bytes of `buf`.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::Version) => return Err(version_error(buf)),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(_) => return Err(HeadError::Malformed),
    };
    let method = req.method.and_then(|m| m.parse().ok());
    let path = req.path.map(str::to_owned);
    let version = match req.version {
        Some(0) => HTTPVersion(1, 0),
        Some(1) => HTTPVersion(1, 1),
        _ => return Err(HeadError::Version),
    };
    let (Some(method), Some(path)) = (method, path) else {
        return Err(HeadError::Malformed);
    };
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let field = HeaderField::from_bytes(h.name).map_err(|_| HeadError::Malformed)?;
        let value = AsciiString::from_ascii(h.value).map_err(|_| HeadError::Malformed)?;
        headers.push(Header { field, value });
    }
    Ok(Some((
        Head {
            method,
            path,
            version,
            headers,
        },
        len,
    )))
}

/// httparse says "version" for any third token it cannot take: 505 only
/// for a well-formed `HTTP/<digit>.<digit>` that is not 1.0 or 1.1 (RFC
/// 9110 §15.6.6); anything else (`GET /a b HTTP/1.1`, `http/1.1`) is a
/// malformed request line, 400.
fn version_error(buf: &[u8]) -> HeadError {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    match parts.as_slice() {
        [_, _, v] if v.len() == 8 && v.starts_with(b"HTTP/") && v[6] == b'.' => {
            if v[5].is_ascii_digit() && v[7].is_ascii_digit() {
                HeadError::Version
            } else {
                HeadError::Malformed
            }
        }
        _ => HeadError::Malformed,
    }
}

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// The body's framing by RFC 9112 §6.1–6.3, or `Err` for a request whose
/// framing is ambiguous or unsupported (answered 400, connection closed):
/// both `Content-Length` and `Transfer-Encoding`; a transfer coding other
/// than exactly `chunked`; `Transfer-Encoding` on HTTP/1.0; a length that
/// is not 1*DIGIT, overflows, or differs between repeats.
pub(crate) fn framing(headers: &[Header], version: &HTTPVersion) -> Result<Framing, ()> {
    let values = |name: &'static str| -> Vec<&str> {
        headers
            .iter()
            .filter(|h| h.field.equiv(name))
            .flat_map(|h| h.value.as_str().split(','))
            .map(|v| v.trim_matches(|c| c == ' ' || c == '\t'))
            .collect()
    };
    let codings = values("Transfer-Encoding");
    let lengths = values("Content-Length");
    if !codings.is_empty() {
        let only_chunked = codings.len() == 1 && codings[0].eq_ignore_ascii_case("chunked");
        if !lengths.is_empty() || !only_chunked || *version < HTTPVersion(1, 1) {
            return Err(());
        }
        return Ok(Framing::Chunked);
    }
    let mut length = None;
    for v in lengths {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(());
        }
        let n: u64 = v.parse().map_err(|_| ())?;
        if length.is_some_and(|l| l != n) {
            return Err(());
        }
        length = Some(n);
    }
    Ok(length.map_or(Framing::None, Framing::Length))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Option<(Head, usize)>, HeadError> {
        parse(raw.as_bytes())
    }

    fn framing_of(lines: &[&str]) -> Result<Framing, ()> {
        let headers: Vec<Header> = lines.iter().map(|l| l.parse().unwrap()).collect();
        framing(&headers, &HTTPVersion(1, 1))
    }

    #[test]
    fn a_plain_head_parses_and_says_where_it_ends() {
        let raw = "GET /a?b HTTP/1.1\r\nHost: x\r\nX-A:  v  \r\n\r\nBODY";
        let (h, len) = head(raw).unwrap().unwrap();
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.path, "/a?b");
        assert_eq!(h.version, HTTPVersion(1, 1));
        assert_eq!(h.headers.len(), 2);
        assert_eq!(h.headers[1].value.as_str(), "v");
        assert_eq!(&raw[len..], "BODY");
    }

    #[test]
    fn an_unfinished_head_asks_for_more() {
        assert!(head("GET / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        assert!(head("GET / HT").unwrap().is_none());
    }

    #[test]
    fn http_2_and_3_request_lines_are_505() {
        assert_eq!(
            head("GET / HTTP/2.0\r\n\r\n").unwrap_err(),
            HeadError::Version
        );
        assert_eq!(
            head("GET / HTTP/3.0\r\n\r\n").unwrap_err(),
            HeadError::Version
        );
        assert_eq!(
            head("PRI * HTTP/2.0\r\n\r\n").unwrap_err(),
            HeadError::Version
        );
    }

    #[test]
    fn a_malformed_request_line_is_400_not_505() {
        for raw in [
            "GET /a b HTTP/1.1\r\n\r\n",
            "GET /health http/1.1\r\n\r\n",
            "GET /health HTTP/x.y\r\n\r\n",
            "GET /health HTTP/1.1 x\r\n\r\n",
        ] {
            assert_eq!(head(raw).unwrap_err(), HeadError::Malformed, "{raw:?}");
        }
        assert_eq!(
            head("GET / HTTP/1.2\r\n\r\n").unwrap_err(),
            HeadError::Version
        );
    }

    #[test]
    fn obs_fold_bare_cr_and_bad_tokens_are_malformed() {
        for raw in [
            "GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n",
            "GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n",
            "GET / HTTP/1.1\r\nX A: a\r\n\r\n",
            "GET / HTTP/1.1\r\n: a\r\n\r\n",
            "G(T / HTTP/1.1\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nX-A: caf\u{e9}\r\n\r\n",
        ] {
            assert_eq!(head(raw).unwrap_err(), HeadError::Malformed, "{raw:?}");
        }
    }

    #[test]
    fn too_many_header_lines_are_431() {
        let mut raw = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            raw.push_str(&format!("X-{i}: v\r\n"));
        }
        raw.push_str("\r\n");
        assert_eq!(head(&raw).unwrap_err(), HeadError::TooManyHeaders);
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let ok = |lines: &[&str], f: Framing| assert_eq!(framing_of(lines), Ok(f), "{lines:?}");
        let bad = |lines: &[&str]| assert_eq!(framing_of(lines), Err(()), "{lines:?}");
        ok(&[], Framing::None);
        ok(&["Content-Length: 44"], Framing::Length(44));
        ok(&["Content-Length: 0"], Framing::Length(0));
        ok(&["Content-Length: 44, 44"], Framing::Length(44));
        ok(
            &["Content-Length: 44", "Content-Length: 44"],
            Framing::Length(44),
        );
        ok(&["Transfer-Encoding: chunked"], Framing::Chunked);
        ok(&["Transfer-Encoding: Chunked"], Framing::Chunked);
        bad(&["Content-Length: 5", "Transfer-Encoding: chunked"]);
        bad(&["Transfer-Encoding: xchunked"]);
        bad(&["Transfer-Encoding: chunked, chunked"]);
        bad(&["Transfer-Encoding: gzip, chunked"]);
        bad(&["Transfer-Encoding: identity"]);
        bad(&["Transfer-Encoding: "]);
        bad(&["Content-Length: +44"]);
        bad(&["Content-Length: -1"]);
        bad(&["Content-Length: 44, 45"]);
        bad(&["Content-Length: 44", "Content-Length: 45"]);
        bad(&["Content-Length: 4 4"]);
        bad(&["Content-Length: "]);
        bad(&["Content-Length: 44,"]);
        bad(&["Content-Length: 0x10"]);
        bad(&["Content-Length: 99999999999999999999999"]);
    }

    #[test]
    fn transfer_encoding_on_http_1_0_is_refused() {
        let headers: Vec<Header> = vec!["Transfer-Encoding: chunked".parse().unwrap()];
        assert_eq!(framing(&headers, &HTTPVersion(1, 0)), Err(()));
    }
}
