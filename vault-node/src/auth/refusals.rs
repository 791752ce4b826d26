//! Refused requests cannot flood the audit log: each client address (IPv6 by its /64, see
//! [`AddrBucket`]) may have its refusals recorded one by one at a steady rate (a token bucket),
//! and all addresses together within a global budget; beyond either, the request gets
//! RESOURCE_EXHAUSTED and is only counted, and the counts are written as one summary record per
//! address, action and window. Summaries are bounded too: past [`MAX_SUMMARIES`] addresses in a
//! window, the rest are counted under one "other addresses" summary.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use vault_core::addr_bucket::AddrBucket;

/// Length of a summary window.
pub const WINDOW_MS: u64 = 60_000;
/// Addresses tracked at once; past this, full buckets are forgotten first.
const MAX_TRACKED: usize = 100_000;
/// Addresses (and actions) summarised one by one per window; beyond, one summary for the rest.
pub const MAX_SUMMARIES: usize = 1_000;

struct Bucket {
    tokens: f64,
    at_ms: u64,
}

/// Refusals counted but not recorded one by one, for one address (`None`: the addresses past
/// [`MAX_SUMMARIES`]) and action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub ip: Option<AddrBucket>,
    pub action: &'static str,
    pub window_start_ms: u64,
    pub count: u64,
}

/// (window start in ms, refusals counted in it).
type Counted = (u64, u64);

/// Token buckets by key (a client address, a token): `per_sec` refill, `burst` capacity.
pub struct RateLimiter<K> {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: std::hash::Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(per_sec: f64, burst: f64) -> Self {
        RateLimiter { per_sec, burst, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one token from `key`'s bucket if it has one.
    pub fn take(&self, key: &K, now_ms: u64) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(key) {
            let (per_sec, burst) = (self.per_sec, self.burst);
            buckets.retain(|_, b| refill(b, per_sec, burst, now_ms) < burst);
        }
        let b = buckets.entry(key.clone()).or_insert(Bucket { tokens: self.burst, at_ms: now_ms });
        if refill(b, self.per_sec, self.burst, now_ms) >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whole seconds until a drained bucket has a token again (retry advice).
    pub fn retry_after_secs(&self) -> u64 {
        (1.0 / self.per_sec).ceil().max(1.0) as u64
    }
}

pub struct RefusalLimiter {
    buckets: RateLimiter<AddrBucket>,
    /// All addresses together.
    global: RateLimiter<()>,
    /// Per address and action: (window start, refusals counted).
    suppressed: Mutex<HashMap<(Option<AddrBucket>, &'static str), Counted>>,
}

impl RefusalLimiter {
    /// `per_sec` and `burst` per address; `global_per_sec` (bursts of five times that) for all.
    pub fn new(per_sec: f64, burst: f64, global_per_sec: f64) -> Self {
        RefusalLimiter {
            buckets: RateLimiter::new(per_sec, burst),
            global: RateLimiter::new(global_per_sec, 5.0 * global_per_sec),
            suppressed: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a refusal from `ip` may be recorded now; if not, it is counted for a summary.
    pub fn admit(&self, ip: IpAddr, action: &'static str, now_ms: u64) -> bool {
        let bucket = AddrBucket::of(ip);
        if self.buckets.take(&bucket, now_ms) && self.global.take(&(), now_ms) {
            return true;
        }
        let mut s = self.suppressed.lock().unwrap_or_else(|p| p.into_inner());
        let key = match (Some(bucket), action) {
            k if s.contains_key(&k) || s.len() < MAX_SUMMARIES => k,
            _ => (None, action),
        };
        let entry = s.entry(key).or_insert((now_ms - now_ms % WINDOW_MS, 0));
        entry.1 += 1;
        false
    }

    /// How long until `ip` may have a refusal recorded again, in whole seconds (for retry
    /// advice).
    pub fn retry_after_secs(&self) -> u64 {
        self.buckets.retry_after_secs()
    }

    /// Summaries of windows that ended before `now_ms` (all of them with `flush_all`).
    pub fn take_summaries(&self, now_ms: u64, flush_all: bool) -> Vec<Summary> {
        let mut s = self.suppressed.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        s.retain(|(ip, action), (start, count)| {
            let done = flush_all || *start + WINDOW_MS <= now_ms;
            if done {
                out.push(Summary { ip: *ip, action, window_start_ms: *start, count: *count });
            }
            !done
        });
        out.sort_by_key(|x| (x.window_start_ms, x.ip.is_none(), x.ip, x.action));
        out
    }
}

/// Tops the bucket up for the time passed; returns its tokens.
fn refill(b: &mut Bucket, per_sec: f64, burst: f64, now_ms: u64) -> f64 {
    let elapsed = now_ms.saturating_sub(b.at_ms) as f64 / 1000.0;
    b.tokens = (b.tokens + elapsed * per_sec).min(burst);
    b.at_ms = now_ms;
    b.tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_a_steady_rate_and_the_rest_summarised_per_window() {
        let l = RefusalLimiter::new(2.0, 5.0, 100.0);
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let other: IpAddr = "10.9.9.9".parse().unwrap();
        let t0 = 10 * WINDOW_MS;
        let admitted = (0..100).filter(|_| l.admit(ip, "secret.get", t0)).count();
        assert_eq!(admitted, 5, "the burst");
        assert!(l.admit(other, "secret.get", t0), "another address has its own bucket");
        assert!(l.admit(ip, "secret.get", t0 + 500), "one more after half a second at 2/s");
        assert!(!l.admit(ip, "secret.get", t0 + 500));
        assert!(l.take_summaries(t0 + 1_000, false).is_empty(), "the window is still open");
        let s = l.take_summaries(t0 + WINDOW_MS, false);
        assert_eq!(s, vec![Summary { ip: Some(ip.into()), action: "secret.get", window_start_ms: t0, count: 96 }]);
        assert!(l.take_summaries(t0 + 2 * WINDOW_MS, true).is_empty(), "taken once");
    }

    #[test]
    fn ipv6_addresses_in_one_64_share_a_bucket() {
        let l = RefusalLimiter::new(1.0, 2.0, 100.0);
        let t0 = 10 * WINDOW_MS;
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(l.admit(a, "secret.get", t0));
        assert!(l.admit(b, "secret.get", t0));
        assert!(!l.admit(b, "secret.get", t0), "the /64's burst is spent");
        assert!(l.admit(c, "secret.get", t0), "another /64 has its own bucket");
    }

    #[test]
    fn a_global_budget_bounds_refusals_recorded_one_by_one_and_summaries_are_bounded() {
        let l = RefusalLimiter::new(10.0, 50.0, 2.0);
        let t0 = 10 * WINDOW_MS;
        let ips: Vec<IpAddr> = (0..2_000u32).map(|i| IpAddr::from((0x0a00_0000u32 + i).to_be_bytes())).collect();
        // Each address well within its own limit; together past the global burst (5 x 2).
        let admitted = ips.iter().filter(|ip| l.admit(**ip, "secret.get", t0)).count();
        assert_eq!(admitted, 10, "the global burst");
        assert!(l.admit(ips[0], "secret.get", t0 + 500), "one more after half a second at 2/s");
        let s = l.take_summaries(t0 + WINDOW_MS, false);
        assert_eq!(s.len(), MAX_SUMMARIES + 1, "one per address up to the bound, then one for the rest");
        assert_eq!(s.iter().map(|x| x.count).sum::<u64>(), 1_990);
        let rest = s.last().unwrap();
        assert_eq!((rest.ip, rest.count), (None, 1_990 - MAX_SUMMARIES as u64));
    }
}
