//! AWS KMS key manager (`VAULT_KMS_MODE=aws`).
//!
//! - New data keys: GenerateDataKey (AES_256) under the configured key, with encryption context
//!   `{"secret": name, "version": "<n>"}`; the stored key id is the key's resolved ARN, even when
//!   `VAULT_KMS_KEY_ID` is an alias.
//! - Unwrap: Decrypt naming the key id stored with the version.
//! - Keys for other purposes (a backup's MAC key): GenerateDataKey and Decrypt with encryption
//!   context `{"purpose": ...}`, which no data key's context equals.
//! - Re-wrap: ReEncrypt onto the current key material; the plaintext never leaves KMS.
//! - Rotation dates: ListKeyRotations, all pages.
//!
//! Every call has connect, attempt and operation timeouts; the SDK's standard retry mode
//! retries only retryable errors, with backoff. Region and credentials come from the AWS SDK's
//! default chains (`aws-config`): environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`, `AWS_REGION`), shared config and credentials files (`AWS_PROFILE`,
//! `credential_process`), web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` with `AWS_ROLE_ARN`,
//! as on EKS), the ECS container endpoint, then the EC2 instance role (IMDSv2; off with
//! `AWS_EC2_METADATA_DISABLED=true`). Temporary credentials are refreshed before they expire.
//! Endpoint override from `AWS_ENDPOINT_URL_KMS` (or `AWS_ENDPOINT_URL`).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{anyhow, Context};
use async_trait::async_trait;
use aws_sdk_kms::config::retry::RetryConfig;
use aws_sdk_kms::config::timeout::TimeoutConfig;
use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use aws_sdk_kms::Client;
use vault_core::keys::DataKey;
use vault_core::kms::{EncryptionContext, GeneratedDataKey, KeyManager, KeyPurpose, RewrappedDataKey};
use vault_core::CoreError;
use zeroize::Zeroizing;

/// Service error codes worth retrying later (the SDK has retried them already).
const TRANSIENT: &[&str] = &[
    "ThrottlingException",
    "KMSInternalException",
    "DependencyTimeoutException",
    "KeyUnavailableException",
    "LimitExceededException",
];

pub struct AwsKms {
    client: Client,
    arn: String,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn classify<E, R>(op: &str, e: SdkError<E, R>) -> CoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    match &e {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("Unknown").to_string();
            let msg = se.err().message().unwrap_or("").to_string();
            if TRANSIENT.contains(&code.as_str()) {
                CoreError::KmsUnavailable(format!("{op}: {code}: {msg}"))
            } else {
                CoreError::KmsRejected(format!("{op}: {code}: {msg}"))
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            CoreError::KmsUnavailable(format!("{op}: {}", DisplayErrorContext(&e)))
        }
        _ => CoreError::KmsRejected(format!("{op}: {}", DisplayErrorContext(&e))),
    }
}

fn context_map(ctx: &EncryptionContext) -> HashMap<String, String> {
    ctx.as_map().into_iter().collect()
}

impl AwsKms {
    /// Builds the client from the environment and resolves `key_id` (id, ARN or alias) to the
    /// key's ARN with DescribeKey.
    pub async fn connect(key_id: &str) -> anyhow::Result<Self> {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(2))
            .operation_attempt_timeout(Duration::from_secs(3))
            .operation_timeout(Duration::from_secs(8))
            .build();
        // The chains use the same HTTP client (web identity calls STS, containers and instances
        // their metadata endpoints) and time limits.
        let sdk = crate::aws_env::sdk_config(&timeouts, "VAULT_KMS_MODE=aws").await?;
        let creds = sdk
            .credentials_provider()
            .ok_or_else(|| anyhow!("VAULT_KMS_MODE=aws: the AWS SDK found no credentials provider"))?;
        // Fail at start, naming the chain, rather than at the first write.
        {
            use aws_credential_types::provider::ProvideCredentials;
            creds.provide_credentials().await.map_err(|e| {
                anyhow!(
                    "VAULT_KMS_MODE=aws: no AWS credentials (looked in the environment, the shared config and \
                     credentials files, web identity, the container and the instance role): {}",
                    DisplayErrorContext(&e)
                )
            })?;
        }
        let mut conf = aws_sdk_kms::config::Builder::from(&sdk)
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_max_attempts(3));
        if let Some(endpoint) = env("AWS_ENDPOINT_URL_KMS").or_else(|| env("AWS_ENDPOINT_URL")) {
            conf = conf.endpoint_url(endpoint);
        }
        let client = Client::from_conf(conf.build());
        let described = client
            .describe_key()
            .key_id(key_id)
            .send()
            .await
            .map_err(|e| classify("DescribeKey", e))
            .with_context(|| format!("resolve VAULT_KMS_KEY_ID {key_id}"))?;
        let arn = described
            .key_metadata()
            .map(|m| m.arn().unwrap_or_default().to_string())
            .filter(|a| !a.is_empty())
            .ok_or_else(|| anyhow!("DescribeKey for {key_id} returned no ARN"))?;
        tracing::info!(key = %arn, "AWS KMS key resolved");
        Ok(AwsKms { client, arn })
    }
}

impl AwsKms {
    /// GenerateDataKey (AES_256) under the configured key, bound to `context`.
    async fn generate(&self, key_id: &str, context: HashMap<String, String>) -> Result<GeneratedDataKey, CoreError> {
        self.require_configured(key_id)?;
        let mut out = self
            .client
            .generate_data_key()
            .key_id(&self.arn)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(context))
            .send()
            .await
            .map_err(|e| classify("GenerateDataKey", e))?;
        let plain = Zeroizing::new(out.plaintext.take().map(Blob::into_inner).unwrap_or_default());
        let wrapped = out.ciphertext_blob.take().map(Blob::into_inner).unwrap_or_default();
        if wrapped.is_empty() {
            return Err(CoreError::KmsRejected("GenerateDataKey returned no ciphertext".into()));
        }
        Ok(GeneratedDataKey {
            plaintext: DataKey::from_slice(&plain)?,
            wrapped,
            key_id: out.key_id.take().unwrap_or_else(|| self.arn.clone()),
        })
    }

    /// Decrypt naming `key_id`, under `context`.
    async fn decrypt(
        &self,
        key_id: &str,
        wrapped: &[u8],
        context: HashMap<String, String>,
    ) -> Result<DataKey, CoreError> {
        let mut out = self
            .client
            .decrypt()
            .key_id(key_id)
            .ciphertext_blob(Blob::new(wrapped))
            .set_encryption_context(Some(context))
            .send()
            .await
            .map_err(|e| classify("Decrypt", e))?;
        let plain = Zeroizing::new(out.plaintext.take().map(Blob::into_inner).unwrap_or_default());
        DataKey::from_slice(&plain)
    }

    /// New material is only ever made under the configured key (its resolved ARN).
    fn require_configured(&self, key_id: &str) -> Result<(), CoreError> {
        if key_id == self.arn {
            Ok(())
        } else {
            Err(CoreError::KeyMismatch { stored: key_id.to_string(), configured: self.arn.clone() })
        }
    }
}

#[async_trait]
impl KeyManager for AwsKms {
    fn kind(&self) -> &'static str {
        "aws"
    }

    fn key_id(&self) -> &str {
        &self.arn
    }

    async fn generate_data_key(&self, key_id: &str, ctx: &EncryptionContext) -> Result<GeneratedDataKey, CoreError> {
        self.generate(key_id, context_map(ctx)).await
    }

    async fn decrypt_data_key(
        &self,
        key_id: &str,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, CoreError> {
        self.decrypt(key_id, wrapped, context_map(ctx)).await
    }

    async fn generate_purpose_key(&self, key_id: &str, purpose: KeyPurpose) -> Result<GeneratedDataKey, CoreError> {
        self.generate(key_id, purpose.as_map().into_iter().collect()).await
    }

    async fn decrypt_purpose_key(
        &self,
        key_id: &str,
        wrapped: &[u8],
        purpose: KeyPurpose,
    ) -> Result<DataKey, CoreError> {
        self.decrypt(key_id, wrapped, purpose.as_map().into_iter().collect()).await
    }

    async fn probe(&self) -> Result<(), CoreError> {
        self.client.describe_key().key_id(&self.arn).send().await.map_err(|e| classify("DescribeKey", e))?;
        Ok(())
    }

    fn supports_rotation(&self) -> bool {
        true
    }

    async fn rewrap_data_key(
        &self,
        key_id: &str,
        wrapped: &[u8],
        ctx: &EncryptionContext,
        to_key_id: &str,
    ) -> Result<RewrappedDataKey, CoreError> {
        self.require_configured(to_key_id)?;
        let out = self
            .client
            .re_encrypt()
            .ciphertext_blob(Blob::new(wrapped))
            .source_key_id(key_id)
            .set_source_encryption_context(Some(context_map(ctx)))
            .destination_key_id(&self.arn)
            .set_destination_encryption_context(Some(context_map(ctx)))
            .send()
            .await
            .map_err(|e| classify("ReEncrypt", e))?;
        let wrapped = out.ciphertext_blob().map(|b| b.as_ref().to_vec()).unwrap_or_default();
        if wrapped.is_empty() {
            return Err(CoreError::KmsRejected("ReEncrypt returned no ciphertext".into()));
        }
        Ok(RewrappedDataKey { wrapped, key_id: out.key_id().unwrap_or(&self.arn).to_string() })
    }

    async fn latest_rotation_ms(&self) -> Result<Option<u64>, CoreError> {
        let mut latest: Option<u64> = None;
        let mut marker: Option<String> = None;
        loop {
            let out = self
                .client
                .list_key_rotations()
                .key_id(&self.arn)
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| classify("ListKeyRotations", e))?;
            for r in out.rotations() {
                if let Some(ms) = r.rotation_date().and_then(|d| d.to_millis().ok()) {
                    let ms = u64::try_from(ms).unwrap_or(0);
                    latest = Some(latest.map_or(ms, |l| l.max(ms)));
                }
            }
            match (out.truncated(), out.next_marker()) {
                (true, Some(m)) => marker = Some(m.to_string()),
                _ => return Ok(latest),
            }
        }
    }
}
