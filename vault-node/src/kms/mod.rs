//! Maps the KMS configuration to a key manager backend.

#[cfg(feature = "aws")]
mod aws;
mod metered;

use std::sync::Arc;

use vault_core::keys::MasterKey;
use vault_core::kms::KeyManager;
use vault_core::local_kms::LocalKms;

#[cfg(feature = "aws")]
pub use aws::AwsKms;
pub use metered::{MeteredKms, Reachability};

use crate::config::KmsConfig;

pub async fn build(cfg: KmsConfig) -> anyhow::Result<Arc<MeteredKms>> {
    Ok(Arc::new(MeteredKms::new(backend(cfg).await?)))
}

async fn backend(cfg: KmsConfig) -> anyhow::Result<Arc<dyn KeyManager>> {
    match cfg {
        KmsConfig::Local { keys } if !keys.is_empty() => Ok(Arc::new(LocalKms::keyring(keys)?)),
        KmsConfig::Local { .. } => {
            tracing::warn!(
                "VAULT_LOCAL_MASTER_KEY is not set: using a RANDOM EPHEMERAL master key. Every secret \
                 written by this process becomes UNREADABLE once it stops. Set VAULT_LOCAL_MASTER_KEY \
                 (base64 of 32 bytes) or VAULT_LOCAL_MASTER_KEY_FILE, or use VAULT_KMS_MODE=aws."
            );
            Ok(Arc::new(LocalKms::new(MasterKey::generate())))
        }
        #[cfg(feature = "aws")]
        KmsConfig::Aws { key_id } => Ok(Arc::new(AwsKms::connect(&key_id).await?)),
        #[cfg(not(feature = "aws"))]
        KmsConfig::Aws { key_id } => Err(anyhow::anyhow!(
            "VAULT_KMS_MODE=aws (key {key_id}): this build has no AWS KMS support (`make run` builds the dev \
             vault without it); build vault-node with its default features"
        )),
    }
}
