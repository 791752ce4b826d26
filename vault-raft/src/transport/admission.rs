//! What a peer may ask of this node over the Raft port, in one place.
//!
//! - **Who**: the node id its certificate names must be a member: in the current (effective)
//!   membership or the last applied one, voter or learner. Before this node has any
//!   membership, an id listed in `VAULT_PEERS`; without that list (a node started with
//!   `VAULT_JOIN`), one of the voters that the leader adding it announced (`announce_join`,
//!   sent by `cluster add` before the learner is added), and before any announcement any
//!   certificate from the cluster CA, but only to ask or announce. A removed node is refused as
//!   soon as this node has the membership without it.
//! - **As whom**: every id a call carries (the candidate of a vote, the leader of an append or
//!   snapshot, the sender of a forward) must be the certificate's id, and votes, appends and
//!   snapshots come only from voters: a learner cannot make itself leader.
//! - **What**: forwarded writes are only client writes with the bearer token their caller
//!   presented ([`ForwardRequest::CallerWrite`]): the leader hashes the token itself, stamps
//!   its own time and names the actor, and applying the write authorizes it again. Operator
//!   changes ([`ForwardRequest::CallerAdmin`]) only with a raw token that holds the admin role
//!   here. A token *hash* authorizes nothing from a peer: every member stores every hash.
//!   Election control (used by leader transfer) only from the leader this node follows. Read
//!   index and the leader's replication view: any member.
//!
//! In dev mode (shared secret, no certificates) peers carry no id, and only the secret and the
//! command rules apply.

use openraft::ServerState;
use tonic::Status;
use vault_core::time::now_ms;

use super::forward::ForwardRequest;
use crate::cluster::Cluster;
use crate::typ::NodeId;

/// The peer must be a member (see the module doc). `peer` is `None` in dev mode.
pub(crate) fn admit_peer(cluster: &Cluster, peer: Option<NodeId>) -> Result<(), Status> {
    let Some(id) = peer else { return Ok(()) };
    if is_member(cluster, id) {
        Ok(())
    } else {
        Err(Status::permission_denied(format!("node {id} is not a member of this cluster")))
    }
}

pub(super) fn is_member(cluster: &Cluster, id: NodeId) -> bool {
    let effective = cluster.raft.metrics().borrow().membership_config.clone();
    if effective.membership().get_node(&id).is_some() {
        return true;
    }
    // A leader being removed still sends the commit of its removal; members accept it until
    // they have applied it.
    match cluster.reader.applied_membership() {
        Ok(Some(m)) if m.membership().get_node(&id).is_some() => return true,
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "read the applied membership");
            return false;
        }
    }
    let uninitialized = effective.membership().nodes().next().is_none();
    uninitialized && before_membership(cluster, id, true)
}

/// Whether a node without any membership yet admits `id`: an id in `VAULT_PEERS`; without
/// that list (a node waiting to join), one of the voters a leader announced when it set out
/// to add this node ([`announce_join`]). Before any announcement, a CA-signed node may call
/// (`any_before_announcement`: to announce, or to ask this node's state) but not vote, append
/// or send a snapshot.
fn before_membership(cluster: &Cluster, id: NodeId, any_before_announcement: bool) -> bool {
    if !cluster.bootstrap_ids.is_empty() {
        return cluster.bootstrap_ids.contains(&id);
    }
    match cluster.join_voters.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        Some(voters) => voters.contains(&id),
        None => any_before_announcement,
    }
}

/// A leader that is adding this node (`cluster add`) announces the voters of its membership.
/// Taken only while this node waits to join (no membership, no `VAULT_PEERS`), only from a
/// peer among the voters it names; the latest announcement wins.
pub(crate) fn announce_join(cluster: &Cluster, peer: Option<NodeId>, voters: &[NodeId]) -> Result<(), Status> {
    let has_membership = cluster.raft.metrics().borrow().membership_config.membership().nodes().next().is_some();
    if has_membership || !cluster.bootstrap_ids.is_empty() {
        return Ok(());
    }
    // In dev mode peers carry no id: the announcement is taken as it comes.
    if let Some(from) = peer.filter(|p| !voters.contains(p)) {
        return Err(Status::permission_denied(format!("node {from} announced voters that do not include itself")));
    }
    tracing::info!(leader = ?peer, ?voters, "a leader is adding this node: taking Raft traffic only from these voters until the membership arrives");
    *cluster.join_voters.lock().unwrap_or_else(|p| p.into_inner()) = Some(voters.iter().copied().collect());
    Ok(())
}

/// A vote, or a leader's append or snapshot: the id the call carries (candidate or leader) must
/// be the peer's own and a voter, in the effective or the last applied membership. Only a voter
/// can be elected, so only a voter sends these; a learner, or whoever holds a member's key,
/// cannot make itself leader by sending appends in a higher term. Before this node has any
/// membership, the ids `is_member` admits then.
pub(crate) fn admit_voter(
    cluster: &Cluster,
    peer: Option<NodeId>,
    carried: Option<NodeId>,
    what: &str,
) -> Result<(), Status> {
    same_node(peer, carried, what)?;
    match carried {
        Some(id) if is_voter(cluster, id) => Ok(()),
        Some(id) => {
            Err(Status::permission_denied(format!("node {id} is not a voter of this cluster: no {what} from it")))
        }
        None => Err(Status::permission_denied(format!("the {what} names no node"))),
    }
}

fn is_voter(cluster: &Cluster, id: NodeId) -> bool {
    let effective = cluster.raft.metrics().borrow().membership_config.clone();
    if effective.membership().voter_ids().any(|v| v == id) {
        return true;
    }
    // A leader being removed still sends the commit of its removal (see `is_member`).
    match cluster.reader.applied_membership() {
        Ok(Some(m)) if m.membership().voter_ids().any(|v| v == id) => return true,
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "read the applied membership");
            return false;
        }
    }
    let uninitialized = effective.membership().nodes().next().is_none();
    uninitialized && before_membership(cluster, id, false)
}

/// An id carried in the call must be the peer's own.
pub(crate) fn same_node(peer: Option<NodeId>, carried: Option<NodeId>, what: &str) -> Result<(), Status> {
    match peer {
        Some(p) if carried != Some(p) => Err(Status::permission_denied(format!(
            "the certificate is node {p}'s but the {what} names node {}",
            carried.map_or_else(|| "none".to_string(), |c| c.to_string())
        ))),
        _ => Ok(()),
    }
}

/// Whether `peer`, which says it is `from`, may have this node run `req`.
pub(crate) fn admit_forward(
    cluster: &Cluster,
    peer: Option<NodeId>,
    from: NodeId,
    req: &ForwardRequest,
) -> Result<(), Status> {
    same_node(peer, Some(from), "forwarded request")?;
    match req {
        ForwardRequest::CallerWrite(w) if w.cmd.is_caller_write() => Ok(()),
        ForwardRequest::CallerWrite(w) => {
            Err(Status::permission_denied(format!("a peer may forward only client writes, not {}", w.cmd.kind())))
        }
        ForwardRequest::Write(cmd) => Err(Status::permission_denied(format!(
            "a peer may forward a client write only with the token its caller presented, not a bare {}",
            cmd.kind()
        ))),
        ForwardRequest::AdminByHash { .. } => Err(Status::permission_denied(
            "a cluster change from a peer needs the operator's token, not its hash (is the peer on an older build?)",
        )),
        ForwardRequest::ReadIndex | ForwardRequest::LeaderView => Ok(()),
        // Whether the candidate is a voter is part of the answer (`elections`).
        ForwardRequest::PreVote { candidate, .. } => same_node(peer, Some(*candidate), "pre-vote's candidate"),
        ForwardRequest::CallerAdmin { token, .. } => match cluster.reader.check_admin(&token.hash(), now_ms()) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(Status::permission_denied(format!("cluster change refused: {why}"))),
            Err(e) => {
                tracing::error!(error = %e, "read tokens to authorize a forwarded cluster change");
                Err(Status::unavailable("could not read the token table"))
            }
        },
        ForwardRequest::PauseElections { .. } | ForwardRequest::Campaign { .. } => {
            let m = cluster.raft.metrics().borrow().clone();
            let from_leader = m.current_leader == Some(from) && m.state != ServerState::Leader;
            if from_leader {
                Ok(())
            } else {
                Err(Status::permission_denied(format!(
                    "only the leader this node follows may hold or start its elections, not node {from}"
                )))
            }
        }
    }
}
