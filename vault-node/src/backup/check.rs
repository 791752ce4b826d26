//! Receiving a restore and checking it before anything is proposed: size, MAC, records, keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;
use tonic::Status;
use vault_core::keys::DataKey;
use vault_core::kms::{EncryptionContext, KeyManager, KeyPurpose};
use vault_core::SecretName;
use vault_raft::backup_check::{BackupChecker, BackupItem};
use vault_raft::snapshot_file::{read_backup, read_backup_header, verify_backup, BackupHeader};
use vault_raft::StoreError;

use super::{foreign, refused};
use crate::error::{blocking, ApiError};
use crate::pb;
use crate::vault::Vault;

/// A backup that passed every check.
pub(super) struct Checked {
    /// Its header, authenticated by the MAC.
    pub header: BackupHeader,
    /// Its MAC key, for the staging pass (which checks the MAC again).
    pub mac: DataKey,
    /// Records a restore installs.
    pub records: u64,
    /// Largest record taken.
    pub max_record: usize,
}

/// Writes the upload into `path`, refusing it once it passes `max_bytes`.
pub(super) async fn receive(
    path: &Path,
    mut chunks: tonic::Streaming<pb::SnapshotChunk>,
    max_bytes: u64,
) -> Result<(), ApiError> {
    let mut file = tokio::fs::File::create(path).await.map_err(StoreError::from)?;
    let mut received: u64 = 0;
    while let Some(chunk) = chunks.message().await? {
        received = received.saturating_add(chunk.data.len() as u64);
        if received > max_bytes {
            return Err(refused(format!(
                "it is larger than the {} MiB a restore may upload here (VAULT_RESTORE_MAX_MB)",
                max_bytes >> 20
            )));
        }
        file.write_all(&chunk.data).await.map_err(StoreError::from)?;
    }
    file.flush().await.map_err(StoreError::from)?;
    Ok(())
}

/// A file error as the client should hear it: a damaged or altered file is a refusal.
fn as_refusal(e: StoreError) -> ApiError {
    match e {
        StoreError::Corrupt(why) => refused(why),
        other => ApiError::from(other),
    }
}

/// Checks the received backup at `path`; see the module docs of [`super`].
pub(super) async fn check(vault: &Vault, path: &Path) -> Result<Checked, ApiError> {
    let open = |path: PathBuf| std::fs::File::open(path).map_err(StoreError::from);
    let at = path.to_path_buf();
    let header = blocking(move || read_backup_header(open(at)?).map_err(as_refusal)).await?;
    let mac = unwrap_mac_key(vault, &header).await?;
    let max_record = vault_raft::max_backup_record(vault.max_value_bytes);

    // The MAC, over the raw bytes, before any record is parsed.
    let (at, key) = (path.to_path_buf(), DataKey::from_slice(mac.expose())?);
    blocking(move || verify_backup(open(at)?, &key).map_err(as_refusal)).await?;

    // Every record, in one streaming pass; one sealed version per master key id is kept to
    // prove below that this node's key unwraps it.
    let (at, key) = (path.to_path_buf(), DataKey::from_slice(mac.expose())?);
    let (header, records, samples) = blocking(move || -> Result<_, ApiError> {
        let mut checker = BackupChecker::new();
        let mut samples: BTreeMap<String, (String, u64, Vec<u8>)> = BTreeMap::new();
        let mut records = 0u64;
        let header = read_backup(open(at)?, &key, max_record, |record| {
            match checker.record(&record) {
                Ok(BackupItem::Ignored) => {}
                Ok(BackupItem::Version(name, v)) => {
                    if let Some(sealed) = v.sealed {
                        samples.entry(sealed.key_id).or_insert((name, v.version, sealed.wrapped_dek));
                    }
                    records += 1;
                }
                Ok(BackupItem::Other) => records += 1,
                Err(why) => return Err(StoreError::Corrupt(why)),
            }
            Ok(())
        })
        .map_err(as_refusal)?;
        checker.finish().map_err(refused)?;
        Ok((header, records, samples))
    })
    .await?;
    check_keys(vault, &header, &samples).await?;
    Ok(Checked { header, mac, records, max_record })
}

/// The backup's MAC key, unwrapped by this node's key manager under the master key the header
/// names. A key this node does not hold, or one that does not unwrap it, means the backup was
/// made by another cluster (or under a key since dropped from the keyring), or was altered.
async fn unwrap_mac_key(vault: &Vault, header: &BackupHeader) -> Result<DataKey, ApiError> {
    let kms = &vault.kms;
    let key_id = &header.mac_key.key_id;
    if !kms.holds_key(key_id) {
        return Err(foreign(format!(
            "it is sealed under master key {key_id}, which this node does not hold (it holds {}): a backup of \
             another cluster, or of this one under a key since removed from the keyring",
            kms.key_ids().join(", ")
        )));
    }
    match kms.decrypt_purpose_key(key_id, &header.mac_key.wrapped, KeyPurpose::BackupMac).await {
        Ok(key) => Ok(key),
        Err(e) if e.is_retryable() => Err(Status::unavailable(format!(
            "cannot unwrap the backup's MAC key now ({e}); nothing was changed, retry"
        ))
        .into()),
        Err(e) => Err(foreign(format!(
            "this node's master key {key_id} does not unwrap its MAC key ({e}): it comes from another cluster \
             or was altered"
        ))),
    }
}

/// Every master key the backup's data keys are wrapped by must be one this node holds, with
/// the same key material: one data key per key id is unwrapped to prove it.
async fn check_keys(
    vault: &Vault,
    header: &BackupHeader,
    samples: &BTreeMap<String, (String, u64, Vec<u8>)>,
) -> Result<(), ApiError> {
    let kms = &vault.kms;
    if let Some(mk) = &header.master_key {
        if let (Some(want), Some(got)) = (&mk.check, kms.key_check(&mk.key_id)) {
            if *want != got {
                return Err(foreign(format!(
                    "it was made by a cluster whose master key {} is not this node's key of that id",
                    mk.key_id
                )));
            }
        }
    }
    for (key_id, (name, version, wrapped)) in samples {
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
