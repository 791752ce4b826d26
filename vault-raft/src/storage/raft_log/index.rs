//! The log in memory: where each live entry is, the vote, the purge point, and which segments
//! hold what. Built by recovery from the records, then kept by the store in step with what it
//! writes; reading the log state or the vote never touches the disk.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::typ::{LogId, Vote};

/// Where one entry's record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    pub log_id: LogId,
    pub seg: u64,
    pub off: u64,
    pub len: u32,
}

/// The log's state when a segment is created: its first record, so that the segments before it
/// can be unlinked without losing the vote or the purge point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub vote: Option<Vote>,
    pub last_purged: Option<LogId>,
    /// One past the last entry of the log then.
    pub next_index: u64,
}

#[derive(Default, Debug)]
pub struct Index {
    locs: VecDeque<Loc>,
    vote: Option<Vote>,
    last_purged: Option<LogId>,
    /// Every segment on disk, with the highest entry index ever written to it (if any).
    segments: BTreeMap<u64, Option<u64>>,
}

impl Index {
    pub fn vote(&self) -> Option<Vote> {
        self.vote
    }

    pub fn set_vote(&mut self, vote: Vote) {
        self.vote = Some(vote);
    }

    pub fn last_purged(&self) -> Option<LogId> {
        self.last_purged
    }

    /// The last entry, or the last purged one when the log is empty.
    pub fn last_log_id(&self) -> Option<LogId> {
        self.locs.back().map(|l| l.log_id).or(self.last_purged)
    }

    pub fn first_index(&self) -> Option<u64> {
        self.locs.front().map(|l| l.log_id.index)
    }

    /// Where the next entry goes.
    pub fn next_index(&self) -> u64 {
        self.last_log_id().map_or(0, |id| id.index + 1)
    }

    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint { vote: self.vote, last_purged: self.last_purged, next_index: self.next_index() }
    }

    /// Replays a checkpoint: the state it names, and no entry at or after its end.
    pub fn apply_checkpoint(&mut self, cp: &Checkpoint) {
        if let Some(v) = cp.vote {
            self.vote = Some(v);
        }
        if let Some(p) = cp.last_purged {
            self.purge(p);
        }
        self.truncate(cp.next_index);
    }

    pub fn add_segment(&mut self, seq: u64) {
        self.segments.entry(seq).or_insert(None);
    }

    /// Adds an entry at the end. openraft appends the next index, after a truncate where it
    /// overwrites; its storage suite also appends below the purge point and past a hole, which
    /// the RocksDB log accepted. So the rule, here and in replay alike: an entry at or below the
    /// last one replaces the entries from its index on; one past a hole starts the log afresh.
    pub fn push(&mut self, loc: Loc) {
        let index = loc.log_id.index;
        match self.locs.back().map(|l| l.log_id.index) {
            Some(last) if index <= last => self.truncate(index),
            Some(last) if index > last + 1 => self.locs.clear(),
            _ => {}
        }
        let max = self.segments.entry(loc.seg).or_insert(None);
        *max = Some(max.map_or(index, |m| m.max(index)));
        self.locs.push_back(loc);
    }

    /// Drops the entries at or after `index`.
    pub fn truncate(&mut self, index: u64) {
        while self.locs.back().is_some_and(|l| l.log_id.index >= index) {
            self.locs.pop_back();
        }
    }

    /// Drops the entries up to `log_id` and remembers it (the purge point only grows).
    pub fn purge(&mut self, log_id: LogId) {
        if self.last_purged.is_none_or(|p| p.index < log_id.index) {
            self.last_purged = Some(log_id);
        }
        while self.locs.front().is_some_and(|l| l.log_id.index <= log_id.index) {
            self.locs.pop_front();
        }
    }

    /// Where entries `start..=end` are (fewer if the log holds fewer).
    pub fn locate(&self, start: u64, end: u64) -> Vec<Loc> {
        let Some(first) = self.first_index() else { return Vec::new() };
        let from = start.max(first);
        let Some(to) = self.locs.back().map(|l| end.min(l.log_id.index)) else { return Vec::new() };
        if to < from {
            return Vec::new();
        }
        self.locs.range((from - first) as usize..=(to - first) as usize).copied().collect()
    }

    /// The oldest segments, before `active`, that hold nothing the log still needs: every entry
    /// they hold is purged (a later segment's checkpoint carries their vote and purge point).
    /// Only a prefix: a later segment whose truncate record cut an earlier one's entries must
    /// not go first.
    pub fn unneeded_segments(&self, active: u64) -> Vec<u64> {
        let purged = self.last_purged.map(|p| p.index);
        self.segments
            .iter()
            .take_while(|(seq, max)| **seq < active && max.is_none_or(|m| purged.is_some_and(|p| m <= p)))
            .map(|(seq, _)| *seq)
            .collect()
    }

    pub fn remove_segment(&mut self, seq: u64) {
        self.segments.remove(&seq);
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn loc(seg: u64, index: u64) -> Loc {
        Loc { log_id: id(index), seg, off: index * 10, len: 10 }
    }

    #[test]
    fn entries_stay_contiguous_through_truncate_and_purge() {
        let mut ix = Index::default();
        for i in 0..10 {
            ix.push(loc(1, i));
        }
        ix.truncate(6);
        assert_eq!(ix.last_log_id(), Some(id(5)));
        ix.push(loc(2, 6));
        ix.purge(id(3));
        assert_eq!(ix.locate(0, 100).iter().map(|l| l.log_id.index).collect::<Vec<_>>(), vec![4, 5, 6]);
        assert_eq!(ix.locate(5, 5), vec![loc(1, 5)]);
        assert!(ix.locate(7, 9).is_empty());
        // Purge past the end: empty, and the purge point is the last log id.
        ix.purge(id(20));
        assert_eq!((ix.first_index(), ix.last_log_id(), ix.next_index()), (None, Some(id(20)), 21));
        ix.push(loc(3, 21));
        ix.purge(id(2));
        assert_eq!(ix.last_purged(), Some(id(20)), "the purge point never goes back");
    }

    #[test]
    fn an_entry_out_of_order_replaces_the_tail_or_starts_afresh() {
        let mut ix = Index::default();
        for i in 0..10 {
            ix.push(loc(1, i));
        }
        ix.push(loc(2, 7));
        assert_eq!((ix.first_index(), ix.last_log_id()), (Some(0), Some(id(7))));
        assert_eq!(ix.locate(7, 7), vec![loc(2, 7)], "the newer record wins");
        ix.push(loc(2, 12));
        assert_eq!((ix.first_index(), ix.last_log_id()), (Some(12), Some(id(12))), "past a hole");
        // Below the purge point (only the storage suite does it): kept until the next purge.
        ix.purge(id(20));
        ix.push(loc(3, 15));
        assert_eq!((ix.last_purged(), ix.last_log_id()), (Some(id(20)), Some(id(15))));
        ix.purge(id(20));
        assert_eq!(ix.last_log_id(), Some(id(20)));
    }

    #[test]
    fn only_a_purged_prefix_of_segments_is_unneeded() {
        let mut ix = Index::default();
        ix.add_segment(1);
        for i in 0..5 {
            ix.push(loc(1, i));
        }
        ix.truncate(2);
        ix.push(loc(2, 2));
        ix.add_segment(3);
        ix.add_segment(4);
        assert!(ix.unneeded_segments(4).is_empty(), "nothing purged");
        ix.purge(id(2));
        // Segment 1 held up to 4 (cut by segment 2's truncate): it stays while 3 and 4 are not purged.
        assert!(ix.unneeded_segments(4).is_empty());
        ix.purge(id(4));
        assert_eq!(ix.unneeded_segments(4), vec![1, 2, 3], "segment 3 holds no entries; 4 is active");
    }

    #[test]
    fn a_checkpoint_restores_vote_and_purge_point_and_cuts_later_entries() {
        let mut ix = Index::default();
        for i in 0..10 {
            ix.push(loc(1, i));
        }
        ix.set_vote(Vote::new(2, 1));
        let cp = Checkpoint { vote: Some(Vote::new(3, 2)), last_purged: Some(id(2)), next_index: 7 };
        ix.apply_checkpoint(&cp);
        assert_eq!(ix.checkpoint(), cp);
        assert_eq!(ix.first_index(), Some(3));
    }
}
