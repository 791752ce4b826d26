//! Cluster status from Raft metrics.

use openraft::ServerState;
use vault_raft::transport::LeaderView;

use crate::pb;
use crate::vault::Vault;

pub fn state_name(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

/// Status from this node's metrics; replication progress comes from `view` (the leader's).
pub fn status(vault: &Vault, view: Option<&LeaderView>) -> pb::ClusterStatusResponse {
    let m = vault.cluster.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let leader_last = view.and_then(|v| v.last_log_index);
    let members = membership
        .nodes()
        .map(|(id, node)| {
            let matched = view.and_then(|v| v.matched.get(id).copied()).map(|l| l.unwrap_or(0));
            let role = if Some(*id) == m.current_leader {
                "leader"
            } else if voters.contains(id) {
                "follower"
            } else {
                "learner"
            };
            pb::MemberStatus {
                id: *id,
                raft_addr: node.raft_addr.clone(),
                api_addr: node.api_addr.clone(),
                role: role.to_string(),
                matched_index: matched,
                lag: match (leader_last, matched) {
                    (Some(l), Some(mi)) => Some(l.saturating_sub(mi)),
                    _ => None,
                },
            }
        })
        .collect();
    pb::ClusterStatusResponse {
        node_id: m.id,
        state: state_name(m.state).to_string(),
        leader_id: m.current_leader,
        leader_api_addr: vault.leader_api_addr().unwrap_or_default(),
        term: m.current_term,
        last_log_index: m.last_log_index,
        last_applied_index: m.last_applied.map(|l| l.index),
        members,
        feature_level: vault.reader.feature_level().unwrap_or(vault_raft::features::BASE_LEVEL),
        node_feature_level: vault.cluster.feature_level,
    }
}
