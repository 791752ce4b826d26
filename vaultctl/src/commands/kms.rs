//! `vaultctl kms`: the KMS re-wrap worker and master-key rotation.

use std::time::Duration;

use crate::clock::fmt_ms;
use anyhow::anyhow;
use clap::Subcommand;
use serde_json::json;
use vault_client::{pb, Client, Route};

use crate::commands::{addressed, rpc};
use crate::failure::Failure;
use crate::output::{outln, print_json};

#[derive(Subcommand)]
pub enum Cmd {
    /// Enabled, running, watermark, latest rotation, total and pending versions.
    Status,
    /// Force a re-wrap pass on the leader and follow its progress.
    Rewrap {
        /// Return once the pass has started instead of following it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Local keyring: make a new master key the cluster's. Every node must hold it first;
    /// the leader's worker then re-wraps every older data key onto it (see `kms status`).
    Rotate {
        /// The key to make current (an id from `kms status`); default: the first key of this
        /// node's keyring.
        #[arg(long)]
        key_id: Option<String>,
    },
}

fn opt_ms(v: Option<u64>) -> String {
    match v {
        None => "-".into(),
        Some(0) => "0 (no rotation yet)".into(),
        Some(ms) => format!("{} ({ms})", fmt_ms(ms)),
    }
}

pub async fn run(c: &Client, cmd: Cmd, json: bool) -> Result<(), Failure> {
    match cmd {
        Cmd::Status => {
            let mut s = rpc!(c, addressed(c), admin.kms_status, pb::KmsStatusRequest {}).await?;
            // Pass progress lives on the leader; ask it when this node is not.
            if !s.is_leader && !s.leader_api_addr.is_empty() {
                let leader = Route::Node(s.leader_api_addr.clone());
                s = rpc!(c, leader, admin.kms_status, pb::KmsStatusRequest {}).await?;
            }
            if json {
                print_json(json!({
                    "kind": s.kind, "key_id": s.key_id, "enabled": s.enabled, "running": s.running,
                    "watermark_ms": s.watermark_ms, "latest_rotation_ms": s.latest_rotation_ms,
                    "rotation_error": s.rotation_error, "total_versions": s.total_versions,
                    "pending_versions": s.pending_versions, "pass_target_ms": s.pass_target_ms,
                    "pass_total": s.pass_total, "pass_done": s.pass_done, "pass_failed": s.pass_failed,
                    "last_error": s.last_error, "leader_api_addr": s.leader_api_addr,
                    "cluster_key_id": s.cluster_key_id, "node_key_ids": s.node_key_ids,
                    "versions_by_key": s.versions_by_key, "missing_key_ids": s.missing_key_ids,
                }));
            } else {
                outln!("kms:              {} {}", s.kind, s.key_id);
                if !s.cluster_key_id.is_empty() {
                    outln!("cluster key:      {}", s.cluster_key_id);
                }
                outln!("node keyring:     {}", s.node_key_ids.join(", "));
                for (key, n) in &s.versions_by_key {
                    outln!("  wraps {n:>8} version(s): {key}");
                }
                if !s.missing_key_ids.is_empty() {
                    outln!(
                        "MISSING here:     {} (still needed; add to this node's keyring)",
                        s.missing_key_ids.join(", ")
                    );
                }
                outln!(
                    "worker:           {}{}",
                    if s.enabled { "enabled" } else { "disabled" },
                    if s.running { ", running" } else { "" }
                );
                outln!("watermark:        {}", opt_ms(s.watermark_ms));
                outln!(
                    "latest rotation:  {}{}",
                    opt_ms(s.latest_rotation_ms),
                    if s.rotation_error.is_empty() { String::new() } else { format!(" ({})", s.rotation_error) }
                );
                outln!("versions:         {} total, {} pending", s.total_versions, s.pending_versions);
                if s.pass_target_ms.is_some() {
                    outln!(
                        "last pass:        {}/{} re-wrapped, {} failed, to {}",
                        s.pass_done,
                        s.pass_total,
                        s.pass_failed,
                        opt_ms(s.pass_target_ms)
                    );
                }
                if !s.last_error.is_empty() {
                    outln!("last error:       {}", s.last_error);
                }
            }
            Ok(())
        }
        Cmd::Rotate { key_id } => {
            let req = pb::KmsRotateRequest { key_id: key_id.clone().unwrap_or_default() };
            let r = rpc!(c, Route::Write, admin.kms_rotate, req).await?;
            if json {
                print_json(json!({
                    "previous_key_id": r.previous_key_id, "key_id": r.key_id, "pending_versions": r.pending_versions,
                }));
            } else {
                outln!("master key is now {} (was {})", r.key_id, r.previous_key_id);
                outln!("{} version(s) to re-wrap; follow with `vaultctl kms status`", r.pending_versions);
            }
            Ok(())
        }
        Cmd::Rewrap { no_wait } => {
            // Runs on the leader: the client follows the hint of a follower there.
            let r = rpc!(c, Route::Write, admin.kms_rewrap, pb::KmsRewrapRequest {}).await?;
            // Progress lives on the node that took the pass.
            let leader = c.leader().map_or_else(|| addressed(c), Route::Node);
            if !json {
                outln!("{}", r.outcome);
            }
            let mut last = None;
            if r.running && !no_wait {
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let s = rpc!(c, leader.clone(), admin.kms_status, pb::KmsStatusRequest {}).await?;
                    if !json && last != Some((s.pass_done, s.pass_failed)) {
                        outln!("re-wrapped {}/{} ({} failed)", s.pass_done, s.pass_total, s.pass_failed);
                        last = Some((s.pass_done, s.pass_failed));
                    }
                    if !s.running {
                        if json {
                            print_json(
                                json!({"outcome": r.outcome, "done": s.pass_done, "failed": s.pass_failed, "pending": s.pending_versions}),
                            );
                        } else {
                            outln!(
                                "pass finished: {} pending, watermark {}",
                                s.pending_versions,
                                opt_ms(s.watermark_ms)
                            );
                        }
                        if s.pass_failed > 0 {
                            return Err(Failure::Local(anyhow!(
                                "{} version(s) failed to re-wrap: {}",
                                s.pass_failed,
                                s.last_error
                            )));
                        }
                        return Ok(());
                    }
                }
            }
            if json {
                print_json(json!({"outcome": r.outcome, "running": r.running}));
            }
            Ok(())
        }
    }
}
