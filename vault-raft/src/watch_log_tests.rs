//! The history of changes: events recorded at apply, the floor, pruning, snapshot installs.

use std::sync::Arc;

use openraft::{CommittedLeaderId, EntryPayload};
use rocksdb::DB;
use vault_core::envelope::SealedValue;

use crate::audit_log::{AuditKeys, AuditLog};
use crate::command::Command;
use crate::db::{CF_SM_META, CF_WATCH, SM_CFS};
use crate::snapshot_file::{read_snapshot, write_snapshot};
use crate::state_machine::{apply_entries, StateMachineStore};
use crate::synced_log::Syncer;
use crate::tables::KEY_LAST_APPLIED;
use crate::typ::{Entry, LogId, SnapshotMeta, StoredMembership};
use crate::watch_log::{ChangeEvent, ChangeKind, ReplayError, WatchLog};

fn audit(db: &Arc<DB>) -> AuditLog {
    let key = vault_core::keys::AuditMacKey::generate();
    AuditLog::open(db.clone(), 1, AuditKeys::new(vec![("test".into(), key)]).expect("keys")).expect("audit")
}

fn entry(index: u64, cmd: Command) -> Entry {
    Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Normal(cmd) }
}

fn put(name: &str, version: u64) -> Command {
    let sealed = SealedValue { key_id: "k".into(), wrapped_dek: vec![1], nonce: vec![2], ciphertext: vec![3] };
    Command::PutSecret {
        name: name.into(),
        version,
        sealed,
        expected_version: None,
        max_versions: None,
        now_ms: 1,
        auth: None,
    }
}

fn ev(revision: u64, name: &str, version: u64, kind: ChangeKind) -> ChangeEvent {
    ChangeEvent { revision, name: name.into(), version, kind }
}

struct Store {
    _dir: tempfile::TempDir,
    db: Arc<DB>,
    audit: AuditLog,
    watch: WatchLog,
}

fn store() -> Store {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Arc::new(crate::db::open(&dir.path().join("db")).expect("open db"));
    let watch = WatchLog::open(db.clone(), 0).expect("watch log");
    Store { audit: audit(&db), db, watch, _dir: dir }
}

impl Store {
    fn apply(&self, entries: &[Entry]) {
        apply_entries(&self.db, &self.audit, &self.watch, entries, StoredMembership::default()).expect("apply");
    }

    fn all(&self) -> Vec<ChangeEvent> {
        self.watch.read_after(self.watch.floor(), usize::MAX).expect("replay").events
    }
}

#[tokio::test]
async fn changes_record_events_with_their_entrys_index_and_rejections_record_none() {
    let s = store();
    let mut live = s.watch.subscribe();
    s.apply(&[entry(3, put("a", 1)), entry(4, put("a", 5))]);
    s.apply(&[entry(
        5,
        Command::Batch(Arc::from(vec![
            put("a", 2),
            Command::DeleteVersions { name: "a".into(), versions: vec![1], now_ms: 2 },
            // Rejected (no version 9): nothing.
            Command::DeleteVersions { name: "a".into(), versions: vec![1, 9], now_ms: 2 },
        ])),
    )]);
    s.apply(&[
        entry(6, Command::UndeleteVersions { name: "a".into(), versions: vec![1] }),
        entry(7, Command::UndeleteVersions { name: "a".into(), versions: vec![1] }),
        entry(8, Command::DestroyVersions { name: "a".into(), versions: vec![1], now_ms: 3 }),
        entry(9, Command::DeleteSecret { name: "a".into() }),
        entry(10, Command::DeleteSecret { name: "a".into() }),
    ]);
    let want = vec![
        ev(3, "a", 1, ChangeKind::Put),
        ev(5, "a", 2, ChangeKind::Put),
        ev(5, "a", 1, ChangeKind::Delete),
        ev(6, "a", 1, ChangeKind::Undelete),
        ev(8, "a", 1, ChangeKind::Destroy),
        ev(9, "a", 0, ChangeKind::Remove),
    ];
    assert_eq!(s.all(), want);
    assert_eq!(s.watch.applied(), 10);
    let mut got = Vec::new();
    let mut revisions = Vec::new();
    while let Ok(p) = live.try_recv() {
        revisions.push(p.revision);
        got.extend(p.events.iter().cloned());
    }
    assert_eq!(got, want, "live subscribers get the same events");
    assert_eq!(revisions, vec![4, 5, 10], "one message per applied batch, with its last index");
    // From a revision: only what came after it.
    assert_eq!(s.watch.read_after(5, usize::MAX).expect("replay").events, want[3..].to_vec());
    // A bounded read stops between revisions, never inside one.
    let page = s.watch.read_after(0, 2).expect("replay");
    assert!(page.more);
    assert_eq!(page.events, want[..3].to_vec());
}

#[tokio::test]
async fn the_floor_starts_at_the_applied_index_of_an_existing_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Arc::new(crate::db::open(&dir.path().join("db")).expect("open db"));
    let applied = Some(LogId::new(CommittedLeaderId::new(1, 1), 7));
    let meta = crate::db::cf(&db, CF_SM_META).expect("cf");
    db.put_cf(meta, KEY_LAST_APPLIED, crate::codec::encode(&applied).expect("encode")).expect("put");
    let syncer = Syncer::never_syncing(&dir.path().join("other"));
    let sm = StateMachineStore::open(db.clone(), dir.path().join("snapshots"), syncer.handle(), audit(&db))
        .await
        .expect("open");
    let watch = sm.watch_log();
    assert_eq!(watch.floor(), 7);
    assert!(matches!(watch.read_after(6, 10), Err(ReplayError::Compacted { asked: 6, floor: 7 })));
    assert!(watch.read_after(7, 10).expect("from the floor").events.is_empty());
    drop(sm);
    // Kept: a later open does not move it to a later applied index.
    let later = Some(LogId::new(CommittedLeaderId::new(1, 1), 20));
    db.put_cf(meta, KEY_LAST_APPLIED, crate::codec::encode(&later).expect("encode")).expect("put");
    assert_eq!(WatchLog::open(db.clone(), 20).expect("reopen").floor(), 7);
}

#[tokio::test]
async fn the_oldest_events_are_pruned_and_the_floor_rises() {
    let s = store();
    s.watch.set_history(4);
    let mut live = s.watch.subscribe();
    for v in 1..=20u64 {
        s.apply(&[entry(v, put("p", v))]);
    }
    let kept = s.all();
    assert!((4..=5).contains(&kept.len()), "about the history's size is kept: {}", kept.len());
    let floor = s.watch.floor();
    assert_eq!(kept.first().map(|e| e.revision), Some(floor + 1), "every event after the floor is kept");
    assert_eq!(kept.last().map(|e| e.revision), Some(20));
    assert!(matches!(s.watch.read_after(floor - 1, 10), Err(ReplayError::Compacted { .. })));
    assert_eq!(s.watch.len(), kept.len() as u64);
    // Subscribers are told the floor with each batch.
    let mut last = None;
    while let Ok(p) = live.try_recv() {
        last = Some(p.floor);
    }
    assert_eq!(last, Some(floor));
    // Reopened, the index and floor are the same.
    let again = WatchLog::open(s.db.clone(), 20).expect("reopen");
    assert_eq!((again.floor(), again.len()), (floor, kept.len() as u64));
}

#[tokio::test]
async fn installing_a_snapshot_empties_the_history_and_raises_the_floor_and_snapshots_never_carry_it() {
    assert!(!SM_CFS.contains(&CF_WATCH), "the history is not replicated state");
    // A source store with events, snapshotted at index 50.
    let src = store();
    src.apply(&[entry(40, put("s", 1))]);
    let src_dir = tempfile::tempdir().expect("temp dir");
    let path = src_dir.path().join("snap.bin");
    let last = Some(LogId::new(CommittedLeaderId::new(3, 1), 50));
    let meta = write_snapshot(&src.db, &path, |_| {
        Ok(SnapshotMeta { last_log_id: last, last_membership: StoredMembership::default(), snapshot_id: "w".into() })
    })
    .expect("write snapshot");
    let mut families = Vec::new();
    read_snapshot(std::fs::File::open(&path).expect("open"), |family, _, _| {
        families.push(family);
        Ok(())
    })
    .expect("read snapshot");
    assert!(families.contains(&crate::db::CF_SECRETS) && !families.contains(&CF_WATCH), "{families:?}");

    let dir = tempfile::tempdir().expect("temp dir");
    let db = Arc::new(crate::db::open(&dir.path().join("db")).expect("open db"));
    let syncer = Syncer::never_syncing(&dir.path().join("other"));
    let mut sm = StateMachineStore::open(db.clone(), dir.path().join("snapshots"), syncer.handle(), audit(&db))
        .await
        .expect("open");
    let watch = sm.watch_log();
    apply_entries(&db, &audit(&db), &watch, &[entry(2, put("old", 1))], StoredMembership::default()).expect("apply");
    assert_eq!(watch.len(), 1);
    let mut live = watch.subscribe();
    use openraft::storage::RaftStateMachine;
    let file = std::fs::File::open(&path).expect("open snapshot");
    sm.install_snapshot(&meta, Box::new(tokio::fs::File::from_std(file))).await.expect("install");
    assert_eq!((watch.floor(), watch.len(), watch.applied()), (50, 0, 50));
    assert!(matches!(watch.read_after(2, 10), Err(ReplayError::Compacted { floor: 50, .. })));
    let told = live.try_recv().expect("subscribers are told");
    assert_eq!((told.floor, told.events.len()), (50, 0));
    // Durable: a reopen sees the same.
    assert_eq!(WatchLog::open(db.clone(), 50).expect("reopen").floor(), 50);
}

/// The kinds a unit of apply cannot easily reach (a caller's write, a rotation, a restore) come
/// from the command and its response alike: wrapped or not, and only when applied.
#[test]
fn caller_writes_rotations_and_restores_record_their_kinds_and_rejections_nothing() {
    use crate::command::{CommandResponse, Rejection};
    use crate::watch_log::{events_of, Change};
    let of = |cmd: &Command, resp: &CommandResponse| {
        let mut out: Vec<Change> = Vec::new();
        events_of(cmd, resp, &mut out);
        out
    };
    let caller = |cmd: Command| Command::AsCaller {
        auth: vault_core::token::RawToken::generate().hash(),
        now_ms: 1,
        cmd: Box::new(cmd),
        audit: vault_core::model::AuditContext {
            node_id: 1,
            actor: "t".into(),
            client_ip: "127.0.0.1".into(),
            action: "secret.put".into(),
        },
    };
    let written = CommandResponse::Written { version: 4 };
    assert_eq!(of(&caller(put("c", 4)), &written), vec![("c".to_string(), 4, ChangeKind::Put)]);
    let refused = CommandResponse::Rejected(Rejection::PermissionDenied("no".into()));
    assert!(of(&caller(put("c", 4)), &refused).is_empty(), "a refused caller's write records nothing");
    let soft = Command::SoftDeleteSecret { name: "c".into(), now_ms: 1 };
    let changed = CommandResponse::Changed { versions: vec![2, 3] };
    assert_eq!(
        of(&caller(soft), &changed),
        vec![("c".to_string(), 2, ChangeKind::Delete), ("c".to_string(), 3, ChangeKind::Delete)]
    );
    let destroy = Command::DestroySecret { name: "c".into(), now_ms: 1 };
    assert!(of(&destroy, &CommandResponse::Changed { versions: vec![] }).is_empty(), "nothing changed");
    let sealed = SealedValue { key_id: "k".into(), wrapped_dek: vec![1], nonce: vec![2], ciphertext: vec![3] };
    let rotation = Command::RotationDone {
        name: "r".into(),
        from_version: 3,
        version: 4,
        sealed,
        now_ms: 1,
        attempts: 0,
        node_id: 1,
    };
    assert_eq!(of(&rotation, &written), vec![("r".to_string(), 4, ChangeKind::Rotation)]);
    assert!(of(&rotation, &CommandResponse::Rejected(Rejection::VersionConflict { current: 5 })).is_empty());
    let restore = Command::RestoreCommit { id: 7 };
    assert_eq!(
        of(&restore, &CommandResponse::Restored { records: vec![] }),
        vec![(String::new(), 0, ChangeKind::Reset)]
    );
    assert!(of(&restore, &refused).is_empty());
    // Other commands record nothing, whatever they answer.
    assert!(of(&Command::RotateNow { name: "r".into() }, &CommandResponse::RotationQueued { attempts: 1 }).is_empty());
}

/// L3: a watch "from now" subscribes and takes the applied index as its start. Whatever
/// instant inside `published` that happens at, every revision after the start reaches the
/// receiver: here the subscription lands between the broadcast and the store of `applied`.
#[test]
fn a_subscription_landing_inside_published_misses_nothing_after_its_start() {
    let s = store();
    s.apply(&[entry(1, put("a", 1))]);
    let got = Arc::new(std::sync::Mutex::new(None));
    let (watch, slot) = (s.watch.clone(), got.clone());
    s.watch.set_between(Box::new(move || {
        let live = watch.subscribe();
        let start = watch.applied();
        *slot.lock().expect("slot") = Some((live, start));
    }));
    s.apply(&[entry(2, put("a", 2))]);
    let (mut live, start) = got.lock().expect("slot").take().expect("the hook ran");
    let mut received = Vec::new();
    while let Ok(p) = live.try_recv() {
        received.extend(p.events.iter().map(|e| e.revision));
    }
    assert!(
        start >= 2 || received.contains(&2),
        "revision 2 is neither at or before the start ({start}) nor received ({received:?})"
    );
}
