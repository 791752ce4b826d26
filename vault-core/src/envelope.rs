//! Envelope sealing: a fresh data key per secret version, XChaCha20-Poly1305 with a random
//! 24-byte nonce and AAD = `name:version`.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::dek_cache::DekCache;
use crate::keys::DataKey;
use crate::kms::{EncryptionContext, KeyManager};
use crate::{CoreError, SecretBytes, SecretName};

pub const NONCE_LEN: usize = 24;

/// Everything needed to open one secret version, given access to the KMS. Holds no plaintext.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedValue {
    /// Id (for AWS the resolved ARN) of the key that wrapped `wrapped_dek`.
    pub key_id: String,
    #[serde(with = "crate::byte_buf")]
    pub wrapped_dek: Vec<u8>,
    #[serde(with = "crate::byte_buf")]
    pub nonce: Vec<u8>,
    #[serde(with = "crate::byte_buf")]
    pub ciphertext: Vec<u8>,
}

/// First 16 bytes of SHA-256 of `bytes`, hex: a public fingerprint of ciphertext.
pub fn fingerprint(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Seals `value` as version `version` of `name` under a fresh data key from `kms`, wrapped
/// by master key `key_id`. The plaintext data key is dropped (and zeroized) before this
/// returns.
pub async fn seal(
    kms: &dyn KeyManager,
    key_id: &str,
    name: &SecretName,
    version: u64,
    value: &SecretBytes,
) -> Result<SealedValue, CoreError> {
    let ctx = EncryptionContext::new(name, version);
    let generated = kms.generate_data_key(key_id, &ctx).await?;
    let nonce: [u8; NONCE_LEN] = crate::random::bytes();
    let ciphertext = seal_with(&generated.plaintext, &nonce, &name.aad(version), value.expose())?;
    Ok(SealedValue { key_id: generated.key_id, wrapped_dek: generated.wrapped, nonce: nonce.to_vec(), ciphertext })
}

fn seal_with(dek: &DataKey, nonce: &[u8; NONCE_LEN], aad: &[u8], msg: &[u8]) -> Result<Vec<u8>, CoreError> {
    XChaCha20Poly1305::new(dek.expose().into())
        .encrypt(XNonce::from_slice(nonce), Payload { msg, aad })
        .map_err(|_| CoreError::InvalidArgument("value could not be sealed".into()))
}

/// Opens a sealed version. Uses the key id stored with the version, consults `cache` before
/// the KMS and fills it after a KMS unwrap.
pub async fn open(
    kms: &dyn KeyManager,
    cache: Option<&DekCache>,
    name: &SecretName,
    version: u64,
    sealed: &SealedValue,
) -> Result<SecretBytes, CoreError> {
    if sealed.nonce.len() != NONCE_LEN {
        return Err(CoreError::Malformed(format!("nonce of {name}:{version} has the wrong length")));
    }
    let cached = cache.and_then(|c| c.get(&sealed.key_id, &sealed.wrapped_dek));
    let dek = match cached {
        Some(k) => k,
        None => {
            let ctx = EncryptionContext::new(name, version);
            let k = kms.decrypt_data_key(&sealed.key_id, &sealed.wrapped_dek, &ctx).await?;
            if let Some(c) = cache {
                c.insert(&sealed.key_id, &sealed.wrapped_dek, &k);
            }
            k
        }
    };
    let plain = XChaCha20Poly1305::new(dek.expose().into())
        .decrypt(XNonce::from_slice(&sealed.nonce), Payload { msg: &sealed.ciphertext, aad: &name.aad(version) })
        .map_err(|_| CoreError::Authentication(format!("{name}:{version}")))?;
    Ok(SecretBytes::new(plain))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Duration;

    use super::*;
    use crate::keys::MasterKey;
    use crate::local_kms::LocalKms;

    fn name(s: &str) -> SecretName {
        SecretName::parse(s).unwrap()
    }

    fn value(s: &str) -> SecretBytes {
        SecretBytes::new(s.as_bytes().to_vec())
    }

    #[tokio::test]
    async fn round_trip() {
        let kms = LocalKms::new(MasterKey::generate());
        let n = name("db/password");
        let s = seal(&kms, kms.key_id(), &n, 3, &value("hunter2")).await.unwrap();
        assert_eq!(s.key_id, kms.key_id());
        assert_eq!(s.nonce.len(), 24);
        assert!(!s.ciphertext.windows(7).any(|w| w == b"hunter2"));
        let back = open(&kms, None, &n, 3, &s).await.unwrap();
        assert_eq!(back.expose(), b"hunter2");
    }

    #[tokio::test]
    async fn moved_to_another_name_or_version_fails() {
        let kms = LocalKms::new(MasterKey::generate());
        let s = seal(&kms, kms.key_id(), &name("a/b"), 1, &value("v")).await.unwrap();
        assert!(open(&kms, None, &name("a/c"), 1, &s).await.is_err(), "other name");
        assert!(open(&kms, None, &name("a/b"), 2, &s).await.is_err(), "other version");

        // Even with the right DEK available (a warm cache), the value AAD still binds.
        let cache = DekCache::new(Duration::from_secs(60), 16);
        open(&kms, Some(&cache), &name("a/b"), 1, &s).await.unwrap();
        let e = open(&kms, Some(&cache), &name("a/c"), 1, &s).await.unwrap_err();
        assert!(matches!(e, CoreError::Authentication(_)), "{e}");
        let e = open(&kms, Some(&cache), &name("a/b"), 7, &s).await.unwrap_err();
        assert!(matches!(e, CoreError::Authentication(_)), "{e}");
    }

    #[tokio::test]
    async fn any_flipped_bit_fails() {
        let kms = LocalKms::new(MasterKey::generate());
        let n = name("x");
        let s = seal(&kms, kms.key_id(), &n, 1, &value("some secret value")).await.unwrap();
        for field in 0..3 {
            let len = match field {
                0 => s.ciphertext.len(),
                1 => s.nonce.len(),
                _ => s.wrapped_dek.len(),
            };
            for byte in 0..len {
                for bit in 0..8 {
                    let mut t = s.clone();
                    let buf = match field {
                        0 => &mut t.ciphertext,
                        1 => &mut t.nonce,
                        _ => &mut t.wrapped_dek,
                    };
                    buf[byte] ^= 1 << bit;
                    assert!(
                        open(&kms, None, &n, 1, &t).await.is_err(),
                        "field {field} byte {byte} bit {bit} flipped but opened"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn wrong_master_key_fails() {
        let a = LocalKms::new(MasterKey::generate());
        let b = LocalKms::new(MasterKey::generate());
        let s = seal(&a, a.key_id(), &name("x"), 1, &value("v")).await.unwrap();
        assert!(open(&b, None, &name("x"), 1, &s).await.is_err());
        let mut forged = s.clone();
        forged.key_id = b.key_id().to_string();
        assert!(open(&b, None, &name("x"), 1, &forged).await.is_err());
    }

    #[tokio::test]
    async fn nonces_and_data_keys_do_not_repeat() {
        let kms = LocalKms::new(MasterKey::generate());
        let n = name("x");
        let mut nonces = HashSet::new();
        let mut wrapped = HashSet::new();
        let mut deks = HashSet::new();
        let ctx = EncryptionContext::new(&n, 1);
        for _ in 0..2000 {
            let s = seal(&kms, kms.key_id(), &n, 1, &value("same value")).await.unwrap();
            assert!(nonces.insert(s.nonce.clone()), "nonce repeated");
            assert!(wrapped.insert(s.wrapped_dek.clone()), "wrapped DEK repeated");
            let dek = kms.decrypt_data_key(&s.key_id, &s.wrapped_dek, &ctx).await.unwrap();
            assert!(deks.insert(*dek.expose()), "DEK repeated");
        }
    }
}
