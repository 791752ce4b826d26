//! The pieces of the audit hash chain that are keyed: record MACs, the *head* (the newest link
//! and the *anchor* left by retention, tagged together), and the two records the node writes
//! about the chain itself: a key's retirement and a break found at start.
//!
//! Without the audit key nobody can make a MAC, a head or either of those records, so
//! [`crate::audit_log::AuditLog::verify`] can treat anything under a key it does not hold as a
//! failure, unless a keyed record of the chain retires that key.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use vault_core::keys::AuditMacKey;
use vault_core::model::AuditRecord;

use crate::codec::encode;
use crate::StoreError;

/// Where the head is kept (in the Raft metadata family), with the anchor bound into it.
pub(crate) const KEY_HEAD: &[u8] = b"audit_head_v2";
/// Where builds before the anchor was tagged kept the head, and the untagged anchor. Read once
/// to upgrade; present afterwards, they were put there by someone else.
pub(crate) const KEY_HEAD_V1: &[u8] = b"audit_head";
pub(crate) const KEY_ANCHOR_V1: &[u8] = b"audit_anchor";
/// Set at every start of a build that keeps the chain: a data directory that has it and no
/// head lost its head (a directory of a pre-chaining build has neither).
pub(crate) const KEY_CHAIN_STARTED: &[u8] = b"audit_chain_started";

/// Action of the record that retires an audit key (written when a node starts with a new
/// current key while it still holds the old one).
pub const ACTION_KEY_RETIRED: &str = "audit.key_retired";
/// Action of the record a node writes when, at start, the chain's head does not check out.
pub const ACTION_CHAIN_BROKEN: &str = "audit.chain_broken";
/// Action of the record that adopts the records of a pre-chaining build, written at the first
/// start that finds them with no head: records up to the one it names may be unchained.
pub const ACTION_LEGACY_ADOPTED: &str = "audit.legacy_adopted";
/// Action of the record written when a head of older builds is upgraded and its untagged
/// anchor adopted.
pub const ACTION_HEAD_UPGRADED: &str = "audit.head_upgraded";
/// Action of the record written when retention removed records past the hard size cap.
pub const ACTION_PRUNED_OVER_HARD_CAP: &str = "audit.pruned_over_hard_cap";

/// A place in the chain: a sequence number and the MAC of the record there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Link {
    pub seq: u64,
    pub mac: [u8; 32],
}

/// The head as builds before this one wrote it (its tag covers the link only).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct HeadV1 {
    pub link: Link,
    pub key_id: String,
    pub tag: [u8; 32],
}

/// The newest link and the anchor (the last link removed by retention), tagged together, so
/// neither can be moved, rolled back or swapped for an older one without the key. A break
/// found at start is kept here too (`broken`), so verify fails after retention removed the
/// break's record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Head {
    pub link: Link,
    pub anchor: Option<Link>,
    pub key_id: String,
    pub tag: [u8; 32],
    /// Added after the head was tagged with its anchor: heads of those builds lack it (read as
    /// `None`, see [`Head::decode`]); with `None`, the tag is what those builds made.
    pub broken: Option<Break>,
}

/// The first break the node found at start: the sequence number of its `audit.chain_broken`
/// record, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Break {
    pub seq: u64,
    pub reason: String,
}

/// The head as builds before [`Head::broken`] wrote it.
#[derive(Deserialize)]
struct HeadV2 {
    link: Link,
    anchor: Option<Link>,
    key_id: String,
    tag: [u8; 32],
}

fn hmac(key: &AuditMacKey) -> Result<Hmac<Sha256>, StoreError> {
    <Hmac<Sha256> as Mac>::new_from_slice(key.expose()).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The MAC of `record` chained after `prev`.
pub(crate) fn record_mac(key: &AuditMacKey, prev: &[u8; 32], record: &AuditRecord) -> Result<[u8; 32], StoreError> {
    let mut m = hmac(key)?;
    m.update(b"vault audit record v1\0");
    m.update(prev);
    m.update(&record.seq.to_be_bytes());
    m.update(&encode(record)?);
    Ok(m.finalize().into_bytes().into())
}

impl HeadV1 {
    pub fn tag_ok(&self, key: &AuditMacKey) -> Result<bool, StoreError> {
        let mut m = hmac(key)?;
        m.update(b"vault audit head v1\0");
        m.update(&self.link.seq.to_be_bytes());
        m.update(&self.link.mac);
        Ok(m.verify_slice(&self.tag).is_ok())
    }
}

impl Head {
    pub fn new(
        key_id: &str,
        key: &AuditMacKey,
        link: Link,
        anchor: Option<Link>,
        broken: Option<Break>,
    ) -> Result<Self, StoreError> {
        let tag = Self::mac(key, &link, anchor.as_ref(), broken.as_ref())?.finalize().into_bytes().into();
        Ok(Head { link, anchor, key_id: key_id.to_string(), tag, broken })
    }

    /// Reads a head of this build or of the builds before [`Head::broken`].
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        crate::codec::decode::<Head>(bytes).or_else(|_| {
            crate::codec::decode::<HeadV2>(bytes).map(|h| Head {
                link: h.link,
                anchor: h.anchor,
                key_id: h.key_id,
                tag: h.tag,
                broken: None,
            })
        })
    }

    fn mac(
        key: &AuditMacKey,
        link: &Link,
        anchor: Option<&Link>,
        broken: Option<&Break>,
    ) -> Result<Hmac<Sha256>, StoreError> {
        let mut m = hmac(key)?;
        m.update(b"vault audit head v2\0");
        m.update(&link.seq.to_be_bytes());
        m.update(&link.mac);
        match anchor {
            None => m.update(&[0]),
            Some(a) => {
                m.update(&[1]);
                m.update(&a.seq.to_be_bytes());
                m.update(&a.mac);
            }
        }
        if let Some(b) = broken {
            m.update(b"broken\0");
            m.update(&b.seq.to_be_bytes());
            m.update(&(b.reason.len() as u64).to_be_bytes());
            m.update(b.reason.as_bytes());
        }
        Ok(m)
    }

    /// Whether the tag is `key`'s over the link, anchor and break (compared in constant time).
    pub fn tag_ok(&self, key: &AuditMacKey) -> Result<bool, StoreError> {
        Ok(Self::mac(key, &self.link, self.anchor.as_ref(), self.broken.as_ref())?.verify_slice(&self.tag).is_ok())
    }
}

/// A record about the chain itself, written by the node (never by a caller).
pub(crate) fn node_record(action: &str, outcome: String) -> AuditRecord {
    AuditRecord {
        seq: 0,
        time_ms: vault_core::time::now_ms(),
        node_id: 0,
        actor: "vault-node".into(),
        client_ip: "-".into(),
        action: action.into(),
        secret: None,
        outcome,
    }
}

/// What a retirement says when the chain did not verify as the key was retired.
pub(crate) const RETIRED_BROKEN: &str = "; the chain did not verify: ";

/// The record that retires `old` after record `last_seq`, with what verify found (`broken`)
/// while the key was still held.
pub(crate) fn retirement(old: &str, last_seq: u64, new: &str, broken: Option<&str>) -> AuditRecord {
    let found = match broken {
        None => "; the chain verified".to_string(),
        Some(p) => format!("{RETIRED_BROKEN}{p}"),
    };
    node_record(
        ACTION_KEY_RETIRED,
        format!("key {old} retired after record {last_seq}; later records use key {new}{found}"),
    )
}

/// The key a retirement record retires, and the last record made under it.
pub(crate) fn retired_key(record: &AuditRecord) -> Option<(String, u64)> {
    if record.action != ACTION_KEY_RETIRED {
        return None;
    }
    let rest = record.outcome.strip_prefix("key ")?;
    let (key, rest) = rest.split_once(" retired after record ")?;
    let seq = rest.split(';').next()?.parse().ok()?;
    Some((key.to_string(), seq))
}

/// The record that adopts the unchained records up to `last_seq`.
pub(crate) fn legacy_adoption(last_seq: u64) -> AuditRecord {
    node_record(ACTION_LEGACY_ADOPTED, format!("records up to {last_seq} from before chaining adopted unchained"))
}

/// The last record a legacy adoption covers.
pub(crate) fn adopted_up_to(record: &AuditRecord) -> Option<u64> {
    if record.action != ACTION_LEGACY_ADOPTED {
        return None;
    }
    record.outcome.strip_prefix("records up to ")?.split(' ').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_tag_covers_its_link_and_its_anchor() {
        let key = AuditMacKey::from_slice(&[3; 32]).unwrap();
        let other = AuditMacKey::from_slice(&[4; 32]).unwrap();
        let link = Link { seq: 9, mac: [1; 32] };
        let anchor = Some(Link { seq: 4, mac: [2; 32] });
        let head = Head::new("k", &key, link, anchor, None).unwrap();
        assert!(head.tag_ok(&key).unwrap());
        assert!(!head.tag_ok(&other).unwrap());
        for edited in [
            Head { anchor: None, ..head.clone() },
            Head { anchor: Some(Link { seq: 5, mac: [2; 32] }), ..head.clone() },
            Head { link: Link { seq: 8, mac: [1; 32] }, ..head.clone() },
            Head { broken: Some(Break { seq: 3, reason: "x".into() }), ..head.clone() },
        ] {
            assert!(!edited.tag_ok(&key).unwrap(), "{edited:?}");
        }
    }

    #[test]
    fn a_head_of_builds_before_the_kept_break_reads_as_one_without_a_break_and_still_checks() {
        let key = AuditMacKey::from_slice(&[3; 32]).unwrap();
        let head =
            Head::new("k", &key, Link { seq: 9, mac: [1; 32] }, Some(Link { seq: 4, mac: [2; 32] }), None).unwrap();
        // Those builds wrote the same fields without `broken` (postcard: a struct is its fields).
        let old = encode(&(head.link, head.anchor, head.key_id.clone(), head.tag)).unwrap();
        let read = Head::decode(&old).unwrap();
        assert_eq!((read.link, read.anchor, read.broken.clone()), (head.link, head.anchor, None));
        assert!(read.tag_ok(&key).unwrap());
        // A head with a break round-trips, its break bound into the tag.
        let broken = Some(Break { seq: 5, reason: "the chain's head is missing".into() });
        let with = Head::new("k", &key, head.link, head.anchor, broken.clone()).unwrap();
        let read = Head::decode(&encode(&with).unwrap()).unwrap();
        assert_eq!(read.broken, broken);
        assert!(read.tag_ok(&key).unwrap());
        assert!(!Head { broken: None, ..read }.tag_ok(&key).unwrap());
    }

    #[test]
    fn a_retirement_names_its_key_and_last_record() {
        let r = retirement("derived-from:local:abc", 41, "derived-from:local:def", Some("record 3; altered"));
        assert_eq!(retired_key(&r), Some(("derived-from:local:abc".into(), 41)));
        assert_eq!(retired_key(&node_record(ACTION_CHAIN_BROKEN, "key x retired after record 1".into())), None);
    }
}
