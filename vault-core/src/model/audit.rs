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
    if is_plain(s, max) {
        return s.to_owned();
    }
    escape_and_cap(s, max)
}

/// [`audit_field`] of an owned field: a field that needs no escaping or capping (every record
/// of a well-formed request) is returned as it is, without a copy.
pub fn audit_field_owned(s: String, max: usize) -> String {
    if is_plain(&s, max) {
        return s;
    }
    escape_and_cap(&s, max)
}

/// Characters a record keeps as they are.
fn keeps(c: char) -> bool {
    c.is_ascii_graphic() || c == ' ' || c == '…'
}

/// Nothing in `s` to escape, and it fits in `max` bytes: [`audit_field`] would return it
/// unchanged.
fn is_plain(s: &str, max: usize) -> bool {
    s.len() <= max && s.chars().all(keeps)
}

fn escape_and_cap(s: &str, max: usize) -> String {
    let mut escaped = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        if keeps(c) {
            escaped.push(c);
        } else {
            escaped.extend(c.escape_default());
        }
    }
    if escaped.len() <= max {
        return escaped;
    }
    let mut cut = max.saturating_sub('…'.len_utf8());
    while !escaped.is_char_boundary(cut) {
        cut -= 1;
    }
    escaped.truncate(cut);
    escaped.push('…');
    escaped
}

impl AuditRecord {
    /// The record with every client-supplied field escaped and capped.
    pub fn capped(mut self) -> Self {
        self.actor = audit_field_owned(self.actor, MAX_AUDIT_FIELD);
        self.client_ip = audit_field_owned(self.client_ip, MAX_AUDIT_FIELD);
        self.action = audit_field_owned(self.action, MAX_AUDIT_FIELD);
        self.secret = self.secret.map(|s| audit_field_owned(s, MAX_AUDIT_FIELD));
        self.outcome = audit_field_owned(self.outcome, MAX_AUDIT_OUTCOME);
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

    /// The escape written the simple way (one `String` per character, as it first was): the
    /// fast path and the one-buffer escape must give the same bytes for every input.
    fn reference(s: &str, max: usize) -> String {
        let escaped: String =
            s.chars().flat_map(|c| if keeps(c) { vec![c] } else { c.escape_default().collect() }).collect();
        if escaped.len() <= max {
            return escaped;
        }
        let mut cut = max.saturating_sub('…'.len_utf8());
        while !escaped.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}…", &escaped[..cut])
    }

    #[test]
    fn the_fast_path_and_the_escape_agree_with_the_reference() {
        let samples = [
            "",
            "ok",
            "app/db",
            "a b",
            "tab\there",
            "new\nline",
            "é",
            "…",
            "x…y",
            "\u{1b}[0m",
            "日本語",
            "mixed é\u{7f} and \u{0}",
            "10.0.0.1",
            "denied: may not read app/x",
        ];
        for s in samples {
            let long = s.repeat(40);
            for input in [s.to_string(), long] {
                for max in [0, 1, 3, 4, 5, 16, 64, 256, usize::MAX] {
                    let want = reference(&input, max);
                    assert_eq!(audit_field(&input, max), want, "{input:?} max {max}");
                    assert_eq!(audit_field_owned(input.clone(), max), want, "{input:?} max {max}");
                }
            }
        }
    }
}
