//! The state machine's RocksDB WAL, once the Raft log is out of RocksDB.
//!
//! While the log lived in RocksDB, the log's group-commit sync of the shared WAL also made
//! every apply and audit record durable. With the log in segment files
//! ([`super::raft_log`]) nothing syncs the WAL per write any more, and that is safe: an apply
//! runs only once its entries are synced in the log (`synced_log`), so after a power loss the
//! state machine is at a WAL prefix, never ahead of the durable log, and openraft applies the
//! rest again. What still needs the WAL on disk is synced here:
//!
//! - before a purge record ([`StateWal`] is the log's
//!   [`StateDurability`](super::raft_log::StateDurability) hook): purged entries cannot be
//!   applied again, so their applies must be durable first;
//! - about ten times a second while anything was written ([`FLUSH_EVERY`]): read audit
//!   records go to the WAL only, with no log entry behind them to replay, so this bounds what a
//!   power loss can take of them (a process crash takes nothing: the WAL is in the page cache);
//! - a snapshot's publication (a synced put in `state_machine`, as before).
//!
//! The state machine's WAL stays on. Read and change audit records share one chain and head
//! (`audit_log`): with the WAL off for the data, a crash could keep later read records but lose
//! the change records before them, and `verify` would report a break.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use rocksdb::DB;

use super::raft_log::StateDurability;

/// How often the WAL is synced while it has unsynced writes.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Syncs RocksDB's WAL for the segment log: on demand (before a purge) and on a timer while
/// dirty, on a thread of its own. Holds the database weakly, so it never keeps it open, and
/// joins its thread when dropped.
pub struct StateWal {
    db: Weak<DB>,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    stop: Mutex<bool>,
    wake: Condvar,
    /// Syncs the timer made (for tests and metrics).
    flushes: AtomicU64,
}

impl StateWal {
    /// Starts the timer thread.
    pub fn start(db: &Arc<DB>) -> std::io::Result<StateWal> {
        let shared = Arc::new(Shared { stop: Mutex::new(false), wake: Condvar::new(), flushes: AtomicU64::new(0) });
        let (weak, thread_shared) = (Arc::downgrade(db), shared.clone());
        let thread =
            std::thread::Builder::new().name("state-wal-sync".into()).spawn(move || flush_loop(weak, thread_shared))?;
        Ok(StateWal { db: Arc::downgrade(db), shared, thread: Mutex::new(Some(thread)) })
    }

    /// How many times the timer synced the WAL.
    pub fn timer_flushes(&self) -> u64 {
        self.shared.flushes.load(Ordering::Relaxed)
    }
}

impl StateDurability for StateWal {
    fn make_durable(&self) -> std::io::Result<()> {
        let db = self.db.upgrade().ok_or_else(|| std::io::Error::other("the state machine's database is closed"))?;
        if let Err(e) = db.flush_wal(true) {
            // As in the timer's sync: a failed sync is not retried.
            tracing::error!(error = %e, "syncing the state machine's WAL before a purge failed; stopping");
            eprintln!("vault: syncing the state machine's WAL failed ({e}); stopping");
            std::process::abort();
        }
        Ok(())
    }
}

impl Drop for StateWal {
    fn drop(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

fn flush_loop(db: Weak<DB>, shared: Arc<Shared>) {
    // The sequence number last synced: RocksDB bumps it for every write, so an unchanged one
    // means nothing to sync (an idle node makes no fsyncs).
    let mut synced_seq = None;
    loop {
        {
            let stop = shared.stop.lock().unwrap_or_else(|p| p.into_inner());
            let (stop, _) = shared.wake.wait_timeout(stop, FLUSH_EVERY).unwrap_or_else(|p| p.into_inner());
            if *stop {
                return;
            }
        }
        let Some(db) = db.upgrade() else { return };
        let seq = db.latest_sequence_number();
        if synced_seq == Some(seq) {
            continue;
        }
        match db.flush_wal(true) {
            Ok(()) => {
                synced_seq = Some(seq);
                shared.flushes.fetch_add(1, Ordering::Relaxed);
            }
            // A failed sync may have been the only report of lost writeback: a later sync
            // could succeed and let a purge pass state that never reached the disk. Stop.
            Err(e) => {
                tracing::error!(error = %e, "syncing the state machine's WAL failed; stopping, as its durability is unknown");
                eprintln!("vault: syncing the state machine's WAL failed ({e}); stopping");
                std::process::abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The timer syncs once after writes and not while nothing is written.
    #[test]
    fn the_timer_syncs_while_dirty_and_idles_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(crate::db::open(dir.path()).unwrap());
        let wal = StateWal::start(&db).unwrap();
        let wait_for = |n: u64| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while wal.timer_flushes() < n {
                assert!(std::time::Instant::now() < deadline, "no timer sync within 10 s");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        wait_for(1);
        std::thread::sleep(FLUSH_EVERY * 4);
        let idle = wal.timer_flushes();
        assert_eq!(idle, 1, "nothing written: no more syncs");
        let audit = crate::db::cf(&db, crate::db::CF_AUDIT).unwrap();
        db.put_cf(audit, b"k", b"v").unwrap();
        wait_for(2);
        wal.make_durable().unwrap();
        drop(wal);
        assert_eq!(Arc::strong_count(&db), 1, "the thread is gone and held the database only weakly");
    }
}
