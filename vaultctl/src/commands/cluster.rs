//! `vaultctl cluster`: membership, leadership, feature level and Raft mTLS certificates.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;
use serde_json::json;
use vault_client::{pb, Client, Route};

use crate::commands::{addressed, rpc};
use crate::failure::Failure;
use crate::output::{outln, print_json, table};

#[derive(Subcommand)]
pub enum Cmd {
    /// Members, roles, leader, term, last log and applied index, lag.
    Status,
    /// Add a node as a learner; returns once it has caught up.
    Add { id: u64, raft_addr: String, api_addr: String },
    /// Make a learner a voter.
    Promote { id: u64 },
    /// Remove a voter or learner.
    Remove { id: u64 },
    /// Hand leadership to a caught-up voter.
    TransferLeader { id: u64 },
    /// Raise the cluster's feature level to the lowest every member understands (after a
    /// rolling upgrade; the leader also does it by itself within seconds).
    Upgrade,
    /// Mint the cluster CA (once) and node certificates for Raft mTLS. Needs no server.
    Certs {
        /// Directory for ca.pem, ca.key, node-<id>.pem and node-<id>.key.
        #[arg(long)]
        out: PathBuf,
        /// Node ids, e.g. 1,2,3.
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<u64>,
        /// Extra IP address or DNS name for the node certificates (repeatable).
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Validity of node certificates in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
        /// Replace existing node certificates and keys (renewal); the CA stays. Send SIGHUP to
        /// the running node to use them.
        #[arg(long)]
        renew: bool,
    },
}

/// `cluster certs`: needs no server.
pub fn certs(out: &Path, nodes: &[u64], sans: &[String], days: i64, renew: bool) -> Result<(), Failure> {
    for path in crate::certs::mint(out, nodes, sans, days, renew)? {
        outln!("wrote {}", path.display());
    }
    Ok(())
}

pub async fn run(c: &Client, cmd: Cmd, json: bool) -> Result<(), Failure> {
    match cmd {
        Cmd::Add { id, raft_addr, api_addr } => {
            let add = rpc!(c, Route::Write, admin.add_member, pb::AddMemberRequest { id, raft_addr, api_addr });
            tokio::pin!(add);
            // On a terminal, say how far the new node has caught up while the call waits.
            let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            tick.tick().await;
            loop {
                tokio::select! {
                    r = &mut add => {
                        r?;
                        break;
                    }
                    _ = tick.tick(), if progress => {
                        if let Ok(s) = rpc!(c, addressed(c), admin.cluster_status, pb::ClusterStatusRequest {}).await {
                            let matched = s.members.iter().find(|m| m.id == id).and_then(|m| m.matched_index);
                            match (matched, s.last_log_index) {
                                (Some(m), Some(last)) => eprintln!("node {id}: at entry {m} of {last}, catching up..."),
                                _ => eprintln!("node {id}: waiting for it to answer..."),
                            }
                        }
                    }
                }
            }
            outln!("node {id} added as learner and caught up");
            Ok(())
        }
        Cmd::Promote { id } => {
            rpc!(c, Route::Write, admin.promote_member, pb::MemberRequest { id }).await?;
            outln!("node {id} is a voter");
            Ok(())
        }
        Cmd::Remove { id } => {
            rpc!(c, Route::Write, admin.remove_member, pb::MemberRequest { id }).await?;
            outln!("node {id} removed");
            Ok(())
        }
        Cmd::TransferLeader { id } => {
            rpc!(c, Route::Write, admin.transfer_leader, pb::MemberRequest { id }).await?;
            outln!("node {id} is the leader");
            Ok(())
        }
        Cmd::Certs { .. } => Ok(()),
        Cmd::Upgrade => {
            let r = rpc!(c, Route::Write, admin.upgrade_cluster, pb::UpgradeClusterRequest {}).await?;
            if json {
                print_json(json!({
                    "feature_level": r.feature_level,
                    "members": r.members.iter().map(|m| json!({"id": m.id, "feature_level": m.feature_level})).collect::<Vec<_>>(),
                }));
            } else {
                outln!("cluster feature level {}", r.feature_level);
                table(
                    &["ID", "UNDERSTANDS"],
                    r.members.into_iter().map(|m| vec![m.id.to_string(), m.feature_level.to_string()]).collect(),
                );
            }
            Ok(())
        }
        Cmd::Status => {
            let s = rpc!(c, addressed(c), admin.cluster_status, pb::ClusterStatusRequest {}).await?;
            let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            if json {
                print_json(json!({
                    "node_id": s.node_id, "state": s.state, "leader_id": s.leader_id,
                    "leader_api_addr": s.leader_api_addr, "term": s.term,
                    "last_log_index": s.last_log_index, "last_applied_index": s.last_applied_index,
                    "feature_level": s.feature_level, "node_feature_level": s.node_feature_level,
                    "members": s.members.iter().map(|m| json!({
                        "id": m.id, "role": m.role, "raft_addr": m.raft_addr, "api_addr": m.api_addr,
                        "matched_index": m.matched_index, "lag": m.lag,
                    })).collect::<Vec<_>>(),
                }));
            } else {
                outln!(
                    "node {} ({}), term {}, leader {} {}, last log {}, applied {}, feature level {} (node understands {})",
                    s.node_id,
                    s.state,
                    s.term,
                    opt(s.leader_id),
                    s.leader_api_addr,
                    opt(s.last_log_index),
                    opt(s.last_applied_index),
                    s.feature_level,
                    s.node_feature_level
                );
                table(
                    &["ID", "ROLE", "RAFT", "API", "MATCHED", "LAG"],
                    s.members
                        .into_iter()
                        .map(|m| {
                            vec![m.id.to_string(), m.role, m.raft_addr, m.api_addr, opt(m.matched_index), opt(m.lag)]
                        })
                        .collect(),
                );
            }
            Ok(())
        }
    }
}
