//! What a node keeps on disk: the Raft log (segment files, or RocksDB for a node held below
//! feature level 5, behind [`node_log::NodeLog`]) and the state machine's WAL upkeep; the
//! RocksDB stores join them as they are touched (STYLE: `vault-raft/src` in folders by role).

pub mod node_log;
pub mod raft_log;
pub mod state_wal;

/// The indexes `range` asks a log reader for, as `(first, last)` inclusive (`last` is
/// `u64::MAX` for an open end); `None` when it holds none.
pub(crate) fn index_bounds(range: &impl std::ops::RangeBounds<u64>) -> Option<(u64, u64)> {
    use std::ops::Bound;
    let start = match range.start_bound() {
        Bound::Included(s) => *s,
        Bound::Excluded(s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(e) => *e,
        Bound::Excluded(0) => return None,
        Bound::Excluded(e) => e - 1,
        Bound::Unbounded => u64::MAX,
    };
    Some((start, end))
}
