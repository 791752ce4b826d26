//! The Raft log on RocksDB, with group commit.
//!
//! `append` writes entries to RocksDB without syncing (so they are readable at once; the write
//! is inline, it costs microseconds), reports them written to openraft at once, and wakes the
//! syncer thread, which syncs the WAL behind them: under load many appends share one
//! fdatasync. Where durability matters (acknowledging, applying, advertising a commit), the
//! code waits for the sync; see [`crate::synced_log`].
//!
//! The newest entries are also kept in memory (bounded, [`Recent`]), so replication to followers,
//! which reads back what was just appended, does not go through RocksDB and the decoder again.
//!
//! Kept one release as the rollback backend: a node held below feature level 5
//! (`VAULT_MAX_FEATURE_LEVEL`) runs on it; every other node runs on the segment log
//! ([`crate::storage::raft_log`]). See `docs/raft-log.md`.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex};

use openraft::storage::{RaftLogReader, RaftLogStorage};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};

use crate::codec::{decode, encode};
use crate::db::{cf, CF_LOG, CF_RAFT_META};
use crate::error::{sto, IoKind};
use crate::storage::raft_log::recent::Recent;
use crate::synced_log::{SyncedLog, Syncer};
use crate::typ::{Entry, LogFlushed, LogId, LogState, StorageError, TypeConfig, Vote};
use crate::StoreError;

pub(crate) const KEY_VOTE: &[u8] = b"vote";
pub(crate) const KEY_LAST_PURGED: &[u8] = b"last_purged";
/// Written by builds before the commit index was kept in memory only; unused.
pub(crate) const KEY_COMMITTED: &[u8] = b"committed";

#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    syncer: Arc<Syncer>,
    recent: Arc<Mutex<Recent>>,
}

pub(crate) fn meta_get<T: serde::de::DeserializeOwned>(db: &DB, key: &[u8]) -> Result<Option<T>, StoreError> {
    let v = db.get_cf(cf(db, CF_RAFT_META)?, key)?;
    v.map(|b| decode(&b)).transpose()
}

/// The last log id written to this node's log (synced or not).
pub(crate) fn last_log_id(db: &DB) -> Result<Option<LogId>, StoreError> {
    Ok(log_state(db)?.last_log_id)
}

/// The last purged and the last log id (the last purged one when the log is empty).
fn log_state(db: &DB) -> Result<LogState, StoreError> {
    let last_purged: Option<LogId> = meta_get(db, KEY_LAST_PURGED)?;
    let last = match db.iterator_cf(cf(db, CF_LOG)?, IteratorMode::End).next() {
        Some(item) => {
            let (_, v) = item?;
            let entry: Entry = decode(&v)?;
            Some(entry.log_id)
        }
        None => last_purged,
    };
    Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
}

pub(crate) fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn synced() -> WriteOptions {
    let mut o = WriteOptions::default();
    o.set_sync(true);
    o
}

impl LogStore {
    pub fn open(db: Arc<DB>) -> Result<Self, StoreError> {
        // Whatever an earlier run wrote is made durable now, so the syncer starts from the
        // end of the log (or of the purged prefix, if the log is empty).
        db.flush_wal(true)?;
        let end = log_state(&db)?.last_log_id.map_or(0, |id| id.index + 1);
        let syncer = Syncer::start(&db, end)?;
        Ok(LogStore { db, syncer: Arc::new(syncer), recent: Arc::new(Mutex::new(Recent::default())) })
    }

    /// How far this log is on disk.
    pub fn synced(&self) -> SyncedLog {
        self.syncer.handle()
    }

    /// Writes one metadata value and returns once it is on disk.
    async fn meta_put_synced<T: serde::Serialize>(&self, key: &'static [u8], value: &T) -> Result<(), StoreError> {
        let db = self.db.clone();
        let bytes = encode(value)?;
        tokio::task::spawn_blocking(move || {
            db.put_cf_opt(cf(&db, CF_RAFT_META)?, key, bytes, &synced())?;
            Ok::<_, StoreError>(())
        })
        .await?
    }

    fn read_range(&self, start: u64, end_inclusive: Option<u64>) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::new();
        let from = index_key(start);
        let it = self.db.iterator_cf(cf(&self.db, CF_LOG)?, IteratorMode::From(&from, Direction::Forward));
        for item in it {
            let (k, v) = item?;
            let idx = u64::from_be_bytes(
                k.as_ref().try_into().map_err(|_| StoreError::Corrupt("log key is not 8 bytes".into()))?,
            );
            if end_inclusive.is_some_and(|e| idx > e) {
                break;
            }
            out.push(decode(&v)?);
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let Some((start, last)) = crate::storage::index_bounds(&range) else {
            return Ok(Vec::new());
        };
        let end = (last != u64::MAX).then_some(last);
        if let Some(hit) = self.recent.lock().unwrap_or_else(|p| p.into_inner()).get(start, end) {
            return Ok(hit);
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.read_range(start, end))
            .await
            .map_err(StoreError::from)
            .and_then(|r| r)
            .map_err(|e| sto(IoKind::ReadLogs, e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState, StorageError> {
        log_state(&self.db).map_err(|e| sto(IoKind::ReadLogs, e))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.meta_put_synced(KEY_VOTE, vote).await.map_err(|e| sto(IoKind::WriteVote, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        meta_get(&self.db, KEY_VOTE).map_err(|e| sto(IoKind::ReadVote, e))
    }

    // The commit index is kept in memory only, for metrics: writing it to RocksDB cost a write
    // on every node for every commit, and that write was never synced, so it vouched for
    // nothing after a crash. A restarted node learns the commit index from the leader; until
    // its state machine catches up, reads wait at the read barrier. (Data directories written
    // before keep an unused `committed` key.)
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        if let Some(c) = committed {
            self.syncer.committed(c.index);
        }
        Ok(())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut batch = WriteBatch::default();
        let log_cf = cf(&self.db, CF_LOG).map_err(|e| sto(IoKind::WriteLogs, e))?;
        let mut appended = Vec::new();
        let mut last = None;
        for entry in entries {
            last = Some(entry.log_id.index);
            let bytes = encode(&entry).map_err(|e| sto(IoKind::WriteLogs, e))?;
            batch.put_cf(log_cf, index_key(entry.log_id.index), &bytes);
            appended.push((entry, bytes.len()));
        }
        // An unsynced write only fills the memtable and the WAL's page cache: microseconds, so
        // it runs inline. A blocking-pool hop per append would serialize openraft's core task
        // behind thread wake-ups. The fsync happens on the syncer thread, for many appends.
        self.db.write(batch).map_err(|e| sto(IoKind::WriteLogs, e.into()))?;
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            for (entry, size) in appended {
                recent.push(entry, size);
            }
        }
        // Reported at once: openraft's core would otherwise wait out the fsync before it
        // replicates. The syncer syncs behind; acknowledging, applying and advertising a
        // commit wait for it (see `synced_log`).
        if let Some(last) = last {
            self.syncer.written(last);
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner()).truncate(log_id.index);
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(cf(&db, CF_LOG)?, index_key(log_id.index), index_key(u64::MAX));
            db.write_opt(batch, &synced())?;
            Ok::<_, StoreError>(())
        })
        .await
        .map_err(|e| sto(IoKind::WriteLogs, e.into()))?
        .map_err(|e| sto(IoKind::WriteLogs, e))?;
        self.syncer.truncated(log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner()).purge(log_id.index);
        let db = self.db.clone();
        let purged = encode(&log_id).map_err(|e| sto(IoKind::WriteLogs, e))?;
        tokio::task::spawn_blocking(move || {
            // Record the purge point first: a crash in between leaves extra entries below it,
            // never a hole above it. The synced write also makes every earlier write in the
            // shared WAL durable, including state machine applies, before any entry goes.
            db.put_cf_opt(cf(&db, CF_RAFT_META)?, KEY_LAST_PURGED, purged, &synced())?;
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(cf(&db, CF_LOG)?, index_key(0), index_key(log_id.index + 1));
            db.write(batch)?;
            Ok::<_, StoreError>(())
        })
        .await
        .map_err(|e| sto(IoKind::WriteLogs, e.into()))?
        .map_err(|e| sto(IoKind::WriteLogs, e))?;
        self.syncer.purged(log_id.index);
        Ok(())
    }
}
