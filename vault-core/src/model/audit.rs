use serde::{Deserialize, Serialize};

/// One audited action. Never holds a value, DEK or token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub time_ms: u64,
    pub node_id: u64,
    /// Token name for management calls; the client IP for allowlisted reads.
    pub actor: String,
    pub client_ip: String,
    pub action: String,
    pub secret: Option<String>,
    /// `ok`, or the status code in words with a short reason.
    pub outcome: String,
}

/// Who asked for a change and how it is recorded, carried inside the change's Raft command:
/// every node writes the record, with the outcome, in the same batch that applies the change,
/// so no change commits without its record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditContext {
    /// The node that served the request.
    pub node_id: u64,
    pub actor: String,
    pub client_ip: String,
    pub action: String,
}

/// Longest secret name, actor, action or address kept in a record, in bytes.
pub const MAX_AUDIT_FIELD: usize = 256;
/// Longest outcome kept in a record, in bytes.
pub const MAX_AUDIT_OUTCOME: usize = 512;

/// Longest secret name kept in the record of a refusal, in bytes: refusals are the records a
/// client can make at will, so they are kept small.
pub const MAX_REFUSED_NAME: usize = 64;
/// Longest outcome kept in the record of a refusal, in bytes.
pub const MAX_REFUSAL_OUTCOME: usize = 160;

/// `s` as it may appear in a record: control and non-ASCII characters escaped (but `…`, the
/// mark of truncation, so that capping twice changes nothing), at most `max` bytes (a truncated
/// field ends with `…`). Valid secret names pass unchanged.
pub fn audit_field(s: &str, max: usize) -> String {
    let escaped: String = s
        .chars()
        .flat_map(|c| if c.is_ascii_graphic() || c == ' ' || c == '…' { vec![c] } else { c.escape_default().collect() })
        .collect();
    if escaped.len() <= max {
        return escaped;
    }
    let mut cut = max.saturating_sub('…'.len_utf8());
    while !escaped.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &escaped[..cut])
}

impl AuditRecord {
    /// The record with every client-supplied field escaped and capped.
    pub fn capped(mut self) -> Self {
        self.actor = audit_field(&self.actor, MAX_AUDIT_FIELD);
        self.client_ip = audit_field(&self.client_ip, MAX_AUDIT_FIELD);
        self.action = audit_field(&self.action, MAX_AUDIT_FIELD);
        self.secret = self.secret.map(|s| audit_field(&s, MAX_AUDIT_FIELD));
        self.outcome = audit_field(&self.outcome, MAX_AUDIT_OUTCOME);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_escaped_and_capped() {
        assert_eq!(audit_field("app/db-1.x_y", 256), "app/db-1.x_y");
        assert_eq!(audit_field("a\u{1b}[31mb\n", 256), "a\\u{1b}[31mb\\n");
        let long = "x".repeat(5000);
        let capped = audit_field(&long, 256);
        assert!(capped.len() <= 256 && capped.ends_with('…'), "{}", capped.len());
        assert_eq!(audit_field("é", 256), "\\u{e9}");
        assert_eq!(audit_field(&capped, 256), capped, "capping twice changes nothing");
        assert_eq!(audit_field(&capped, 64).len(), 64);
    }
}
