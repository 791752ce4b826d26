//! Moving a node's Raft log out of RocksDB into segment files, once, at start.
//!
//! `Storage::open` calls [`prepare`] with the database open and before anything reads the log.
//! Where the node may run on the segment log (feature level 5, see `features`), and it is not
//! there yet:
//! 1. a leftover `raft-log.tmp/` (a move cut short) is removed;
//! 2. RocksDB's WAL is synced, then the vote, the purge point and every entry of `CF_LOG` after
//!    it are written to `raft-log.tmp/`: a checkpoint record (vote, purge point) and each
//!    entry's stored bytes as they are (decoded only to check its log id and contiguity);
//! 3. the segment and the directory are synced;
//! 4. the marker family `raft_log_moved` is created, so that an older build refuses to open the
//!    database (it would find no vote and no log, and could vote twice in a term or lose
//!    entries it acknowledged);
//! 5. `raft-log.tmp/` is renamed to `raft-log/` and the data directory synced;
//! 6. the old copy is removed: one synced batch clears `CF_LOG`, the vote and the purge point,
//!    then `CF_LOG` is compacted. `CF_LOG` itself stays: RocksDB must open every family.
//!
//! Every entry and the vote are durable in the new log before the old copy goes, so no
//! acknowledged entry is lost. A crash before the rename starts over at 1; after it, step 6 is
//! done again at the next start (it runs whenever `raft-log/` exists and old keys remain).
//!
//! A fresh node takes the same path with nothing to copy, so its directory gets the marker too.
//! A node held below level 5 keeps the RocksDB log and moves nothing; if its log was already
//! moved (it ran at level 5 before), it stays on the segment log, with a warning: the move is
//! one-way.

use std::path::Path;

use rocksdb::{IteratorMode, WriteBatch, WriteOptions, DB};

use super::index::Checkpoint;
use super::segment::{self, Segment};
use super::{checkpoint_record, encoded_entry_record, RaftLogError};
use crate::codec::decode;
use crate::db::{cf, CF_LOG, CF_RAFT_LOG_MOVED, CF_RAFT_META};
use crate::log_store::{index_key, meta_get, KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE};
use crate::typ::{Entry, LogId, Vote};
use crate::StoreError;

/// The segment log's directory, inside the data directory.
pub const LOG_DIR: &str = "raft-log";
/// Where a move is written before it is renamed into place.
pub const TMP_DIR: &str = "raft-log.tmp";

/// Which log a node runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `CF_LOG` in RocksDB (a node held below feature level 5).
    Rocks,
    /// Segment files in `<data>/raft-log/`.
    Segments,
}

/// Decides the log for the node in `data_dir` (database `db`, opened by `db::open`), moving
/// the RocksDB log into segment files first when `segments_allowed` and not done yet.
pub fn prepare(data_dir: &Path, db: &mut DB, node_id: u64, segments_allowed: bool) -> Result<Backend, StoreError> {
    let log_dir = data_dir.join(LOG_DIR);
    let tmp = data_dir.join(TMP_DIR);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| RaftLogError::io("remove", &tmp, e))?;
    }
    if log_dir.exists() {
        if !segments_allowed {
            tracing::warn!(
                "VAULT_MAX_FEATURE_LEVEL is below 5, but this node's Raft log was already moved to segment files \
                 (the move is one-way): running on them"
            );
        }
        remove_old_log(db)?;
        return Ok(Backend::Segments);
    }
    if !segments_allowed {
        return Ok(Backend::Rocks);
    }
    db.flush_wal(true)?;
    let moved = copy_to(db, &tmp, node_id)?;
    if db.cf_handle(CF_RAFT_LOG_MOVED).is_none() {
        db.create_cf(CF_RAFT_LOG_MOVED, &rocksdb::Options::default())?;
    }
    std::fs::rename(&tmp, &log_dir).map_err(|e| RaftLogError::io("rename", &tmp, e))?;
    segment::sync_dir(data_dir)?;
    if moved > 0 {
        tracing::info!(entries = moved, "moved the Raft log out of RocksDB into segment files");
    }
    remove_old_log(db)?;
    Ok(Backend::Segments)
}

/// Writes the RocksDB log into a new segment log in `tmp`, synced. Returns the entries copied.
fn copy_to(db: &DB, tmp: &Path, node_id: u64) -> Result<u64, StoreError> {
    let vote: Option<Vote> = meta_get(db, KEY_VOTE)?;
    let last_purged: Option<LogId> = meta_get(db, KEY_LAST_PURGED)?;
    std::fs::create_dir_all(tmp).map_err(|e| RaftLogError::io("create", tmp, e))?;
    let mut next = last_purged.map(|p| p.index + 1);
    let cp = Checkpoint { vote, last_purged, next_index: next.unwrap_or(0) };
    let mut seg = Segment::create(tmp, 1, node_id, &checkpoint_record(1, &cp)?)?;
    let mut buf = Vec::with_capacity(4 << 20);
    let mut copied = 0;
    for item in db.iterator_cf(cf(db, CF_LOG)?, IteratorMode::Start) {
        let (_, value) = item?;
        let id = decode::<Entry>(&value)?.log_id;
        // Entries at or below the purge point (a purge cut short) are not part of the log.
        if last_purged.is_some_and(|p| id.index <= p.index) {
            continue;
        }
        if next.is_some_and(|n| n != id.index) {
            let want = next.unwrap_or_default();
            return Err(StoreError::Corrupt(format!(
                "the RocksDB raft log has entry {} where {want} should be",
                id.index
            )));
        }
        next = Some(id.index + 1);
        // An entry the segment log could not hold is refused here, not by a panic while
        // encoding it (no build has proposed one: appends are bounded well below this).
        if value.len() + 24 > super::record::MAX_BODY {
            return Err(StoreError::Corrupt(format!(
                "raft log entry {} is {} bytes, over the segment log's limit",
                id.index,
                value.len()
            )));
        }
        encoded_entry_record(&mut buf, 1, &id, &value)?;
        copied += 1;
        if buf.len() >= 4 << 20 {
            seg.append(&buf)?;
            buf.clear();
        }
    }
    seg.append(&buf)?;
    seg.sync_data()?;
    segment::sync_dir(tmp)?;
    Ok(copied)
}

/// Clears the RocksDB log, its vote and purge point (once they live in segment files).
fn remove_old_log(db: &DB) -> Result<(), StoreError> {
    let log = cf(db, CF_LOG)?;
    let meta = cf(db, CF_RAFT_META)?;
    let any_entry = db.iterator_cf(log, IteratorMode::Start).next().transpose()?.is_some();
    let any_meta = [KEY_VOTE, KEY_LAST_PURGED, KEY_COMMITTED]
        .iter()
        .map(|k| db.get_pinned_cf(meta, k).map(|v| v.is_some()))
        .collect::<Result<Vec<_>, _>>()?
        .contains(&true);
    if !any_entry && !any_meta {
        return Ok(());
    }
    let mut batch = WriteBatch::default();
    batch.delete_range_cf(log, &index_key(0)[..], &[0xFF; 9][..]);
    for k in [KEY_VOTE, KEY_LAST_PURGED, KEY_COMMITTED] {
        batch.delete_cf(meta, k);
    }
    let mut synced = WriteOptions::default();
    synced.set_sync(true);
    db.write_opt(batch, &synced)?;
    db.compact_range_cf(log, None::<&[u8]>, None::<&[u8]>);
    Ok(())
}
