use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use vault_core::token::{RawToken, TokenHash};

use crate::command::{Command, CommandResponse};
use crate::node::NodeInfo;
use crate::typ::{LogId, NodeId};

/// Work sent over the Raft port to the node that must do it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ForwardRequest {
    /// A command this node made itself, for its own leader to commit. Never accepted from a
    /// peer (see `admission`): a client write travels as [`ForwardRequest::CallerWrite`].
    Write(Command),
    /// The leader confirms its leadership with a quorum and returns the log id a linearizable
    /// read must wait for.
    ReadIndex,
    /// The cluster change of an older build, authorized by a token *hash*, which every member
    /// holds. Refused from peers (a member could act as any admin); kept so that the variants
    /// after it keep their numbers on the wire.
    AdminByHash { auth: TokenHash, op: AdminOp },
    /// The leader's view of replication.
    LeaderView,
    /// To a voter during a leader transfer: do not start elections for `for_ms`.
    PauseElections { for_ms: u64 },
    /// To the transfer target: campaign until leader or `for_ms` passed.
    Campaign { for_ms: u64 },
    /// Would this voter vote for `candidate` (whose log ends at `last_log_id`) now? Asked
    /// before an election, changes nothing (see `elections`).
    PreVote { candidate: NodeId, last_log_id: Option<LogId> },
    // New variants go last: the encoding numbers variants in order.
    /// A client write with the bearer token its caller presented (see [`CallerWrite`]).
    CallerWrite(CallerWrite),
    /// An operator's cluster change with the operator's bearer token: the leader hashes it and
    /// runs the change only if the token holds the admin role in its replicated state.
    CallerAdmin { token: RawToken, op: AdminOp },
}

/// A client write as the node that served it hands it to the leader. The leader authorizes it
/// from what no member stores: it hashes `token` itself, takes the time from its own clock and
/// names the actor from the token record it holds (see `Cluster::caller_command`). So a member,
/// which holds every token's hash, cannot act as a caller whose token it was never given, nor
/// make an expired token valid again by choosing the time, nor name another actor.
///
/// The raw token crosses only the members' link (mutual TLS; plaintext in dev mode, which is
/// never for production), as the caller's request did, and is never logged (`RawToken` prints
/// redacted) nor written down. The encoded message buffers are not zeroized.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CallerWrite {
    pub token: RawToken,
    /// A client write (see `Command::is_client_write`); its times are the leader's.
    pub cmd: Command,
    /// The client's address as the serving node saw it: recorded in the audit record, not
    /// trusted for any decision.
    pub client_ip: String,
    /// The call's audit action (`secret.put`, ...), as the serving node's RPC table names it.
    pub action: String,
}

impl ForwardRequest {
    /// What the request asks for, as an audit record of its refusal names it.
    pub fn describe(&self) -> String {
        match self {
            ForwardRequest::Write(cmd) => format!("write:{}", cmd.kind()),
            ForwardRequest::CallerWrite(w) => format!("caller_write:{}", w.cmd.kind()),
            ForwardRequest::ReadIndex => "read_index".into(),
            ForwardRequest::AdminByHash { .. } => "admin_by_hash".into(),
            ForwardRequest::CallerAdmin { .. } => "admin".into(),
            ForwardRequest::LeaderView => "leader_view".into(),
            ForwardRequest::PauseElections { .. } => "pause_elections".into(),
            ForwardRequest::Campaign { .. } => "campaign".into(),
            ForwardRequest::PreVote { .. } => "pre_vote".into(),
        }
    }
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

impl AdminOp {
    /// The audit action of the call that asks for it (the API's RPC table names the same).
    pub fn action(&self) -> &'static str {
        match self {
            AdminOp::AddLearner { .. } => "cluster.add",
            AdminOp::PromoteVoter { .. } => "cluster.promote",
            AdminOp::RemoveMember { .. } => "cluster.remove",
            AdminOp::TransferLeader { .. } => "cluster.transfer_leader",
            AdminOp::RotateMasterKey { .. } => "kms.rotate",
            AdminOp::RaiseFeatureLevel => "cluster.upgrade",
        }
    }

    /// What the change is about, as its audit records name it.
    pub fn subject(&self) -> String {
        match self {
            AdminOp::AddLearner { id, .. }
            | AdminOp::PromoteVoter { id }
            | AdminOp::RemoveMember { id }
            | AdminOp::TransferLeader { to: id } => format!("node:{id}"),
            AdminOp::RotateMasterKey { key_id, .. } => format!("key:{key_id}"),
            AdminOp::RaiseFeatureLevel => "cluster".to_string(),
        }
    }
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
    /// The node that would store the write is short of disk space (see `room`).
    #[error("{0}")]
    NoRoom(String),
}
