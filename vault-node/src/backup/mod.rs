//! Backup and restore (`vaultctl snapshot save` / `restore`).
//!
//! A backup is a checksummed file of the replicated state as one node has applied it after a
//! linearizable barrier: secrets' metadata, versions (ciphertext and wrapped DEKs), token
//! hashes and roles. Never a plaintext value, DEK or token.
//!
//! A restore is received whole into the node's scratch directory and checked before anything
//! is proposed: the checksum and every record (each decodes as what its family holds, names
//! are valid), and the keys (every master key the backup's data keys are wrapped by is held
//! here, and one data key per key id really unwraps). Only then does it go through Raft:
//! `RestoreBegin`, the records in chunks into a staging area, and `RestoreCommit`, which swaps
//! them in on every member in one atomic batch. A restore cut off half-way leaves the live
//! state as it was; the next restore clears what was staged.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tonic::Status;
use vault_core::kms::{EncryptionContext, KeyManager};
use vault_core::time::now_ms;
use vault_core::SecretName;
use vault_raft::reader::{check_backup_record, BackupItem};
use vault_raft::snapshot_file::{read_backup, BackupHeader, FamilyRecord};
use vault_raft::{Command, CommandResponse, StoreError};

use crate::auth::caller::Caller;
use crate::error::{blocking, ApiError};
use crate::pb;
use crate::vault::Vault;

/// Bytes of the backup in one streamed chunk, and of records in one Raft command.
pub const CHUNK_BYTES: usize = 256 << 10;

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

/// Writes a backup of this node's state after a linearizable barrier; returns the open file
/// (already unlinked) to stream from, and its header.
pub async fn save(vault: &Arc<Vault>) -> Result<(std::fs::File, BackupHeader), ApiError> {
    vault.linearize().await?;
    let scratch = Scratch::new(vault, "backup");
    let (reader, node_id, path) = (vault.reader.clone(), vault.node_id, scratch.0.clone());
    blocking(move || -> Result<_, ApiError> {
        let header = reader.write_backup(&path, node_id, now_ms())?;
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

/// What checking a received backup found.
struct Checked {
    header: BackupHeader,
    /// The records to install, in file order.
    records: Vec<FamilyRecord>,
    /// One sealed version per master key id, to prove the key unwraps it.
    samples: BTreeMap<String, (String, u64, Vec<u8>)>,
}

fn refused(why: impl std::fmt::Display) -> ApiError {
    Status::invalid_argument(format!("backup refused, nothing was changed: {why}")).into()
}

/// Reads and checks the whole file; see the module docs.
fn check(path: &Path) -> Result<Checked, ApiError> {
    let file = std::fs::File::open(path).map_err(StoreError::from)?;
    let mut records = Vec::new();
    let mut samples = BTreeMap::new();
    let mut problem = None;
    let header = read_backup(
        file,
        |_| true,
        |record| {
            if problem.is_some() {
                return Ok(());
            }
            match check_backup_record(&record) {
                Ok(BackupItem::Ignored) => {}
                Ok(BackupItem::Version(name, v)) => {
                    if let Some(sealed) = &v.sealed {
                        samples
                            .entry(sealed.key_id.clone())
                            .or_insert_with(|| (name, v.version, sealed.wrapped_dek.clone()));
                    }
                    records.push(record);
                }
                Ok(BackupItem::Other) => records.push(record),
                Err(why) => problem = Some(why),
            }
            Ok(())
        },
    )
    .map_err(|e| match e {
        StoreError::Corrupt(why) => refused(why),
        other => ApiError::from(other),
    })?;
    if let Some(why) = problem {
        return Err(refused(why));
    }
    Ok(Checked { header, records, samples })
}

/// Every master key the backup's data keys are wrapped by must be one this node holds, with
/// the same key material: one data key per key id is unwrapped to prove it.
async fn check_keys(vault: &Vault, checked: &Checked) -> Result<(), ApiError> {
    let kms = &vault.kms;
    let foreign = |why: String| -> ApiError {
        Status::failed_precondition(format!("backup refused, nothing was changed: {why}")).into()
    };
    if let Some(mk) = &checked.header.master_key {
        if let (Some(want), Some(got)) = (&mk.check, kms.key_check(&mk.key_id)) {
            if *want != got {
                return Err(foreign(format!(
                    "it was made by a cluster whose master key {} is not this node's key of that id",
                    mk.key_id
                )));
            }
        }
    }
    for (key_id, (name, version, wrapped)) in &checked.samples {
        if !kms.holds_key(key_id) {
            return Err(foreign(format!(
                "its data keys are wrapped by master key {key_id}, which this node does not hold (it holds {})",
                kms.key_ids().join(", ")
            )));
        }
        let name = SecretName::parse(name).map_err(|e| refused(format!("secret name {name:?}: {e}")))?;
        match kms.decrypt_data_key(key_id, wrapped, &EncryptionContext::new(&name, *version)).await {
            Ok(_) => {}
            Err(e) if e.is_retryable() => {
                return Err(Status::unavailable(format!(
                    "cannot check the backup's keys now ({e}); nothing was changed, retry"
                ))
                .into())
            }
            Err(e) => {
                return Err(foreign(format!(
                    "master key {key_id} here does not unwrap its data keys ({e}): it comes from another cluster"
                )))
            }
        }
    }
    Ok(())
}

/// Receives a backup from `chunks`, checks it, and installs it through Raft.
pub async fn restore(
    vault: &Arc<Vault>,
    caller: &Caller,
    mut chunks: tonic::Streaming<pb::SnapshotChunk>,
) -> Result<pb::RestoreSnapshotResponse, ApiError> {
    let scratch = Scratch::new(vault, "restore");
    {
        let mut file = tokio::fs::File::create(&scratch.0).await.map_err(StoreError::from)?;
        while let Some(chunk) = chunks.message().await? {
            file.write_all(&chunk.data).await.map_err(StoreError::from)?;
        }
        file.flush().await.map_err(StoreError::from)?;
    }
    let path = scratch.0.clone();
    let checked = blocking(move || check(&path)).await?;
    drop(scratch);
    check_keys(vault, &checked).await?;

    let id = rand::random::<u64>();
    let total = checked.records.len() as u64;
    tracing::info!(restore = format!("{id:016x}"), records = total, "restoring a backup through Raft");
    vault.write_ok(caller, Command::RestoreBegin { id, records: total }).await?;
    let mut seq = 0;
    let mut chunk = Vec::new();
    let mut bytes = 0;
    let mut records = checked.records.into_iter().peekable();
    while let Some(r) = records.next() {
        bytes += r.size();
        chunk.push(r);
        if bytes >= CHUNK_BYTES || records.peek().is_none() {
            let cmd = Command::RestoreChunk { id, seq, records: std::mem::take(&mut chunk) };
            vault.write_ok(caller, cmd).await?;
            seq += 1;
            bytes = 0;
        }
    }
    let counts = match vault.write_ok(caller, Command::RestoreCommit { id }).await? {
        CommandResponse::Restored { records } => records,
        other => return Err(Status::internal(format!("unexpected reply to a restore: {other:?}")).into()),
    };
    let at = |family: &str| {
        vault_raft::db::SM_CFS.iter().position(|f| *f == family).and_then(|i| counts.get(i)).copied().unwrap_or(0)
    };
    tracing::info!(restore = format!("{id:016x}"), "backup restored");
    Ok(pb::RestoreSnapshotResponse {
        secrets: at(vault_raft::db::CF_SECRETS),
        versions: at(vault_raft::db::CF_VERSIONS),
        tokens: at(vault_raft::db::CF_TOKENS),
        roles: at(vault_raft::db::CF_ROLES),
        source_node_id: checked.header.node_id,
        source_applied_index: checked.header.applied_index,
        created_ms: checked.header.created_ms,
        reader_rules: at(vault_raft::db::CF_READERS),
        rotation_policies: at(vault_raft::db::CF_ROTATION),
    })
}
