//! The local key manager: data keys are random and wrapped with XChaCha20-Poly1305 under a
//! master key held in memory. A keyring holds the current key and previous ones during a
//! rotation (`vaultctl kms rotate`); each key is known by an id derived from it.

use async_trait::async_trait;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::keys::{DataKey, MasterKey};
use crate::kms::{EncryptionContext, GeneratedDataKey, KeyManager, KeyPurpose, RewrappedDataKey};
use crate::CoreError;

/// Format byte in front of every wrapped key, so the layout can change later.
const WRAP_FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 24;

/// The local key manager over a keyring: every master key this node holds, by id. Data keys
/// are wrapped under whichever key the caller names (the cluster's current one); unwrapping
/// uses the key id stored with the version.
pub struct LocalKms {
    /// `(id, key)` in configured order; the first is this node's configured key.
    keys: Vec<RingKey>,
}

/// One key of the ring, with its id and its check (computed once: asked before every seal).
struct RingKey {
    id: String,
    key: MasterKey,
    check: String,
}

impl LocalKms {
    /// A keyring of one key.
    pub fn new(master: MasterKey) -> Self {
        Self::keyring(vec![master]).expect("one key is a valid keyring")
    }

    /// A keyring; the first key is the configured one (what a new cluster records). Duplicate
    /// keys are dropped; an empty keyring is refused.
    pub fn keyring(keys: Vec<MasterKey>) -> Result<Self, CoreError> {
        let mut ring: Vec<RingKey> = Vec::with_capacity(keys.len());
        for key in keys {
            let id = local_key_id(&key);
            if !ring.iter().any(|r| r.id == id) {
                ring.push(RingKey { check: local_key_check(&key), id, key });
            }
        }
        if ring.is_empty() {
            return Err(CoreError::InvalidArgument("the local keyring holds no key".into()));
        }
        Ok(LocalKms { keys: ring })
    }

    fn aad(ctx: &EncryptionContext) -> Vec<u8> {
        // Name characters exclude '|' and '=', so this encoding is unambiguous.
        format!("vault-local-kms/v1|secret={}|version={}", ctx.secret, ctx.version).into_bytes()
    }

    /// A purpose key's associated data: no data key's (which starts `|secret=`) is the same.
    fn purpose_aad(purpose: KeyPurpose) -> Vec<u8> {
        format!("vault-local-kms/v1|purpose={}", purpose.as_str()).into_bytes()
    }

    fn ring_key(&self, key_id: &str) -> Option<&RingKey> {
        self.keys.iter().find(|r| r.id == key_id)
    }

    fn key(&self, key_id: &str) -> Result<&MasterKey, CoreError> {
        self.ring_key(key_id).map(|r| &r.key).ok_or_else(|| CoreError::KeyMismatch {
            stored: key_id.to_string(),
            configured: self.keys.iter().map(|r| r.id.as_str()).collect::<Vec<_>>().join(", "),
        })
    }

    fn wrap(&self, key_id: &str, dek: &DataKey, ctx: &EncryptionContext) -> Result<Vec<u8>, CoreError> {
        self.wrap_with(key_id, dek, &Self::aad(ctx))
    }

    fn wrap_with(&self, key_id: &str, dek: &DataKey, aad: &[u8]) -> Result<Vec<u8>, CoreError> {
        let master = self.key(key_id)?;
        let nonce: [u8; NONCE_LEN] = crate::random::bytes();
        let sealed = XChaCha20Poly1305::new(master.expose().into())
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: dek.expose(), aad })
            .map_err(|_| CoreError::KmsRejected("local key wrap failed".into()))?;
        let mut wrapped = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        wrapped.push(WRAP_FORMAT_V1);
        wrapped.extend_from_slice(&nonce);
        wrapped.extend_from_slice(&sealed);
        Ok(wrapped)
    }

    fn unwrap(&self, key_id: &str, wrapped: &[u8], ctx: &EncryptionContext) -> Result<DataKey, CoreError> {
        self.unwrap_with(key_id, wrapped, &Self::aad(ctx), || format!("data key of {}:{}", ctx.secret, ctx.version))
    }

    fn unwrap_with(
        &self,
        key_id: &str,
        wrapped: &[u8],
        aad: &[u8],
        what: impl FnOnce() -> String,
    ) -> Result<DataKey, CoreError> {
        let master = self.key(key_id)?;
        if wrapped.len() < 1 + NONCE_LEN || wrapped[0] != WRAP_FORMAT_V1 {
            return Err(CoreError::Malformed("wrapped data key has an unknown layout".into()));
        }
        let (nonce, body) = wrapped[1..].split_at(NONCE_LEN);
        let plain = Zeroizing::new(
            XChaCha20Poly1305::new(master.expose().into())
                .decrypt(XNonce::from_slice(nonce), Payload { msg: body, aad })
                .map_err(|_| CoreError::Authentication(what()))?,
        );
        DataKey::from_slice(&plain)
    }
}

fn digest_hex(domain: &[u8], master: &MasterKey) -> String {
    let mut h = Sha256::new();
    h.update(domain);
    h.update(master.expose());
    let digest = h.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// `local:` followed by 128 bits of a domain-separated SHA-256 of the master key: a new
/// master key shows up as a new id without revealing anything about the key.
pub fn local_key_id(master: &MasterKey) -> String {
    format!("local:{}", digest_hex(b"vault local master key id v1\0", master))
}

/// The key-check value recorded beside a local key's id: another domain-separated digest.
pub fn local_key_check(master: &MasterKey) -> String {
    digest_hex(b"vault local master key check v1\0", master)
}

#[async_trait]
impl KeyManager for LocalKms {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn key_id(&self) -> &str {
        &self.keys[0].id
    }

    fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(|r| r.id.clone()).collect()
    }

    fn holds_key(&self, key_id: &str) -> bool {
        self.ring_key(key_id).is_some()
    }

    fn key_check(&self, key_id: &str) -> Option<String> {
        self.ring_key(key_id).map(|r| r.check.clone())
    }

    fn supports_rotation(&self) -> bool {
        true
    }

    fn derive_subkey(&self, key_id: &str, purpose: &str) -> Option<DataKey> {
        let master = self.key(key_id).ok()?;
        let mut h = Sha256::new();
        h.update(b"vault local subkey v1\0");
        h.update(purpose.as_bytes());
        h.update([0]);
        h.update(master.expose());
        DataKey::from_slice(&h.finalize()).ok()
    }

    fn rotates_through_cluster(&self) -> bool {
        true
    }

    async fn generate_data_key(&self, key_id: &str, ctx: &EncryptionContext) -> Result<GeneratedDataKey, CoreError> {
        let plaintext = DataKey::fresh();
        let wrapped = self.wrap(key_id, &plaintext, ctx)?;
        Ok(GeneratedDataKey { plaintext, wrapped, key_id: key_id.to_string() })
    }

    async fn decrypt_data_key(
        &self,
        key_id: &str,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, CoreError> {
        self.unwrap(key_id, wrapped, ctx)
    }

    async fn generate_purpose_key(&self, key_id: &str, purpose: KeyPurpose) -> Result<GeneratedDataKey, CoreError> {
        let plaintext = DataKey::generate();
        let wrapped = self.wrap_with(key_id, &plaintext, &Self::purpose_aad(purpose))?;
        Ok(GeneratedDataKey { plaintext, wrapped, key_id: key_id.to_string() })
    }

    async fn decrypt_purpose_key(
        &self,
        key_id: &str,
        wrapped: &[u8],
        purpose: KeyPurpose,
    ) -> Result<DataKey, CoreError> {
        self.unwrap_with(key_id, wrapped, &Self::purpose_aad(purpose), || format!("{} key", purpose.as_str()))
    }

    /// Unwraps under the old key and wraps under the new one in this process; the data key
    /// is zeroized when dropped.
    async fn rewrap_data_key(
        &self,
        key_id: &str,
        wrapped: &[u8],
        ctx: &EncryptionContext,
        to_key_id: &str,
    ) -> Result<RewrappedDataKey, CoreError> {
        let dek = self.unwrap(key_id, wrapped, ctx)?;
        Ok(RewrappedDataKey { wrapped: self.wrap(to_key_id, &dek, ctx)?, key_id: to_key_id.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretName;

    fn ctx(name: &str, v: u64) -> EncryptionContext {
        EncryptionContext::new(&SecretName::parse(name).unwrap(), v)
    }

    #[tokio::test]
    async fn wrap_unwrap_round_trip_and_context_binding() {
        let kms = LocalKms::new(MasterKey::generate());
        let g = kms.generate_data_key(kms.key_id(), &ctx("a/b", 1)).await.unwrap();
        let back = kms.decrypt_data_key(&g.key_id, &g.wrapped, &ctx("a/b", 1)).await.unwrap();
        assert_eq!(back.expose(), g.plaintext.expose());
        assert!(kms.decrypt_data_key(&g.key_id, &g.wrapped, &ctx("a/b", 2)).await.is_err());
        assert!(kms.decrypt_data_key(&g.key_id, &g.wrapped, &ctx("a/c", 1)).await.is_err());
    }

    #[tokio::test]
    async fn other_master_key_is_a_key_mismatch() {
        let a = LocalKms::new(MasterKey::generate());
        let b = LocalKms::new(MasterKey::generate());
        assert_ne!(a.key_id(), b.key_id());
        assert!(a.key_id().starts_with("local:") && a.key_id().len() == 6 + 32);
        let g = a.generate_data_key(a.key_id(), &ctx("x", 1)).await.unwrap();
        let e = b.decrypt_data_key(&g.key_id, &g.wrapped, &ctx("x", 1)).await.unwrap_err();
        assert!(matches!(e, CoreError::KeyMismatch { .. }), "{e}");
        // Even when the id is forged to match, authentication fails.
        let e = b.decrypt_data_key(b.key_id(), &g.wrapped, &ctx("x", 1)).await.unwrap_err();
        assert!(matches!(e, CoreError::Authentication(_)), "{e}");
    }

    #[tokio::test]
    async fn keyring_wraps_under_the_named_key_and_rewraps_between_keys() {
        let (k1, k2) = (MasterKey::generate(), MasterKey::generate());
        let (id1, id2) = (local_key_id(&k1), local_key_id(&k2));
        let only_k1 = LocalKms::new(MasterKey::from_slice(k1.expose()).unwrap());
        let ring = LocalKms::keyring(vec![k2, k1]).unwrap();
        assert_eq!(ring.key_id(), id2, "the first entry is the configured key");
        assert_eq!(ring.key_ids(), vec![id2.clone(), id1.clone()]);
        assert_ne!(ring.key_check(&id1), ring.key_check(&id2));
        let g = only_k1.generate_data_key(&id1, &ctx("a", 1)).await.unwrap();
        assert_eq!(g.key_id, id1);
        let moved = ring.rewrap_data_key(&id1, &g.wrapped, &ctx("a", 1), &id2).await.unwrap();
        assert_eq!(moved.key_id, id2);
        let back = ring.decrypt_data_key(&id2, &moved.wrapped, &ctx("a", 1)).await.unwrap();
        assert_eq!(back.expose(), g.plaintext.expose());
        let e = only_k1.decrypt_data_key(&id2, &moved.wrapped, &ctx("a", 1)).await.unwrap_err();
        assert!(matches!(&e, CoreError::KeyMismatch { stored, .. } if *stored == id2), "{e}");
        assert!(only_k1.generate_data_key(&id2, &ctx("a", 2)).await.is_err(), "never seals under a key it lacks");
        assert!(LocalKms::keyring(vec![]).is_err());
    }

    /// A purpose key and a secret's data key never pass for each other, and a purpose key
    /// unwraps only under the master key that wrapped it.
    #[tokio::test]
    async fn purpose_keys_are_bound_to_their_purpose_and_master_key() {
        let kms = LocalKms::new(MasterKey::generate());
        let other = LocalKms::new(MasterKey::generate());
        let p = kms.generate_purpose_key(kms.key_id(), KeyPurpose::BackupMac).await.unwrap();
        let back = kms.decrypt_purpose_key(&p.key_id, &p.wrapped, KeyPurpose::BackupMac).await.unwrap();
        assert_eq!(back.expose(), p.plaintext.expose());
        assert!(kms.decrypt_data_key(&p.key_id, &p.wrapped, &ctx("backup-mac", 0)).await.is_err());
        let d = kms.generate_data_key(kms.key_id(), &ctx("a", 1)).await.unwrap();
        let e = kms.decrypt_purpose_key(&d.key_id, &d.wrapped, KeyPurpose::BackupMac).await.unwrap_err();
        assert!(matches!(e, CoreError::Authentication(_)), "{e}");
        let e = other.decrypt_purpose_key(other.key_id(), &p.wrapped, KeyPurpose::BackupMac).await.unwrap_err();
        assert!(matches!(e, CoreError::Authentication(_)), "{e}");
    }

    #[test]
    fn key_id_is_stable_for_the_same_master() {
        let m1 = MasterKey::from_slice(&[9u8; 32]).unwrap();
        let m2 = MasterKey::from_slice(&[9u8; 32]).unwrap();
        assert_eq!(local_key_id(&m1), local_key_id(&m2));
    }
}
