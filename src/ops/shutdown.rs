//! One stop signal for the whole process, fired by a signal handler or by
//! `/stopServer`; the first reason given wins and is what the stop mail says.
//! One hook may watch for that first trigger (systemd's `STOPPING=1`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

type Hook = Box<dyn Fn(&str) + Send + Sync>;

#[derive(Clone, Default)]
pub struct Shutdown {
    reason: Arc<Mutex<Option<String>>>,
    /// Every request asks; a flag spares them the mutex.
    triggered: Arc<AtomicBool>,
    on_first: Arc<OnceLock<Hook>>,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Asks everything to stop. Later calls keep the first reason.
    pub fn trigger(&self, reason: &str) {
        let first = {
            let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
            let first = r.is_none();
            if first {
                *r = Some(reason.to_string());
            }
            first
        };
        self.triggered.store(true, Ordering::SeqCst);
        // Outside the lock: the hook may ask for the reason.
        if first {
            if let Some(hook) = self.on_first.get() {
                hook(reason);
            }
        }
    }

    /// Runs `hook` with the reason on the first trigger (whichever signal
    /// or request it comes from). False if a hook is already set.
    pub fn on_first_trigger(&self, hook: impl Fn(&str) + Send + Sync + 'static) -> bool {
        self.on_first.set(Box::new(hook)).is_ok()
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

    #[test]
    fn the_hook_runs_once_with_the_first_reason() {
        let s = Shutdown::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        assert!(s.on_first_trigger(move |r| log.lock().unwrap().push(r.to_string())));
        assert!(!s.on_first_trigger(|_| {}), "a second hook is refused");
        s.clone().trigger("admin /stopServer");
        s.trigger("signal SIGTERM");
        assert_eq!(*seen.lock().unwrap(), vec!["admin /stopServer".to_string()]);
    }
}
