//! The record as it leaves the node: one JSON object per line, the same to every sink (a file,
//! a socket, syslog's MSG). Format 1 (`"v": 1`), stable: fields are only ever added.
//!
//! ```json
//! {"v":1,"chain_node_id":2,"seq":42,"time_ms":1765150000000,"node_id":1,"actor":"ci",
//!  "client_ip":"10.0.0.5","action":"secret.put","secret":"app/db","outcome":"ok",
//!  "key_id":"audit:1f2e…","prev_mac":"9a…","mac":"c4…"}
//! ```
//!
//! `chain_node_id` and `seq` are the record's place: the node whose log (chain) holds it, and its
//! number there. (`node_id` is the node that served the request: a change is recorded by every
//! node, each in its own chain, with the same `node_id`.)
//!
//! `mac` is the record's HMAC-SHA256 in the node's chain ([`crate::audit_chain`]) over
//! `prev_mac`, `seq` and the record's fields, under the key `key_id` names; `prev_mac` is the
//! MAC of the record before it (or of the anchor retention left, or zeros at the chain's
//! start). So a receiver holding the audit key can check every line on its own, and that each
//! line follows the one before it (`vault_raft::audit_file_verify`, `vaultctl audit verify
//! --file`). A record from before chaining has `key_id`, `prev_mac` and `mac` null.

use rocksdb::{Direction, IteratorMode, DB};
use serde::{Deserialize, Serialize};
use vault_core::model::AuditRecord;

use crate::audit_chain::Link;
use crate::audit_log::{decode_stored, Stored};
use crate::db::{cf, CF_AUDIT};
use crate::StoreError;

/// The format this build writes.
pub const SHIPPED_FORMAT: u32 = 1;

/// One shipped record (one JSON line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShippedRecord {
    /// Format of the line ([`SHIPPED_FORMAT`]); lines of builds before shipping lack it.
    #[serde(default)]
    pub v: u32,
    /// The node whose audit log (and chain) this record is in.
    #[serde(default)]
    pub chain_node_id: u64,
    #[serde(flatten)]
    pub record: AuditRecord,
    /// Id of the audit key the MAC was made with (`audit:` and 16 hex digits).
    pub key_id: Option<String>,
    /// Hex of the MAC of the record before this one in the chain.
    pub prev_mac: Option<String>,
    /// Hex of this record's MAC.
    pub mac: Option<String>,
}

impl ShippedRecord {
    /// The JSON line, without its newline.
    pub fn to_line(&self) -> Result<String, StoreError> {
        serde_json::to_string(self).map_err(|e| StoreError::Codec(e.to_string()))
    }
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The 32 bytes of a 64-digit hex string.
pub fn from_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// At most `limit` records after `after`, oldest first, each with the MAC before it. `anchor`
/// is the chain's anchor (the last record retention removed).
pub(crate) fn read_after(
    db: &DB,
    node_id: u64,
    anchor: Option<Link>,
    after: u64,
    limit: usize,
) -> Result<Vec<ShippedRecord>, StoreError> {
    let mut out = Vec::new();
    // The MAC a record at `seq` chains onto when the record before it is not among those read:
    // the anchor's when it is the anchor, else the start of the chain (zeros), as verify walks.
    let before = |seq: u64| match anchor {
        Some(a) if a.seq + 1 == seq => a.mac,
        _ => [0u8; 32],
    };
    // The newest chained record read so far.
    let mut prev: Option<(u64, [u8; 32])> = None;
    let it = db.iterator_cf(cf(db, CF_AUDIT)?, IteratorMode::From(&after.to_be_bytes(), Direction::Forward));
    for item in it {
        let (k, v) = item?;
        let seq = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| StoreError::Corrupt("audit key".into()))?);
        let stored = decode_stored(&v)?;
        if seq <= after {
            if let Stored::Chained(c) = stored {
                prev = Some((seq, c.mac));
            }
            continue;
        }
        let shipped = match stored {
            Stored::Chained(c) => {
                let prev_mac = match prev {
                    Some((p, mac)) if p + 1 == seq => mac,
                    _ => before(seq),
                };
                prev = Some((seq, c.mac));
                ShippedRecord {
                    v: SHIPPED_FORMAT,
                    chain_node_id: node_id,
                    record: c.record,
                    key_id: Some(c.key_id),
                    prev_mac: Some(to_hex(&prev_mac)),
                    mac: Some(to_hex(&c.mac)),
                }
            }
            Stored::Legacy(mut record) => {
                record.seq = seq;
                ShippedRecord {
                    v: SHIPPED_FORMAT,
                    chain_node_id: node_id,
                    record,
                    key_id: None,
                    prev_mac: None,
                    mac: None,
                }
            }
        };
        out.push(shipped);
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_32_bytes() {
        let bytes = [0xa5u8; 32];
        assert_eq!(from_hex32(&to_hex(&bytes)), Some(bytes));
        assert_eq!(from_hex32("ab"), None);
        assert_eq!(from_hex32(&"zz".repeat(32)), None);
    }

    #[test]
    fn a_line_carries_the_record_fields_at_top_level_with_its_chain_position() {
        let r = ShippedRecord {
            v: 1,
            chain_node_id: 1,
            record: crate::audit_fixtures::record(1, 5),
            key_id: Some("audit:00".into()),
            prev_mac: Some("00".repeat(32)),
            mac: Some("11".repeat(32)),
        };
        let line = r.to_line().unwrap();
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        for field in ["v", "chain_node_id", "seq", "node_id", "action", "outcome", "key_id", "prev_mac", "mac"] {
            assert!(json.get(field).is_some(), "{field} missing: {line}");
        }
        assert_eq!(serde_json::from_str::<ShippedRecord>(&line).unwrap(), r);
    }
}
