//! The re-wrap scenario: versions re-wrapped per second by one node's worker against moto's
//! KMS after a key rotation, pacing off.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vault_node::pb;
use vault_tests::moto::Moto;
use vault_tests::{authed, test_dir, NodeSpec};

use crate::measure::Node;
use crate::workload::{load, Op, Target, Until};

/// Versions re-wrapped per second by the worker against moto, pacing off.
pub async fn rewrap_rate(versions: u64) -> Result<Value, String> {
    let moto = Moto::start();
    let (key_id, _) = moto.create_key("alias/vault-bench").await;
    let dir = test_dir();
    let token = vault_tests::random_token();
    let mut spec = NodeSpec::single(dir.path(), &token, &vault_tests::random_master_key());
    moto.configure(&mut spec, "alias/vault-bench");
    spec.set("VAULT_KMS_REWRAP_ENABLED", "true");
    spec.set("VAULT_KMS_REWRAP_MAX_PER_SEC", "0");
    spec.set("VAULT_KMS_REWRAP_POLL_SECS", "3600");
    spec.set("VAULT_LOG", "warn");
    let mut node = spec.start();
    node.wait_ready().await;
    let nodes: Vec<Node> =
        node.pid().map(|pid| Node { id: 1, pid, role: "leader", metrics: None }).into_iter().collect();
    let t = Target::vault(&node.url(), None, &token, 64, &nodes).await;
    let per_client = versions.div_ceil(64);
    let w = load("rewrap setup", &t, Op::Write, "rw", 64, Until::EachDid(per_client), None).await;
    moto.rotate(&key_id).await;
    let ch = node.channel().await.map_err(|e| e.to_string())?;
    let mut admin = pb::admin_client::AdminClient::new(ch);
    let t0 = Instant::now();
    admin.kms_rewrap(authed(pb::KmsRewrapRequest {}, &token)).await.map_err(|e| e.to_string())?;
    loop {
        let s =
            admin.kms_status(authed(pb::KmsStatusRequest {}, &token)).await.map_err(|e| e.to_string())?.into_inner();
        if !s.running && s.pending_versions == 0 {
            let secs = t0.elapsed().as_secs_f64();
            node.stop();
            return Ok(json!({"versions": s.pass_done, "secs": (secs * 10.0).round() / 10.0,
                             "per_sec": (s.pass_done as f64 / secs).round(), "written": w.ops, "failed": s.pass_failed}));
        }
        if t0.elapsed() > Duration::from_secs(300) {
            return Err(format!("re-wrap did not finish: {s:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
