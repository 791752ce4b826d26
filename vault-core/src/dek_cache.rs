//! A bounded, time-limited cache of unwrapped data keys, so reads keep working through a KMS
//! outage and hot reads skip a KMS round trip. Plaintext secret values are never cached.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::keys::DataKey;

/// Cache key: SHA-256 over the wrapping key id and the wrapped bytes. Re-wrapping a DEK gives
/// it a new entry; nothing secret is used as a key.
type Slot = [u8; 32];

pub struct DekCache {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<Slot, (Instant, DataKey)>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl DekCache {
    /// `ttl` of zero disables the cache.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        DekCache {
            ttl,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    fn slot(key_id: &str, wrapped: &[u8]) -> Slot {
        let mut h = Sha256::new();
        h.update((key_id.len() as u64).to_be_bytes());
        h.update(key_id.as_bytes());
        h.update(wrapped);
        h.finalize().into()
    }

    /// A copy of the cached key, if present and younger than the TTL.
    pub fn get(&self, key_id: &str, wrapped: &[u8]) -> Option<DataKey> {
        if !self.enabled() {
            return None;
        }
        let slot = Self::slot(key_id, wrapped);
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let found = match map.get(&slot) {
            Some((at, key)) if at.elapsed() < self.ttl => DataKey::from_slice(key.expose()).ok(),
            Some(_) => {
                map.remove(&slot);
                None
            }
            None => None,
        };
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Lookups so far that found a live key, and those that did not: `(hits, misses)`.
    pub fn lookups(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }

    pub fn insert(&self, key_id: &str, wrapped: &[u8], key: &DataKey) {
        if !self.enabled() {
            return;
        }
        let Ok(copy) = DataKey::from_slice(key.expose()) else { return };
        let slot = Self::slot(key_id, wrapped);
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.capacity {
            let ttl = self.ttl;
            map.retain(|_, (at, _)| at.elapsed() < ttl);
            if map.len() >= self.capacity {
                // Still full of live keys: drop the oldest tenth rather than grow.
                let mut ages: Vec<(Instant, Slot)> = map.iter().map(|(s, (at, _))| (*at, *s)).collect();
                ages.sort_unstable();
                for (_, s) in ages.into_iter().take(self.capacity / 10 + 1) {
                    map.remove(&s);
                }
            }
        }
        map.insert(slot, (Instant::now(), copy));
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_then_expiry() {
        let c = DekCache::new(Duration::from_millis(50), 10);
        let k = DataKey::generate();
        c.insert("k1", b"wrapped", &k);
        assert_eq!(c.get("k1", b"wrapped").unwrap().expose(), k.expose());
        assert!(c.get("k2", b"wrapped").is_none(), "key id is part of the slot");
        std::thread::sleep(Duration::from_millis(60));
        assert!(c.get("k1", b"wrapped").is_none());
        assert_eq!(c.lookups(), (1, 2), "one hit; a wrong key id and an expired key are misses");
    }

    #[test]
    fn zero_ttl_disables() {
        let c = DekCache::new(Duration::ZERO, 10);
        c.insert("k", b"w", &DataKey::generate());
        assert!(c.get("k", b"w").is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn capacity_is_bounded() {
        let c = DekCache::new(Duration::from_secs(60), 20);
        for i in 0..100u32 {
            c.insert("k", &i.to_be_bytes(), &DataKey::generate());
        }
        assert!(c.len() <= 20, "{}", c.len());
        assert!(c.get("k", &99u32.to_be_bytes()).is_some(), "newest entry survives eviction");
    }
}
