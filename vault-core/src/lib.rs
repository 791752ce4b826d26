//! Cryptography, envelope sealing, key managers and the domain types of the vault.
//!
//! Nothing in this crate knows about Raft, RocksDB, gRPC or any cloud SDK.

pub mod addr_bucket;
pub mod byte_buf;
pub mod dek_cache;
pub mod envelope;
pub mod error;
pub mod keys;
pub mod kms;
pub mod local_kms;
pub mod model;
pub mod name;
pub mod random;
pub mod secret_bytes;
pub mod time;
pub mod token;

pub use error::CoreError;
pub use name::SecretName;
pub use secret_bytes::SecretBytes;
