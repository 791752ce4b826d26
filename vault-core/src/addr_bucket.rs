//! The unit every per-address limit counts by. An IPv4 address is one client; an IPv6 client
//! usually holds a whole /64 (and can pick any address in it for each request), so IPv6 is
//! counted by its /64. An IPv4-mapped IPv6 address counts as the IPv4 address.
//!
//! Used by the refusal limiter, the request rate per address, the API connection limit per
//! address and the Raft port's per-address limit.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// A client address as per-address limits see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddrBucket(IpAddr);

impl AddrBucket {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => AddrBucket(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddrBucket(IpAddr::V4(v4)),
                None => AddrBucket(IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1)))),
            },
        }
    }
}

impl From<IpAddr> for AddrBucket {
    fn from(ip: IpAddr) -> Self {
        AddrBucket::of(ip)
    }
}

/// Connections open per [`AddrBucket`], each held as an [`AddrSlot`] under a bound (the API
/// listener, the console and the Raft port each keep one).
#[derive(Clone, Default)]
pub struct AddrCounts(Arc<Mutex<HashMap<AddrBucket, usize>>>);

impl AddrCounts {
    /// A place for one more connection from `ip`, unless its bucket already holds `max`.
    pub fn take(&self, ip: IpAddr, max: usize) -> Option<AddrSlot> {
        let bucket = AddrBucket::of(ip);
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(bucket).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddrSlot { bucket, counts: self.clone() })
    }
}

/// One connection's place in its address's count; given back when dropped.
pub struct AddrSlot {
    bucket: AddrBucket,
    counts: AddrCounts,
}

impl AddrSlot {
    pub fn bucket(&self) -> AddrBucket {
        self.bucket
    }
}

impl Drop for AddrSlot {
    fn drop(&mut self) {
        let mut map = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.bucket) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.bucket);
            }
        }
    }
}

/// `10.1.2.3`, or `2001:db8:1:2::/64`.
impl fmt::Display for AddrBucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(s: &str) -> AddrBucket {
        AddrBucket::of(s.parse().unwrap())
    }

    #[test]
    fn ipv6_counts_by_its_64_and_ipv4_by_its_address() {
        assert_eq!(bucket("2001:db8:1:2::1"), bucket("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert_ne!(bucket("2001:db8:1:2::1"), bucket("2001:db8:1:3::1"));
        assert_eq!(bucket("2001:db8:1:2:abcd::7").to_string(), "2001:db8:1:2::/64");
        assert_ne!(bucket("10.0.0.1"), bucket("10.0.0.2"));
        assert_eq!(bucket("10.0.0.1").to_string(), "10.0.0.1");
        assert_eq!(bucket("::ffff:10.0.0.1"), bucket("10.0.0.1"));
        assert_eq!(bucket("::1").to_string(), "::/64");
    }
}
