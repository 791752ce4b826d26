//! The Raft log in segment files of its own, out of RocksDB (issue 30).
//!
//! Today every entry goes through RocksDB's skiplist memtable and WAL, and on a follower that
//! is most of the CPU a write costs. A Raft log needs none of it: it is appended in order, read
//! back mostly at its tail, cut at the end (truncate) and dropped from the front (purge). So it
//! is kept as append-only segment files of records, each with its own checksum
//! ([`record`]), one file at a time ([`segment`]), with an index in memory ([`index`]) that
//! recovery rebuilds by replaying the records ([`recover`]).
//!
//! # Why not raft-engine
//! TiKV's raft-engine (0.4.2, the newest release) was the other candidate. It was not taken:
//! - its model is raft-rs's, not openraft's: it has no truncate without an append, and its
//!   memtable panics on a hole or on appending over compacted entries, both of which openraft
//!   0.9 does (separate truncate; purge past the end, then append after it);
//! - its explicit `sync()` does nothing in 0.4.2 (tikv/raft-engine#395, fixed after the
//!   release), while the group commit we need already exists here ([`crate::synced_log`]);
//! - entries must be rust-protobuf 2 messages: each would be re-encoded on write and decoded on
//!   read, and protobuf 2 carries an open advisory (RUSTSEC-2024-0437), with about 25 more
//!   dependencies. Here an entry's record holds the bytes of the versioned codec
//!   ([`crate::codec`]), as the RocksDB log did, so moving a log over is a copy.
//!
//! What that gives up: raft-engine's file recycling and compression (which does nothing for
//! ciphertext).
//!
//! # Durability contract
//! The same as the RocksDB log's, stated in [`crate::synced_log`]: an append is written
//! (unsynced, readable) and reported to openraft at once; the syncer thread makes it durable
//! behind it, one fdatasync of the active segment for many appends; acknowledging, applying
//! and advertising a commit wait for that sync. What is synced inline: a vote (returns once
//! on disk), a truncation (what remains is synced, as `synced_log` requires), a purge, and a
//! segment when the next one is started (so only the newest segment can hold unsynced bytes).
//! Before a purge record, the state machine is made durable ([`StateDurability`], RocksDB's
//! `flush_wal` in the node; see `storage::state_wal` for the WAL's other syncs).
//!
//! Recovery therefore cuts a torn tail of the newest segment (nothing past the last sync was
//! acknowledged, and writeback may reorder unsynced pages, so the first bad record is where it
//! cuts), and stops with an error naming the file and offset for any damage elsewhere: a node
//! with a damaged sealed segment is wiped and re-added, and catches up from a snapshot.
//!
//! # State
//! The node runs on this log from feature level 5 (`Storage::open`). A node upgraded in place
//! moves its RocksDB log here once, at start ([`migrate`]); a node held below level 5 by
//! `VAULT_MAX_FEATURE_LEVEL` keeps the RocksDB log ([`crate::log_store`], kept one release for
//! rollback). The tail of the log is kept decoded in memory ([`recent`]). See
//! `docs/raft-log.md`.

pub mod index;
pub mod migrate;
pub mod recent;
pub mod record;
mod recover;
#[cfg(test)]
mod recover_tests;
pub mod segment;
mod store;
#[cfg(test)]
mod store_tests;

use std::path::{Path, PathBuf};

use thiserror::Error;

pub use store::{LogView, Options, SegmentLogStore, StateDurability};

use crate::codec;
use crate::typ::{Entry, LogId};
use index::Checkpoint;
use record::{BadHeader, Kind, SEGMENT_FORMAT};

/// Bytes of an entry record's body before the entry itself: index, term, leader node.
pub const ENTRY_PREFIX: usize = 24;

#[derive(Debug, Error)]
pub enum RaftLogError {
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("raft log file {path}: segment header is not valid")]
    BadHeader { path: PathBuf },
    #[error("raft log file {path} is corrupt at offset {offset}: {reason}")]
    Corrupt { path: PathBuf, offset: u64, reason: String },
    #[error(
        "raft log file {path} was written by a newer build ({what}); this build reads segment format {SEGMENT_FORMAT}"
    )]
    Newer { path: PathBuf, what: String },
    #[error("encoding a raft log record: {0}")]
    Encode(String),
}

impl RaftLogError {
    pub(crate) fn io(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        RaftLogError::Io { what, path: path.to_path_buf(), source }
    }

    pub(crate) fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> Self {
        RaftLogError::Corrupt { path: path.to_path_buf(), offset, reason: reason.into() }
    }

    pub(crate) fn header(path: &Path, bad: BadHeader) -> Self {
        match bad {
            BadHeader::Invalid => RaftLogError::BadHeader { path: path.to_path_buf() },
            BadHeader::NewerFormat(f) => {
                RaftLogError::Newer { path: path.to_path_buf(), what: format!("segment format {f}") }
            }
        }
    }
}

fn encode_err(e: crate::StoreError) -> RaftLogError {
    RaftLogError::Encode(e.to_string())
}

fn entry_prefix(o: &mut Vec<u8>, id: &LogId) {
    o.extend_from_slice(&id.index.to_le_bytes());
    o.extend_from_slice(&id.leader_id.term.to_le_bytes());
    o.extend_from_slice(&id.leader_id.node_id.to_le_bytes());
}

/// Appends the record of `entry` for segment `seq`; returns its length.
pub(crate) fn entry_record(out: &mut Vec<u8>, seq: u64, entry: &Entry) -> Result<usize, RaftLogError> {
    record::encode_into(out, seq, Kind::Entry, |o| {
        entry_prefix(o, &entry.log_id);
        codec::encode_into(o, entry).map_err(encode_err)
    })
}

/// Appends the record of an entry already in the versioned codec (`encoded`, as the RocksDB log
/// stored it), copied as it is; returns its length.
pub(crate) fn encoded_entry_record(
    out: &mut Vec<u8>,
    seq: u64,
    id: &LogId,
    encoded: &[u8],
) -> Result<usize, RaftLogError> {
    record::encode_into(out, seq, Kind::Entry, |o| {
        entry_prefix(o, id);
        o.extend_from_slice(encoded);
        Ok(())
    })
}

/// Appends a record whose body is `value` in the versioned codec.
pub(crate) fn value_record<T: serde::Serialize>(
    out: &mut Vec<u8>,
    seq: u64,
    kind: Kind,
    value: &T,
) -> Result<usize, RaftLogError> {
    record::encode_into(out, seq, kind, |o| codec::encode_into(o, value).map_err(encode_err))
}

/// The first record of segment `seq`.
pub(crate) fn checkpoint_record(seq: u64, cp: &Checkpoint) -> Result<Vec<u8>, RaftLogError> {
    let mut out = Vec::new();
    value_record(&mut out, seq, Kind::Checkpoint, cp)?;
    Ok(out)
}
