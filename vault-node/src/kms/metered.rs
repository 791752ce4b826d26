//! A key manager that times every call to the one it wraps, counts its errors, and remembers
//! whether the provider answered lately (for readiness). Labels name the operation and the
//! outcome only: never a key id, a context or a secret name.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use vault_core::keys::DataKey;
use vault_core::kms::{EncryptionContext, GeneratedDataKey, KeyManager, KeyPurpose, RewrappedDataKey};
use vault_core::CoreError;

/// What the last call to the provider showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reachability {
    /// No call yet.
    Unknown = 0,
    Reachable = 1,
    /// The last call failed for want of an answer (a timeout, a refused connection, throttling).
    Unreachable = 2,
}

pub struct MeteredKms {
    inner: Arc<dyn KeyManager>,
    reachability: AtomicU8,
}

impl MeteredKms {
    pub fn new(inner: Arc<dyn KeyManager>) -> Self {
        MeteredKms { inner, reachability: AtomicU8::new(Reachability::Unknown as u8) }
    }

    pub fn reachability(&self) -> Reachability {
        match self.reachability.load(Ordering::Relaxed) {
            1 => Reachability::Reachable,
            2 => Reachability::Unreachable,
            _ => Reachability::Unknown,
        }
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        call: impl std::future::Future<Output = Result<T, CoreError>>,
    ) -> Result<T, CoreError> {
        let start = Instant::now();
        let result = call.await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) if e.is_retryable() => "unavailable",
            Err(_) => "rejected",
        };
        metrics::histogram!("vault_kms_request_duration_seconds", "op" => op, "outcome" => outcome)
            .record(start.elapsed().as_secs_f64());
        if result.is_err() {
            metrics::counter!("vault_kms_errors_total", "op" => op, "outcome" => outcome).increment(1);
        }
        let seen = match &result {
            Err(e) if e.is_retryable() => Reachability::Unreachable,
            // An answer, even a refusal, shows the provider is there.
            _ => Reachability::Reachable,
        };
        self.reachability.store(seen as u8, Ordering::Relaxed);
        result
    }
}

#[async_trait]
impl KeyManager for MeteredKms {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn key_id(&self) -> &str {
        self.inner.key_id()
    }

    fn key_ids(&self) -> Vec<String> {
        self.inner.key_ids()
    }

    fn holds_key(&self, key_id: &str) -> bool {
        self.inner.holds_key(key_id)
    }

    fn key_check(&self, key_id: &str) -> Option<String> {
        self.inner.key_check(key_id)
    }

    fn derive_subkey(&self, key_id: &str, purpose: &str) -> Option<DataKey> {
        self.inner.derive_subkey(key_id, purpose)
    }

    async fn generate_data_key(&self, key_id: &str, ctx: &EncryptionContext) -> Result<GeneratedDataKey, CoreError> {
        self.timed("generate_data_key", self.inner.generate_data_key(key_id, ctx)).await
    }

    async fn decrypt_data_key(
        &self,
        key_id: &str,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, CoreError> {
        self.timed("decrypt_data_key", self.inner.decrypt_data_key(key_id, wrapped, ctx)).await
    }

    async fn generate_purpose_key(&self, key_id: &str, purpose: KeyPurpose) -> Result<GeneratedDataKey, CoreError> {
        self.timed("generate_purpose_key", self.inner.generate_purpose_key(key_id, purpose)).await
    }

    async fn decrypt_purpose_key(
        &self,
        key_id: &str,
        wrapped: &[u8],
        purpose: KeyPurpose,
    ) -> Result<DataKey, CoreError> {
        self.timed("decrypt_purpose_key", self.inner.decrypt_purpose_key(key_id, wrapped, purpose)).await
    }

    async fn probe(&self) -> Result<(), CoreError> {
        self.timed("probe", self.inner.probe()).await
    }

    fn supports_rotation(&self) -> bool {
        self.inner.supports_rotation()
    }

    fn rotates_through_cluster(&self) -> bool {
        self.inner.rotates_through_cluster()
    }

    async fn rewrap_data_key(
        &self,
        key_id: &str,
        wrapped: &[u8],
        ctx: &EncryptionContext,
        to_key_id: &str,
    ) -> Result<RewrappedDataKey, CoreError> {
        self.timed("rewrap_data_key", self.inner.rewrap_data_key(key_id, wrapped, ctx, to_key_id)).await
    }

    async fn latest_rotation_ms(&self) -> Result<Option<u64>, CoreError> {
        self.timed("latest_rotation", self.inner.latest_rotation_ms()).await
    }
}
