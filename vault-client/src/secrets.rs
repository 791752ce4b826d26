//! Typed secret operations on [`Client`]: reads on [`Route::Read`], writes on
//! [`Route::Write`]. Everything else is reachable through [`Client::call`] and the generated
//! stubs in [`crate::pb`].

use zeroize::Zeroizing;

use crate::client::{Client, Route};
use crate::error::{Error, Result};
use crate::pb;

/// One version of a secret, as read. The value is zeroized on drop and never shown by `Debug`.
pub struct Secret {
    pub name: String,
    pub version: u64,
    pub value: Zeroizing<Vec<u8>>,
    pub created_at_ms: u64,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("value", &"[REDACTED]")
            .field("created_at_ms", &self.created_at_ms)
            .finish()
    }
}

impl From<pb::GetSecretResponse> for Secret {
    fn from(mut r: pb::GetSecretResponse) -> Secret {
        let value = Zeroizing::new(std::mem::take(&mut r.value));
        Secret { name: std::mem::take(&mut r.name), version: r.version, value, created_at_ms: r.created_at_ms }
    }
}

impl Client {
    /// The current version of `name` (linearizable; from any healthy node).
    pub async fn get(&self, name: &str) -> Result<Secret> {
        self.get_version(name, 0).await
    }

    /// Version `version` of `name` (0: the current one).
    pub async fn get_version(&self, name: &str, version: u64) -> Result<Secret> {
        let req = pb::GetSecretRequest { name: name.to_string(), version };
        let r = self.call(Route::Read, req, |c, r| async move { c.secrets().get_secret(r).await }).await?;
        Ok(r.into())
    }

    /// Several secrets in one linearizable read: `(name, version)` pairs (version 0: current).
    /// Each answer is the secret or its own error, in the order asked.
    pub async fn batch_get<S: AsRef<str>>(&self, wanted: &[(S, u64)]) -> Result<Vec<Result<Secret>>> {
        let requests = wanted
            .iter()
            .map(|(name, version)| pb::GetSecretRequest { name: name.as_ref().to_string(), version: *version })
            .collect();
        let r = self
            .call(Route::Read, pb::BatchGetSecretsRequest { requests }, |c, r| async move {
                c.secrets().batch_get_secrets(r).await
            })
            .await?;
        if r.results.len() != wanted.len() {
            return Err(Error::Server {
                code: tonic::Code::Internal,
                message: format!("asked for {} secrets, the server answered {}", wanted.len(), r.results.len()),
            });
        }
        Ok(r.results.into_iter().zip(wanted).map(|(res, (name, _))| batch_result(name.as_ref(), res)).collect())
    }

    /// Writes a new version of `name`; returns its number.
    pub async fn put(&self, name: &str, value: impl Into<Vec<u8>>) -> Result<u64> {
        self.put_request(pb::PutSecretRequest {
            name: name.to_string(),
            value: value.into(),
            expected_version: None,
            max_versions: None,
        })
        .await
    }

    /// Writes a new version only if the current one is `expected` (0: `name` must not exist);
    /// otherwise [`Error::CasMismatch`].
    pub async fn put_if_version(&self, name: &str, value: impl Into<Vec<u8>>, expected: u64) -> Result<u64> {
        self.put_request(pb::PutSecretRequest {
            name: name.to_string(),
            value: value.into(),
            expected_version: Some(expected),
            max_versions: None,
        })
        .await
    }

    /// A write with every field of the request (check-and-set, version limit).
    pub async fn put_request(&self, req: pb::PutSecretRequest) -> Result<u64> {
        let r = self.call(Route::Write, req, |c, r| async move { c.secrets().put_secret(r).await }).await?;
        Ok(r.version)
    }

    /// Soft-deletes every version of `name` (`destroy`: purges them for good).
    pub async fn delete(&self, name: &str, destroy: bool) -> Result<()> {
        let req = pb::DeleteSecretRequest { name: name.to_string(), destroy };
        self.call(Route::Write, req, |c, r| async move { c.secrets().delete_secret(r).await }).await?;
        Ok(())
    }

    /// Names and metadata (never values) under `prefix`, every page.
    pub async fn list(&self, prefix: &str) -> Result<Vec<pb::SecretSummary>> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let req = pb::ListSecretsRequest { prefix: prefix.to_string(), page_size: 1000, page_token };
            let r = self.call(Route::Read, req, |c, r| async move { c.secrets().list_secrets(r).await }).await?;
            all.extend(r.secrets);
            if r.next_page_token.is_empty() {
                return Ok(all);
            }
            page_token = r.next_page_token;
        }
    }

    /// Rotation policies (with next due time, failures and last error) of the names under
    /// `prefix` that the token may list, every page.
    pub async fn list_rotations(&self, prefix: &str) -> Result<Vec<pb::RotationInfo>> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let req = pb::ListRotationsRequest { prefix: prefix.to_string(), page_size: 1000, page_token };
            let r = self.call(Route::Read, req, |c, r| async move { c.secrets().list_rotations(r).await }).await?;
            all.extend(r.rotations);
            if r.next_page_token.is_empty() {
                return Ok(all);
            }
            page_token = r.next_page_token;
        }
    }
}

fn batch_result(name: &str, r: pb::BatchGetResult) -> Result<Secret> {
    match r.result {
        Some(pb::batch_get_result::Result::Secret(s)) => Ok(s.into()),
        Some(pb::batch_get_result::Result::Error(e)) => Err(Error::from_status(
            "",
            tonic::Status::new(tonic::Code::from_i32(e.code), format!("{name}: {}", e.message)),
        )),
        None => {
            Err(Error::Server { code: tonic::Code::Internal, message: format!("{name}: the server sent no result") })
        }
    }
}
