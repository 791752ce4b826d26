use std::net::IpAddr;

use ipnet::IpNet;

/// A fail-closed list of addresses and networks (IPv4 and IPv6). Empty allows nothing.
#[derive(Clone, Debug, Default)]
pub struct Allowlist {
    nets: Vec<IpNet>,
}

impl Allowlist {
    /// Comma-separated addresses and CIDRs, e.g. `10.0.0.0/8, 192.0.2.7, ::1, fd00::/8`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let net = if item.contains('/') {
                item.parse::<IpNet>().map_err(|_| format!("{item:?} is not a valid CIDR"))?
            } else {
                IpNet::from(item.parse::<IpAddr>().map_err(|_| format!("{item:?} is not a valid IP address"))?)
            };
            nets.push(net.trunc());
        }
        Ok(Allowlist { nets })
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are matched as the IPv4 address they carry.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn empty_denies_everything() {
        let a = Allowlist::parse("").unwrap();
        assert!(!a.contains(ip("127.0.0.1")));
        assert!(!a.contains(ip("::1")));
    }

    #[test]
    fn addresses_and_cidrs_v4_v6() {
        let a = Allowlist::parse("10.1.0.0/16, 192.0.2.7 ,::1, fd00::/8").unwrap();
        assert!(a.contains(ip("10.1.200.3")));
        assert!(!a.contains(ip("10.2.0.1")));
        assert!(a.contains(ip("192.0.2.7")));
        assert!(!a.contains(ip("192.0.2.8")));
        assert!(a.contains(ip("::1")));
        assert!(a.contains(ip("fd12:3456::1")));
        assert!(!a.contains(ip("fe80::1")));
        assert!(a.contains(ip("::ffff:10.1.2.3")), "v4-mapped v6 matches its v4 network");
    }

    #[test]
    fn invalid_entries_are_errors() {
        for bad in ["10.0.0.0/33", "banana", "1.2.3", "::1/129"] {
            assert!(Allowlist::parse(bad).is_err(), "{bad}");
        }
    }
}
