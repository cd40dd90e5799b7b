//! One stop signal for the whole process, fired by a signal handler or by
//! `/stopServer`; the first reason given wins and is what the stop mail says.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
pub struct Shutdown {
    reason: Arc<Mutex<Option<String>>>,
    /// Every request asks; a flag spares them the mutex.
    triggered: Arc<AtomicBool>,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Asks everything to stop. Later calls keep the first reason.
    pub fn trigger(&self, reason: &str) {
        let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = Some(reason.to_string());
        }
        self.triggered.store(true, Ordering::SeqCst);
    }

    pub fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn is_triggered(&self) -> bool {
        self.triggered.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins() {
        let s = Shutdown::new();
        assert!(!s.is_triggered());
        s.trigger("signal SIGTERM");
        s.trigger("admin /stopServer");
        assert_eq!(s.reason().as_deref(), Some("signal SIGTERM"));
    }
}
