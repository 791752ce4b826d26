//! The openraft type configuration and short aliases, so the rest of the code never spells
//! out openraft generics.

use crate::command::{Command, CommandResponse};
use crate::node::NodeInfo;

openraft::declare_raft_types!(
    /// Raft types of the vault.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = u64,
        Node = NodeInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type EntryPayload = openraft::EntryPayload<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type LogState = openraft::storage::LogState<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<NodeId, NodeInfo>;
pub type Membership = openraft::Membership<NodeId, NodeInfo>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, NodeInfo>;
pub type Snapshot = openraft::storage::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, NodeInfo>;
pub type LogFlushed = openraft::storage::LogFlushed<TypeConfig>;
pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, NodeInfo>;
pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<NodeId, NodeInfo>;
pub type ForwardToLeader = openraft::error::ForwardToLeader<NodeId, NodeInfo>;
pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;
