//! The cluster's master key as this node sees it: recorded once in replicated state when the
//! cluster first starts, checked before the node serves, and checked again before anything is
//! sealed. A node configured with another key never seals: its writes are refused and it stays
//! not ready, naming both key ids.

use std::time::Duration;
use vault_core::kms::KeyManager;

use openraft::ServerState;
use tonic::Status;
use vault_core::model::MasterKeyState;
use vault_core::time::now_ms;
use vault_raft::Command;

use crate::error::ApiError;
use crate::vault::Vault;

/// Why this node may not seal under the cluster's key `mk`, if it may not.
pub fn mismatch(vault: &Vault, mk: &MasterKeyState) -> Option<String> {
    if !vault.kms.holds_key(&mk.key_id) {
        let held = vault.kms.key_ids().join(", ");
        return Some(format!(
            "this node's master key ({held}) is not the cluster's master key ({}): it seals nothing; restart it \
             with the cluster's key",
            mk.key_id
        ));
    }
    match (&mk.check, vault.kms.key_check(&mk.key_id)) {
        (Some(want), Some(got)) if *want != got => Some(format!(
            "this node's key {} fails the cluster's key check: it seals nothing; restart it with the cluster's key",
            mk.key_id
        )),
        _ => None,
    }
}

/// The key new versions are sealed under: the cluster's, which this node must hold.
/// FAILED_PRECONDITION naming both ids otherwise. Before the cluster has recorded one (the
/// first moments of a new cluster), this node's configured key, which the record will name.
pub fn sealing_key(vault: &Vault) -> Result<String, ApiError> {
    match vault.reader.master_key()? {
        Some(mk) => match mismatch(vault, &mk) {
            Some(why) => Err(Status::failed_precondition(why).into()),
            None => Ok(mk.key_id),
        },
        None => Ok(vault.kms.key_id().to_string()),
    }
}

/// Waits until the cluster's master key is recorded (recording it when this node leads and
/// none is), then checks that this node holds it. `Err` says why this node must not serve.
pub async fn settle(vault: &Vault) -> Result<(), String> {
    let mut told = false;
    loop {
        match vault.reader.master_key() {
            Ok(Some(mk)) => return mismatch(vault, &mk).map_or(Ok(()), Err),
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "read the cluster's master key"),
        }
        if vault.cluster.raft.metrics().borrow().state == ServerState::Leader {
            record(vault).await?;
        } else if !told {
            tracing::info!("waiting for the leader to record the cluster's master key");
            told = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Records this node's configured key as the cluster's. A cluster that already holds versions
/// (one made before keys were recorded) gets the record only if this node holds every key
/// those versions are wrapped by: a leader started with a wrong key must not adopt it.
async fn record(vault: &Vault) -> Result<(), String> {
    let reader = vault.reader.clone();
    let usage = tokio::task::spawn_blocking(move || reader.versions_by_key())
        .await
        .map_err(|e| format!("count versions by key: {e}"))?
        .map_err(|e| format!("count versions by key: {e}"))?;
    if let Some(foreign) = usage.keys().find(|k| !vault.kms.holds_key(k)) {
        return Err(format!(
            "stored versions are wrapped by master key {foreign}, which this node does not hold (it holds {}): \
             not recording a cluster master key; restart it with the right key",
            vault.kms.key_ids().join(", ")
        ));
    }
    let key_id = vault.kms.key_id().to_string();
    let cmd = Command::SetMasterKey { check: vault.kms.key_check(&key_id), key_id, now_ms: now_ms(), rotate: false };
    if let Err(e) = vault.write_local(cmd).await {
        tracing::warn!(error = %e, "recording the cluster's master key failed; retrying");
    }
    Ok(())
}
