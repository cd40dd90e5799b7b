//! Bulkheads: how many requests each gateway route, and all of them
//! together, may have in flight on this instance. One slow upstream (or a
//! crowd of slow readers of one route's answers) then holds at most its
//! route's share of the handler threads; the rest keep serving the other
//! routes, and a reserve is always left for the built-in paths (`/health`,
//! `/ready`, `/metrics`, the bank route, the console).
//!
//! A `Permit` is held for the whole request, its streamed answer included
//! (the HTTP layer ties it to the answer's body), and gives its place back
//! when dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The places of one instance.
pub struct Bulkheads {
    open: Mutex<Open>,
    /// A route without its own `max_in_flight` gets this many.
    pub default_per_route: usize,
    /// All routes together.
    pub total: usize,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_route: HashMap<u64, usize>,
}

/// One request's place; dropping it frees the place.
pub struct Permit {
    bulkheads: Arc<Bulkheads>,
    route_id: u64,
}

impl Bulkheads {
    /// For `threads` handler threads: half of them per route by default,
    /// and all routes together leave an eighth (at least 4) of them free.
    pub fn new(threads: usize) -> Bulkheads {
        let reserve = (threads / 8).max(4);
        Bulkheads {
            open: Mutex::new(Open::default()),
            default_per_route: (threads / 2).max(1),
            total: threads.saturating_sub(reserve).max(1),
        }
    }

    /// A place for one request of route `route_id` (whose own cap is
    /// `max_in_flight`, or the default), or `None` when it is full.
    pub fn enter(self: &Arc<Self>, route_id: u64, max_in_flight: Option<u32>) -> Option<Permit> {
        let cap = max_in_flight.map_or(self.default_per_route, |n| n as usize);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let in_route = open.by_route.get(&route_id).copied().unwrap_or(0);
        if in_route >= cap || open.total >= self.total {
            return None;
        }
        open.total += 1;
        *open.by_route.entry(route_id).or_insert(0) += 1;
        Some(Permit {
            bulkheads: Arc::clone(self),
            route_id,
        })
    }

    /// Requests in flight on gateway routes now.
    pub fn in_flight(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self
            .bulkheads
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        open.total -= 1;
        if let Some(n) = open.by_route.get_mut(&self.route_id) {
            *n -= 1;
            if *n == 0 {
                open.by_route.remove(&self.route_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_gets_half_the_threads_and_all_routes_leave_a_reserve() {
        let b = Arc::new(Bulkheads::new(64));
        assert_eq!((b.default_per_route, b.total), (32, 56));
        let small = Arc::new(Bulkheads::new(8));
        assert_eq!((small.default_per_route, small.total), (4, 4));
    }

    #[test]
    fn a_full_route_refuses_and_a_freed_place_is_reused() {
        let b = Arc::new(Bulkheads::new(64));
        let held: Vec<Permit> = (0..32).map(|_| b.enter(1, None).unwrap()).collect();
        assert!(b.enter(1, None).is_none());
        assert!(b.enter(2, None).is_some(), "another route is not affected");
        drop(held);
        assert_eq!(b.in_flight(), 0);
        assert!(b.enter(1, None).is_some());
    }

    #[test]
    fn a_routes_own_cap_wins_and_the_total_caps_them_all() {
        let b = Arc::new(Bulkheads::new(64));
        let _one = b.enter(7, Some(1)).unwrap();
        assert!(b.enter(7, Some(1)).is_none());
        let mut held = Vec::new();
        for route in 100..200 {
            match b.enter(route, Some(1000)) {
                Some(p) => held.push(p),
                None => break,
            }
        }
        assert_eq!(held.len() + 1, b.total);
    }
}
