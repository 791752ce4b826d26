//! The walk behind `vaultctl audit verify`: every record's MAC against the one before it,
//! from the anchor to the head, with the rules that make edits by someone without the audit
//! key show:
//! - a record under a key this node does not hold fails, unless a keyed record later in the
//!   chain retires that key (records up to the one it names count as unverifiable);
//! - a head under an unknown key, with a wrong tag, or missing (while records are present, or
//!   after the node kept a chain) fails; the anchor is only what the tagged head says;
//! - a record from before chaining passes only if a keyed `audit.legacy_adopted` record
//!   covers it (written at the first start over a pre-chaining build's records);
//! - an `audit.chain_broken` record (written at start when the head did not check out) fails;
//! - a head or anchor in the untagged format of older builds fails (this build upgrades them
//!   at start and writes neither).

use std::collections::HashMap;

use rocksdb::{IteratorMode, Snapshot, DB};

use crate::audit_chain::{
    adopted_up_to, record_mac, retired_key, Head, Link, ACTION_CHAIN_BROKEN, KEY_ANCHOR_V1, KEY_CHAIN_STARTED,
    KEY_HEAD, KEY_HEAD_V1, RETIRED_BROKEN,
};
use crate::audit_log::{decode_stored, AuditKeys, Stored};
use crate::db::{cf, CF_AUDIT, CF_RAFT_META};
use crate::StoreError;

/// What `verify` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Chained records whose MAC was checked.
    pub checked: u64,
    /// Records from before chaining (not covered).
    pub legacy: u64,
    /// Records chained under a key this node no longer holds, retired by a keyed record.
    pub unverifiable: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The head: the newest record's sequence number and MAC. Kept off the node, it lets
    /// [`crate::AuditLog::extends`] tell later whether the log still grows from it.
    pub head: Option<(u64, [u8; 32])>,
    /// The first problem: a record missing, altered, under an unknown key, or the head wrong.
    pub problem: Option<String>,
}

impl VerifyReport {
    fn problem(&mut self, p: String) {
        if self.problem.is_none() {
            self.problem = Some(p);
        }
    }
}

fn seq_of(k: &[u8]) -> Result<u64, StoreError> {
    Ok(u64::from_be_bytes(k.try_into().map_err(|_| StoreError::Corrupt("audit key".into()))?))
}

/// Keys retired by keyed records, each with the last record made under it, and the last
/// pre-chaining record a keyed record adopts. Walked newest first, so a retirement record
/// under a key retired later still counts.
fn retirements(
    db: &DB,
    snap: &Snapshot<'_>,
    keys: &AuditKeys,
) -> Result<(HashMap<String, u64>, Option<u64>), StoreError> {
    let mut retired: HashMap<String, u64> = HashMap::new();
    let mut adopted: Option<u64> = None;
    for item in snap.iterator_cf(cf(db, CF_AUDIT)?, IteratorMode::End) {
        let (k, v) = item?;
        let seq = seq_of(&k)?;
        let Ok(Stored::Chained(c)) = decode_stored(&v) else { continue };
        let trusted = keys.get(&c.key_id).is_some() || retired.get(&c.key_id).is_some_and(|n| seq <= *n);
        if let Some((key, last)) = retired_key(&c.record).filter(|(_, last)| trusted && *last < seq) {
            let entry = retired.entry(key).or_insert(last);
            *entry = (*entry).max(last);
        }
        if let Some(last) = adopted_up_to(&c.record).filter(|last| trusted && *last < seq) {
            adopted = adopted.max(Some(last));
        }
    }
    Ok((retired, adopted))
}

pub(crate) fn verify(db: &DB, keys: &AuditKeys) -> Result<VerifyReport, StoreError> {
    // One snapshot: records and head are written in one batch, so appends while this runs are
    // either wholly in it or not at all.
    let snap = db.snapshot();
    let meta = cf(db, CF_RAFT_META)?;
    let mut report = VerifyReport::default();
    let head: Option<Head> = match snap.get_cf(meta, KEY_HEAD)? {
        None => None,
        Some(bytes) => match Head::decode(&bytes) {
            Ok(h) => Some(h),
            Err(_) => {
                report.problem("the chain's head cannot be decoded (altered)".into());
                None
            }
        },
    };
    let anchor: Option<Link> = head.as_ref().and_then(|h| h.anchor);
    let (retired, adopted) = retirements(db, &snap, keys)?;
    let mut prev = anchor.map(|a| a.mac).unwrap_or_default();
    let mut last: u64 = anchor.map_or(0, |a| a.seq);
    let mut chained_seen = false;
    for item in snap.iterator_cf(cf(db, CF_AUDIT)?, IteratorMode::Start) {
        let (k, v) = item?;
        let seq = seq_of(&k)?;
        report.first_seq.get_or_insert(seq);
        report.last_seq = Some(seq);
        if seq != last + 1 {
            let what = if seq == last + 2 {
                format!("record {} is missing", last + 1)
            } else {
                format!("records {} to {} are missing", last + 1, seq.saturating_sub(1))
            };
            report.problem(format!("{what} (the chain jumps from {last} to {seq})"));
        }
        last = seq;
        let c = match decode_stored(&v) {
            Err(_) => {
                report.problem(format!("record {seq} cannot be decoded (altered)"));
                continue;
            }
            Ok(Stored::Legacy(_)) if !chained_seen && adopted.is_some_and(|n| seq <= n) => {
                report.legacy += 1;
                continue;
            }
            Ok(Stored::Legacy(_)) if !chained_seen => {
                report.problem(format!(
                    "record {seq} is not chained and no keyed record of the chain adopts it (altered or inserted)"
                ));
                continue;
            }
            Ok(Stored::Legacy(_)) => {
                report.problem(format!("record {seq} is not chained (altered or inserted)"));
                continue;
            }
            Ok(Stored::Chained(c)) => c,
        };
        chained_seen = true;
        if c.record.seq != seq {
            report.problem(format!("record {seq} was altered (it says it is record {})", c.record.seq));
        }
        match keys.get(&c.key_id) {
            None if retired.get(&c.key_id).is_some_and(|n| seq <= *n) => report.unverifiable += 1,
            None => report.problem(format!(
                "record {seq} is under key {}, which this node does not hold and no keyed record of the chain retires",
                c.key_id
            )),
            Some(key) => {
                report.checked += 1;
                if record_mac(key, &prev, &c.record)? != c.mac {
                    report.problem(format!("record {seq} was altered, or the one before it is missing"));
                } else if c.record.action == ACTION_CHAIN_BROKEN {
                    report.problem(format!("record {seq} says the chain was broken: {}", c.record.outcome));
                } else if let Some((key, _)) = retired_key(&c.record) {
                    if let Some((_, found)) = c.record.outcome.split_once(RETIRED_BROKEN) {
                        report.problem(format!("record {seq} retired key {key} over a broken chain: {found}"));
                    }
                }
            }
        }
        prev = c.mac;
    }
    match &head {
        None if report.first_seq.is_some() => {
            report.problem("the chain's head is missing, with records present".into())
        }
        None if snap.get_cf(meta, KEY_CHAIN_STARTED)?.is_some() => {
            report.problem("the chain's head is missing (the node kept a chain before)".into())
        }
        None => {}
        Some(h) => {
            if let Some(b) = &h.broken {
                report.problem(format!(
                    "the chain was broken at record {}: {} (kept in the head; see docs/audit.md)",
                    b.seq, b.reason
                ));
            }
            match keys.get(&h.key_id) {
                None => {
                    report.problem(format!("the chain's head is under key {}, which this node does not hold", h.key_id))
                }
                Some(key) if !h.tag_ok(key)? => report.problem("the chain's head was altered".into()),
                Some(_) => {}
            }
            if last < h.link.seq {
                report.problem(format!("records {} to {} are missing (cut from the end)", last + 1, h.link.seq));
            } else if last > h.link.seq {
                report.problem(format!("records {} to {last} are past the chain's head (appended)", h.link.seq + 1));
            } else if prev != h.link.mac {
                report.problem(format!("record {} was altered (it does not match the head)", h.link.seq));
            }
            report.head = Some((h.link.seq, h.link.mac));
        }
    }
    if snap.get_cf(meta, KEY_HEAD_V1)?.is_some() || snap.get_cf(meta, KEY_ANCHOR_V1)?.is_some() {
        report.problem(
            "a head or anchor in the untagged format of older builds is present (this build writes neither)".into(),
        );
    }
    Ok(report)
}

/// Whether the log still grows from `link` (a head exported earlier): the record there, or the
/// anchor, must have that MAC, and the chain must reach it. `None` if so; else why not.
pub(crate) fn extends(db: &DB, link: (u64, [u8; 32])) -> Result<Option<String>, StoreError> {
    let (seq, mac) = link;
    let snap = db.snapshot();
    let head: Option<Head> = snap.get_cf(cf(db, CF_RAFT_META)?, KEY_HEAD)?.and_then(|b| Head::decode(&b).ok());
    let Some(head) = head else {
        return Ok(Some(format!("the log has no head; it does not extend record {seq}")));
    };
    if head.link.seq < seq {
        return Ok(Some(format!(
            "the log ends at record {} but record {seq} was exported earlier: the log was rolled back",
            head.link.seq
        )));
    }
    let at = match head.anchor {
        Some(a) if a.seq == seq => Some(a.mac),
        Some(a) if a.seq > seq => {
            return Ok(Some(format!(
                "record {seq} was removed by retention (the log now starts after record {}); export heads more often than retention removes records",
                a.seq
            )))
        }
        _ => match snap.get_cf(cf(db, CF_AUDIT)?, seq.to_be_bytes())? {
            None => None,
            Some(v) => match decode_stored(&v) {
                Ok(Stored::Chained(c)) => Some(c.mac),
                _ => None,
            },
        },
    };
    Ok(match at {
        Some(m) if m == mac => None,
        Some(_) => Some(format!("record {seq} is not the one exported: the log was rolled back or rewritten")),
        None => Some(format!("record {seq} is missing")),
    })
}
