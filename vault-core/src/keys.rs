//! Key material newtypes. Each zeroizes on drop, validates its length on construction and
//! prints `[REDACTED]` in `Debug`. Bytes are exposed only at the point of use.

use std::fmt;

use base64::Engine;
use chacha20poly1305::aead::{rand_core::RngCore, OsRng};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::CoreError;

/// `n` bytes from the operating system's CSPRNG, zeroized on drop (generated secret values).
pub fn os_random(n: usize) -> Zeroizing<Vec<u8>> {
    let mut bytes = Zeroizing::new(vec![0u8; n]);
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// Length of every symmetric key handled here: 256 bits.
pub const KEY_LEN: usize = 32;

macro_rules! key_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Zeroize, ZeroizeOnDrop)]
        pub struct $name([u8; KEY_LEN]);

        impl $name {
            /// A fresh key from the operating system's CSPRNG.
            pub fn generate() -> Self {
                let mut k = [0u8; KEY_LEN];
                OsRng.fill_bytes(&mut k);
                $name(k)
            }

            /// Takes exactly 32 bytes; anything else is rejected.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, CoreError> {
                let arr: [u8; KEY_LEN] = bytes.try_into().map_err(|_| {
                    CoreError::InvalidArgument(format!(
                        "{} must be {KEY_LEN} bytes, got {}",
                        stringify!($name),
                        bytes.len()
                    ))
                })?;
                Ok($name(arr))
            }

            pub fn expose(&self) -> &[u8; KEY_LEN] {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([REDACTED])"))
            }
        }
    };
}

key_newtype!(
    /// A per-version data encryption key.
    DataKey
);

impl DataKey {
    /// A fresh data key from this thread's key generator ([`crate::random`]), which the
    /// operating system seeds: one per secret version written, without a system call each.
    pub fn fresh() -> Self {
        DataKey(crate::random::bytes())
    }
}

key_newtype!(
    /// The local KMS master key (dev and single-operator deployments).
    MasterKey
);

key_newtype!(
    /// The key of a node's audit hash chain (HMAC-SHA256).
    AuditMacKey
);

impl AuditMacKey {
    /// `audit:` and 64 bits of a domain-separated SHA-256 of the key: names the key in
    /// records without revealing it.
    pub fn id(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"vault audit key id v1\0");
        h.update(self.0);
        let d = h.finalize();
        format!("audit:{}", d[..8].iter().map(|b| format!("{b:02x}")).collect::<String>())
    }
}

impl MasterKey {
    /// Parses the `VAULT_LOCAL_MASTER_KEY` format: standard base64 of exactly 32 bytes.
    pub fn from_base64(encoded: &str) -> Result<Self, CoreError> {
        let decoded =
            Zeroizing::new(base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| {
                CoreError::InvalidArgument("local master key is not valid base64 (expected base64 of 32 bytes)".into())
            })?);
        MasterKey::from_slice(&decoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let k = DataKey::generate();
        assert_eq!(format!("{k:?}"), "DataKey([REDACTED])");
        let m = MasterKey::generate();
        assert_eq!(format!("{m:?}"), "MasterKey([REDACTED])");
    }

    #[test]
    fn master_key_from_base64_checks_length() {
        let good = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(MasterKey::from_base64(&good).unwrap().expose(), &[7u8; 32]);
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        let e = MasterKey::from_base64(&short).unwrap_err().to_string();
        assert!(e.contains("32 bytes, got 16"), "{e}");
        assert!(MasterKey::from_base64("not base64!").is_err());
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(DataKey::generate().expose(), DataKey::generate().expose());
    }
}
