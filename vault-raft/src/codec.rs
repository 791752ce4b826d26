//! Versioned binary encoding of everything written to RocksDB and snapshot files.
//!
//! Every value is one format byte followed by a postcard body. Decoding dispatches on the
//! format byte; a future format adds a variant here and upgrades old values as it reads them,
//! so an existing data directory keeps working after an upgrade.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::StoreError;

/// Current on-disk format.
pub const FORMAT_V1: u8 = 1;

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    // Measured first (a pass that allocates nothing; byte fields count by their length), so
    // the value is written into one allocation of its size, not a buffer grown by doubling
    // (a reallocation and a copy per doubling: a 100 KB replication message took about 17).
    let size = postcard::serialize_with_flavor::<T, _, _>(value, postcard::ser_flavors::Size::default())
        .map_err(|e| StoreError::Codec(e.to_string()))?;
    let mut out = Vec::with_capacity(1 + size);
    encode_into(&mut out, value)?;
    debug_assert_eq!(out.len(), 1 + size, "the measured size is the encoded size");
    Ok(out)
}

/// [`encode`], appended to `out` (so a caller can reuse one buffer for many values).
pub fn encode_into<T: Serialize>(out: &mut Vec<u8>, value: &T) -> Result<(), StoreError> {
    out.push(FORMAT_V1);
    postcard::to_io(value, out).map_err(|e| StoreError::Codec(e.to_string()))?;
    Ok(())
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT_V1, body)) => postcard::from_bytes(body).map_err(|e| StoreError::Codec(e.to_string())),
        Some((other, _)) => {
            Err(StoreError::Corrupt(format!("value has format {other}; this build reads format {FORMAT_V1}")))
        }
        None => Err(StoreError::Corrupt("empty value".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unknown_format() {
        let v = (7u64, "x".to_string(), vec![1u8, 2, 3]);
        let bytes = encode(&v).unwrap();
        assert_eq!(bytes[0], FORMAT_V1);
        assert_eq!(decode::<(u64, String, Vec<u8>)>(&bytes).unwrap(), v);
        let mut future = bytes.clone();
        future[0] = 2;
        assert!(decode::<(u64, String, Vec<u8>)>(&future).unwrap_err().to_string().contains("format 2"));
        assert!(decode::<u64>(&[]).is_err());
    }

    /// `SealedValue`'s byte fields are written in one piece (`vault_core::byte_buf`); the bytes
    /// must stay what the element-wise encoding wrote, so existing logs and tables still decode.
    #[test]
    fn sealed_value_encoding_is_unchanged_by_byte_buf() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Elementwise {
            key_id: String,
            wrapped_dek: Vec<u8>,
            nonce: Vec<u8>,
            ciphertext: Vec<u8>,
        }
        let sealed = vault_core::envelope::SealedValue {
            key_id: "local:abc".into(),
            wrapped_dek: (0..72).collect(),
            nonce: vec![9; 24],
            ciphertext: (0..300u32).map(|i| (i % 251) as u8).collect(),
        };
        let old = Elementwise {
            key_id: sealed.key_id.clone(),
            wrapped_dek: sealed.wrapped_dek.clone(),
            nonce: sealed.nonce.clone(),
            ciphertext: sealed.ciphertext.clone(),
        };
        let new_bytes = encode(&sealed).unwrap();
        assert_eq!(new_bytes, encode(&old).unwrap());
        assert_eq!(decode::<vault_core::envelope::SealedValue>(&new_bytes).unwrap(), sealed);
        // JSON (no bytes type) still round-trips through the sequence form.
        let json = serde_json::to_string(&sealed).unwrap();
        assert_eq!(serde_json::from_str::<vault_core::envelope::SealedValue>(&json).unwrap(), sealed);
    }
}
