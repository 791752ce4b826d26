//! Which names a listing may look at: the ranges of the name space a role's grants cover,
//! cut down to the listing's prefix. A listing that walks only these ranges never examines
//! a name its caller may not see, so nothing it returns (a page, or where the next page
//! starts) depends on names outside the caller's grants.

use super::role::{Action, Role};

/// A contiguous range of secret names in byte order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameRange {
    /// Every name that starts with this string (`""`: every name).
    Prefix(String),
    /// This one name.
    Exact(String),
}

impl NameRange {
    /// The first name the range can hold (names sort as bytes).
    pub fn start(&self) -> &str {
        match self {
            NameRange::Prefix(p) | NameRange::Exact(p) => p,
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        match self {
            NameRange::Prefix(p) => name.starts_with(p.as_str()),
            NameRange::Exact(n) => n == name,
        }
    }

    /// Whether every name in `other` is in `self`.
    fn covers(&self, other: &NameRange) -> bool {
        match self {
            NameRange::Prefix(p) => other.start().starts_with(p.as_str()),
            NameRange::Exact(n) => matches!(other, NameRange::Exact(o) if o == n),
        }
    }
}

impl Role {
    /// The names under `prefix` on which this role grants `action`, as disjoint ranges in
    /// name order. Walking them in turn visits exactly those names, in order.
    pub fn ranges(&self, action: Action, prefix: &str) -> Vec<NameRange> {
        if self.is_admin() {
            return vec![NameRange::Prefix(prefix.to_string())];
        }
        let mut ranges: Vec<NameRange> = self
            .grants
            .iter()
            .filter(|g| g.action == action || g.action == Action::All)
            .filter_map(|g| match g.pattern.strip_suffix('*') {
                // The names under both the grant's prefix and the listing's: under the longer.
                Some(p) if p.starts_with(prefix) => Some(NameRange::Prefix(p.to_string())),
                Some(p) if prefix.starts_with(p) => Some(NameRange::Prefix(prefix.to_string())),
                Some(_) => None,
                None => g.pattern.starts_with(prefix).then(|| NameRange::Exact(g.pattern.clone())),
            })
            .collect();
        // Drop the ranges another one covers; what is left is disjoint, so ordering by start
        // orders the ranges as a whole.
        ranges.sort_by(|a, b| {
            a.start()
                .cmp(b.start())
                .then_with(|| matches!(b, NameRange::Prefix(_)).cmp(&matches!(a, NameRange::Prefix(_))))
        });
        let mut out: Vec<NameRange> = Vec::with_capacity(ranges.len());
        for r in ranges {
            if !out.iter().any(|kept| kept.covers(&r)) {
                out.push(r);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Grant;
    use proptest::prelude::*;

    fn role(grants: &[&str]) -> Role {
        let grants = grants.iter().flat_map(|g| Grant::parse_many(g).unwrap()).collect();
        Role::new("r", grants).unwrap()
    }

    #[test]
    fn ranges_follow_the_grants_under_the_prefix() {
        let r = role(&["list:app/*", "list:app/db/*", "list:ops/key", "create:zzz/*", "*:team/a*", "list:app/x"]);
        assert_eq!(
            r.ranges(Action::List, ""),
            vec![
                NameRange::Prefix("app/".into()),
                NameRange::Exact("ops/key".into()),
                NameRange::Prefix("team/a".into()),
            ]
        );
        assert_eq!(r.ranges(Action::List, "app/db/x"), vec![NameRange::Prefix("app/db/x".into())]);
        assert_eq!(r.ranges(Action::List, "team/"), vec![NameRange::Prefix("team/a".into())]);
        assert_eq!(r.ranges(Action::List, "ops/"), vec![NameRange::Exact("ops/key".into())]);
        assert!(r.ranges(Action::List, "zzz/").is_empty());
        assert_eq!(Role::builtin_admin().ranges(Action::List, "p/"), vec![NameRange::Prefix("p/".into())]);
    }

    proptest! {
        /// Walking the ranges in order visits exactly the names the role lets the caller list
        /// under the prefix, in name order.
        #[test]
        fn ranges_hold_exactly_the_allowed_names_in_order(
            patterns in proptest::collection::vec("(a|ab|b|a/b|ab/c|b/a)\\*?|\\*", 1..5),
            prefix in "(|a|ab|a/|b)",
            names in proptest::collection::btree_set("[ab/c]{1,5}", 0..40),
        ) {
            let grants: Vec<Grant> = patterns.iter().filter_map(|p| Grant::new(Action::List, p).ok()).collect();
            prop_assume!(!grants.is_empty());
            let r = Role::new("r", grants).unwrap();
            let ranges = r.ranges(Action::List, &prefix);
            let walked: Vec<&String> = ranges
                .iter()
                .flat_map(|range| names.iter().filter(move |n| n.as_str() >= range.start() && range.contains(n)))
                .collect();
            let wanted: Vec<&String> =
                names.iter().filter(|n| n.starts_with(prefix.as_str()) && r.allows(Action::List, n)).collect();
            prop_assert_eq!(walked, wanted);
        }
    }
}
