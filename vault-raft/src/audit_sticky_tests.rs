//! Unit tests that break evidence stays: a break is kept in the tagged head past the removal of
//! its record, a prune past the hard cap is on record, and a key retired over a broken chain
//! leaves verify failing once the key is gone.

use crate::audit_chain::{ACTION_PRUNED_OVER_HARD_CAP, KEY_HEAD};
use crate::audit_fixtures::{keys, open_db, record, start};
use crate::audit_log::{Chained, Retention};
use crate::codec::{decode, encode};
use crate::db::{cf, CF_AUDIT, CF_RAFT_META};

const DAY_MS: u64 = 86_400_000;

fn hard_cap() -> Retention {
    Retention { max_age_ms: 100 * DAY_MS, max_bytes: 1, min_age_ms: 10 * DAY_MS, hard_max_bytes: 1 }
}

#[test]
fn a_break_outlives_its_record_removed_past_the_hard_cap() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let a = start(&db, keys(&[("k1", 7)]));
    let now = 1_000 * DAY_MS;
    for i in 0..3 {
        a.append(record(i, now)).unwrap();
    }
    drop(a);
    db.delete_cf(cf(&db, CF_RAFT_META).unwrap(), KEY_HEAD).unwrap();
    let a = start(&db, keys(&[("k1", 7)])).with_retention(hard_cap());
    assert!(a.verify().unwrap().problem.is_some());
    // A flood takes the log past the hard cap: every record goes, the break's record too.
    for i in 3..6 {
        a.append(record(i, now)).unwrap();
    }
    let pruned = a.prune(now).unwrap();
    assert_eq!(pruned.removed, 7);
    let listed = a.list(&crate::AuditQuery::newest(10)).unwrap();
    assert!(
        listed.iter().any(|r| r.action == ACTION_PRUNED_OVER_HARD_CAP && r.outcome.contains("records 1 to 7")),
        "{listed:?}"
    );
    let p = a.verify().unwrap().problem.expect("the break is still reported");
    assert!(p.contains("broken at record 4"), "{p}");
    // And after a restart and more records.
    drop(a);
    let a = start(&db, keys(&[("k1", 7)]));
    a.append(record(9, now)).unwrap();
    let p = a.verify().unwrap().problem.expect("the break is still reported");
    assert!(p.contains("broken at record 4"), "{p}");
}

#[test]
fn a_key_retired_over_a_broken_chain_leaves_verify_failing_once_the_key_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let db = open_db(dir.path());
    let a = start(&db, keys(&[("k1", 7)]));
    for i in 0..3 {
        a.append(record(i, 1_000)).unwrap();
    }
    drop(a);
    // Record 2 edited under the old key, then the key rotated.
    let family = cf(&db, CF_AUDIT).unwrap();
    let mut c: Chained = decode(&db.get_cf(family, 2u64.to_be_bytes()).unwrap().unwrap()).unwrap();
    c.record.actor = "someone-else".into();
    db.put_cf(family, 2u64.to_be_bytes(), encode(&c).unwrap()).unwrap();
    let a = start(&db, keys(&[("k2", 8), ("k1", 7)]));
    let retired = &a.list(&crate::AuditQuery::newest(1)).unwrap()[0];
    assert!(retired.outcome.contains("record 2 was altered"), "{retired:?}");
    drop(a);
    let a = start(&db, keys(&[("k2", 8)]));
    let p = a.verify().unwrap().problem.expect("the old key's break still fails");
    assert!(p.contains("retired key k1 over a broken chain"), "{p}");
}
