//! Cluster status from Raft metrics.

use openraft::ServerState;

use crate::pb;
use crate::vault::Vault;

fn state_name(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

pub fn status(vault: &Vault) -> pb::ClusterStatusResponse {
    let m = vault.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let last_log = m.last_log_index;
    let members = membership
        .nodes()
        .map(|(id, node)| {
            let matched = m.replication.as_ref().and_then(|r| r.get(id)).map(|l| l.as_ref().map_or(0, |l| l.index));
            let matched = if Some(*id) == m.current_leader && *id == m.id { last_log } else { matched };
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
                lag: match (last_log, matched) {
                    (Some(l), Some(mi)) if m.state == ServerState::Leader => Some(l.saturating_sub(mi)),
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
    }
}
