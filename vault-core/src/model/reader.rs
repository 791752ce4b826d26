//! Reader rules: which secrets a reading client may get, by its address or the subject of the
//! client certificate it presented.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::role::{pattern_matches, validate_pattern};
use super::token::validate_label;
use crate::CoreError;

/// Most CIDRs, certificate subjects or grants in one rule.
pub const MAX_READER_ENTRIES: usize = 64;

/// One rule: clients whose address is in one of `cidrs`, or whose verified client certificate
/// has a common name in `cert_cns`, may read the secrets `grants` match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReaderRule {
    pub name: String,
    /// Canonical CIDR text (`10.0.1.0/24`, `::1/128`), as `IpNet` prints it.
    pub cidrs: Vec<String>,
    pub cert_cns: Vec<String>,
    /// Secret name patterns: exact, prefix ending in `*`, or `*`.
    pub grants: Vec<String>,
    pub created_at_ms: u64,
}

impl ReaderRule {
    /// Checks and normalizes a rule as a client asked for it.
    pub fn new(
        name: &str,
        cidrs: &[String],
        cert_cns: &[String],
        grants: &[String],
        created_at_ms: u64,
    ) -> Result<Self, CoreError> {
        validate_label("reader", name)?;
        let bad = |m: String| Err(CoreError::InvalidArgument(m));
        if cidrs.is_empty() && cert_cns.is_empty() {
            return bad(format!("reader {name} needs at least one --cidr or --cert-cn"));
        }
        if grants.is_empty() {
            return bad(format!("reader {name} needs at least one --grant"));
        }
        if cidrs.len().max(cert_cns.len()).max(grants.len()) > MAX_READER_ENTRIES {
            return bad(format!(
                "a reader rule holds at most {MAX_READER_ENTRIES} CIDRs, subjects and grants of each kind"
            ));
        }
        let mut nets = Vec::with_capacity(cidrs.len());
        for c in cidrs {
            nets.push(parse_net(c)?.to_string());
        }
        for cn in cert_cns {
            if cn.is_empty() || cn.len() > 255 || cn.chars().any(char::is_control) {
                return bad(format!("certificate subject {cn:?} must be 1 to 255 printable characters"));
            }
        }
        for g in grants {
            validate_pattern(g)?;
        }
        Ok(ReaderRule {
            name: name.to_string(),
            cidrs: nets,
            cert_cns: cert_cns.to_vec(),
            grants: grants.to_vec(),
            created_at_ms,
        })
    }

    pub fn grants_name(&self, name: &str) -> bool {
        self.grants.iter().any(|g| pattern_matches(g, name))
    }
}

/// A single address or a CIDR, host bits cleared.
fn parse_net(s: &str) -> Result<IpNet, CoreError> {
    let s = s.trim();
    let net = if s.contains('/') {
        s.parse::<IpNet>().map_err(|_| CoreError::InvalidArgument(format!("{s:?} is not a valid CIDR")))?
    } else {
        IpNet::from(s.parse::<IpAddr>().map_err(|_| CoreError::InvalidArgument(format!("{s:?} is not an IP address")))?)
    };
    // Client addresses are matched in canonical form (IPv4-mapped IPv6 as IPv4), so a mapped
    // network is stored as the IPv4 network it stands for.
    if let IpNet::V6(v6) = net {
        if let (Some(v4), true) = (v6.addr().to_ipv4_mapped(), v6.prefix_len() >= 96) {
            let v4 = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map_err(|_| CoreError::InvalidArgument(format!("{s:?} is not a valid CIDR")))?;
            return Ok(IpNet::V4(v4.trunc()));
        }
    }
    Ok(net.trunc())
}

/// What the reader rules say about one read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReaderDecision {
    /// No rule exists: the node's address allowlist alone decides.
    NoRules,
    /// Allowed by the named rule.
    Allowed(String),
    /// Refused: why, naming the rules that matched the client (if any).
    Denied(String),
}

/// A set of reader rules, in name order, with their networks parsed once (reads check them
/// on every call).
#[derive(Debug, Default)]
pub struct ReaderRules {
    /// Rules have been in force on this cluster: with none left, no read is allowed (rather
    /// than the address allowlist alone deciding).
    required: bool,
    rules: Vec<(ReaderRule, Vec<IpNet>)>,
}

impl ReaderRules {
    /// Stored rules' CIDRs were checked when the rule was made; one that does not parse
    /// (which no command can store) matches no address.
    pub fn new(rules: Vec<ReaderRule>) -> Self {
        let rules = rules
            .into_iter()
            .map(|r| {
                let nets = r.cidrs.iter().filter_map(|c| c.parse::<IpNet>().ok()).collect();
                (r, nets)
            })
            .collect();
        ReaderRules { rules, required: false }
    }

    /// The same rules, required (or not) even when there are none (see `required`).
    pub fn required(mut self, required: bool) -> Self {
        self.required = required;
        self
    }

    pub fn is_required(&self) -> bool {
        self.required
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ReaderRule> {
        self.rules.iter().map(|(r, _)| r)
    }

    /// Decides a read of `name` by a client at `ip` (canonical: IPv4-mapped addresses as IPv4)
    /// presenting certificate subject `cn`. The first rule (in name order) that matches the
    /// client, by address or subject, and grants the name allows it.
    pub fn decide(&self, ip: IpAddr, cn: Option<&str>, name: &str) -> ReaderDecision {
        self.decide_by(ip, cn, name, |r| r.grants_name(name))
    }

    /// Whether [`decide`](Self::decide) would let a client at `ip` presenting `cn` read `name`
    /// (allowed, or no rule exists), without building the decision's text: for checks made
    /// many times over, such as every event of every watch.
    pub fn allows(&self, ip: IpAddr, cn: Option<&str>, name: &str) -> bool {
        if self.rules.is_empty() {
            return !self.required;
        }
        self.rules.iter().any(|(r, nets)| {
            (cn.is_some_and(|cn| r.cert_cns.iter().any(|c| c == cn)) || nets.iter().any(|n| n.contains(&ip)))
                && r.grants_name(name)
        })
    }

    /// Decides a watch of every name starting with `prefix`: allowed when a rule matching the
    /// client grants at least one such name (each event is then decided by [`decide`]
    /// (Self::decide) on its own name).
    pub fn decide_prefix(&self, ip: IpAddr, cn: Option<&str>, prefix: &str) -> ReaderDecision {
        let under = |g: &String| match g.strip_suffix('*') {
            Some(p) => p.starts_with(prefix) || prefix.starts_with(p),
            None => g.starts_with(prefix),
        };
        let shown = format!("any name under {prefix:?}");
        self.decide_by(ip, cn, &shown, |r| r.grants.iter().any(under))
    }

    fn decide_by(
        &self,
        ip: IpAddr,
        cn: Option<&str>,
        name: &str,
        grants: impl Fn(&ReaderRule) -> bool,
    ) -> ReaderDecision {
        if self.rules.is_empty() {
            if self.required {
                return ReaderDecision::Denied(
                    "reader rules are in force on this cluster and none is left: no read is allowed until one is created"
                        .into(),
                );
            }
            return ReaderDecision::NoRules;
        }
        let matches = |(r, nets): &&(ReaderRule, Vec<IpNet>)| {
            cn.is_some_and(|cn| r.cert_cns.iter().any(|c| c == cn)) || nets.iter().any(|n| n.contains(&ip))
        };
        let matching: Vec<&ReaderRule> = self.rules.iter().filter(matches).map(|(r, _)| r).collect();
        if let Some(r) = matching.iter().find(|r| grants(r)) {
            return ReaderDecision::Allowed(r.name.clone());
        }
        let who = match cn {
            Some(cn) => format!("client {ip} (certificate {cn:?})"),
            None => format!("client {ip}"),
        };
        if matching.is_empty() {
            ReaderDecision::Denied(format!("no reader rule matches {who}"))
        } else {
            let names: Vec<&str> = matching.iter().map(|r| r.name.as_str()).collect();
            ReaderDecision::Denied(format!("reader rule {} for {who} does not grant {name}", names.join(", ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_allowed_when_a_matching_rule_grants_some_name_under_it() {
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let rule = ReaderRule::new("r", &["10.0.0.0/24".into()], &[], &["app/*".into(), "db/main".into()], 1).unwrap();
        let rules = ReaderRules::new(vec![rule]);
        for allowed in ["", "app/", "app/x/", "a", "db/", "db/main"] {
            assert!(matches!(rules.decide_prefix(ip, None, allowed), ReaderDecision::Allowed(_)), "{allowed}");
        }
        for refused in ["other/", "db/mainx", "b"] {
            assert!(matches!(rules.decide_prefix(ip, None, refused), ReaderDecision::Denied(_)), "{refused}");
        }
        let elsewhere: IpAddr = "10.0.1.5".parse().unwrap();
        assert!(matches!(rules.decide_prefix(elsewhere, None, "app/"), ReaderDecision::Denied(_)));
    }

    #[test]
    fn allows_answers_as_decide_does() {
        let rules = ReaderRules::new(vec![
            ReaderRule::new("a", &["10.0.0.0/24".into()], &[], &["app/*".into()], 1).unwrap(),
            ReaderRule::new("b", &[], &["svc".into()], &["db/main".into()], 1).unwrap(),
        ]);
        let empty = ReaderRules::new(vec![]);
        let required = ReaderRules::new(vec![]).required(true);
        let ips: [IpAddr; 2] = ["10.0.0.5".parse().unwrap(), "10.0.1.5".parse().unwrap()];
        for set in [&rules, &empty, &required] {
            for ip in ips {
                for cn in [None, Some("svc"), Some("other")] {
                    for name in ["app/x", "app", "db/main", "db/mainx", "other/y"] {
                        let decided = !matches!(set.decide(ip, cn, name), ReaderDecision::Denied(_));
                        assert_eq!(set.allows(ip, cn, name), decided, "{ip} {cn:?} {name}");
                    }
                }
            }
        }
        assert!(rules.allows(ips[0], None, "app/x"));
        assert!(!rules.allows(ips[1], None, "app/x"));
        assert!(rules.allows(ips[1], Some("svc"), "db/main"));
        assert!(empty.allows(ips[1], None, "anything"));
        assert!(!required.allows(ips[0], None, "app/x"));
    }

    #[test]
    fn rules_required_with_none_left_allow_no_read() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(matches!(ReaderRules::new(vec![]).decide(ip, None, "a"), ReaderDecision::NoRules));
        let required = ReaderRules::new(vec![]).required(true);
        assert!(required.is_required());
        assert!(
            matches!(required.decide(ip, Some("cn"), "a"), ReaderDecision::Denied(why) if why.contains("none is left"))
        );
    }

    fn rule(name: &str, cidrs: &[&str], cns: &[&str], grants: &[&str]) -> ReaderRule {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        ReaderRule::new(name, &s(cidrs), &s(cns), &s(grants), 0).unwrap()
    }

    #[test]
    fn rules_match_by_address_or_subject_and_grant_by_pattern() {
        let rules = vec![
            rule("ci", &[], &["ci-runner"], &["ci/*"]),
            rule("local", &["127.0.0.1", "10.0.1.7/24"], &[], &["app/*"]),
        ];
        assert_eq!(rules[1].cidrs, vec!["127.0.0.1/32", "10.0.1.0/24"], "normalized");
        let rules = ReaderRules::new(rules);
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(rules.decide(lo, None, "app/x"), ReaderDecision::Allowed("local".into()));
        assert!(matches!(rules.decide(lo, None, "other/x"), ReaderDecision::Denied(m) if m.contains("local")));
        assert!(
            matches!(rules.decide(other, None, "app/x"), ReaderDecision::Denied(m) if m.contains("no reader rule"))
        );
        assert_eq!(rules.decide(other, Some("ci-runner"), "ci/a"), ReaderDecision::Allowed("ci".into()));
        assert!(matches!(rules.decide(other, Some("ci-runner"), "app/x"), ReaderDecision::Denied(_)));
        assert!(matches!(rules.decide(other, Some("someone"), "ci/a"), ReaderDecision::Denied(_)));
        assert_eq!(ReaderRules::default().decide(other, None, "x"), ReaderDecision::NoRules);
    }

    #[test]
    fn bad_rules_are_refused() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(ReaderRule::new("r", &s(&["10.0.0.0/33"]), &[], &s(&["a"]), 0).is_err());
        assert!(ReaderRule::new("r", &s(&["nope"]), &[], &s(&["a"]), 0).is_err());
        assert!(ReaderRule::new("r", &[], &[], &s(&["a"]), 0).is_err(), "matches no client");
        assert!(ReaderRule::new("r", &s(&["10.0.0.1"]), &[], &[], 0).is_err(), "grants nothing");
        assert!(ReaderRule::new("r", &s(&["10.0.0.1"]), &[], &s(&["a*b"]), 0).is_err());
        assert!(ReaderRule::new("bad name", &s(&["10.0.0.1"]), &[], &s(&["a"]), 0).is_err());
        assert!(ReaderRule::new("r", &[], &s(&["x\ny"]), &s(&["a"]), 0).is_err());
        let mapped = ReaderRule::new("r", &s(&["::ffff:10.1.2.3/120", "::ffff:10.9.9.9"]), &[], &s(&["a"]), 0).unwrap();
        assert_eq!(mapped.cidrs, vec!["10.1.2.0/24", "10.9.9.9/32"], "IPv4-mapped networks are stored as IPv4");
    }
}
