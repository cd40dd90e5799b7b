//! One stop signal for the whole process, fired by a signal handler or by
//! `/stopServer`; the first reason given wins and is what the stop mail says.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<(Mutex<Option<String>>, Condvar)>,
    /// Every request asks; a flag spares them the mutex.
    triggered: Arc<AtomicBool>,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Asks everything to stop. Later calls keep the first reason.
    pub fn trigger(&self, reason: &str) {
        let (lock, cvar) = &*self.inner;
        let mut r = lock.lock().unwrap_or_else(|e| e.into_inner());
        if r.is_none() {
            *r = Some(reason.to_string());
        }
        self.triggered.store(true, Ordering::SeqCst);
        cvar.notify_all();
    }

    pub fn reason(&self) -> Option<String> {
        self.inner
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn is_triggered(&self) -> bool {
        self.triggered.load(Ordering::SeqCst)
    }

    /// Waits for the trigger, at most `limit`; returns the reason if fired.
    pub fn wait_timeout(&self, limit: Duration) -> Option<String> {
        let (lock, cvar) = &*self.inner;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = cvar
            .wait_timeout_while(guard, limit, |r| r.is_none())
            .unwrap_or_else(|e| e.into_inner());
        guard.clone()
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

    #[test]
    fn wait_returns_when_triggered_from_another_thread() {
        let s = Shutdown::new();
        let s2 = s.clone();
        std::thread::spawn(move || s2.trigger("test"));
        assert_eq!(
            s.wait_timeout(Duration::from_secs(10)).as_deref(),
            Some("test")
        );
    }
}
