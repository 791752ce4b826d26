use serde::{Deserialize, Serialize};

use crate::envelope::SealedValue;
use crate::CoreError;

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

impl SecretMeta {
    /// The bounds every stored meta keeps: `max_versions` in 1..=[`MAX_MAX_VERSIONS`], versions
    /// numbered from 1, `oldest_version` at most one past `current_version` (no versions
    /// kept), and room for one more version number. The prune loop and every range over a
    /// secret's versions rely on them; a meta from outside (a backup) must pass before it is
    /// installed.
    pub fn check(&self) -> Result<(), CoreError> {
        let bad = |m: String| Err(CoreError::InvalidArgument(m));
        if !(1..=MAX_MAX_VERSIONS).contains(&self.max_versions) {
            return bad(format!("max_versions {} is outside 1..={MAX_MAX_VERSIONS}", self.max_versions));
        }
        if self.oldest_version == 0 {
            return bad("oldest_version 0: versions are numbered from 1".into());
        }
        let Some(next) = self.current_version.checked_add(1) else {
            return bad(format!("current_version {} leaves no next version number", self.current_version));
        };
        if self.oldest_version > next {
            return bad(format!(
                "oldest_version {} is above current_version {} + 1",
                self.oldest_version, self.current_version
            ));
        }
        Ok(())
    }
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

/// A [`VersionRecord`] to be written, borrowing its sealed value: it encodes to the same bytes
/// (the same fields in the same order; serde writes a reference as what it points to), so the
/// apply of a put does not copy the ciphertext and wrapped DEK just to encode them.
#[derive(Serialize)]
pub struct NewVersionRecord<'a> {
    pub version: u64,
    pub sealed: Option<&'a SealedValue>,
    pub created_at_ms: u64,
    pub state: VersionState,
    pub rewrap_watermark_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(current_version: u64, oldest_version: u64, max_versions: u32) -> SecretMeta {
        SecretMeta { current_version, oldest_version, max_versions, created_at_ms: 1, updated_at_ms: 1 }
    }

    #[test]
    fn meta_bounds_are_checked() {
        for ok in [meta(0, 1, 10), meta(5, 1, 10), meta(5, 6, 1), meta(5, 5, MAX_MAX_VERSIONS)] {
            assert!(ok.check().is_ok(), "{ok:?}");
        }
        for (bad, says) in [
            (meta(5, 1, 0), "max_versions 0"),
            (meta(5, 1, MAX_MAX_VERSIONS + 1), "max_versions 1001"),
            (meta(5, 0, 10), "oldest_version 0"),
            (meta(5, 7, 10), "oldest_version 7 is above current_version 5 + 1"),
            (meta(u64::MAX, 1, 10), "no next version"),
        ] {
            let e = bad.check().unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_new_version_record_encodes_as_the_owned_record_does() {
        let sealed = SealedValue {
            key_id: "local:k1".into(),
            wrapped_dek: (0..72).collect(),
            nonce: vec![7; 24],
            ciphertext: (0..300u32).map(|i| (i % 251) as u8).collect(),
        };
        for (sealed, state) in [
            (Some(&sealed), VersionState::Live),
            (None, VersionState::Destroyed { at_ms: 9 }),
            (Some(&sealed), VersionState::Deleted { at_ms: 3 }),
        ] {
            let new = NewVersionRecord { version: 42, sealed, created_at_ms: 5, state, rewrap_watermark_ms: 77 };
            let owned = VersionRecord {
                version: 42,
                sealed: sealed.cloned(),
                created_at_ms: 5,
                state,
                rewrap_watermark_ms: 77,
            };
            let new_bytes = postcard::to_stdvec(&new).unwrap();
            assert_eq!(new_bytes, postcard::to_stdvec(&owned).unwrap());
            assert_eq!(postcard::from_bytes::<VersionRecord>(&new_bytes).unwrap(), owned);
        }
    }
}
