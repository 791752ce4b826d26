//! Syslog messages as RFC 5424 defines them, written here (the format is one line of fixed
//! fields; no crate needed):
//!
//! `<86>1 2026-12-08T01:02:03.456Z host vault 1234 secret.put [vault@32473 node="1" seq="42"] {json}`
//!
//! - PRI 86: facility `authpriv` (10), severity `info` (6);
//! - TIMESTAMP: the record's time, UTC, milliseconds;
//! - HOSTNAME: this machine's name (`-` if unknown); APP-NAME `vault`; PROCID: the process id;
//! - MSGID: the record's action (`secret.put`, `audit.list`, ...);
//! - STRUCTURED-DATA: `vault@32473` (32473 is the example enterprise number RFC 5612 reserves
//!   for documentation) with the record's place: its chain's node id and sequence number;
//! - MSG: the shipped JSON line ([`vault_raft::audit_shipped`]), which carries the chain.
//!
//! Over TCP each message is octet-counted (RFC 6587 §3.4.1: its length in bytes, a space, the
//! message); over a Unix datagram socket (`/dev/log`) each datagram is one message.

use std::time::{Duration, UNIX_EPOCH};

use vault_raft::ShippedRecord;

/// `authpriv.info`.
const PRI: u8 = 10 * 8 + 6;

/// The syslog message of `record`, whose JSON line is `line`.
pub(crate) fn message(record: &ShippedRecord, line: &str, hostname: &str) -> String {
    let r = &record.record;
    let time = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(r.time_ms));
    format!(
        "<{PRI}>1 {time} {hostname} vault {} {} [vault@32473 node=\"{}\" seq=\"{}\"] {line}",
        std::process::id(),
        header_field(&r.action, 32),
        record.chain_node_id,
        r.seq
    )
}

/// `message` framed for a stream: octet counting.
pub(crate) fn octet_counted(message: &str) -> String {
    format!("{} {message}", message.len())
}

/// This machine's name as a HOSTNAME field.
pub(crate) fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    header_field(name.trim(), 255)
}

/// A header field: printable ASCII without spaces, at most `max` characters; `-` if empty.
fn header_field(s: &str, max: usize) -> String {
    let f: String = s.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if f.is_empty() {
        "-".into()
    } else {
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_has_the_rfc5424_header_the_action_as_msgid_and_the_line_as_msg() {
        let record = ShippedRecord {
            v: 1,
            chain_node_id: 3,
            record: vault_core::model::AuditRecord {
                seq: 42,
                time_ms: 1_000,
                node_id: 3,
                actor: "a".into(),
                client_ip: "-".into(),
                action: "secret.put".into(),
                secret: None,
                outcome: "ok".into(),
            },
            key_id: None,
            prev_mac: None,
            mac: None,
        };
        let m = message(&record, "{\"x\":1}", &header_field("host one", 255));
        let want = format!(
            "<86>1 1970-01-01T00:00:01.000Z hostone vault {} secret.put [vault@32473 node=\"3\" seq=\"42\"] {{\"x\":1}}",
            std::process::id()
        );
        assert_eq!(m, want);
        assert_eq!(octet_counted("abc"), "3 abc");
        assert_eq!(header_field("", 5), "-");
    }
}
