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
//! - a snapshot's publication (a synced put in `state_machine`, as before).

use std::sync::{Arc, Weak};

use rocksdb::DB;

use super::raft_log::StateDurability;

/// Syncs RocksDB's WAL for the segment log. Holds the database weakly: it never keeps it open.
pub struct StateWal {
    db: Weak<DB>,
}

impl StateWal {
    pub fn new(db: &Arc<DB>) -> StateWal {
        StateWal { db: Arc::downgrade(db) }
    }
}

impl StateDurability for StateWal {
    fn make_durable(&self) -> std::io::Result<()> {
        let db = self.db.upgrade().ok_or_else(|| std::io::Error::other("the state machine's database is closed"))?;
        db.flush_wal(true).map_err(std::io::Error::other)
    }
}
