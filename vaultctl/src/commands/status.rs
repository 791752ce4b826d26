//! `vaultctl status`: version, role, leader and readiness of the node addressed.

use serde_json::json;
use tonic::Code;
use vault_client::{pb, Client};

use crate::commands::{addressed, rpc};
use crate::failure::Failure;
use crate::output::{outln, print_json};

pub async fn run(c: &Client, json: bool) -> Result<(), Failure> {
    let s = rpc!(c, addressed(c), admin.server_status, pb::ServerStatusRequest {}).await?;
    if json {
        print_json(json!({
            "version": s.version, "vaultctl_version": env!("CARGO_PKG_VERSION"), "node_id": s.node_id,
            "state": s.state, "leader_id": s.leader_id, "leader_api_addr": s.leader_api_addr,
            "ready": s.ready, "not_ready": s.not_ready, "feature_level": s.feature_level,
            "backup": s.backup.as_ref().map(|b| json!({
                "every_secs": b.every_secs, "destination": b.destination,
                "last_success_ms": b.last_success_ms, "last_failure_ms": b.last_failure_ms,
                "failures": b.failures, "failing_since_success": b.failing_since_success,
                "last_name": b.last_name, "last_size_bytes": b.last_size_bytes,
                "last_duration_ms": b.last_duration_ms,
            })),
        }));
    } else {
        let leader = match s.leader_id {
            Some(id) => format!("node {id} at {}", s.leader_api_addr),
            None => "none".into(),
        };
        outln!("version {} (vaultctl {})", s.version, env!("CARGO_PKG_VERSION"));
        outln!("node {} ({}), leader {leader}, feature level {}", s.node_id, s.state, s.feature_level);
        outln!("{}", if s.ready { "ready".to_string() } else { format!("not ready: {}", s.not_ready) });
        if let Some(b) = &s.backup {
            let when = |ms: Option<u64>| ms.map_or_else(|| "never".to_string(), crate::clock::fmt_ms);
            outln!(
                "backups every {}s: last success {} ({}, {} bytes, {} ms), last failure {}, {} failing since",
                b.every_secs,
                when(b.last_success_ms),
                if b.last_name.is_empty() { "-" } else { &b.last_name },
                b.last_size_bytes,
                b.last_duration_ms,
                when(b.last_failure_ms),
                b.failing_since_success
            );
        }
    }
    if s.ready {
        Ok(())
    } else {
        Err(Failure::status(Code::Unavailable, format!("node {} is not ready: {}", s.node_id, s.not_ready)))
    }
}
