//! The newest entries of the log, in memory: replication reads back what was just appended, on
//! every message to every follower, and finds it here without a read or a decode.
//!
//! Bounded by count and by bytes. Contiguous by index and ending at the log's last entry; the
//! log changes it where it changes itself (append, truncate, purge), in the same order, so a
//! hit is what the log holds. A read below the cached tail misses and goes to the files.

use std::collections::VecDeque;

use crate::typ::Entry;

/// Bounds on the in-memory tail of the log.
pub(crate) const RECENT_MAX_ENTRIES: usize = 4096;
pub(crate) const RECENT_MAX_BYTES: usize = 32 << 20;

/// The newest appended entries, contiguous by index, ending at the last entry of the log.
/// Changed only where the log itself changes (append, truncate, purge), in the same order.
#[derive(Default)]
pub(crate) struct Recent {
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl Recent {
    pub(crate) fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    pub(crate) fn push(&mut self, entry: Entry, size: usize) {
        let next = self.entries.back().map(|(e, _)| e.log_id.index + 1);
        if next.is_some_and(|n| n != entry.log_id.index) {
            self.entries.clear();
            self.bytes = 0;
        }
        self.bytes += size;
        self.entries.push_back((entry, size));
        while self.entries.len() > RECENT_MAX_ENTRIES || self.bytes > RECENT_MAX_BYTES {
            match self.entries.pop_front() {
                Some((_, s)) => self.bytes -= s,
                None => break,
            }
        }
    }

    /// Drops entries at or after `index`.
    pub(crate) fn truncate(&mut self, index: u64) {
        while self.entries.back().is_some_and(|(e, _)| e.log_id.index >= index) {
            if let Some((_, s)) = self.entries.pop_back() {
                self.bytes -= s;
            }
        }
    }

    /// Drops entries at or before `index`.
    pub(crate) fn purge(&mut self, index: u64) {
        while self.entries.front().is_some_and(|(e, _)| e.log_id.index <= index) {
            if let Some((_, s)) = self.entries.pop_front() {
                self.bytes -= s;
            }
        }
    }

    /// Entries `start..=end` (to the end of the log when `end` is `None`), if all are here.
    pub(crate) fn get(&self, start: u64, end: Option<u64>) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        if start < first {
            return None;
        }
        let last = self.entries.back().map(|(e, _)| e.log_id.index)?;
        let end = end.map_or(last, |e| e.min(last));
        if end < start {
            // Past the end of the log: nothing there, as RocksDB would say.
            return Some(Vec::new());
        }
        let from = (start - first) as usize;
        let to = (end - first) as usize;
        Some(self.entries.range(from..=to).map(|(e, _)| e.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;
    use crate::typ::LogId;

    fn entry(index: u64) -> Entry {
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Blank }
    }

    fn indexes(v: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        v.map(|es| es.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn recent_tail_stays_contiguous_and_bounded() {
        let mut r = Recent::default();
        for i in 5..10 {
            r.push(entry(i), 10);
        }
        assert_eq!(indexes(r.get(6, Some(8))), Some(vec![6, 7, 8]));
        assert_eq!(indexes(r.get(8, None)), Some(vec![8, 9]));
        assert_eq!(indexes(r.get(4, Some(6))), None, "below the cached tail goes to the files");
        assert_eq!(indexes(r.get(12, None)), Some(vec![]));
        r.truncate(8);
        assert_eq!(indexes(r.get(5, None)), Some(vec![5, 6, 7]));
        r.purge(5);
        assert_eq!(r.first_index(), Some(6));
        // A gap (never made by Raft, but possible after a snapshot) restarts the tail.
        r.push(entry(20), 10);
        assert_eq!(r.first_index(), Some(20));
        assert_eq!(r.bytes, 10);
        for i in 21..(21 + RECENT_MAX_ENTRIES as u64) {
            r.push(entry(i), 1);
        }
        assert_eq!(r.entries.len(), RECENT_MAX_ENTRIES);
        assert_eq!(r.first_index(), Some(21));
        r.push(entry(21 + RECENT_MAX_ENTRIES as u64), RECENT_MAX_BYTES);
        assert_eq!(r.entries.len(), 1, "the byte bound drops the oldest entries first");
    }
}
