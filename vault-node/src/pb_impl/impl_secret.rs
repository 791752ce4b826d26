use vault_core::envelope::fingerprint;
use vault_core::model::{SecretMeta, VersionRecord};

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
