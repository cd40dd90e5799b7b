//! API tokens and the credentials that carry them. Tokens are made here,
//! stored only as SHA-256, and compared in constant time. Credentials are
//! parsed from the four places a client may send them (Bearer, Basic, the
//! raw `Authorization` form and `?token=`). Pure: no I/O here.

use base64::Engine;
use sha2::{Digest, Sha256};

/// Characters of a token kept in clear, for display and logs.
pub const PREFIX_LEN: usize = 8;

/// A new user token: `cg_` plus 192 random bits, URL-safe base64.
pub fn generate() -> String {
    generate_with("cg_")
}

/// A new token: `kind` (`cg_` for users, `cgs_` for services, so that a
/// token says what it is in a log or a leak report) plus 192 random bits,
/// URL-safe base64.
pub fn generate_with(kind: &str) -> String {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    format!(
        "{kind}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Hex SHA-256 of a token, as stored in `users.token_hash`.
pub fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Lower-case hex of `bytes`. By table, not `write!("{:02x}")`: every paid
/// request hashes its token, and the formatter spent ~7,500 instructions
/// on the 32 bytes (callgrind), about 4 % of a whole request.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// The part of a token that may be shown: its first characters, but never
/// more than a quarter of it. Imported tokens (the Flask sample's) may be
/// short; a fixed-length prefix would show such a token whole. It stops
/// before the first character that is not ASCII: the column is ASCII (and
/// the prefix is written to logs), while an imported token may hold any
/// visible character.
pub fn prefix(token: &str) -> String {
    let n = PREFIX_LEN.min(token.chars().count() / 4);
    token.chars().take(n).take_while(char::is_ascii).collect()
}

/// Does `token` hash to `stored_hash`? Constant time in the content.
pub fn verify(token: &str, stored_hash: &str) -> bool {
    constant_time_eq(hash(token).as_bytes(), stored_hash.as_bytes())
}

/// Spends what `verify` spends, for the unknown-user path, so that a miss
/// costs what a hit costs.
pub fn verify_dummy(token: &str) -> bool {
    const DUMMY: &str = "0000000000000000000000000000000000000000000000000000000000000000";
    let _ = constant_time_eq(hash(token).as_bytes(), DUMMY.as_bytes());
    false
}

/// Compares without an early exit, so timing tells nothing about where two
/// secrets differ.
/// Whether `given` is the operator's secret (the admin token), compared by
/// digest in constant time: digests have one length, so the compare does
/// not tell how long the secret is either. The admin API and the console's
/// login both ask this.
pub fn same_secret(given: &str, expected: &str) -> bool {
    constant_time_eq(hash(given).as_bytes(), hash(expected).as_bytes())
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// `username:token` as sent by a caller. The username is not validated here:
/// a malformed one is simply unknown, and costs the same as one.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}:{}…)", self.username, prefix(&self.token))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialsError {
    /// Nothing to authenticate with, or something that is not `user:token`.
    Missing,
    /// Credentials in more than one place.
    Ambiguous,
}

impl Credentials {
    /// From every `Authorization` header value and the `?token=` values
    /// (already percent-decoded; pass none when that form is turned off).
    pub fn parse(
        auth_headers: &[&str],
        query_tokens: &[&str],
    ) -> Result<Credentials, CredentialsError> {
        if auth_headers.len() + query_tokens.len() > 1 {
            return Err(CredentialsError::Ambiguous);
        }
        let pair = match auth_headers.first() {
            Some(h) => from_header(h),
            None => query_tokens.first().map(|q| q.to_string()),
        };
        pair.and_then(|p| split_pair(&p))
            .ok_or(CredentialsError::Missing)
    }
}

/// The credentials of an `Authorization: Bearer <x>` value (scheme in any
/// case, blanks after it skipped); `None` for any other scheme.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim_start_matches(' '))
}

fn from_header(value: &str) -> Option<String> {
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if let Some(pair) = bearer(value) {
        Some(pair.to_string())
    } else if scheme.eq_ignore_ascii_case("bearer") {
        // `Bearer` alone: nothing to authenticate with.
        Some(String::new())
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim_start_matches(' '))
            .ok()?;
        String::from_utf8(decoded).ok()
    } else {
        // The sample's raw form: the whole value is `username:token`.
        Some(value.to_string())
    }
}

/// Splits at the FIRST `:`; the token may itself contain `:`.
fn split_pair(pair: &str) -> Option<Credentials> {
    let (username, token) = pair.split_once(':')?;
    if username.is_empty() || token.is_empty() {
        return None;
    }
    Some(Credentials {
        username: username.to_string(),
        token: token.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // See: #26. The prefix column is CHARACTER SET ascii.
    #[test]
    fn a_prefix_is_ascii_and_stops_before_any_other_character() {
        assert_eq!(prefix("abcdefghijklmnopqrstuvwxyz012345"), "abcdefgh");
        assert_eq!(prefix("ab¸defghijklmnop"), "ab");
        assert_eq!(prefix("¸bcdefghijklmnop"), "");
    }

    #[test]
    fn a_prefix_never_shows_a_short_token_whole() {
        let t = generate();
        assert_eq!(prefix(&t), &t[..PREFIX_LEN]);
        assert_eq!(prefix("abcdefgh"), "ab");
        assert_eq!(prefix("abc"), "");
    }

    fn creds(u: &str, t: &str) -> Credentials {
        Credentials {
            username: u.into(),
            token: t.into(),
        }
    }

    #[test]
    fn generated_tokens_are_prefixed_url_safe_and_distinct() {
        let a = generate();
        let b = generate();
        assert!(a.starts_with("cg_"));
        assert_eq!(a.len(), 3 + 32);
        assert!(a[3..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(a, b);
    }

    #[test]
    fn hash_is_hex_sha256() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn verify_accepts_only_the_exact_token() {
        let h = hash("cg_secret");
        assert!(verify("cg_secret", &h));
        for bad in [
            "cg_secre",
            "cg_secretx",
            "CG_SECRET",
            " cg_secret",
            "cg_secret\n",
            "",
        ] {
            assert!(!verify(bad, &h), "{bad:?} verified");
        }
        assert!(!verify_dummy("cg_secret"));
    }

    #[test]
    fn all_four_forms_parse() {
        let want = creds("alice", "cg_t");
        assert_eq!(
            Credentials::parse(&["Bearer alice:cg_t"], &[]),
            Ok(want.clone())
        );
        assert_eq!(
            Credentials::parse(&["bearer alice:cg_t"], &[]),
            Ok(want.clone())
        );
        assert_eq!(
            Credentials::parse(&["Basic YWxpY2U6Y2dfdA=="], &[]),
            Ok(want.clone())
        );
        assert_eq!(Credentials::parse(&["alice:cg_t"], &[]), Ok(want.clone()));
        assert_eq!(Credentials::parse(&[], &["alice:cg_t"]), Ok(want));
    }

    #[test]
    fn bearer_takes_any_case_and_skips_blanks() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bEaReR   abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
        assert_eq!(bearer("abc"), None);
    }

    #[test]
    fn the_token_may_contain_colons() {
        assert_eq!(
            Credentials::parse(&["Bearer alice:a:b:c"], &[]),
            Ok(creds("alice", "a:b:c"))
        );
    }

    #[test]
    fn two_places_are_ambiguous() {
        assert_eq!(
            Credentials::parse(&["a:b", "a:b"], &[]),
            Err(CredentialsError::Ambiguous)
        );
        assert_eq!(
            Credentials::parse(&["a:b"], &["a:b"]),
            Err(CredentialsError::Ambiguous)
        );
        assert_eq!(
            Credentials::parse(&[], &["a:b", "a:b"]),
            Err(CredentialsError::Ambiguous)
        );
    }

    #[test]
    fn malformed_credentials_are_missing() {
        for bad in [
            "",
            "Bearer",
            "Bearer alice",
            "Bearer :",
            ":",
            "alice:",
            ":tok",
            "Basic !!!",
            "Basic YWxpY2U=",
        ] {
            assert_eq!(
                Credentials::parse(&[bad], &[]),
                Err(CredentialsError::Missing),
                "{bad:?}"
            );
        }
        assert_eq!(Credentials::parse(&[], &[]), Err(CredentialsError::Missing));
    }

    #[test]
    fn debug_never_shows_the_token() {
        let shown = format!("{:?}", creds("alice", "cg_abcdefghijklmnop"));
        assert!(!shown.contains("ijklmnop"), "{shown}");
    }
}
