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
    let mut out = vec![FORMAT_V1];
    postcard::to_io(value, &mut out).map_err(|e| StoreError::Codec(e.to_string()))?;
    Ok(out)
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
}
