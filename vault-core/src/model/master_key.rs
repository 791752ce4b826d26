use serde::{Deserialize, Serialize};

/// The cluster's master key, in replicated state: recorded once when the cluster starts and
/// changed only by a rotation. A node never seals under any other key, and a version sealed
/// under another key is refused when applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterKeyState {
    /// Key id (`local:<hex>` or an AWS key ARN).
    pub key_id: String,
    /// Key-check value of the key (local keys); `None` where the id itself is the check.
    pub check: Option<String>,
    /// When this key became current (ms since the epoch). For cluster-run rotations it is the
    /// re-wrap target: versions wrapped before it move onto this key.
    pub since_ms: u64,
    /// Ids of the keys that were current before this one, oldest first.
    pub previous: Vec<String>,
}

impl MasterKeyState {
    /// The newest cluster-run rotation, if the key was ever rotated.
    pub fn rotated_at_ms(&self) -> Option<u64> {
        (!self.previous.is_empty()).then_some(self.since_ms)
    }
}
