//! Console sessions: a login trades the bearer token for a random session id in a cookie.
//!
//! - The node keeps, per session, the SHA-256 of its id (never the id itself), the raw token
//!   the calls need (a write is authorized on the leader from the raw token, so a hash would
//!   not do), the session's CSRF value, and its times.
//! - The raw token stays in this process's memory, on the node that took the login; it is not
//!   replicated, logged or written anywhere. A session is usable only on that node, so ending
//!   it there (logout, expiry, restart) ends it everywhere.
//! - Idle and absolute expiry run on the monotonic clock: a wall-clock jump neither ends nor
//!   prolongs a session.
//! - The number of live sessions is bounded ([`MAX_SESSIONS`]); past it a login is refused
//!   rather than an older session dropped.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vault_core::token::{RawToken, TokenHash};

/// Live sessions one node keeps at most.
pub const MAX_SESSIONS: usize = 10_000;

/// The session cookie's name.
pub const COOKIE: &str = "vault_session";
/// The login form's double-submit CSRF cookie (there is no session yet to hold the value).
pub const LOGIN_COOKIE: &str = "vault_login_csrf";

/// What a page gets from a live session.
#[derive(Clone)]
pub struct Session {
    pub token: RawToken,
    /// The token's name, shown in the page header.
    pub name: String,
    pub csrf: RawToken,
}

struct Entry {
    session: Session,
    created: Instant,
    last_used: Instant,
}

/// Why a cookie did not lead to a session.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// No cookie was presented.
    None,
    /// A cookie was presented, but its session expired, ended or never existed here.
    Ended,
}

pub struct Sessions {
    idle: Duration,
    max_age: Duration,
    live: Mutex<HashMap<[u8; 32], Entry>>,
}

impl Sessions {
    pub fn new(idle: Duration, max_age: Duration) -> Self {
        Sessions { idle, max_age, live: Mutex::new(HashMap::new()) }
    }

    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Opens a session for `token`; returns the cookie value, or `None` when the node already
    /// holds [`MAX_SESSIONS`] live ones.
    pub fn open(&self, token: RawToken, name: String) -> Option<RawToken> {
        let id = RawToken::generate();
        let now = Instant::now();
        let mut live = self.lock();
        if live.len() >= MAX_SESSIONS {
            live.retain(|_, e| !self.expired(e, now));
            if live.len() >= MAX_SESSIONS {
                return None;
            }
        }
        let session = Session { token, name, csrf: RawToken::generate() };
        live.insert(id.hash().0, Entry { session, created: now, last_used: now });
        Some(id)
    }

    /// The session behind a cookie value; using it restarts its idle time.
    pub fn get(&self, cookie: Option<&str>) -> Result<Session, Lookup> {
        let cookie = cookie.ok_or(Lookup::None)?;
        let key = RawToken::presented(cookie).hash().0;
        let now = Instant::now();
        let mut live = self.lock();
        let entry = live.get_mut(&key).ok_or(Lookup::Ended)?;
        if self.expired(entry, now) {
            live.remove(&key);
            return Err(Lookup::Ended);
        }
        entry.last_used = now;
        Ok(entry.session.clone())
    }

    /// Ends the session behind a cookie value, if there is one.
    pub fn end(&self, cookie: &str) {
        self.lock().remove(&RawToken::presented(cookie).hash().0);
    }

    /// Drops expired sessions (their tokens leave memory with them).
    pub fn sweep(&self) {
        let now = Instant::now();
        self.lock().retain(|_, e| !self.expired(e, now));
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    fn expired(&self, e: &Entry, now: Instant) -> bool {
        now.duration_since(e.last_used) >= self.idle || now.duration_since(e.created) >= self.max_age
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether a submitted CSRF value is the expected one, compared in constant time.
pub fn csrf_matches(expected: &RawToken, submitted: &str) -> bool {
    if submitted.is_empty() {
        return false;
    }
    let submitted: TokenHash = RawToken::presented(submitted).hash();
    expected.hash().ct_eq(&submitted)
}

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, path `/`, `Secure` under TLS; `max_age`
/// 0 deletes it.
pub fn set_cookie(name: &str, value: &str, secure: bool, max_age: Option<Duration>) -> String {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_ends_when_idle_or_old_and_on_logout() {
        let s = Sessions::new(Duration::from_millis(80), Duration::from_millis(400));
        let id = s.open(RawToken::generate(), "ops".into()).expect("room");
        assert_eq!(s.get(Some(id.expose())).map(|x| x.name).ok(), Some("ops".to_string()));
        assert_eq!(s.get(None).err(), Some(Lookup::None));
        assert_eq!(s.get(Some("forged")).err(), Some(Lookup::Ended));
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(s.get(Some(id.expose())).err(), Some(Lookup::Ended), "idle expiry");

        let id = s.open(RawToken::generate(), "ops".into()).expect("room");
        for _ in 0..8 {
            std::thread::sleep(Duration::from_millis(50));
            let _ = s.get(Some(id.expose()));
        }
        assert_eq!(s.get(Some(id.expose())).err(), Some(Lookup::Ended), "absolute expiry despite use");

        let id = s.open(RawToken::generate(), "ops".into()).expect("room");
        s.end(id.expose());
        assert_eq!(s.get(Some(id.expose())).err(), Some(Lookup::Ended), "logout");
        assert_eq!(s.count(), 0);
    }

    #[test]
    fn csrf_and_cookies() {
        let t = RawToken::generate();
        assert!(csrf_matches(&t, t.expose()));
        assert!(!csrf_matches(&t, ""));
        assert!(!csrf_matches(&t, "x"));
        let mut h = http::HeaderMap::new();
        h.insert(http::header::COOKIE, "a=1; vault_session=abc ; b=2".parse().expect("header"));
        assert_eq!(cookie(&h, COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), None);
        let c = set_cookie(COOKIE, "v", true, None);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("Secure"));
    }
}
