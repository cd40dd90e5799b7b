//! What a key is stored under and what makes a keyed request "the same
//! request": pure functions, so the rules are tested without a database.

use sha2::{Digest, Sha256};

use crate::model::IdempotencyKey;

/// A gateway key's row is its own: scoped by the route's endpoint, so the
/// bank route and every route keep their answers apart. A TAB cannot occur
/// in a key (visible ASCII only).
pub fn scoped(endpoint: &str, key: &IdempotencyKey) -> String {
    format!("{endpoint}\t{}", key.as_str())
}

/// What makes a keyed request the same request: SHA-256 over method, path,
/// query and body.
pub fn fingerprint(method: &str, path: &str, raw_query: &str, body: Option<&[u8]>) -> String {
    let mut h = Sha256::new();
    for part in [method.as_bytes(), path.as_bytes(), raw_query.as_bytes()] {
        h.update(part);
        h.update(b"\n");
    }
    h.update(body.unwrap_or_default());
    crate::auth::token::hex(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_scoped_by_route() {
        let k = IdempotencyKey::parse("order-1").unwrap();
        assert_ne!(scoped("route:/a", &k), scoped("route:/b", &k));
        assert_ne!(scoped("route:/a", &k), "order-1");
    }

    #[test]
    fn every_part_of_the_request_counts() {
        let base = fingerprint("POST", "/a", "x=1", Some(b"{}"));
        assert_eq!(base, fingerprint("POST", "/a", "x=1", Some(b"{}")));
        assert_ne!(base, fingerprint("PUT", "/a", "x=1", Some(b"{}")));
        assert_ne!(base, fingerprint("POST", "/b", "x=1", Some(b"{}")));
        assert_ne!(base, fingerprint("POST", "/a", "x=2", Some(b"{}")));
        assert_ne!(base, fingerprint("POST", "/a", "x=1", Some(b"[]")));
    }
}
