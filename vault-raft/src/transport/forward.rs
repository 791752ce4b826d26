use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use vault_core::token::TokenHash;

use crate::command::{Command, CommandResponse};
use crate::node::NodeInfo;
use crate::typ::{LogId, NodeId};

/// Work sent over the Raft port to the node that must do it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ForwardRequest {
    /// A sealed command for the leader to commit.
    Write(Command),
    /// The leader confirms its leadership with a quorum and returns the log id a linearizable
    /// read must wait for.
    ReadIndex,
    /// An operator's cluster change, with the operator's token: a leader that receives it
    /// from a peer runs it only if the token holds the admin role in the replicated state.
    Admin { auth: TokenHash, op: AdminOp },
    /// The leader's view of replication.
    LeaderView,
    /// To a voter during a leader transfer: do not start elections for `for_ms`.
    PauseElections { for_ms: u64 },
    /// To the transfer target: campaign until leader or `for_ms` passed.
    Campaign { for_ms: u64 },
    /// Would this voter vote for `candidate` (whose log ends at `last_log_id`) now? Asked
    /// before an election, changes nothing (see `elections`).
    PreVote { candidate: NodeId, last_log_id: Option<LogId> },
}

/// Cluster changes an operator asks for; they run on the leader.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AdminOp {
    AddLearner {
        id: NodeId,
        node: NodeInfo,
    },
    PromoteVoter {
        id: NodeId,
    },
    RemoveMember {
        id: NodeId,
    },
    TransferLeader {
        to: NodeId,
    },
    /// Make master key `key_id` (with key-check value `check`) the cluster's, once every
    /// member reports holding it.
    RotateMasterKey {
        key_id: String,
        check: Option<String>,
    },
    /// Raise the cluster's feature level to the lowest any member understands.
    RaiseFeatureLevel,
}

/// Replication as the leader sees it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct LeaderView {
    pub last_log_index: Option<u64>,
    /// Highest index known replicated to each member.
    pub matched: BTreeMap<NodeId, Option<u64>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ForwardResponse {
    Written(CommandResponse),
    ReadIndex(Option<LogId>),
    LeaderView(LeaderView),
    PreVote {
        granted: bool,
    },
    Done,
    /// The cluster's feature level, and the level each member understands.
    FeatureLevel {
        level: u32,
        members: Vec<(NodeId, u32)>,
    },
}

#[derive(Clone, Debug, thiserror::Error, Serialize, Deserialize)]
pub enum ForwardError {
    #[error("this node is not the leader")]
    NotLeader { leader: Option<(NodeId, NodeInfo)> },
    /// Retryable: no quorum, timeout, shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// The peer could not be connected to: the request was never sent, so it is safe to send
    /// again, to the same node or a new leader.
    #[error("{0}")]
    Unreachable(String),
    /// The cluster refused (bad membership change and the like).
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    NotFound(String),
    /// The peer may not ask for this (not a member, not the leader, or a command only the
    /// leader makes).
    #[error("{0}")]
    Refused(String),
}
