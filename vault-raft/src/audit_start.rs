//! The check of the audit chain's head when a node starts ([`crate::AuditLog::check_at_start`]):
//! the head must be under a key the node holds, carry a good tag, and point at the newest
//! record (or, with none left, at the anchor). A head of older builds is upgraded here.
//!
//! Without a head, records of any format are a break, and so is a node that has applied Raft
//! entries with no record left, or that kept a chain before ([`KEY_CHAIN_STARTED`]), except
//! on the first start over the records of a pre-chaining build: those are adopted by a keyed
//! record.

use rocksdb::{WriteBatch, DB};

use crate::audit_chain::{Head, HeadV1, Link, KEY_ANCHOR_V1, KEY_CHAIN_STARTED, KEY_HEAD, KEY_HEAD_V1};
use vault_core::keys::AuditMacKey;

use crate::audit_log::{decode_stored, AuditKeys, LastRecord, Stored};
use crate::codec::decode;
use crate::db::{cf, CF_AUDIT, CF_RAFT_META, CF_SM_META};
use crate::typ::LogId;
use crate::StoreError;

/// What the check found.
pub(crate) struct StartCheck {
    /// What is wrong, if anything.
    pub problems: Vec<String>,
    /// Marks the directory as one a chain-keeping build started; removes the head and anchor
    /// of older builds (when upgrading).
    pub upgrade: WriteBatch,
    /// The head's key id, link and anchor, when there is a head.
    pub head: Option<(String, Link, Option<Link>)>,
    /// The newest record of a pre-chaining build, to adopt (first start, no head).
    pub adopt_legacy: Option<u64>,
    /// The untagged anchor of older builds adopted into the head, when upgrading one.
    pub adopted_anchor: Option<u64>,
}

pub(crate) fn check(db: &DB, keys: &AuditKeys, last: Option<&LastRecord>) -> Result<StartCheck, StoreError> {
    let meta = cf(db, CF_RAFT_META)?;
    let head_v2 = db.get_cf(meta, KEY_HEAD)?;
    let head_v1 = db.get_cf(meta, KEY_HEAD_V1)?;
    let anchor_v1 = db.get_cf(meta, KEY_ANCHOR_V1)?;
    let mut problems = Vec::new();
    let started = db.get_cf(meta, KEY_CHAIN_STARTED)?.is_some();
    let mut upgrade = WriteBatch::default();
    upgrade.put_cf(meta, KEY_CHAIN_STARTED, [1u8]);
    let mut adopt_legacy = None;
    let mut adopted_anchor = None;
    // The head's key id, link and anchor, when there is a head.
    let head: Option<(String, Link, Option<Link>)> = match (head_v2, head_v1) {
        (Some(bytes), old) => {
            if old.is_some() || anchor_v1.is_some() {
                problems.push(
                    "a head or anchor in the untagged format of older builds lies beside the chain's head".into(),
                );
            }
            match Head::decode(&bytes) {
                Err(_) => {
                    problems.push("the chain's head cannot be decoded".into());
                    None
                }
                Ok(h) => {
                    problems.extend(tag_problem(keys, &h.key_id, |k| h.tag_ok(k))?);
                    Some((h.key_id, h.link, h.anchor))
                }
            }
        }
        (None, Some(bytes)) => {
            upgrade.delete_cf(meta, KEY_HEAD_V1);
            upgrade.delete_cf(meta, KEY_ANCHOR_V1);
            let anchor = match anchor_v1.map(|b| decode::<Link>(&b)).transpose() {
                Ok(a) => a,
                Err(_) => {
                    problems.push("the retention anchor cannot be decoded".into());
                    None
                }
            };
            match decode::<HeadV1>(&bytes) {
                Err(_) => {
                    problems.push("the chain's head cannot be decoded".into());
                    None
                }
                Ok(h) => {
                    problems.extend(tag_problem(keys, &h.key_id, |k| h.tag_ok(k))?);
                    adopted_anchor = anchor.map(|a| a.seq);
                    Some((h.key_id, h.link, anchor))
                }
            }
        }
        (None, None) => {
            match last {
                Some(l) if started || l.mac.is_some() || any_chained(db)? => {
                    problems.push(format!("the chain's head is missing, with records up to {} present", l.seq))
                }
                Some(l) => adopt_legacy = Some(l.seq),
                None => {
                    let applied = db.get_cf(cf(db, CF_SM_META)?, crate::tables::KEY_LAST_APPLIED)?;
                    match applied.map(|b| decode::<Option<LogId>>(&b)).transpose() {
                        Ok(Some(Some(id))) => problems.push(format!(
                            "the chain's head and every record are missing, but the node has applied Raft entries up to {}",
                            id.index
                        )),
                        Err(_) => problems.push("the chain's head and every record are missing".into()),
                        Ok(_) if started => problems.push("the chain's head is missing".into()),
                        Ok(_) => {}
                    }
                }
            }
            if anchor_v1.is_some() {
                problems.push("an untagged anchor lies where the chain has no head".into());
            }
            None
        }
    };
    if let Some((_, link, anchor)) = &head {
        match last {
            Some(LastRecord { seq, mac: Some(mac) }) if link.seq == *seq && link.mac == *mac => {}
            Some(l) if link.seq > l.seq => {
                problems.push(format!("records {} to {} are missing (cut from the end)", l.seq + 1, link.seq))
            }
            None if Some(*link) == *anchor => {}
            // The head a node writes at its first start, before any record.
            None if anchor.is_none() && *link == Link::default() => {}
            None => problems.push(format!("records up to {} are missing", link.seq)),
            Some(l) => problems.push(format!("record {} does not match the chain's head", l.seq)),
        }
    }
    Ok(StartCheck { problems, upgrade, head, adopt_legacy, adopted_anchor })
}

/// Whether any record is chained (only asked when there is no head).
fn any_chained(db: &DB) -> Result<bool, StoreError> {
    for item in db.iterator_cf(cf(db, CF_AUDIT)?, rocksdb::IteratorMode::Start) {
        let (_, v) = item?;
        if matches!(decode_stored(&v), Ok(Stored::Chained(_))) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Why a head under `key_id` does not check out (`tag_ok` asks its tag), if it does not.
fn tag_problem(
    keys: &AuditKeys,
    key_id: &str,
    tag_ok: impl FnOnce(&AuditMacKey) -> Result<bool, StoreError>,
) -> Result<Option<String>, StoreError> {
    Ok(match keys.get(key_id) {
        None => Some(format!("the chain's head is under key {key_id}, which this node does not hold")),
        Some(k) if !tag_ok(k)? => Some("the chain's head was altered".into()),
        Some(_) => None,
    })
}
