use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch. Timestamps in commands are taken by the proposing node
/// so that every replica applies the same value.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
