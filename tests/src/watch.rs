//! Helpers of the `WatchSecrets` tests (`tests/watch.rs`, `tests/watch_security.rs`): a raw
//! tonic stream per watch, so the tests see every message and status the server sends.

use std::time::Duration;

use serde_json::Value;
use tonic::transport::Channel;
use tonic::Status;
use vault_node::pb;
use vault_node::pb::secrets_client::SecretsClient;

use crate::{api_channel, authed, TestCluster};

pub type Watch = tonic::Streaming<pb::WatchSecretsResponse>;

/// A watch of `names` and `prefixes` after revision `after`.
pub fn req(names: &[&str], prefixes: &[&str], after: u64) -> pb::WatchSecretsRequest {
    pb::WatchSecretsRequest {
        names: names.iter().map(|s| s.to_string()).collect(),
        prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
        after_revision: after,
    }
}

pub async fn watch_on(ch: Channel, r: pb::WatchSecretsRequest) -> Result<Watch, Status> {
    Ok(SecretsClient::new(ch).watch_secrets(r).await?.into_inner())
}

/// A watch on its own connection to `url`.
pub async fn watch(url: &str, r: pb::WatchSecretsRequest) -> Result<Watch, Status> {
    watch_on(api_channel(url, None).await.expect("connect"), r).await
}

/// The next message, or the status the stream ended with (`None`: it ended cleanly).
pub async fn next(w: &mut Watch) -> Result<Option<pb::WatchSecretsResponse>, Status> {
    tokio::time::timeout(Duration::from_secs(30), w.message()).await.expect("a message within 30 s")
}

pub async fn must_next(w: &mut Watch) -> pb::WatchSecretsResponse {
    match next(w).await {
        Ok(Some(m)) => m,
        other => panic!("the watch ended: {other:?}"),
    }
}

/// Puts `v` under `name` with `token`; the new version.
pub async fn put(c: &mut SecretsClient<Channel>, token: &str, name: &str) -> u64 {
    let r =
        pb::PutSecretRequest { name: name.into(), value: b"v".to_vec(), expected_version: None, max_versions: None };
    c.put_secret(authed(r, token)).await.expect("put").into_inner().version
}

/// The `secret.watch` records of node `i`'s audit log.
pub fn watch_records(c: &TestCluster, i: usize) -> Vec<Value> {
    let out = c.ctl(i, &["--output", "json", "audit", "list", "--limit", "1000"]);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    v.as_array().expect("records").iter().filter(|r| r["action"] == "secret.watch").cloned().collect()
}
