//! Brute-force brake: failed authentications are counted per client address
//! in fixed one-minute windows; past the limit that address gets 429 until
//! its window ends. Other addresses are not affected. Pure but for a Mutex;
//! the clock is passed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Addresses tracked before stale windows are swept, so a scan from many
/// addresses cannot grow the map without bound.
const SWEEP_AT: usize = 10_000;

pub struct Throttle {
    limit: u32,
    windows: Mutex<HashMap<IpAddr, (u64, u32)>>,
}

impl Throttle {
    pub fn new(failures_per_minute: u32) -> Throttle {
        Throttle {
            limit: failures_per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds to wait)` when `ip` has used up this minute's failures.
    pub fn check(&self, ip: IpAddr, now_secs: u64) -> Result<(), u64> {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        match windows.get(&ip) {
            Some(&(minute, n)) if minute == now_secs / 60 && n >= self.limit => {
                Err(60 - now_secs % 60)
            }
            _ => Ok(()),
        }
    }

    pub fn failed(&self, ip: IpAddr, now_secs: u64) {
        let minute = now_secs / 60;
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if windows.len() >= SWEEP_AT {
            windows.retain(|_, (m, _)| *m == minute);
        }
        let entry = windows.entry(ip).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_limit_applies_per_address_and_per_minute() {
        let t = Throttle::new(3);
        let now = 600; // start of a minute
        for _ in 0..3 {
            assert!(t.check(ip("10.0.0.1"), now).is_ok());
            t.failed(ip("10.0.0.1"), now);
        }
        assert_eq!(t.check(ip("10.0.0.1"), now + 15), Err(45));
        assert!(
            t.check(ip("10.0.0.2"), now + 15).is_ok(),
            "another address is not throttled"
        );
        assert!(
            t.check(ip("10.0.0.1"), now + 60).is_ok(),
            "the next minute starts afresh"
        );
    }

    #[test]
    fn stale_windows_are_swept_when_the_map_is_full() {
        let t = Throttle::new(1);
        for i in 0..SWEEP_AT as u32 {
            t.failed(IpAddr::from(i.to_be_bytes()), 0);
        }
        t.failed(ip("10.9.9.9"), 120);
        assert_eq!(t.windows.lock().unwrap().len(), 1);
    }
}
