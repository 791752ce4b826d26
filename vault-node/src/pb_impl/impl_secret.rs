use vault_core::envelope::fingerprint;
use vault_core::model::{RotationPolicy, SecretMeta, VersionRecord};

use crate::pb;

impl From<&VersionRecord> for pb::VersionInfo {
    fn from(r: &VersionRecord) -> Self {
        pb::VersionInfo {
            version: r.version,
            state: r.state.label().to_string(),
            created_at_ms: r.created_at_ms,
            key_id: r.sealed.as_ref().map(|s| s.key_id.clone()).unwrap_or_default(),
            rewrap_watermark_ms: r.rewrap_watermark_ms,
            ciphertext_sha256: r.sealed.as_ref().map(|s| fingerprint(&s.ciphertext)).unwrap_or_default(),
            wrapped_dek_sha256: r.sealed.as_ref().map(|s| fingerprint(&s.wrapped_dek)).unwrap_or_default(),
        }
    }
}

impl pb::SecretSummary {
    pub fn from_meta(name: String, m: &SecretMeta) -> Self {
        pb::SecretSummary {
            name,
            current_version: m.current_version,
            max_versions: m.max_versions,
            created_at_ms: m.created_at_ms,
            updated_at_ms: m.updated_at_ms,
        }
    }
}

impl pb::RotationInfo {
    pub fn from_policy(name: String, p: &RotationPolicy) -> Self {
        pb::RotationInfo {
            name,
            every_secs: p.every_ms / 1000,
            generator: p.generator.to_string(),
            next_due_ms: p.next_due_ms,
            last_rotated_ms: p.last_rotated_ms.unwrap_or(0),
            last_attempt_ms: p.last_attempt_ms.unwrap_or(0),
            failures: p.failures,
            last_error: p.last_error.clone().unwrap_or_default(),
        }
    }
}
