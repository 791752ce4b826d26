//! Syncing the Raft log in parallel with replication.
//!
//! openraft 0.9 waits on its core task until each log append is reported flushed, and does
//! nothing else meanwhile, replication included. If that report waited for the fsync, a leader
//! would sync its own log first and only then send the entries to its followers, who then sync
//! theirs: two fsyncs in a row, and the core idle through the first. Raft lets a leader write
//! its log in parallel with replicating it, as long as an entry counts as committed only once
//! a majority has it on disk. So an append is reported flushed as soon as it is written
//! (unsynced, readable), a syncer thread syncs the log behind it (many appends per fsync: an
//! fdatasync of the segment log's active file, or RocksDB's WAL for the RocksDB log), and
//! durability is enforced where it matters:
//!
//! - a follower acknowledges `AppendEntries` only once the entries it claims to hold are
//!   synced ([`SyncedLog::wait_synced`] in the transport server);
//! - a node applies an entry only once it is synced in its own log (the state machine), so a
//!   leader never answers a write or a read with an entry its own disk does not hold, and with
//!   a follower's acknowledgement that makes a majority;
//! - a leader tells its followers a commit index no higher than its own synced log
//!   ([`SyncedLog::clamp_commit`] in the transport client), so no follower applies an entry
//!   only one node has on disk. When that holds a commit back, a heartbeat carries it as soon
//!   as the sync is done.
//!
//! A failed fsync leaves the log's durability unknown, and the write cannot be reported failed
//! any more: the process aborts (fail-stop) instead of running on with a log it cannot vouch for.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;

use openraft::raft::AppendEntriesRequest;
use rocksdb::DB;
use tokio::sync::{watch, Notify};

use crate::typ::{LogId, Raft, TypeConfig};

/// What waiters see: how far the log is synced, and whether it changed under them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Synced {
    /// One past the highest index on disk: every entry of the log below it is synced.
    end: u64,
    /// Bumped by every truncation.
    generation: u64,
    closed: bool,
}

struct State {
    /// One past the highest index written to the log (synced or not).
    written_end: u64,
    synced: Synced,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the syncer thread.
    wake: Condvar,
    synced: watch::Sender<Synced>,
    /// Highest commit index held back from followers, and a nudge to send it once synced.
    held_commit: AtomicU64,
    held: Notify,
    /// The highest commit index openraft has reported, plus one (0: none yet). Memory only.
    committed_end: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, state: &mut State, synced: Synced) {
        state.synced = synced;
        self.synced.send_replace(synced);
    }
}

/// Why [`SyncedLog::wait_synced`] stopped before the entries were synced.
#[derive(Debug, PartialEq, Eq)]
pub enum SyncWait {
    /// The log was truncated meanwhile: the entries waited for may be gone.
    Truncated,
    /// The log store has shut down.
    Closed,
}

/// A handle on how far this node's log is synced. Cheap to clone.
#[derive(Clone)]
pub struct SyncedLog {
    shared: Arc<Shared>,
}

impl SyncedLog {
    /// One past the highest index synced.
    pub fn synced_end(&self) -> u64 {
        self.shared.lock().synced.end
    }

    /// Waits until every entry of the log up to `index` is synced (an index beyond the log's
    /// end waits for the whole log).
    pub async fn wait_synced(&self, index: u64) -> Result<(), SyncWait> {
        let mut rx = self.shared.synced.subscribe();
        let (target, generation) = {
            let s = self.shared.lock();
            (index.saturating_add(1).min(s.written_end), s.synced.generation)
        };
        let seen = *rx
            .wait_for(|s| s.end >= target || s.generation != generation || s.closed)
            .await
            .map_err(|_| SyncWait::Closed)?;
        if seen.generation != generation {
            Err(SyncWait::Truncated)
        } else if seen.end >= target {
            Ok(())
        } else {
            Err(SyncWait::Closed)
        }
    }

    /// [`Self::wait_synced`] for committed entries, which no truncation removes: a truncation
    /// syncs what remains, so after one the wait is simply taken again. Fails only when the
    /// log store has shut down.
    pub async fn wait_committed_synced(&self, index: u64) -> Result<(), SyncWait> {
        loop {
            match self.wait_synced(index).await {
                Err(SyncWait::Truncated) => continue,
                done => return done,
            }
        }
    }

    /// The highest commit index this node knows of since it started (for metrics; never
    /// stored, so `None` until the leader first tells it one).
    pub fn committed_index(&self) -> Option<u64> {
        self.shared.committed_end.load(Ordering::Relaxed).checked_sub(1)
    }

    /// Holds a leader's commit index to what this node has synced. If the message names the
    /// highest synced entry (as its `prev_log_id` or one of its entries), that is sent
    /// instead; otherwise no commit index (followers keep theirs). Either way a heartbeat
    /// follows once the sync is done ([`Self::spawn_commit_refresher`]).
    pub fn clamp_commit(&self, req: &mut AppendEntriesRequest<TypeConfig>) {
        let Some(commit) = req.leader_commit else { return };
        let end = self.synced_end();
        if commit.index < end {
            return;
        }
        req.leader_commit = end.checked_sub(1).and_then(|synced| known_log_id(req, synced));
        self.shared.held_commit.fetch_max(commit.index, Ordering::Relaxed);
        self.shared.held.notify_one();
    }

    /// Sends a heartbeat (which carries the commit index) each time a commit index held back
    /// by [`Self::clamp_commit`] is synced. Ends when the log store or Raft shuts down.
    pub fn spawn_commit_refresher(&self, raft: Raft) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                this.shared.held.notified().await;
                let held = this.shared.held_commit.load(Ordering::Relaxed);
                if this.wait_synced(held).await == Err(SyncWait::Closed) || raft.trigger().heartbeat().await.is_err() {
                    return;
                }
            }
        });
    }
}

fn known_log_id(req: &AppendEntriesRequest<TypeConfig>, index: u64) -> Option<LogId> {
    req.prev_log_id
        .filter(|p| p.index == index)
        .or_else(|| req.entries.iter().map(|e| e.log_id).find(|id| id.index == index))
}

/// What the syncer thread makes durable: everything written to the log before the call.
pub(crate) trait SyncTarget: Send + Sync + 'static {
    fn sync(&self) -> std::io::Result<()>;
}

/// The RocksDB log: its WAL.
impl SyncTarget for DB {
    fn sync(&self) -> std::io::Result<()> {
        self.flush_wal(true).map_err(std::io::Error::other)
    }
}

/// The syncer thread. It holds its target (the database, or the segment log's active file)
/// only weakly and is joined when the log store goes, so RocksDB always closes on an owning
/// thread.
pub(crate) struct Syncer {
    shared: Arc<Shared>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl Syncer {
    /// Starts the thread for a log whose entries below `end` are on disk.
    pub(crate) fn start(db: &Arc<DB>, end: u64) -> std::io::Result<Syncer> {
        let target: Weak<dyn SyncTarget> = Arc::downgrade(db) as Weak<DB>;
        Syncer::start_with(target, end)
    }

    /// Starts the thread for a log whose entries below `end` are on disk, syncing `target`.
    pub(crate) fn start_with(target: Weak<dyn SyncTarget>, end: u64) -> std::io::Result<Syncer> {
        let synced = Synced { end, generation: 0, closed: false };
        let shared = Arc::new(Shared {
            state: Mutex::new(State { written_end: end, synced }),
            wake: Condvar::new(),
            synced: watch::Sender::new(synced),
            held_commit: AtomicU64::new(0),
            held: Notify::new(),
            committed_end: AtomicU64::new(0),
        });
        let thread_shared = shared.clone();
        let handle =
            std::thread::Builder::new().name("raft-log-sync".into()).spawn(move || sync_loop(target, thread_shared))?;
        Ok(Syncer { shared, handle: Mutex::new(Some(handle)) })
    }

    pub(crate) fn handle(&self) -> SyncedLog {
        SyncedLog { shared: self.shared.clone() }
    }

    /// openraft reports the commit index reached `index`.
    pub(crate) fn committed(&self, index: u64) {
        self.shared.committed_end.fetch_max(index + 1, Ordering::Relaxed);
    }

    /// Entries up to `last_index` were written (not synced): sync them soon.
    pub(crate) fn written(&self, last_index: u64) {
        let mut s = self.shared.lock();
        s.written_end = s.written_end.max(last_index + 1);
        self.shared.wake.notify_one();
    }

    /// The log now ends before `index`, and what remains was synced by the truncating write.
    pub(crate) fn truncated(&self, index: u64) {
        let mut s = self.shared.lock();
        s.written_end = index;
        let generation = s.synced.generation + 1;
        self.shared.publish(&mut s, Synced { end: index, generation, closed: false });
    }

    /// Everything up to `index` is purged (in a snapshot) and on disk.
    pub(crate) fn purged(&self, index: u64) {
        let mut s = self.shared.lock();
        s.written_end = s.written_end.max(index + 1);
        if s.synced.end <= index {
            let synced = Synced { end: index + 1, ..s.synced };
            self.shared.publish(&mut s, synced);
        }
    }
}

#[cfg(test)]
impl Syncer {
    /// A syncer whose database is closed at once, so its thread stops at its first wake-up:
    /// whatever is reported written from then on is never synced by it.
    pub(crate) fn never_syncing(dir: &std::path::Path) -> Syncer {
        let db = Arc::new(crate::db::open(dir).expect("open db"));
        Syncer::start(&db, 0).expect("start syncer")
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        {
            let mut s = self.shared.lock();
            let synced = Synced { closed: true, ..s.synced };
            self.shared.publish(&mut s, synced);
            self.shared.wake.notify_one();
        }
        if let Some(h) = self.handle.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }
}

fn sync_loop(sync_target: Weak<dyn SyncTarget>, shared: Arc<Shared>) {
    loop {
        let (target, generation) = {
            let mut s = shared.lock();
            while !s.synced.closed && s.written_end <= s.synced.end {
                s = shared.wake.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            if s.synced.closed {
                return;
            }
            (s.written_end, s.synced.generation)
        };
        // Every entry below `target` was written before this sync starts.
        let Some(t) = sync_target.upgrade() else { return };
        let started = std::time::Instant::now();
        if let Err(e) = t.sync() {
            tracing::error!(error = %e, "syncing the raft log failed; stopping, as its durability is unknown");
            std::process::abort();
        }
        metrics::histogram!("vault_raft_log_sync_seconds").record(started.elapsed());
        drop(t);
        let mut s = shared.lock();
        if s.synced.generation == generation && target > s.synced.end {
            metrics::histogram!("vault_raft_log_sync_entries").record((target - s.synced.end) as f64);
            let synced = Synced { end: target, ..s.synced };
            shared.publish(&mut s, synced);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::{CommittedLeaderId, EntryPayload, Vote};

    use super::*;
    use crate::typ::Entry;

    fn id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn open(dir: &std::path::Path) -> Arc<DB> {
        Arc::new(crate::db::open(dir).expect("open db"))
    }

    #[tokio::test]
    async fn a_wait_ends_when_the_written_entries_are_synced() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = open(dir.path());
        let syncer = Syncer::start(&db, 5).expect("start");
        let log = syncer.handle();
        assert_eq!(log.wait_synced(3).await, Ok(()), "entries already on disk");
        assert_eq!(log.wait_synced(100).await, Ok(()), "nothing written past the end: nothing to wait for");
        syncer.written(9);
        let r = tokio::time::timeout(Duration::from_secs(10), log.wait_synced(9)).await.expect("synced in time");
        assert_eq!(r, Ok(()));
        assert_eq!(log.synced_end(), 10);
    }

    #[tokio::test]
    async fn a_wait_holds_until_synced_and_a_truncation_ends_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let syncer = Syncer::never_syncing(dir.path());
        let log = syncer.handle();
        syncer.written(19);
        let waiter = tokio::spawn({
            let log = log.clone();
            async move { log.wait_synced(19).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiter.is_finished(), "written but not synced: the wait holds");
        syncer.truncated(12);
        let r = tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("ended in time").expect("join");
        assert_eq!(r, Err(SyncWait::Truncated));
        assert_eq!(log.synced_end(), 12, "what remains after a synced truncation is on disk");
        // A purge past the end (a snapshot was installed) moves the synced end up with it.
        syncer.purged(40);
        assert_eq!(log.synced_end(), 41);
        assert_eq!(log.wait_synced(30).await, Ok(()));
        syncer.written(50);
        drop(syncer);
        assert_eq!(log.wait_synced(50).await, Err(SyncWait::Closed), "the log store is gone before the sync");
    }

    #[test]
    fn commit_index_sent_to_followers_never_passes_the_synced_log() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = open(dir.path());
        let syncer = Syncer::start(&db, 8).expect("start");
        let log = syncer.handle();
        let req = |commit: Option<u64>, prev: Option<u64>, entries: std::ops::Range<u64>| AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: prev.map(id),
            entries: entries.map(|i| Entry { log_id: id(i), payload: EntryPayload::Blank }).collect(),
            leader_commit: commit.map(id),
        };
        let clamp = |mut r: AppendEntriesRequest<TypeConfig>| {
            log.clamp_commit(&mut r);
            r.leader_commit.map(|c| c.index)
        };
        assert_eq!(clamp(req(Some(7), Some(7), 8..10)), Some(7), "synced: unchanged");
        assert_eq!(clamp(req(Some(9), Some(6), 7..10)), Some(7), "held to the last synced entry in the message");
        assert_eq!(clamp(req(Some(9), Some(7), 8..10)), Some(7), "named by prev_log_id");
        assert_eq!(clamp(req(Some(9), Some(8), 9..10)), None, "not named: no commit index sent");
        assert_eq!(syncer.shared.held_commit.load(Ordering::Relaxed), 9);
        assert_eq!(clamp(req(None, Some(8), 9..10)), None);
    }
}
