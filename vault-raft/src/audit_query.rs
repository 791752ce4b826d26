//! What [`crate::AuditLog::list`] looks for: how many records, and which. Each filter is
//! exact, so a search never matches a record by a part of a name it happens to contain.

use vault_core::model::AuditRecord;

/// A search of the audit log, newest first: at most `limit` records that match every filter
/// set. The limit counts matching records, so a narrow filter still fills its page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub limit: usize,
    /// Records about this secret.
    pub secret: Option<String>,
    /// Records of this actor (a token's name, or a reader's address).
    pub actor: Option<String>,
    /// Records of this action (`secret.get`, `audit.list`, ...).
    pub action: Option<String>,
    /// Records with this outcome; see [`outcome_matches`].
    pub outcome: Option<String>,
    /// Records at or after this time (ms since the epoch).
    pub since_ms: Option<u64>,
    /// Records at or before this time (ms since the epoch).
    pub until_ms: Option<u64>,
}

impl AuditQuery {
    /// The newest `limit` records, whatever they are.
    pub fn newest(limit: usize) -> Self {
        AuditQuery { limit, ..Default::default() }
    }

    /// Whether `r` matches every filter set (the time bounds included).
    pub fn matches(&self, r: &AuditRecord) -> bool {
        let is = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        is(&self.actor, &r.actor)
            && is(&self.action, &r.action)
            && self.secret.as_deref().is_none_or(|s| r.secret.as_deref() == Some(s))
            && self.outcome.as_deref().is_none_or(|o| outcome_matches(&r.outcome, o))
            && self.since_ms.is_none_or(|s| r.time_ms >= s)
            && self.until_ms.is_none_or(|u| r.time_ms <= u)
    }
}

/// Whether a record's `outcome` is `want`: the whole text, or its status in words, which is
/// what comes before the reason (`permission denied` of `permission denied: token revoked`,
/// `ok` of `ok (reader rule r1)`).
pub fn outcome_matches(outcome: &str, want: &str) -> bool {
    match outcome.strip_prefix(want) {
        Some(rest) => rest.is_empty() || rest.starts_with(": ") || rest.starts_with(" ("),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(actor: &str, action: &str, secret: Option<&str>, outcome: &str, time_ms: u64) -> AuditRecord {
        AuditRecord {
            seq: 1,
            time_ms,
            node_id: 1,
            actor: actor.into(),
            client_ip: "127.0.0.1".into(),
            action: action.into(),
            secret: secret.map(Into::into),
            outcome: outcome.into(),
        }
    }

    #[test]
    fn outcomes_match_whole_or_by_their_status() {
        assert!(outcome_matches("ok", "ok"));
        assert!(outcome_matches("ok (reader rule r1)", "ok"));
        assert!(outcome_matches("permission denied: no grant", "permission denied"));
        assert!(outcome_matches("permission denied: no grant", "permission denied: no grant"));
        assert!(!outcome_matches("permission denied: no grant", "permission"));
        assert!(!outcome_matches("okay", "ok"));
        assert!(!outcome_matches("not found: x", "ok"));
    }

    #[test]
    fn every_filter_is_exact_and_all_must_hold() {
        let r = record("ci", "secret.get", Some("app/db"), "ok", 1_000);
        assert!(AuditQuery::newest(1).matches(&r));
        let q = |f: fn(&mut AuditQuery)| {
            let mut q = AuditQuery::newest(1);
            f(&mut q);
            q.matches(&r)
        };
        assert!(q(|q| q.actor = Some("ci".into())));
        assert!(!q(|q| q.actor = Some("c".into())));
        assert!(q(|q| q.action = Some("secret.get".into())));
        assert!(!q(|q| q.action = Some("secret".into())));
        assert!(!q(|q| q.secret = Some("app/d".into())));
        assert!(q(|q| q.outcome = Some("ok".into())));
        assert!(q(|q| q.until_ms = Some(1_000)));
        assert!(!q(|q| q.until_ms = Some(999)));
        assert!(q(|q| q.since_ms = Some(1_000)));
        assert!(!q(|q| q.since_ms = Some(1_001)));
        assert!(!q(|q| {
            q.actor = Some("ci".into());
            q.action = Some("secret.put".into());
        }));
    }
}
