//! The local key manager: data keys are random and wrapped with XChaCha20-Poly1305 under a
//! master key held in memory.

use async_trait::async_trait;
use chacha20poly1305::aead::{rand_core::RngCore, Aead, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::keys::{DataKey, MasterKey};
use crate::kms::{EncryptionContext, GeneratedDataKey, KeyManager};
use crate::CoreError;

/// Format byte in front of every wrapped key, so the layout can change later.
const WRAP_FORMAT_V1: u8 = 1;
const NONCE_LEN: usize = 24;

pub struct LocalKms {
    master: MasterKey,
    key_id: String,
}

impl LocalKms {
    pub fn new(master: MasterKey) -> Self {
        let key_id = local_key_id(&master);
        LocalKms { master, key_id }
    }

    fn aad(ctx: &EncryptionContext) -> Vec<u8> {
        // Name characters exclude '|' and '=', so this encoding is unambiguous.
        format!("vault-local-kms/v1|secret={}|version={}", ctx.secret, ctx.version).into_bytes()
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.master.expose().into())
    }
}

/// `local:` followed by 128 bits of a domain-separated SHA-256 of the master key: a new
/// master key shows up as a new id without revealing anything about the key.
pub fn local_key_id(master: &MasterKey) -> String {
    let mut h = Sha256::new();
    h.update(b"vault local master key id v1\0");
    h.update(master.expose());
    let digest = h.finalize();
    let mut id = String::from("local:");
    for b in &digest[..16] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

#[async_trait]
impl KeyManager for LocalKms {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn key_id(&self) -> &str {
        &self.key_id
    }

    async fn generate_data_key(&self, ctx: &EncryptionContext) -> Result<GeneratedDataKey, CoreError> {
        let plaintext = DataKey::generate();
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let aad = Self::aad(ctx);
        let sealed = self
            .cipher()
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext.expose(), aad: &aad })
            .map_err(|_| CoreError::KmsRejected("local key wrap failed".into()))?;
        let mut wrapped = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        wrapped.push(WRAP_FORMAT_V1);
        wrapped.extend_from_slice(&nonce);
        wrapped.extend_from_slice(&sealed);
        Ok(GeneratedDataKey { plaintext, wrapped, key_id: self.key_id.clone() })
    }

    async fn decrypt_data_key(
        &self,
        key_id: &str,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, CoreError> {
        if key_id != self.key_id {
            return Err(CoreError::KeyMismatch { stored: key_id.to_string(), configured: self.key_id.clone() });
        }
        if wrapped.len() < 1 + NONCE_LEN || wrapped[0] != WRAP_FORMAT_V1 {
            return Err(CoreError::Malformed("wrapped data key has an unknown layout".into()));
        }
        let (nonce, body) = wrapped[1..].split_at(NONCE_LEN);
        let aad = Self::aad(ctx);
        let plain = Zeroizing::new(
            self.cipher()
                .decrypt(XNonce::from_slice(nonce), Payload { msg: body, aad: &aad })
                .map_err(|_| CoreError::Authentication(format!("data key of {}:{}", ctx.secret, ctx.version)))?,
        );
        DataKey::from_slice(&plain)
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
        let g = kms.generate_data_key(&ctx("a/b", 1)).await.unwrap();
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
        let g = a.generate_data_key(&ctx("x", 1)).await.unwrap();
        let e = b.decrypt_data_key(&g.key_id, &g.wrapped, &ctx("x", 1)).await.unwrap_err();
        assert!(matches!(e, CoreError::KeyMismatch { .. }), "{e}");
        // Even when the id is forged to match, authentication fails.
        let e = b.decrypt_data_key(b.key_id(), &g.wrapped, &ctx("x", 1)).await.unwrap_err();
        assert!(matches!(e, CoreError::Authentication(_)), "{e}");
    }

    #[test]
    fn key_id_is_stable_for_the_same_master() {
        let m1 = MasterKey::from_slice(&[9u8; 32]).unwrap();
        let m2 = MasterKey::from_slice(&[9u8; 32]).unwrap();
        assert_eq!(local_key_id(&m1), local_key_id(&m2));
    }
}
