//! The client address a request is judged by.

use std::net::IpAddr;

use super::allowlist::{canonical, Allowlist};

/// Without proxy trust, the direct peer. With it, and only when the direct peer is a trusted
/// proxy, the right-most `x-forwarded-for` hop that is not itself a trusted proxy (hops to its
/// left are client-supplied and could be forged). A malformed header is an error: the request
/// is refused rather than guessed about.
pub fn resolve(
    peer: IpAddr,
    forwarded_for: &[&str],
    trust_proxy: bool,
    trusted_proxies: &Allowlist,
) -> Result<IpAddr, String> {
    let peer = canonical(peer);
    if !trust_proxy || !trusted_proxies.contains(peer) || forwarded_for.is_empty() {
        return Ok(peer);
    }
    let mut hops = Vec::new();
    for header in forwarded_for {
        for hop in header.split(',').map(str::trim) {
            let ip: IpAddr = hop.parse().map_err(|_| format!("x-forwarded-for hop {hop:?} is not an IP address"))?;
            hops.push(canonical(ip));
        }
    }
    let mut client = peer;
    for hop in hops.iter().rev() {
        client = *hop;
        if !trusted_proxies.contains(*hop) {
            break;
        }
    }
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ignores_header_without_trust_or_from_untrusted_peer() {
        let proxies = Allowlist::parse("10.0.0.1").unwrap();
        assert_eq!(resolve(ip("10.0.0.1"), &["1.2.3.4"], false, &proxies).unwrap(), ip("10.0.0.1"));
        assert_eq!(resolve(ip("10.0.0.9"), &["1.2.3.4"], true, &proxies).unwrap(), ip("10.0.0.9"));
    }

    #[test]
    fn takes_right_most_untrusted_hop_never_left_most() {
        let proxies = Allowlist::parse("10.0.0.0/24").unwrap();
        // A client forging "6.6.6.6" at the left cannot choose its address.
        let got = resolve(ip("10.0.0.1"), &["6.6.6.6, 203.0.113.5, 10.0.0.2"], true, &proxies).unwrap();
        assert_eq!(got, ip("203.0.113.5"));
        // Several headers are one list, in order.
        let got = resolve(ip("10.0.0.1"), &["6.6.6.6", "203.0.113.9"], true, &proxies).unwrap();
        assert_eq!(got, ip("203.0.113.9"));
    }

    #[test]
    fn malformed_header_is_refused() {
        let proxies = Allowlist::parse("10.0.0.1").unwrap();
        assert!(resolve(ip("10.0.0.1"), &["1.2.3.4, nonsense"], true, &proxies).is_err());
    }
}

#[cfg(test)]
mod properties {
    use std::net::IpAddr;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        /// Any header values: resolving never panics, and the address used is the peer or
        /// one the header names.
        #[test]
        fn forwarded_for_never_panics_and_yields_the_peer_or_a_listed_hop(
            values in proptest::collection::vec("[0-9a-f.:, ]{0,40}", 0..4),
            trust in any::<bool>(),
        ) {
            let peer: IpAddr = "127.0.0.1".parse().unwrap();
            let proxies = Allowlist::parse("127.0.0.1").unwrap();
            let refs: Vec<&str> = values.iter().map(String::as_str).collect();
            if let Ok(ip) = resolve(peer, &refs, trust, &proxies) {
                let listed = values.iter().flat_map(|v| v.split(',')).any(|h| h.trim().parse::<IpAddr>().ok() == Some(ip));
                prop_assert!(ip == peer || listed, "{ip} from {values:?}");
            }
        }
    }
}
