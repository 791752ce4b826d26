use openraft::{AnyError, StorageIOError};
use thiserror::Error;

use crate::typ::StorageError;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("encoding: {0}")]
    Codec(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("column family {0} is missing")]
    MissingCf(&'static str),
    #[error(transparent)]
    RaftLog(#[from] crate::storage::raft_log::RaftLogError),
    #[error("blocking task failed: {0}")]
    Join(String),
    /// A write shared with other callers (see `audit_group`) failed; the message is its error.
    #[error("shared write failed: {0}")]
    SharedWrite(String),
    /// Too much is already waiting to be written: the caller should come back later.
    #[error("busy: {0}")]
    Busy(String),
    /// A required audit sink does not take records (`audit sink X is not taking records`).
    #[error("{0}")]
    SinkRefuses(String),
}

impl From<tokio::task::JoinError> for StoreError {
    fn from(e: tokio::task::JoinError) -> Self {
        StoreError::Join(e.to_string())
    }
}

/// Maps a store error into openraft's error, naming what was being done.
pub(crate) fn sto(kind: IoKind, e: StoreError) -> StorageError {
    let any = AnyError::error(e.to_string());
    let io = match kind {
        IoKind::ReadLogs => StorageIOError::read_logs(any),
        IoKind::WriteLogs => StorageIOError::write_logs(any),
        IoKind::ReadVote => StorageIOError::read_vote(any),
        IoKind::WriteVote => StorageIOError::write_vote(any),
        IoKind::WriteSm => StorageIOError::write_state_machine(any),
        IoKind::ReadSnapshot => StorageIOError::read_snapshot(None, any),
        IoKind::WriteSnapshot => StorageIOError::write_snapshot(None, any),
    };
    io.into()
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum IoKind {
    ReadLogs,
    WriteLogs,
    ReadVote,
    WriteVote,
    WriteSm,
    ReadSnapshot,
    WriteSnapshot,
}
