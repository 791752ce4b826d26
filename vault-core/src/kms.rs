//! The key manager abstraction. Backends (local, AWS KMS) live elsewhere; this trait knows
//! nothing of any cloud SDK.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::keys::DataKey;
use crate::{CoreError, SecretName};

/// What a data key is bound to: `{"secret": name, "version": "<n>"}`. Unwrapping under a
/// different context fails.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptionContext {
    pub secret: SecretName,
    pub version: u64,
}

impl EncryptionContext {
    pub fn new(secret: &SecretName, version: u64) -> Self {
        EncryptionContext { secret: secret.clone(), version }
    }

    /// The context as the key/value map KMS APIs take.
    pub fn as_map(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("secret".to_string(), self.secret.to_string()),
            ("version".to_string(), self.version.to_string()),
        ])
    }
}

/// What a key wrapped by the key manager is for when it is not a secret version's data key.
/// The purpose is bound into the wrap (AWS: encryption context `{"purpose": ...}`; local: the
/// wrap's associated data), and no data key's context has a `purpose` entry, so a data key
/// wrapped for a secret can never be unwrapped as one of these, nor the other way round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPurpose {
    /// The MAC key of one backup file (`vaultctl snapshot save`).
    BackupMac,
}

impl KeyPurpose {
    pub fn as_str(&self) -> &'static str {
        match self {
            KeyPurpose::BackupMac => "backup-mac",
        }
    }

    /// The purpose as the key/value map KMS APIs take.
    pub fn as_map(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("purpose".to_string(), self.as_str().to_string())])
    }
}

/// A freshly generated data key: the plaintext (used once to seal, then dropped and
/// zeroized) and its wrapped form with the id of the key that wrapped it.
pub struct GeneratedDataKey {
    pub plaintext: DataKey,
    pub wrapped: Vec<u8>,
    pub key_id: String,
}

/// A data key re-wrapped onto the master key's current material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RewrappedDataKey {
    pub wrapped: Vec<u8>,
    pub key_id: String,
}

/// A key manager wraps and unwraps per-version data keys with a master key it guards.
#[async_trait]
pub trait KeyManager: Send + Sync + 'static {
    /// Short backend name for logs and status ("local", "aws").
    fn kind(&self) -> &'static str;

    /// The id of this node's configured key (an ARN for AWS; the first keyring entry for the
    /// local backend): the key a new cluster records as its master key.
    fn key_id(&self) -> &str;

    /// Ids of every master key this node holds (the keyring).
    fn key_ids(&self) -> Vec<String> {
        vec![self.key_id().to_string()]
    }

    /// Whether this node can wrap and unwrap under `key_id`.
    fn holds_key(&self, key_id: &str) -> bool {
        self.key_ids().iter().any(|k| k == key_id)
    }

    /// A key-check value for `key_id`: derived from the key material, safe to store and show,
    /// so two keys with the same id cannot pass for each other. `None` where the provider
    /// guards that itself (AWS ARNs).
    fn key_check(&self, _key_id: &str) -> Option<String> {
        None
    }

    /// A 256-bit key for `purpose` derived from master key `key_id`, for keys the node needs
    /// beside data keys (the audit chain's). `None` where the master key never leaves the
    /// provider (AWS).
    fn derive_subkey(&self, _key_id: &str, _purpose: &str) -> Option<DataKey> {
        None
    }

    /// A fresh 256-bit data key, plaintext and wrapped under master key `key_id` (the
    /// cluster's current one), bound to `ctx`. `KeyMismatch` when this node lacks that key.
    async fn generate_data_key(&self, key_id: &str, ctx: &EncryptionContext) -> Result<GeneratedDataKey, CoreError>;

    /// Unwraps a data key wrapped by `key_id` under `ctx`.
    async fn decrypt_data_key(
        &self,
        key_id: &str,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, CoreError>;

    /// A fresh 256-bit key for `purpose`, plaintext and wrapped under master key `key_id`,
    /// with the purpose bound into the wrap (see [`KeyPurpose`]).
    async fn generate_purpose_key(&self, key_id: &str, purpose: KeyPurpose) -> Result<GeneratedDataKey, CoreError>;

    /// Unwraps a key made by [`KeyManager::generate_purpose_key`] for `purpose`.
    async fn decrypt_purpose_key(
        &self,
        key_id: &str,
        wrapped: &[u8],
        purpose: KeyPurpose,
    ) -> Result<DataKey, CoreError>;

    /// Checks that the key manager answers and this node may use its configured key (for
    /// readiness). The local backend always can.
    async fn probe(&self) -> Result<(), CoreError> {
        Ok(())
    }

    /// Whether the master key rotates and wrapped keys can be moved onto new key material.
    fn supports_rotation(&self) -> bool {
        false
    }

    /// Whether rotations are the cluster's own (`vaultctl kms rotate`, recorded in replicated
    /// state) rather than the provider's (ListKeyRotations).
    fn rotates_through_cluster(&self) -> bool {
        false
    }

    /// Re-wraps a data key wrapped by `key_id` onto master key `to_key_id` (its current
    /// material), inside the key manager: the plaintext data key never leaves it. Same
    /// context on both sides.
    async fn rewrap_data_key(
        &self,
        _key_id: &str,
        _wrapped: &[u8],
        _ctx: &EncryptionContext,
        _to_key_id: &str,
    ) -> Result<RewrappedDataKey, CoreError> {
        Err(CoreError::KmsRejected(format!("the {} key manager does not rotate keys", self.kind())))
    }

    /// The newest rotation of the master key, as milliseconds since the epoch; `None` if it
    /// was never rotated.
    async fn latest_rotation_ms(&self) -> Result<Option<u64>, CoreError> {
        Err(CoreError::KmsRejected(format!("the {} key manager does not rotate keys", self.kind())))
    }
}
