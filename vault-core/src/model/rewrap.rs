use serde::{Deserialize, Serialize};

/// Cluster-wide progress of DEK re-wrapping after master key rotations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewrapState {
    /// Rotation date (ms) that every version's DEK is known to be wrapped at or after. `None`
    /// until the worker first runs; then adopted from ListKeyRotations without a sweep.
    pub watermark_ms: Option<u64>,
}
