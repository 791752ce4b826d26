//! The disk watcher: keeps a margin of free space in the data directory's file system so
//! that RocksDB and the Raft log never meet `ENOSPC` from this node's own writes.
//!
//! Every [`WATCH_EVERY`] it reads the file system's free space (`statvfs`). Below the limit
//! (`VAULT_DISK_MIN_FREE_MB`, or `VAULT_DISK_MIN_FREE_PERCENT` of the file system when that is
//! more) the node refuses new writes with `RESOURCE_EXHAUSTED` "disk nearly full: N bytes
//! free, limit M" (see `vault_raft::room`), says so in `/readyz` and `vaultctl status`, and
//! keeps serving reads, whose audit records are small; once space is back above the limit it
//! takes writes again by itself. One log line when it starts refusing, one when it stops.
//!
//! The margin must cover what arrives between two looks (a burst of writes, a memtable flush,
//! a compaction's output): the default is the larger of 512 MiB and 2% of the file system.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use vault_raft::room::Room;

/// How often free space is read.
pub const WATCH_EVERY: Duration = Duration::from_millis(250);

/// The free-space limit under which writes are refused.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiskLimit {
    pub min_free_bytes: u64,
    /// Percent of the file system's size (0 to 50).
    pub min_free_percent: f64,
}

impl DiskLimit {
    /// The limit in bytes on a file system of `total` bytes.
    pub fn bytes(&self, total: u64) -> u64 {
        let share = (total as f64 * self.min_free_percent / 100.0) as u64;
        self.min_free_bytes.max(share)
    }
}

/// Free and total bytes of the file system holding `dir`, as an unprivileged process may use
/// them.
fn space(dir: &std::path::Path) -> std::io::Result<(u64, u64)> {
    let s = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    let frag = s.fragment_size() as u64;
    Ok((s.blocks_available() as u64 * frag, s.blocks() as u64 * frag))
}

/// What one look decides: `Some(why)` to refuse writes.
pub fn verdict(free: u64, total: u64, limit: &DiskLimit) -> Option<String> {
    let min = limit.bytes(total);
    (free < min).then(|| format!("disk nearly full: {free} bytes free, limit {min}"))
}

/// Watches `dir` until `stop`, setting `room`.
pub async fn watch(dir: PathBuf, limit: DiskLimit, room: Room, stop: CancellationToken) {
    let mut refusing = false;
    loop {
        let dir2 = dir.clone();
        match tokio::task::spawn_blocking(move || space(&dir2)).await {
            Ok(Ok((free, total))) => {
                metrics::gauge!("vault_disk_free_bytes").set(free as f64);
                metrics::gauge!("vault_disk_free_limit_bytes").set(limit.bytes(total) as f64);
                let why = verdict(free, total, &limit);
                match (&why, refusing) {
                    (Some(why), false) => {
                        tracing::warn!(dir = %dir.display(), "{why}: refusing writes until there is room")
                    }
                    (None, true) => tracing::info!(dir = %dir.display(), free, "disk has room again: taking writes"),
                    _ => {}
                }
                refusing = why.is_some();
                metrics::gauge!("vault_disk_writes_refused").set(if refusing { 1.0 } else { 0.0 });
                room.set_full(why);
            }
            // Not knowing is not a reason to refuse: the storage itself still fails safe.
            Ok(Err(e)) => tracing::debug!(error = %e, "statvfs of the data directory failed"),
            Err(e) => tracing::debug!(error = %e, "disk watch task failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(WATCH_EVERY) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_the_larger_of_bytes_and_share() {
        let l = DiskLimit { min_free_bytes: 100, min_free_percent: 2.0 };
        assert_eq!(l.bytes(1_000), 100);
        assert_eq!(l.bytes(100_000), 2_000);
        assert_eq!(verdict(99, 1_000, &l).as_deref(), Some("disk nearly full: 99 bytes free, limit 100"));
        assert_eq!(verdict(100, 1_000, &l), None);
        assert!(verdict(1_999, 100_000, &l).is_some());
    }

    #[test]
    fn the_data_directory_has_a_size() {
        let dir = std::env::temp_dir();
        let (free, total) = space(&dir).expect("statvfs");
        assert!(total > 0 && free <= total);
    }
}
