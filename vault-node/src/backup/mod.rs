//! Backup and restore (`vaultctl snapshot save` / `restore`).
//!
//! A backup is a file of the replicated state as one node has applied it after a
//! linearizable barrier: secrets' metadata, versions (ciphertext and wrapped DEKs), token
//! hashes, roles, reader rules and rotation policies. Never a plaintext value, DEK or token.
//! It is sealed with an HMAC-SHA256 under a random key made for it by the key manager and
//! wrapped under the cluster's master key for the backup-MAC purpose only; the header carries
//! the wrapped key (see `vault_raft::snapshot_file`). Whoever edits a backup without the master
//! key (or, in AWS mode, the right to have the CMK wrap a key for the backup-MAC purpose:
//! `GenerateDataKey` or `Encrypt` with that context, which the key policy should deny to all
//! but the nodes) cannot make a MAC that passes.
//!
//! A restore is received into the node's scratch directory (at most `VAULT_RESTORE_MAX_MB`)
//! and checked before anything is proposed ([`check`]): the MAC first, over the raw bytes,
//! under the key the header names, unwrapped by this node's key manager (a key it does not
//! hold means another cluster's backup, or one sealed under a key since dropped from the
//! keyring); then every record in one streaming pass (`vault_raft::backup_check`: each decodes
//! as what its table holds, passes the API's own checks, and the tables agree), each at most
//! the value limit plus [`vault_raft::BACKUP_RECORD_OVERHEAD`]; then the keys (one data key per
//! master key id really unwraps). Only then does it go through Raft ([`stage`]): `RestoreBegin`,
//! the records in chunks read from the file again (its MAC checked again on the way) into a
//! staging area, and `RestoreCommit`, which swaps them in on every member in one atomic batch.
//! A restore cut off half-way leaves the live state as it was; the next restore clears what was
//! staged.

mod check;
pub mod dest;
#[cfg(feature = "aws")]
mod s3;
pub mod schedule;
mod stage;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tonic::Status;
use vault_core::kms::{KeyManager, KeyPurpose};
use vault_core::time::now_ms;
use vault_raft::snapshot_file::{BackupHeader, WrappedMacKey};
use vault_raft::StoreError;

use crate::auth::caller::Caller;
use crate::error::{blocking, ApiError};
use crate::pb;
use crate::vault::Vault;

pub use vault_raft::RESTORE_CHUNK_BYTES as CHUNK_BYTES;

/// A file in the scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(vault: &Vault, what: &str) -> Self {
        Scratch(vault.scratch_dir.join(format!("{what}-{:016x}.tmp", rand::random::<u64>())))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Empties the scratch directory (what a crash left there) and creates it.
pub fn prepare_scratch(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::create_dir_all(dir)
}

/// Writes a backup of this node's state after a linearizable barrier, sealed under a fresh MAC
/// key wrapped by the cluster's master key; returns the open file (already unlinked) to stream
/// from, and its header.
pub async fn save(vault: &Arc<Vault>) -> Result<(std::fs::File, BackupHeader), ApiError> {
    vault.linearize().await?;
    let key_id = crate::master_key::sealing_key(vault)?;
    let mac = vault.kms.generate_purpose_key(&key_id, KeyPurpose::BackupMac).await?;
    let scratch = Scratch::new(vault, "backup");
    let (reader, node_id, path) = (vault.reader.clone(), vault.node_id, scratch.0.clone());
    blocking(move || -> Result<_, ApiError> {
        let wrapped = WrappedMacKey { key_id: mac.key_id.clone(), wrapped: mac.wrapped.clone() };
        let header = reader.write_backup(&path, node_id, now_ms(), &mac.plaintext, wrapped)?;
        let file = std::fs::File::open(&path).map_err(StoreError::from)?;
        drop(scratch);
        Ok((file, header))
    })
    .await
}

/// Reads `file` in chunks into a channel, for a server stream.
pub fn stream_file(mut file: std::fs::File) -> tokio::sync::mpsc::Receiver<Result<pb::SnapshotChunk, Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || loop {
        let mut buf = Vec::with_capacity(CHUNK_BYTES);
        let n = match file.by_ref().take(CHUNK_BYTES as u64).read_to_end(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "reading a backup file to send");
                let _ = tx.blocking_send(Err(Status::unavailable(format!("reading the backup failed: {e}"))));
                return;
            }
        };
        if n == 0 {
            return;
        }
        if tx.blocking_send(Ok(pb::SnapshotChunk { data: buf })).is_err() {
            return;
        }
    });
    rx
}

/// A backup that fails a check: `INVALID_ARGUMENT`, saying nothing changed.
fn refused(why: impl std::fmt::Display) -> ApiError {
    Status::invalid_argument(format!("backup refused, nothing was changed: {why}")).into()
}

/// A backup this cluster's keys cannot open: `FAILED_PRECONDITION`, saying nothing changed.
fn foreign(why: impl std::fmt::Display) -> ApiError {
    Status::failed_precondition(format!("backup refused, nothing was changed: {why}")).into()
}

/// Receives a backup from `chunks`, checks it, and installs it through Raft.
pub async fn restore(
    vault: &Arc<Vault>,
    caller: &Caller,
    chunks: tonic::Streaming<pb::SnapshotChunk>,
) -> Result<pb::RestoreSnapshotResponse, ApiError> {
    let scratch = Scratch::new(vault, "restore");
    check::receive(&scratch.0, chunks, vault.restore_max_bytes).await?;
    let checked = check::check(vault, &scratch.0).await?;
    let counts = stage::stage(vault, caller, &scratch.0, &checked).await?;
    drop(scratch);
    Ok(restored(&checked, &counts))
}

/// A restore's answer: what the commit installed (`counts` in `SM_CFS` order), and the source.
fn restored(checked: &check::Checked, counts: &[u64]) -> pb::RestoreSnapshotResponse {
    let at = |family: &str| {
        vault_raft::db::SM_CFS.iter().position(|f| *f == family).and_then(|i| counts.get(i)).copied().unwrap_or(0)
    };
    let header = &checked.header;
    pb::RestoreSnapshotResponse {
        secrets: at(vault_raft::db::CF_SECRETS),
        versions: at(vault_raft::db::CF_VERSIONS),
        tokens: at(vault_raft::db::CF_TOKENS),
        roles: at(vault_raft::db::CF_ROLES),
        source_node_id: header.node_id,
        source_applied_index: header.applied_index,
        created_ms: header.created_ms,
        reader_rules: at(vault_raft::db::CF_READERS),
        rotation_policies: at(vault_raft::db::CF_ROTATION),
    }
}

/// The scheduled-backup destination configured, if any.
async fn destination(config: &crate::config::BackupConfig) -> anyhow::Result<Option<dest::Destination>> {
    if let Some(dir) = &config.dir {
        return Ok(Some(dest::Destination::Dir(dir.clone())));
    }
    match &config.s3 {
        None => Ok(None),
        #[cfg(feature = "aws")]
        Some(s3) => Ok(Some(dest::Destination::S3(s3::S3Dest::new(s3).await?))),
        #[cfg(not(feature = "aws"))]
        Some(_) => anyhow::bail!("VAULT_BACKUP_S3_BUCKET needs a vault-node built with the `aws` feature"),
    }
}
