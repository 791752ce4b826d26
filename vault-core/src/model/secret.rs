use serde::{Deserialize, Serialize};

use crate::envelope::SealedValue;

pub const DEFAULT_MAX_VERSIONS: u32 = 10;
pub const MAX_MAX_VERSIONS: u32 = 1000;

/// Per-secret metadata. `current_version` is the highest version ever written; versions only
/// grow while the secret exists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretMeta {
    pub current_version: u64,
    /// Lowest version still stored; older ones were purged by `max_versions`.
    pub oldest_version: u64,
    pub max_versions: u32,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VersionState {
    Live,
    /// Soft-deleted: ciphertext kept, not served, can be undeleted.
    Deleted {
        at_ms: u64,
    },
    /// Ciphertext and wrapped DEK purged for good; only the tombstone remains.
    Destroyed {
        at_ms: u64,
    },
}

impl VersionState {
    pub fn label(&self) -> &'static str {
        match self {
            VersionState::Live => "live",
            VersionState::Deleted { .. } => "deleted",
            VersionState::Destroyed { .. } => "destroyed",
        }
    }
}

/// One version of a secret as stored: ciphertext and wrapped DEK only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub version: u64,
    /// `None` once destroyed.
    pub sealed: Option<SealedValue>,
    pub created_at_ms: u64,
    pub state: VersionState,
    /// Rotation date (ms) of the KMS key material this version's DEK is wrapped under, as far
    /// as the re-wrap worker knows; 0 when never re-wrapped.
    pub rewrap_watermark_ms: u64,
}
