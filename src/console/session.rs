//! Console sessions: who is logged in, their CSRF token, and the messages
//! waiting for their next page.
//!
//! Sessions live in this process's memory (a `Mutex<HashMap>`), so they are
//! **per instance**: behind a load balancer, send an operator to the same
//! instance every time (sticky sessions), or they will be asked to log in
//! again. A restart logs everyone out. This is the accepted limitation; no
//! table holds them.
//!
//! A session id and its CSRF token are each 256 random bits from the
//! operating system. A session ends after `idle` without a request (12 h in
//! the server) or when its operator logs out.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::auth::token;

/// The name of the console's session cookie.
pub const COOKIE: &str = "cg_console";

/// How long a session lasts without a request.
pub const IDLE: Duration = Duration::from_secs(12 * 60 * 60);

/// More sessions than this means something is wrong (only the admin token
/// makes one); the oldest idle ones go first.
const MAX_SESSIONS: usize = 1000;

/// A message for the operator's next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub ok: bool,
    pub text: String,
    /// A new token, shown on the next page and never again.
    pub secret: Option<String>,
}

impl Flash {
    pub fn ok(text: impl Into<String>) -> Flash {
        Flash {
            ok: true,
            text: text.into(),
            secret: None,
        }
    }

    pub fn error(text: impl Into<String>) -> Flash {
        Flash {
            ok: false,
            text: text.into(),
            secret: None,
        }
    }

    pub fn with_secret(mut self, secret: String) -> Flash {
        self.secret = Some(secret);
        self
    }
}

struct Session {
    csrf: String,
    last_seen: Instant,
    flashes: Vec<Flash>,
}

/// What a request learns about its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub id: String,
    pub csrf: String,
}

pub struct Sessions {
    idle: Duration,
    map: Mutex<HashMap<String, Session>>,
}

/// 256 random bits as 64 hex digits.
fn random_id() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    pub fn new(idle: Duration) -> Sessions {
        Sessions {
            idle,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a session and returns it; sweeps expired ones on the way.
    pub fn start(&self, now: Instant) -> Current {
        let mut map = self.map();
        map.retain(|_, s| now.saturating_duration_since(s.last_seen) < self.idle);
        while map.len() >= MAX_SESSIONS {
            let oldest = map
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => map.remove(&id),
                None => break,
            };
        }
        let current = Current {
            id: random_id(),
            csrf: random_id(),
        };
        map.insert(
            current.id.clone(),
            Session {
                csrf: current.csrf.clone(),
                last_seen: now,
                flashes: Vec::new(),
            },
        );
        current
    }

    /// The live session with this id, its idle clock reset; an expired one
    /// is removed and is no session.
    pub fn touch(&self, id: &str, now: Instant) -> Option<Current> {
        let mut map = self.map();
        let session = map.get_mut(id)?;
        if now.saturating_duration_since(session.last_seen) >= self.idle {
            map.remove(id);
            return None;
        }
        session.last_seen = now;
        Some(Current {
            id: id.to_string(),
            csrf: session.csrf.clone(),
        })
    }

    pub fn end(&self, id: &str) {
        self.map().remove(id);
    }

    pub fn push_flash(&self, id: &str, flash: Flash) {
        if let Some(s) = self.map().get_mut(id) {
            s.flashes.push(flash);
        }
    }

    /// The waiting messages, which are gone once taken: a token in one is
    /// shown on exactly one page.
    pub fn take_flashes(&self, id: &str) -> Vec<Flash> {
        self.map()
            .get_mut(id)
            .map(|s| std::mem::take(&mut s.flashes))
            .unwrap_or_default()
    }
}

/// Does the form's CSRF token match the session's? Constant time.
pub fn csrf_matches(session: &Current, given: Option<&str>) -> bool {
    match given {
        Some(g) => token::constant_time_eq(g.as_bytes(), session.csrf.as_bytes()),
        None => false,
    }
}

/// The session id from a `Cookie` header, if it has the console's cookie.
pub fn id_from_cookie(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value that hands out a session. No `Max-Age`: the
/// browser forgets it when it closes, the server after `IDLE`.
pub fn set_cookie(id: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict{secure}")
}

/// The `Set-Cookie` value that makes the browser drop the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_has_random_256_bit_ids_and_csrf_tokens() {
        let sessions = Sessions::new(IDLE);
        let a = sessions.start(Instant::now());
        let b = sessions.start(Instant::now());
        assert_eq!(a.id.len(), 64);
        assert_eq!(a.csrf.len(), 64);
        assert!(a.id.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.id, b.id);
        assert_ne!(a.id, a.csrf);
    }

    #[test]
    fn a_session_expires_after_the_idle_time_and_each_request_resets_it() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let s = sessions.start(t0);
        let later = t0 + Duration::from_secs(50);
        assert_eq!(sessions.touch(&s.id, later), Some(s.clone()));
        assert!(sessions
            .touch(&s.id, later + Duration::from_secs(59))
            .is_some());
        assert!(sessions
            .touch(&s.id, later + Duration::from_secs(59 + 60))
            .is_none());
        // Gone for good, not only hidden.
        assert!(sessions.touch(&s.id, later).is_none());
    }

    #[test]
    fn logging_out_ends_the_session() {
        let sessions = Sessions::new(IDLE);
        let s = sessions.start(Instant::now());
        sessions.end(&s.id);
        assert!(sessions.touch(&s.id, Instant::now()).is_none());
    }

    #[test]
    fn a_flash_is_shown_once() {
        let sessions = Sessions::new(IDLE);
        let s = sessions.start(Instant::now());
        sessions.push_flash(&s.id, Flash::ok("rotated").with_secret("cg_x".into()));
        let first = sessions.take_flashes(&s.id);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].secret.as_deref(), Some("cg_x"));
        assert!(sessions.take_flashes(&s.id).is_empty());
    }

    #[test]
    fn the_csrf_token_must_match_exactly() {
        let sessions = Sessions::new(IDLE);
        let s = sessions.start(Instant::now());
        assert!(csrf_matches(&s, Some(&s.csrf.clone())));
        assert!(!csrf_matches(&s, None));
        assert!(!csrf_matches(&s, Some("")));
        assert!(!csrf_matches(&s, Some(&s.csrf[..63])));
    }

    #[test]
    fn gateway_upstreams_cannot_set_this_cookie() {
        assert!(crate::gateway::forward::RESERVED_COOKIES.contains(&COOKIE));
    }

    #[test]
    fn the_session_id_is_found_among_other_cookies() {
        assert_eq!(id_from_cookie("a=1; cg_console=abc; b=2"), Some("abc"));
        assert_eq!(id_from_cookie("cg_console="), None);
        assert_eq!(id_from_cookie("xcg_console=abc"), None);
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_scoped_to_the_console() {
        let c = set_cookie("abc", false);
        assert_eq!(
            c,
            "cg_console=abc; Path=/console; HttpOnly; SameSite=Strict"
        );
        assert!(set_cookie("abc", true).ends_with("; Secure"));
        assert!(clear_cookie().contains("Max-Age=0"));
    }

    #[test]
    fn the_oldest_sessions_make_room_when_there_are_too_many() {
        let sessions = Sessions::new(IDLE);
        let t0 = Instant::now();
        let first = sessions.start(t0);
        for i in 1..=MAX_SESSIONS {
            sessions.start(t0 + Duration::from_millis(i as u64));
        }
        assert!(sessions.touch(&first.id, t0).is_none());
        assert_eq!(sessions.map().len(), MAX_SESSIONS);
    }
}
