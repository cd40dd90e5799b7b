//! Who the client is, when creditgate sits behind a proxy: the
//! `CREDITGATE_TRUSTED_PROXIES` list (CIDR blocks) and the client address a
//! trusted proxy reports in `X-Forwarded-For`. Pure; the failed-login
//! brake counts per such client, and the per-address connection cap leaves
//! trusted proxies alone. (The gateway passes the `X-Forwarded-For` chain on
//! with the socket's peer appended, as proxies do, for the upstream to
//! weigh with its own trust.)
//!
//! Only the proxies the operator named are believed: a client that sends
//! its own `X-Forwarded-For` straight to creditgate is its socket's address,
//! whatever it claims. Behind a chain, the client is the rightmost address
//! that is not a trusted proxy (RFC 7239 §5.2's reasoning: every hop appends).

use std::fmt;
use std::net::IpAddr;

/// One CIDR block, e.g. `10.0.0.0/8` or `::1/128` (a bare address is /32
/// or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrError(String);

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CidrError {}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, CidrError> {
        let bad = || CidrError(format!("{s:?} is not an address or a CIDR block"));
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let net: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) if !b.is_empty() && b.bytes().all(|c| c.is_ascii_digit()) => {
                b.parse::<u8>().ok().filter(|&b| b <= max).ok_or_else(bad)?
            }
            Some(_) => return Err(bad()),
        };
        Ok(Cidr { net, bits })
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        let ip = canonical(*ip);
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), self.bits),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), self.bits),
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, as a dual-stack socket
/// reports IPv4 peers) is its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = usize::from(bits / 8);
    if a[..full] != b[..full] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || (a[full] ^ b[full]) >> (8 - rest) == 0
}

/// The operator's trusted proxies; empty = trust no one (the default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// A comma-separated list of CIDR blocks.
    pub fn parse(s: &str) -> Result<TrustedProxies, CidrError> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(Cidr::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn trusts(&self, ip: &IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client's address: the socket's peer, or, when the peer is a
    /// trusted proxy, the rightmost `X-Forwarded-For` entry that is not a
    /// trusted proxy itself (`forwarded_for`: every header value in order).
    /// An entry that is not an address ends the walk there: what lies left
    /// of it is whatever the client made up.
    pub fn client(&self, peer: IpAddr, forwarded_for: &[&str]) -> IpAddr {
        if !self.trusts(&peer) {
            return peer;
        }
        let mut client = peer;
        let hops = forwarded_for.iter().flat_map(|v| v.split(',')).rev();
        for hop in hops {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = canonical(ip);
                    if !self.trusts(&client) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_blocks_contain_their_addresses_only() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains(&ip("10.1.200.3")));
        assert!(!c.contains(&ip("10.2.0.1")));
        assert!(Cidr::parse("127.0.0.1").unwrap().contains(&ip("127.0.0.1")));
        assert!(!Cidr::parse("127.0.0.1").unwrap().contains(&ip("127.0.0.2")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(&ip("8.8.8.8")));
        assert!(Cidr::parse("10.0.0.0/9")
            .unwrap()
            .contains(&ip("10.127.0.1")));
        assert!(!Cidr::parse("10.0.0.0/9")
            .unwrap()
            .contains(&ip("10.128.0.1")));
        assert!(Cidr::parse("fd00::/8").unwrap().contains(&ip("fd12::1")));
        assert!(Cidr::parse("10.0.0.0/8")
            .unwrap()
            .contains(&ip("::ffff:10.0.0.1")));
    }

    #[test]
    fn malformed_blocks_are_refused() {
        for s in [
            "",
            "10.0.0.0/33",
            "10.0.0/8",
            "x",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "::/129",
        ] {
            assert!(Cidr::parse(s).is_err(), "{s:?}");
        }
        assert!(TrustedProxies::parse("10.0.0.0/8, nope").is_err());
        assert!(TrustedProxies::parse("").unwrap().is_empty());
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let t = TrustedProxies::parse("10.0.0.0/8").unwrap();
        assert_eq!(t.client(ip("203.0.113.9"), &["1.2.3.4"]), ip("203.0.113.9"));
        assert_eq!(
            TrustedProxies::default().client(ip("10.0.0.1"), &["1.2.3.4"]),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_client_is_the_rightmost_untrusted_hop() {
        let t = TrustedProxies::parse("10.0.0.0/8,192.168.1.1").unwrap();
        // The client forged "6.6.6.6"; the proxy appended the real address.
        assert_eq!(
            t.client(ip("10.0.0.5"), &["6.6.6.6, 198.51.100.7"]),
            ip("198.51.100.7")
        );
        // Two trusted hops, in two header lines.
        assert_eq!(
            t.client(ip("10.0.0.5"), &["198.51.100.7", "192.168.1.1"]),
            ip("198.51.100.7")
        );
        // No header: the proxy itself.
        assert_eq!(t.client(ip("10.0.0.5"), &[]), ip("10.0.0.5"));
        // Garbage stops the walk at the last good hop.
        assert_eq!(
            t.client(ip("10.0.0.5"), &["198.51.100.7, junk, 10.0.0.9"]),
            ip("10.0.0.9")
        );
    }
}
