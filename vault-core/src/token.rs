//! Admin bearer tokens: 32 random bytes, base64url without padding, shown once. Only the
//! SHA-256 of a token is ever stored; comparison is constant-time.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::{rand_core::RngCore, OsRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::CoreError;

pub const TOKEN_BYTES: usize = 32;

/// A raw token as given to its holder. Redacted in `Debug`, zeroized on drop (every clone
/// too). It is serialized only to travel from a follower to the leader over the members' link
/// (see `vault_raft::transport::CallerWrite`), never to disk.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct RawToken(String);

impl Serialize for RawToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for RawToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // The decoded string moves into the token (the message it came in is the caller's to
        // drop).
        String::deserialize(d).map(RawToken)
    }
}

impl RawToken {
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; TOKEN_BYTES]);
        OsRng.fill_bytes(bytes.as_mut());
        RawToken(URL_SAFE_NO_PAD.encode(bytes.as_ref()))
    }

    /// Accepts only the canonical form: base64url (no padding) of exactly 32 bytes. Used for
    /// operator-supplied tokens such as `VAULT_BOOTSTRAP_TOKEN`, so weak tokens are refused.
    pub fn parse_strict(s: &str) -> Result<Self, CoreError> {
        let s = s.trim();
        let decoded = Zeroizing::new(URL_SAFE_NO_PAD.decode(s).map_err(|_| {
            CoreError::InvalidArgument("token must be base64url (no padding) of 32 random bytes".into())
        })?);
        if decoded.len() != TOKEN_BYTES {
            return Err(CoreError::InvalidArgument(format!(
                "token must encode {TOKEN_BYTES} random bytes, got {}",
                decoded.len()
            )));
        }
        Ok(RawToken(s.to_string()))
    }

    /// Wraps whatever a caller presented; it is only ever hashed and compared.
    pub fn presented(s: &str) -> Self {
        RawToken(s.to_string())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl fmt::Debug for RawToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawToken([REDACTED])")
    }
}

/// SHA-256 of a raw token: what the store keeps.
#[derive(Clone, Copy, Serialize, Deserialize, Hash, PartialEq, Eq)]
pub struct TokenHash(pub [u8; 32]);

impl TokenHash {
    /// Constant-time equality: the time taken does not depend on where the hashes differ.
    pub fn ct_eq(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_canonical_and_unique() {
        let a = RawToken::generate();
        let b = RawToken::generate();
        assert_eq!(a.expose().len(), 43);
        assert_ne!(a.expose(), b.expose());
        assert!(RawToken::parse_strict(a.expose()).is_ok());
        assert_eq!(format!("{a:?}"), "RawToken([REDACTED])");
    }

    #[test]
    fn strict_parse_rejects_weak_tokens() {
        assert!(RawToken::parse_strict("root").is_err());
        assert!(RawToken::parse_strict(&URL_SAFE_NO_PAD.encode([1u8; 16])).is_err());
        assert!(RawToken::parse_strict("!!!!").is_err());
    }

    #[test]
    fn hash_compare() {
        let a = RawToken::generate();
        assert!(a.hash().ct_eq(&RawToken::presented(a.expose()).hash()));
        assert!(!a.hash().ct_eq(&RawToken::generate().hash()));
    }
}
