//! Moving a node's Raft log out of RocksDB into segment files (`storage::raft_log::migrate`):
//! what was acknowledged survives byte for byte, a move cut short at any step ends the same,
//! an older build refuses the moved directory, and a node held below level 5 moves nothing.

use std::path::Path;

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, EntryPayload};
use tempfile::TempDir;
use vault_raft::codec::encode;
use vault_raft::db::{CF_LOG, CF_RAFT_LOG_MOVED};
use vault_raft::storage::raft_log::migrate::{LOG_DIR, TMP_DIR};
use vault_raft::typ::{Entry, LogId, Vote};
use vault_raft::{Command, NodeLog, Storage};

use crate::test_keys;

/// What the log holds, as bytes: log state, vote and every entry's encoding.
#[derive(Debug, PartialEq)]
struct Held {
    last_purged: Option<LogId>,
    last: Option<LogId>,
    vote: Option<Vote>,
    entries: Vec<Vec<u8>>,
}

fn entry(term: u64, index: u64) -> Entry {
    let cmd = Command::DeleteRole { name: format!("role-{index}-{}", "x".repeat((index % 7) as usize)) };
    Entry { log_id: LogId::new(CommittedLeaderId::new(term, 1), index), payload: EntryPayload::Normal(cmd) }
}

async fn held(log: &mut NodeLog) -> Held {
    let state = log.get_log_state().await.unwrap();
    let entries = log.try_get_log_entries(0..=u64::MAX - 1).await.unwrap();
    Held {
        last_purged: state.last_purged_log_id,
        last: state.last_log_id,
        vote: log.read_vote().await.unwrap(),
        entries: entries.iter().map(|e| encode(e).unwrap()).collect(),
    }
}

/// A data directory written by the RocksDB log (a node at level 4): entries 0..500, the last
/// ones in a later term, purged to 100, a vote for node 2 in term 3. Returns what it holds.
async fn rocks_dir() -> (TempDir, Held) {
    let dir = TempDir::new().unwrap();
    let s = Storage::open_at_level(dir.path(), 1, test_keys(), Some(4)).await.unwrap();
    let mut log = s.log_store;
    assert!(matches!(log, NodeLog::Rocks(_)));
    log.blocking_append((0..400).map(|i| entry(1, i))).await.unwrap();
    log.blocking_append((400..500).map(|i| entry(2, i))).await.unwrap();
    log.save_vote(&Vote::new(3, 2)).await.unwrap();
    log.purge(LogId::new(CommittedLeaderId::new(1, 1), 100)).await.unwrap();
    let held = held(&mut log).await;
    assert_eq!(held.entries.len(), 399);
    (dir, held)
}

async fn open(dir: &Path, cap: Option<u32>) -> (NodeLog, Held) {
    let s = Storage::open_at_level(dir, 1, test_keys(), cap).await.unwrap();
    let mut log = s.log_store;
    let h = held(&mut log).await;
    (log, h)
}

/// The database as the node opens it: CF_LOG's entry count, RocksDB's vote key, the marker.
fn rocks_side(dir: &Path) -> (usize, bool, bool) {
    let db = vault_raft::db::open(&dir.join("db")).unwrap();
    let log = db.cf_handle(CF_LOG).unwrap();
    let n = db.iterator_cf(log, rocksdb::IteratorMode::Start).count();
    let meta = db.cf_handle(vault_raft::db::CF_RAFT_META).unwrap();
    let vote = db.get_cf(meta, b"vote").unwrap().is_some();
    (n, vote, db.cf_handle(CF_RAFT_LOG_MOVED).is_some())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Checks a moved directory: the log holds `want`, RocksDB's copy is gone, the marker is there.
async fn check_moved(dir: &Path, want: &Held) {
    let (log, got) = open(dir, None).await;
    assert!(matches!(log, NodeLog::Segments(_)));
    assert_eq!(&got, want);
    drop(log);
    assert!(dir.join(LOG_DIR).is_dir() && !dir.join(TMP_DIR).exists());
    assert_eq!(rocks_side(dir), (0, false, true), "CF_LOG and the vote cleared; marker present");
}

#[tokio::test]
async fn the_rocksdb_log_moves_byte_for_byte_and_an_older_build_refuses_the_directory() {
    let (dir, want) = rocks_dir().await;
    assert_eq!(rocks_side(dir.path()), (399, true, false));
    check_moved(dir.path(), &want).await;
    // Opened again (nothing left to move), and after appends to the new log.
    let (mut log, again) = open(dir.path(), None).await;
    assert_eq!(again, want);
    log.blocking_append((500..510).map(|i| entry(3, i))).await.unwrap();
    drop(log);
    let (_, after) = open(dir.path(), None).await;
    assert_eq!(after.entries.len(), 409);
    assert_eq!(after.entries[..399], want.entries[..]);

    // A build before level 5 opens exactly the families it knows: RocksDB refuses.
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let old = rocksdb::DB::open_cf(&opts, dir.path().join("db"), vault_raft::db::ALL_CFS);
    let err = match old {
        Ok(_) => panic!("an older build must not open a moved directory"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("Column families not opened"), "{err}");
}

#[tokio::test]
async fn a_move_cut_short_at_any_step_ends_the_same() {
    let (done, want) = rocks_dir().await;
    let before = TempDir::new().unwrap();
    copy_dir(done.path(), before.path());
    check_moved(done.path(), &want).await;

    // 1. Crashed while writing raft-log.tmp/: a half-written segment.
    let torn = TempDir::new().unwrap();
    copy_dir(before.path(), torn.path());
    copy_dir(&done.path().join(LOG_DIR), &torn.path().join(TMP_DIR));
    for e in std::fs::read_dir(torn.path().join(TMP_DIR)).unwrap() {
        let f = std::fs::OpenOptions::new().write(true).open(e.unwrap().path()).unwrap();
        f.set_len(f.metadata().unwrap().len() / 2).unwrap();
    }
    check_moved(torn.path(), &want).await;

    // 2. Crashed after the marker, before the rename: the whole copy is still raft-log.tmp/.
    let marked = TempDir::new().unwrap();
    copy_dir(before.path(), marked.path());
    {
        let mut db = vault_raft::db::open(&marked.path().join("db")).unwrap();
        db.create_cf(CF_RAFT_LOG_MOVED, &rocksdb::Options::default()).unwrap();
    }
    copy_dir(&done.path().join(LOG_DIR), &marked.path().join(TMP_DIR));
    check_moved(marked.path(), &want).await;

    // 3. Crashed after the rename, before RocksDB's copy was cleared.
    let renamed = TempDir::new().unwrap();
    copy_dir(before.path(), renamed.path());
    {
        let mut db = vault_raft::db::open(&renamed.path().join("db")).unwrap();
        db.create_cf(CF_RAFT_LOG_MOVED, &rocksdb::Options::default()).unwrap();
    }
    copy_dir(&done.path().join(LOG_DIR), &renamed.path().join(LOG_DIR));
    assert_eq!(rocks_side(renamed.path()), (399, true, true));
    check_moved(renamed.path(), &want).await;
}

#[tokio::test]
async fn a_node_held_at_level_4_moves_nothing() {
    let (dir, want) = rocks_dir().await;
    let (log, got) = open(dir.path(), Some(4)).await;
    assert!(matches!(log, NodeLog::Rocks(_)));
    assert_eq!(got, want);
    drop(log);
    assert!(!dir.path().join(LOG_DIR).exists());
    assert_eq!(rocks_side(dir.path()), (399, true, false), "RocksDB's log untouched, no marker");
    // A fresh node held at 4 leaves a directory the previous build opens.
    let fresh = TempDir::new().unwrap();
    drop(open(fresh.path(), Some(4)).await);
    assert!(!fresh.path().join(LOG_DIR).exists());
    assert!(!rocks_side(fresh.path()).2);
    // Once moved, the move is one-way: held at 4 again, the node stays on the segment log.
    check_moved(dir.path(), &want).await;
    let (log, got) = open(dir.path(), Some(4)).await;
    assert!(matches!(log, NodeLog::Segments(_)));
    assert_eq!(got, want);
}
