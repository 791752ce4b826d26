//! The replicated state machine on RocksDB.
//!
//! Applying a batch of entries writes the data, `last_applied` and the membership in one
//! atomic `WriteBatch`, not synced on its own (see `apply_entries`): an entry is applied only
//! once it is synced in the Raft log, so the state machine is never ahead of the durable log,
//! and a crash that loses applies loses only entries the log replays. The WAL is synced by
//! `storage::state_wal` (before a log purge, and on a timer) or, on the RocksDB log, by the
//! log's own syncs. Snapshots are files under `<data>/snapshots`, built from a RocksDB
//! snapshot (a consistent view) while applying continues.

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, StoredMembership};
use rocksdb::{WriteBatch, WriteOptions, DB};

use crate::applied::Applied;
use crate::apply::apply_command;
use crate::audit_log::AuditLog;
use crate::codec::{decode, encode};
use crate::command::{Command, CommandResponse};
use crate::db::{cf, CF_RAFT_META, CF_SM_META, KEY_SPACE_END, SM_CFS};
use crate::error::{sto, IoKind};
use crate::snapshot_file::{read_snapshot, write_snapshot};
use crate::synced_log::SyncedLog;
use crate::tables::{KvRead, Txn, KEY_LAST_APPLIED, KEY_MEMBERSHIP};
use crate::typ::StoredMembership as Membership;
use crate::typ::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, TypeConfig};
use crate::watch_log::{events_of, WatchLog};
use crate::StoreError;

const KEY_CURRENT_SNAPSHOT: &[u8] = b"current_snapshot";
/// Present while a received snapshot is being loaded into the state machine families: the
/// snapshot and its file, so that an install cut short by a crash is finished at the next open.
pub(crate) const KEY_INSTALLING: &[u8] = b"installing_snapshot";
/// Bound on one write batch while loading a snapshot: memory stays flat whatever its size.
const INSTALL_BATCH_BYTES: usize = 4 << 20;

/// Pointer to a snapshot file: the one `get_current_snapshot` serves, or the one being installed.
#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotPointer {
    meta: SnapshotMeta,
    file: String,
}

pub struct StateMachineStore {
    db: Arc<DB>,
    dir: PathBuf,
    last_applied: Option<LogId>,
    membership: Membership,
    /// Serializes updates of the current-snapshot pointer between builder and installer.
    pointer_lock: Arc<Mutex<()>>,
    /// Entries are applied only once this node's log has them on disk.
    synced: SyncedLog,
    /// Where applied changes are recorded, in the same batch as the changes.
    audit: AuditLog,
    /// The history of changes to secrets, written in the same batch as the changes.
    watch: WatchLog,
    /// The applied index and the generation of cached state, for the read path.
    applied: Applied,
}

pub struct SnapshotBuilder {
    db: Arc<DB>,
    dir: PathBuf,
    pointer_lock: Arc<Mutex<()>>,
}

fn synced() -> WriteOptions {
    let mut o = WriteOptions::default();
    o.set_sync(true);
    o
}

fn unique_suffix() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

fn read_pointer(db: &DB) -> Result<Option<SnapshotPointer>, StoreError> {
    db.get_cf(cf(db, CF_RAFT_META)?, KEY_CURRENT_SNAPSHOT)?.map(|b| decode(&b)).transpose()
}

/// Makes `file` (already complete and synced, inside `dir`) the current snapshot, unless a
/// newer one is already current. Removes snapshot files no longer pointed to.
fn publish(db: &DB, dir: &Path, lock: &Mutex<()>, meta: &SnapshotMeta, file: &str) -> Result<(), StoreError> {
    let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
    let current = read_pointer(db)?;
    let keep = match &current {
        Some(p) if p.meta.last_log_id > meta.last_log_id => p.file.clone(),
        _ => {
            let ptr = SnapshotPointer { meta: meta.clone(), file: file.to_string() };
            db.put_cf_opt(cf(db, CF_RAFT_META)?, KEY_CURRENT_SNAPSHOT, encode(&ptr)?, &synced())?;
            file.to_string()
        }
    };
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().to_string();
        if name.starts_with("snap-") && name != keep {
            let _ = fs::remove_file(dir.join(&name));
        }
    }
    Ok(())
}

impl StateMachineStore {
    pub async fn open(db: Arc<DB>, dir: PathBuf, synced: SyncedLog, audit: AuditLog) -> Result<Self, StoreError> {
        fs::create_dir_all(&dir)?;
        // Leftovers of interrupted builds or transfers.
        for entry in fs::read_dir(&dir)? {
            let name = entry?.file_name().to_string_lossy().to_string();
            if name.ends_with(".tmp") {
                let _ = fs::remove_file(dir.join(&name));
            }
        }
        let pointer_lock = Arc::new(Mutex::new(()));
        if let Some(b) = db.get_cf(cf(&db, CF_SM_META)?, KEY_INSTALLING)? {
            let ptr: SnapshotPointer = decode(&b)?;
            tracing::warn!(snapshot = %ptr.meta.snapshot_id, "finishing a snapshot install that was cut short");
            load_snapshot(&db, &dir, &ptr, INSTALL_BATCH_BYTES)?;
            publish(&db, &dir, &pointer_lock, &ptr.meta, &ptr.file)?;
        }
        let last_applied: Option<LogId> = db.get_typed::<Option<LogId>>(CF_SM_META, KEY_LAST_APPLIED)?.flatten();
        let membership: Membership = db.get_typed(CF_SM_META, KEY_MEMBERSHIP)?.unwrap_or_default();
        let watch = WatchLog::open(db.clone(), last_applied.map_or(0, |l| l.index))?;
        let applied = Applied::new(last_applied.map_or(0, |l| l.index));
        Ok(StateMachineStore { db, dir, last_applied, membership, pointer_lock, synced, audit, watch, applied })
    }

    /// What this state machine has applied, as the read path sees it (see `applied`).
    pub fn applied(&self) -> Applied {
        self.applied.clone()
    }

    /// A reader of this state machine, whose caches follow what it applies.
    pub fn reader(&self) -> crate::StateReader {
        crate::StateReader::new(self.db.clone(), self.applied.clone())
    }

    /// The history of changes this state machine records.
    pub fn watch_log(&self) -> WatchLog {
        self.watch.clone()
    }

    /// Installs a received snapshot: verifies the whole file, keeps it as this node's own
    /// snapshot file, then loads it into the state machine families (see [`load_snapshot`]).
    fn install_blocking(
        db: &DB,
        dir: &Path,
        lock: &Mutex<()>,
        meta: &SnapshotMeta,
        mut file: fs::File,
    ) -> Result<(), StoreError> {
        // Verify the whole file before touching anything.
        file.seek(SeekFrom::Start(0))?;
        let inner_meta = read_snapshot(&mut file, |_, _, _| Ok(()))?;
        if inner_meta.last_log_id != meta.last_log_id {
            return Err(StoreError::Corrupt(format!(
                "snapshot file is at {:?}, expected {:?}",
                inner_meta.last_log_id, meta.last_log_id
            )));
        }
        // Keep a copy as our own snapshot file (to serve to others, and to finish from).
        let name = format!("snap-{}-{}.bin", meta.snapshot_id, unique_suffix());
        let tmp = dir.join(format!("{name}.tmp"));
        file.seek(SeekFrom::Start(0))?;
        let mut out = fs::File::create(&tmp)?;
        std::io::copy(&mut file, &mut out)?;
        out.sync_all()?;
        fs::rename(&tmp, dir.join(&name))?;
        sync_dir(dir)?;
        let ptr = SnapshotPointer { meta: meta.clone(), file: name };
        db.put_cf_opt(cf(db, CF_SM_META)?, KEY_INSTALLING, encode(&ptr)?, &synced())?;
        load_snapshot(db, dir, &ptr, INSTALL_BATCH_BYTES)?;
        publish(db, dir, lock, meta, &ptr.file)
    }
}

/// Replaces the state machine families with the snapshot file `ptr` names (already verified,
/// and recorded under [`KEY_INSTALLING`]), in write batches of about `batch_bytes`: the
/// first clears the families, the last writes `last_applied` and the membership, removes the
/// marker and is synced (which makes the earlier ones durable too: they share its WAL). Until
/// then the families hold a part of the snapshot, and the marker says so: a crash in between
/// is finished by the next open, from the same file.
fn load_snapshot(db: &DB, dir: &Path, ptr: &SnapshotPointer, batch_bytes: usize) -> Result<(), StoreError> {
    let mut batch = WriteBatch::default();
    for name in SM_CFS {
        batch.delete_range_cf(cf(db, name)?, [].as_slice(), KEY_SPACE_END.as_slice());
    }
    // The range delete above takes the marker too; it stays until the last batch.
    let sm_meta = cf(db, CF_SM_META)?;
    batch.put_cf(sm_meta, KEY_INSTALLING, encode(ptr)?);
    let file = fs::File::open(dir.join(&ptr.file))?;
    let inner = read_snapshot(file, |family, k, v| {
        batch.put_cf(cf(db, family)?, k, v);
        if batch.size_in_bytes() >= batch_bytes {
            db.write(std::mem::take(&mut batch))?;
        }
        Ok(())
    })?;
    if inner.last_log_id != ptr.meta.last_log_id {
        return Err(StoreError::Corrupt(format!("snapshot file {} changed while installing", ptr.file)));
    }
    batch.put_cf(sm_meta, KEY_LAST_APPLIED, encode(&ptr.meta.last_log_id)?);
    batch.put_cf(sm_meta, KEY_MEMBERSHIP, encode(&ptr.meta.last_membership)?);
    batch.delete_cf(sm_meta, KEY_INSTALLING);
    // The changes the snapshot stands for were not applied here one by one: the history
    // before it is gone, with the install.
    crate::watch_log::reset_in(db, &mut batch, ptr.meta.last_log_id.map_or(0, |l| l.index))?;
    db.write_opt(batch, &synced())?;
    Ok(())
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let db = self.db.clone();
        let dir = self.dir.clone();
        let lock = self.pointer_lock.clone();
        let built = tokio::task::spawn_blocking(move || {
            let stamp = unique_suffix();
            let tmp = dir.join(format!("building-{stamp}.tmp"));
            let sm_meta = cf(&db, CF_SM_META)?;
            let meta = write_snapshot(&db, &tmp, |view| {
                let last: Option<LogId> =
                    view.get_cf(sm_meta, KEY_LAST_APPLIED)?.map(|b| decode(&b)).transpose()?.flatten();
                let membership: Membership =
                    view.get_cf(sm_meta, KEY_MEMBERSHIP)?.map(|b| decode(&b)).transpose()?.unwrap_or_default();
                let id = match &last {
                    Some(l) => format!("{}-{}-{stamp}", l.leader_id.term, l.index),
                    None => format!("0-0-{stamp}"),
                };
                Ok(SnapshotMeta { last_log_id: last, last_membership: membership, snapshot_id: id })
            })?;
            let name = format!("snap-{}.bin", meta.snapshot_id);
            fs::rename(&tmp, dir.join(&name))?;
            sync_dir(&dir)?;
            publish(&db, &dir, &lock, &meta, &name)?;
            let file = fs::File::open(dir.join(&name))?;
            Ok::<_, StoreError>((meta, file))
        })
        .await
        .map_err(|e| sto(IoKind::WriteSnapshot, e.into()))?
        .map_err(|e| sto(IoKind::WriteSnapshot, e))?;
        let (meta, file) = built;
        tracing::info!(snapshot = %meta.snapshot_id, "built snapshot");
        Ok(Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(file)) })
    }
}

/// Applies of at most this many commands run on the calling task (openraft's state-machine
/// task); larger ones go to the blocking pool. The trade-off:
/// - inline costs no thread hand-off (two context switches: to a pool thread and back), but
///   holds the runtime worker it runs on for the whole apply: memtable reads, one HMAC per
///   change's audit record, one unsynced `db.write`, tens of µs per command;
/// - the pool frees the worker for the network and API tasks, at the cost of the hand-off
///   on every apply.
///
/// At 64 and 256 writing clients most applies likely carry more than 32 commands (the
/// leader's `vault_raft_write_entry_commands` says), so nearly every apply pays the hop;
/// whether 512 (inline but for catch-up) is better is a benchmark question: context switches
/// and µs per write at 64 and 256 clients (`vault-bench --perf-mode stat`).
const INLINE_APPLY_MAX_COMMANDS: usize = 32;

type ApplyResult = (Vec<CommandResponse>, Option<LogId>, Membership);

/// Applies `entries` as one atomic batch: the responses, the last applied log id and the
/// membership after them. Then tells `applied`: a new generation if the batch changed state
/// the read path caches, and the new applied index.
pub(crate) fn apply_entries(
    db: &DB,
    audit: &AuditLog,
    watch: &WatchLog,
    applied: &Applied,
    entries: &[Entry],
    mut membership: Membership,
) -> Result<ApplyResult, StoreError> {
    let mut txn = Txn::new(db);
    let mut responses = Vec::with_capacity(entries.len());
    let mut last = None;
    // The changes to secrets each entry made, with its index as their revision.
    let mut changes = Vec::new();
    for entry in entries {
        last = Some(entry.log_id);
        match &entry.payload {
            EntryPayload::Blank => responses.push(CommandResponse::Ok),
            EntryPayload::Normal(cmd) => {
                let resp = apply_command(&mut txn, cmd)?;
                let mut events = Vec::new();
                events_of(cmd, &resp, &mut events);
                if !events.is_empty() {
                    changes.push((entry.log_id.index, events));
                }
                responses.push(resp);
            }
            EntryPayload::Membership(m) => {
                membership = StoredMembership::new(Some(entry.log_id), m.clone());
                responses.push(CommandResponse::Ok);
            }
        }
    }
    txn.put(CF_SM_META, KEY_LAST_APPLIED, &last)?;
    txn.put(CF_SM_META, KEY_MEMBERSHIP, &membership)?;
    // One atomic batch, not synced on its own: the entries are synced in the Raft log before
    // they are applied (`apply` waits), so a crash before the WAL sync (`storage::state_wal`,
    // or the RocksDB log's own group commit) loses only applies of entries that are in the
    // durable log and are applied again on restart. A synced write here would stall every
    // other writer of the DB for an fsync.
    // The changes' audit records and watch events go in the same batch: no change without
    // its record and its events.
    let cached_state_changed = txn.changes_cached_state();
    let (mut batch, records) = txn.into_batch()?;
    let staged = watch.stage(&mut batch, changes)?;
    audit.commit(batch, records)?;
    crate::crash_points::crash_point(crate::crash_points::APPLY_AFTER_WRITE, last.map_or(0, |l| l.index));
    if cached_state_changed {
        applied.bump();
    }
    watch.published(staged, last.map_or(0, |l| l.index));
    applied.publish(last.map_or(0, |l| l.index));
    Ok((responses, last, membership))
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(last) = entries.last().map(|e| e.log_id.index) else {
            return Ok(Vec::new());
        };
        // A committed entry is on disk on a majority, but maybe not yet here: on a leader,
        // the followers' acknowledgements can beat its own sync (see `synced_log`). Applying
        // answers the client, so it waits.
        let waiting = std::time::Instant::now();
        if self.synced.wait_committed_synced(last).await.is_err() {
            return Err(sto(IoKind::WriteSm, StoreError::Corrupt("raft log syncer has stopped".into())));
        }
        crate::crash_points::crash_point(crate::crash_points::APPLY_BEFORE_WRITE, last);
        let applying = std::time::Instant::now();
        metrics::histogram!("vault_raft_apply_sync_wait_seconds").record(applying - waiting);
        let db = self.db.clone();
        let membership = self.membership.clone();
        let commands: usize = entries
            .iter()
            .map(|e| match &e.payload {
                EntryPayload::Normal(Command::Batch(cmds)) => cmds.len(),
                _ => 1,
            })
            .sum();
        // A few commands take microseconds (memtable reads and one unsynced write): run them
        // here rather than pay two thread hand-offs. Larger applies (catching up) go to the
        // blocking pool so they do not hold up other tasks.
        let (responses, last, membership) = if commands <= INLINE_APPLY_MAX_COMMANDS {
            apply_entries(&db, &self.audit, &self.watch, &self.applied, &entries, membership)
                .map_err(|e| sto(IoKind::WriteSm, e))?
        } else {
            let audit = self.audit.clone();
            let watch = self.watch.clone();
            let applied = self.applied.clone();
            tokio::task::spawn_blocking(move || apply_entries(&db, &audit, &watch, &applied, &entries, membership))
                .await
                .map_err(|e| sto(IoKind::WriteSm, e.into()))?
                .map_err(|e| sto(IoKind::WriteSm, e))?
        };
        metrics::histogram!("vault_raft_apply_seconds").record(applying.elapsed());
        self.last_applied = last;
        self.membership = membership;
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder { db: self.db.clone(), dir: self.dir.clone(), pointer_lock: self.pointer_lock.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let path = self.dir.join(format!("incoming-{}.tmp", unique_suffix()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| sto(IoKind::WriteSnapshot, e.into()))?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let file = snapshot.into_std().await;
        let db = self.db.clone();
        let dir = self.dir.clone();
        let lock = self.pointer_lock.clone();
        let m = meta.clone();
        let applied = self.applied.clone();
        tokio::task::spawn_blocking(move || {
            let r = Self::install_blocking(&db, &dir, &lock, &m, file);
            // The families were replaced, or partly (then the node stops): whatever the read
            // path cached is stale either way.
            applied.bump();
            // The received file (if it was ours) is no longer needed.
            if let Ok(rd) = fs::read_dir(&dir) {
                for e in rd.flatten() {
                    let n = e.file_name().to_string_lossy().to_string();
                    if n.starts_with("incoming-") {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
            r
        })
        .await
        .map_err(|e| sto(IoKind::WriteSnapshot, e.into()))?
        .map_err(|e| sto(IoKind::WriteSnapshot, e))?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.watch.installed(meta.last_log_id.map_or(0, |l| l.index)).map_err(|e| sto(IoKind::WriteSnapshot, e))?;
        self.applied.publish(meta.last_log_id.map_or(0, |l| l.index));
        tracing::info!(snapshot = %meta.snapshot_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let Some(ptr) = read_pointer(&self.db).map_err(|e| sto(IoKind::ReadSnapshot, e))? else {
            return Ok(None);
        };
        let file =
            tokio::fs::File::open(self.dir.join(&ptr.file)).await.map_err(|e| sto(IoKind::ReadSnapshot, e.into()))?;
        Ok(Some(Snapshot { meta: ptr.meta, snapshot: Box::new(file) }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::synced_log::Syncer;

    fn test_audit(db: &Arc<DB>) -> AuditLog {
        let key = vault_core::keys::AuditMacKey::generate();
        AuditLog::open(db.clone(), 1, crate::audit_log::AuditKeys::new(vec![("test".into(), key)]).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn an_entry_is_applied_only_once_this_log_has_it_on_disk() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Arc::new(crate::db::open(&dir.path().join("db")).expect("open db"));
        // Entry 0 stays written but unsynced until the test says otherwise.
        let syncer = Syncer::never_syncing(&dir.path().join("other"));
        syncer.written(0);
        let mut sm =
            StateMachineStore::open(db.clone(), dir.path().join("snapshots"), syncer.handle(), test_audit(&db))
                .await
                .expect("open");
        let entry = Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), 0), payload: EntryPayload::Blank };
        let apply = tokio::spawn(async move { sm.apply(vec![entry]).await.map(|r| r.len()) });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!apply.is_finished(), "applied before the entry was synced");
        // The log's sync reaches entry 0 (here through a purge, which is synced).
        syncer.purged(0);
        let applied = tokio::time::timeout(Duration::from_secs(10), apply).await.expect("applied in time");
        assert_eq!(applied.expect("join").expect("apply"), 1);
    }

    const KEYS: usize = 6000;

    /// A store whose `secrets` family holds `KEYS` values of 1 KiB (~6 MiB, more than one
    /// install batch), and a snapshot file of it at log index 7.
    fn source_snapshot(dir: &Path) -> (SnapshotMeta, PathBuf) {
        let db = crate::db::open(&dir.join("db")).expect("open db");
        let secrets = cf(&db, crate::db::CF_SECRETS).expect("cf");
        for i in 0..KEYS {
            db.put_cf(secrets, format!("k{i:05}"), vec![(i % 251) as u8; 1024]).expect("put");
        }
        let path = dir.join("snap.bin");
        let last = Some(LogId::new(CommittedLeaderId::new(3, 1), 7));
        let meta = write_snapshot(&db, &path, |_| {
            Ok(SnapshotMeta { last_log_id: last, last_membership: Membership::default(), snapshot_id: "t".into() })
        })
        .expect("write snapshot");
        (meta, path)
    }

    fn assert_holds_the_snapshot(db: &DB, meta: &SnapshotMeta) {
        let secrets = cf(db, crate::db::CF_SECRETS).expect("cf");
        let n = db.iterator_cf(secrets, rocksdb::IteratorMode::Start).count();
        assert_eq!(n, KEYS, "exactly the snapshot's keys");
        assert_eq!(db.get_cf(secrets, "k05999").expect("get"), Some(vec![(5999 % 251) as u8; 1024]));
        assert!(db.get_cf(secrets, "old").expect("get").is_none(), "the state before the install is gone");
        let applied: Option<LogId> =
            db.get_typed::<Option<LogId>>(CF_SM_META, KEY_LAST_APPLIED).expect("get").flatten();
        assert_eq!(applied, meta.last_log_id);
        assert!(db.get_cf(cf(db, CF_SM_META).expect("cf"), KEY_INSTALLING).expect("get").is_none(), "marker left");
    }

    #[tokio::test]
    async fn a_snapshot_is_installed_in_bounded_batches() {
        let src = tempfile::tempdir().expect("temp dir");
        let (meta, path) = source_snapshot(src.path());
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Arc::new(crate::db::open(&dir.path().join("db")).expect("open db"));
        db.put_cf(cf(&db, crate::db::CF_SECRETS).expect("cf"), "old", b"x").expect("put");
        let syncer = Syncer::never_syncing(&dir.path().join("other"));
        let mut sm =
            StateMachineStore::open(db.clone(), dir.path().join("snapshots"), syncer.handle(), test_audit(&db))
                .await
                .expect("open");
        let file = fs::File::open(&path).expect("open snapshot");
        sm.install_snapshot(&meta, Box::new(tokio::fs::File::from_std(file))).await.expect("install");
        assert_holds_the_snapshot(&db, &meta);
        // Loading with a small bound (many batches) gives the same state.
        let ptr = read_pointer(&db).expect("pointer").expect("a current snapshot");
        db.put_cf(cf(&db, crate::db::CF_SECRETS).expect("cf"), "old", b"x").expect("put");
        load_snapshot(&db, &dir.path().join("snapshots"), &ptr, 64 << 10).expect("load");
        assert_holds_the_snapshot(&db, &meta);
    }

    #[tokio::test]
    async fn an_install_cut_short_is_finished_at_the_next_open() {
        let src = tempfile::tempdir().expect("temp dir");
        let (meta, path) = source_snapshot(src.path());
        let dir = tempfile::tempdir().expect("temp dir");
        let snapshots = dir.path().join("snapshots");
        {
            // What a crash after the first batches leaves: the file kept, the marker, the
            // old state cleared and a part of the new one written.
            let db = crate::db::open(&dir.path().join("db")).expect("open db");
            fs::create_dir_all(&snapshots).expect("mkdir");
            fs::copy(&path, snapshots.join("snap-t-1.bin")).expect("copy");
            let ptr = SnapshotPointer { meta: meta.clone(), file: "snap-t-1.bin".into() };
            let secrets = cf(&db, crate::db::CF_SECRETS).expect("cf");
            db.put_cf(secrets, "old", b"x").expect("put");
            db.put_cf(cf(&db, CF_SM_META).expect("cf"), KEY_INSTALLING, encode(&ptr).expect("encode")).expect("put");
            for i in 0..10 {
                db.put_cf(secrets, format!("k{i:05}"), vec![(i % 251) as u8; 1024]).expect("put");
            }
        }
        let db = Arc::new(crate::db::open(&dir.path().join("db")).expect("reopen db"));
        let syncer = Syncer::never_syncing(&dir.path().join("other"));
        let mut sm =
            StateMachineStore::open(db.clone(), snapshots, syncer.handle(), test_audit(&db)).await.expect("open");
        assert_holds_the_snapshot(&db, &meta);
        let (applied, _) = sm.applied_state().await.expect("applied state");
        assert_eq!(applied, meta.last_log_id);
        let current = sm.get_current_snapshot().await.expect("current").expect("the installed snapshot is served");
        assert_eq!(current.meta.last_log_id, meta.last_log_id);
    }
}
