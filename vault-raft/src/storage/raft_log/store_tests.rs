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
    SegmentLogStore::open(dir, 1, Options { segment_bytes: 300, ..Options::default() }).unwrap()
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
            if i == 0 {
                // In the second segment, which the purge below unlinks.
                s.save_vote(&Vote::new(2, 1)).await.unwrap();
            }
        }
        s.truncate(id(1, 40)).await.unwrap();
        s.append_entries(entries(2, 40..50)).unwrap();
        s.append_entries(entries(2, 50..60)).unwrap();
        assert!(segments(dir.path()).len() > 3, "small segments: {:?}", segments(dir.path()));
        s.purge(id(1, 30)).await.unwrap();
        s.synced().wait_synced(59).await.unwrap();
    }
    let first_seg = segments(dir.path())[0];
    assert!(first_seg > 2, "segments holding only purged entries are unlinked: {:?}", segments(dir.path()));
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

/// Simulated power loss, many times over: entries synced, more written unsynced, then the
/// newest segment cut anywhere past what was synced and followed by garbage. Reopened, the log
/// holds every synced entry and is contiguous and readable.
#[tokio::test]
async fn power_loss_after_unsynced_appends_keeps_every_synced_entry() {
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for seed in 0..200 {
        let dir = tempfile::tempdir().unwrap();
        let synced_end = 1 + next(40);
        let total = synced_end + next(40);
        let (newest, keep) = {
            let s = SegmentLogStore::open(dir.path(), 1, Options { segment_bytes: 400, ..Options::default() }).unwrap();
            let mut i = 0;
            while i < synced_end {
                let to = (i + 1 + next(8)).min(synced_end);
                s.append_entries(entries(1, i..to)).unwrap();
                i = to;
            }
            s.synced().wait_synced(synced_end - 1).await.unwrap();
            let synced_seg = *segments(dir.path()).last().unwrap();
            let synced_len = std::fs::metadata(dir.path().join(file_name(synced_seg))).unwrap().len();
            while i < total {
                let to = (i + 1 + next(8)).min(total);
                s.append_entries(entries(1, i..to)).unwrap();
                i = to;
            }
            let newest = *segments(dir.path()).last().unwrap();
            // A newer segment was synced up to its checkpoint when it was created.
            let keep = if newest == synced_seg { synced_len } else { checkpoint_end(dir.path(), newest) };
            (newest, keep)
        };
        let path = dir.path().join(file_name(newest));
        let len = std::fs::metadata(&path).unwrap().len();
        let cut = keep + next(len - keep + 1);
        OpenOptions::new().write(true).open(&path).unwrap().set_len(cut).unwrap();
        let garbage: Vec<u8> = (0..next(64)).map(|_| next(256) as u8).collect();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut f, &garbage).unwrap();
        drop(f);

        let mut s = SegmentLogStore::open(dir.path(), 1, Options { segment_bytes: 400, ..Options::default() })
            .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let last = s.get_log_state().await.unwrap().last_log_id.map(|id| id.index);
        assert!(last.is_some_and(|l| l + 1 >= synced_end), "seed {seed}: last {last:?}, synced to {synced_end}");
        let got = ids(&mut s, 0..=1000).await;
        assert_eq!(got, (0..=last.unwrap_or(0)).map(|i| id(1, i)).collect::<Vec<_>>(), "seed {seed}");
    }
}

/// Where a segment's first record (its checkpoint) ends.
fn checkpoint_end(dir: &Path, seq: u64) -> u64 {
    let bytes = std::fs::read(dir.join(file_name(seq))).unwrap();
    let start = super::record::SEGMENT_HEADER_LEN;
    match super::record::parse(&bytes[start..], seq) {
        super::record::Parsed::Record { len, .. } => (start + len) as u64,
        other => panic!("segment {seq} starts with {other:?}"),
    }
}

/// Counts its calls, and fails while told to.
struct Hook {
    calls: std::sync::atomic::AtomicU32,
    fail: std::sync::atomic::AtomicBool,
}

impl super::StateDurability for Hook {
    fn make_durable(&self) -> std::io::Result<()> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::other("state not durable"));
        }
        Ok(())
    }
}

/// The state machine is made durable before every purge, and a purge whose hook fails writes
/// nothing: `last_purged <= durable last_applied` holds across a crash.
#[tokio::test]
async fn a_purge_waits_for_the_state_machine_and_fails_without_it() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let hook = std::sync::Arc::new(Hook { calls: 0.into(), fail: true.into() });
    let opts = Options { segment_bytes: 300, before_purge: Some(hook.clone()) };
    {
        let mut s = SegmentLogStore::open(dir.path(), 1, opts.clone()).unwrap();
        s.append_entries(entries(1, 0..30)).unwrap();
        assert!(s.purge(id(1, 20)).await.is_err(), "the hook failed: no purge");
        assert_eq!(hook.calls.load(Ordering::SeqCst), 1);
        assert_eq!(s.get_log_state().await.unwrap().last_purged_log_id, None);
        s.synced().wait_synced(29).await.unwrap();
    }
    let mut s = SegmentLogStore::open(dir.path(), 1, opts).unwrap();
    assert_eq!(s.get_log_state().await.unwrap().last_purged_log_id, None, "no purge record was written");
    assert_eq!(ids(&mut s, 0..=0).await, vec![id(1, 0)]);
    hook.fail.store(false, Ordering::SeqCst);
    s.purge(id(1, 10)).await.unwrap();
    assert_eq!(hook.calls.load(Ordering::SeqCst), 2);
    assert_eq!(s.get_log_state().await.unwrap().last_purged_log_id, Some(id(1, 10)));
}

/// The tail is served from memory (replication reads it on every message): with the records
/// on disk overwritten, reads of the tail still answer, and stay right through a truncate and
/// a purge; a read below the cached tail goes to the files, and finds the damage.
#[tokio::test]
async fn the_tail_is_read_from_memory_and_follows_truncate_and_purge() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let mut s = SegmentLogStore::open(dir.path(), 1, Options::default()).unwrap();
    s.append_entries(entries(1, 0..10)).unwrap();
    let path = dir.path().join(file_name(1));
    let len = std::fs::metadata(&path).unwrap().len();
    let start = super::record::SEGMENT_HEADER_LEN as u64 + 40;
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&vec![0xA5; (len - start) as usize], start).unwrap();
    assert_eq!(ids(&mut s, 3..=9).await, (3..10).map(|i| id(1, i)).collect::<Vec<_>>());
    s.truncate(id(1, 6)).await.unwrap();
    s.append_entries(entries(2, 6..8)).unwrap();
    let want: Vec<LogId> = (4..6).map(|i| id(1, i)).chain((6..8).map(|i| id(2, i))).collect();
    assert_eq!(ids(&mut s, 4..=100).await, want);
    s.purge(id(1, 4)).await.unwrap();
    assert_eq!(ids(&mut s, 0..=100).await, want[1..].to_vec(), "purged entries are gone from memory too");
    // Past the byte bound of the tail, the oldest entries are read from the files again.
    let big = super::super::raft_log::recent::RECENT_MAX_ENTRIES as u64;
    s.append_entries(entries(2, 8..8 + big)).unwrap();
    assert!(s.try_get_log_entries(5..=5).await.is_err(), "entry 5 was read from the damaged file");
}
