//! The log a node runs on: the segment log, or (held below feature level 5) the RocksDB log
//! kept one release for rollback. A plain dispatch; see `raft_log::migrate` for the choice.

use std::fmt::Debug;
use std::ops::RangeBounds;

use openraft::storage::{RaftLogReader, RaftLogStorage};

use super::raft_log::{LogView, SegmentLogStore};
use crate::log_store::LogStore;
use crate::synced_log::SyncedLog;
use crate::typ::{Entry, LogFlushed, LogId, LogState, StorageError, TypeConfig, Vote};

#[derive(Clone)]
pub enum NodeLog {
    Rocks(LogStore),
    Segments(SegmentLogStore),
}

impl NodeLog {
    /// How far this log is on disk.
    pub fn synced(&self) -> SyncedLog {
        match self {
            NodeLog::Rocks(l) => l.synced(),
            NodeLog::Segments(l) => l.synced(),
        }
    }

    /// The in-memory view of the segment log (`None` on the RocksDB log).
    pub fn view(&self) -> Option<LogView> {
        match self {
            NodeLog::Rocks(_) => None,
            NodeLog::Segments(l) => Some(l.view()),
        }
    }
}

impl RaftLogReader<TypeConfig> for NodeLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        match self {
            NodeLog::Rocks(l) => l.try_get_log_entries(range).await,
            NodeLog::Segments(l) => l.try_get_log_entries(range).await,
        }
    }
}

impl RaftLogStorage<TypeConfig> for NodeLog {
    type LogReader = NodeLog;

    async fn get_log_state(&mut self) -> Result<LogState, StorageError> {
        match self {
            NodeLog::Rocks(l) => l.get_log_state().await,
            NodeLog::Segments(l) => l.get_log_state().await,
        }
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        match self {
            NodeLog::Rocks(l) => l.save_vote(vote).await,
            NodeLog::Segments(l) => l.save_vote(vote).await,
        }
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        match self {
            NodeLog::Rocks(l) => l.read_vote().await,
            NodeLog::Segments(l) => l.read_vote().await,
        }
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        match self {
            NodeLog::Rocks(l) => l.save_committed(committed).await,
            NodeLog::Segments(l) => l.save_committed(committed).await,
        }
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        match self {
            NodeLog::Rocks(l) => l.append(entries, callback).await,
            NodeLog::Segments(l) => l.append(entries, callback).await,
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        match self {
            NodeLog::Rocks(l) => l.truncate(log_id).await,
            NodeLog::Segments(l) => l.truncate(log_id).await,
        }
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        match self {
            NodeLog::Rocks(l) => l.purge(log_id).await,
            NodeLog::Segments(l) => l.purge(log_id).await,
        }
    }
}
