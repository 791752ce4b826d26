//! The store across reopens: what the conformance suite (which never reopens) does not check.

use std::fs::OpenOptions;
use std::path::Path;

use openraft::storage::{RaftLogReader, RaftLogStorage};
use openraft::{CommittedLeaderId, EntryPayload};

use super::segment::{file_name, parse_name};
use super::{Options, SegmentLogStore};
use crate::typ::{Entry, LogId, Vote};

fn id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entries(term: u64, range: std::ops::Range<u64>) -> Vec<Entry> {
    range.map(|i| Entry { log_id: id(term, i), payload: EntryPayload::Blank }).collect()
}

/// Small segments, so a few entries cross several.
fn open(dir: &Path) -> SegmentLogStore {
    SegmentLogStore::open(dir, 1, Options { segment_bytes: 300 }).unwrap()
}

fn segments(dir: &Path) -> Vec<u64> {
    let mut v: Vec<u64> =
        std::fs::read_dir(dir).unwrap().filter_map(|e| parse_name(e.unwrap().file_name().to_str()?)).collect();
    v.sort_unstable();
    v
}

async fn ids(store: &mut SegmentLogStore, range: std::ops::RangeInclusive<u64>) -> Vec<LogId> {
    store.try_get_log_entries(range).await.unwrap().iter().map(|e| e.log_id).collect()
}

#[tokio::test]
async fn entries_vote_truncate_and_purge_survive_a_reopen_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = open(dir.path());
        for i in 0..5 {
            s.append_entries(entries(1, i * 10..i * 10 + 10)).unwrap();
        }
        s.save_vote(&Vote::new(2, 1)).await.unwrap();
        s.truncate(id(1, 40)).await.unwrap();
        s.append_entries(entries(2, 40..50)).unwrap();
        s.append_entries(entries(2, 50..60)).unwrap();
        assert!(segments(dir.path()).len() > 3, "small segments: {:?}", segments(dir.path()));
        s.purge(id(1, 30)).await.unwrap();
        s.synced().wait_synced(59).await.unwrap();
    }
    let first_seg = segments(dir.path())[0];
    assert!(first_seg > 1, "segments holding only purged entries are unlinked");
    let mut s = open(dir.path());
    let state = s.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(id(1, 30)), Some(id(2, 59))));
    assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(2, 1)), "the vote survives its segment's unlink");
    let want: Vec<LogId> = (31..40).map(|i| id(1, i)).chain((40..60).map(|i| id(2, i))).collect();
    assert_eq!(ids(&mut s, 0..=100).await, want);
    assert_eq!(ids(&mut s, 39..=40).await, vec![id(1, 39), id(2, 40)]);
}

#[tokio::test]
async fn purge_past_the_end_then_append_after_it_then_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut s = open(dir.path());
        s.append_entries(entries(1, 0..10)).unwrap();
        s.purge(id(3, 20)).await.unwrap();
        let state = s.get_log_state().await.unwrap();
        assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(id(3, 20)), Some(id(3, 20))));
        s.append_entries(entries(3, 21..25)).unwrap();
    }
    let mut s = open(dir.path());
    let state = s.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(id(3, 20)), Some(id(3, 24))));
    assert_eq!(ids(&mut s, 0..=30).await, (21..25).map(|i| id(3, i)).collect::<Vec<_>>());
}

#[tokio::test]
async fn after_a_torn_tail_is_cut_appends_continue_and_survive() {
    let dir = tempfile::tempdir().unwrap();
    let last_len = {
        let s = SegmentLogStore::open(dir.path(), 1, Options::default()).unwrap();
        s.append_entries(entries(1, 0..5)).unwrap();
        std::fs::metadata(dir.path().join(file_name(1))).unwrap().len()
    };
    // Entry 4's record loses its last byte (written, never synced, then power lost).
    OpenOptions::new().write(true).open(dir.path().join(file_name(1))).unwrap().set_len(last_len - 1).unwrap();
    {
        let mut s = SegmentLogStore::open(dir.path(), 1, Options::default()).unwrap();
        assert_eq!(s.get_log_state().await.unwrap().last_log_id, Some(id(1, 3)));
        assert_eq!(s.synced().synced_end(), 4, "the syncer starts after what recovery kept");
        s.append_entries(entries(2, 4..8)).unwrap();
        s.synced().wait_synced(7).await.unwrap();
    }
    let mut s = SegmentLogStore::open(dir.path(), 1, Options::default()).unwrap();
    let want: Vec<LogId> = (0..4).map(|i| id(1, i)).chain((4..8).map(|i| id(2, i))).collect();
    assert_eq!(ids(&mut s, 0..=10).await, want);
}

#[tokio::test]
async fn the_syncer_makes_appends_durable_and_a_truncate_syncs_what_remains() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = open(dir.path());
    let synced = s.synced();
    s.append_entries(entries(1, 0..20)).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), synced.wait_synced(19)).await.unwrap().unwrap();
    assert_eq!(synced.synced_end(), 20);
    s.truncate(id(1, 12)).await.unwrap();
    assert_eq!(synced.synced_end(), 12);
    assert_eq!(s.get_log_state().await.unwrap().last_log_id, Some(id(1, 11)));
}
