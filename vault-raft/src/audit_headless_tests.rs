//! Unit tests of the audit chain against a disk editor who removes the head: records left
//! without a head (rewritten as pre-chaining records or not), everything removed from a node
//! that has applied entries, and the adoption of a real pre-chaining log.

use std::sync::Arc;

use openraft::CommittedLeaderId;
use rocksdb::{IteratorMode, DB};
use vault_core::model::AuditRecord;

use crate::audit_chain::{ACTION_CHAIN_BROKEN, ACTION_LEGACY_ADOPTED, KEY_HEAD};
use crate::audit_fixtures::{self as fixtures, keys, open_db};
use crate::audit_log::{decode_stored, AuditLog, Stored};
use crate::codec::encode;
use crate::db::{cf, CF_AUDIT, CF_RAFT_META, CF_SM_META};
use crate::typ::LogId;

fn start(db: &Arc<DB>) -> AuditLog {
    fixtures::start(db, keys(&[("k1", 7)]))
}

fn record(i: u64) -> AuditRecord {
    fixtures::record(i, 1_000)
}

/// Every record, as stored.
fn records(db: &DB) -> Vec<(u64, Stored)> {
    db.iterator_cf(cf(db, CF_AUDIT).unwrap(), IteratorMode::Start)
        .map(|item| {
            let (k, v) = item.unwrap();
            (u64::from_be_bytes(k.as_ref().try_into().unwrap()), decode_stored(&v).unwrap())
        })
        .collect()
}

/// Rewrites every record as a bare (pre-chaining) record and removes the head.
fn rewrite_as_legacy(db: &DB) {
    let family = cf(db, CF_AUDIT).unwrap();
    for (seq, stored) in records(db) {
        let r = match stored {
            Stored::Chained(c) => c.record,
            Stored::Legacy(r) => r,
        };
        db.put_cf(family, seq.to_be_bytes(), encode(&r).unwrap()).unwrap();
    }
    db.delete_cf(cf(db, CF_RAFT_META).unwrap(), KEY_HEAD).unwrap();
}

fn broken_at_start(a: &AuditLog) -> Option<String> {
    a.list(&crate::AuditQuery::newest(100))
        .unwrap()
        .into_iter()
        .find(|r| r.action == ACTION_CHAIN_BROKEN)
        .map(|r| r.outcome)
}

#[test]
fn a_removed_head_with_the_records_rewritten_as_pre_chaining_ones_is_a_break() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let a = start(&db);
    for i in 0..4 {
        a.append(record(i)).unwrap();
    }
    drop(a);
    rewrite_as_legacy(&db);
    let a = start(&db);
    let p = a.verify().unwrap().problem.expect("verify must fail");
    assert!(p.contains("record 1 is not chained"), "{p}");
    let why = broken_at_start(&a).expect("a break recorded at start");
    assert!(why.contains("head is missing, with records up to 4"), "{why}");
    // Restarting again does not adopt them either.
    drop(a);
    let a = start(&db);
    assert!(a.verify().unwrap().problem.is_some());
}

#[test]
fn a_removed_head_with_chained_records_left_is_a_break_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let a = start(&db);
    for i in 0..3 {
        a.append(record(i)).unwrap();
    }
    drop(a);
    db.delete_cf(cf(&db, CF_RAFT_META).unwrap(), KEY_HEAD).unwrap();
    let a = start(&db);
    let why = broken_at_start(&a).expect("a break recorded at start");
    assert!(why.contains("head is missing"), "{why}");
    assert!(a.verify().unwrap().problem.is_some());
}

#[test]
fn every_record_and_the_head_removed_from_a_node_that_applied_entries_is_a_break() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let a = start(&db);
    for i in 0..3 {
        a.append(record(i)).unwrap();
    }
    drop(a);
    let applied = Some(LogId::new(CommittedLeaderId::new(2, 1), 9));
    db.put_cf(cf(&db, CF_SM_META).unwrap(), crate::tables::KEY_LAST_APPLIED, encode(&applied).unwrap()).unwrap();
    let family = cf(&db, CF_AUDIT).unwrap();
    db.delete_range_cf(family, 0u64.to_be_bytes(), u64::MAX.to_be_bytes()).unwrap();
    let meta = cf(&db, CF_RAFT_META).unwrap();
    db.delete_cf(meta, KEY_HEAD).unwrap();
    // Also without the marker a started build leaves: the applied entries still show it.
    db.delete_cf(meta, crate::audit_chain::KEY_CHAIN_STARTED).unwrap();
    let a = start(&db);
    let why = broken_at_start(&a).expect("a break recorded at start");
    assert!(why.contains("applied Raft entries up to 9"), "{why}");
    assert!(a.verify().unwrap().problem.is_some());
}

#[test]
fn a_fresh_node_starts_clean_and_records_of_a_pre_chaining_build_are_adopted_once() {
    // Fresh: nothing applied, nothing recorded.
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let a = start(&db);
    assert_eq!(a.verify().unwrap().problem, None);
    drop(a);
    let a = start(&db);
    assert_eq!(a.verify().unwrap().problem, None);

    // A data directory of a pre-chaining build: bare records, no head, no marker.
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let family = cf(&db, CF_AUDIT).unwrap();
    for seq in 1..=3u64 {
        db.put_cf(family, seq.to_be_bytes(), encode(&AuditRecord { seq, ..record(seq) }).unwrap()).unwrap();
    }
    let a = start(&db);
    let r = a.verify().unwrap();
    assert_eq!((r.legacy, r.problem.clone()), (3, None), "{r:?}");
    let listed = a.list(&crate::AuditQuery::newest(10)).unwrap();
    assert!(listed.iter().any(|r| r.action == ACTION_LEGACY_ADOPTED && r.outcome.contains("up to 3")), "{listed:?}");
    a.append(record(9)).unwrap();
    assert_eq!(a.verify().unwrap().problem, None);
    drop(a);
    // The adoption is not repeated: the same trick afterwards is a break.
    rewrite_as_legacy(&db);
    let a = start(&db);
    assert!(a.verify().unwrap().problem.is_some());
}
