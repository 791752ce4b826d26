//! Raft plumbing for the vault: openraft type configuration, the RocksDB log store and
//! state machine, snapshot files, and the node-local audit log.
//!
//! One RocksDB instance per node holds everything, in column families:
//! the Raft log and its metadata, the state machine tables, and the audit log (which is
//! node-local and not part of the replicated state).

mod apply;
pub mod audit_chain;
#[cfg(test)]
mod audit_fixtures;
#[cfg(test)]
mod audit_headless_tests;
pub mod audit_log;
mod audit_start;
#[cfg(test)]
mod audit_sticky_tests;
mod audit_verify;
pub mod backup_check;
mod caller_write;
pub mod cluster;
pub mod codec;
pub mod command;
pub mod db;
pub mod elections;
pub mod error;
pub mod features;
pub mod log_store;
pub mod node;
mod proposals;
pub mod reader;
pub mod snapshot_file;
pub mod state_machine;
pub mod storage;
pub mod synced_log;
mod tables;
pub mod transport;
pub mod typ;
pub mod watch_log;
#[cfg(test)]
mod watch_log_tests;

pub use audit_log::{AuditKeys, AuditLog, Pruned, Retention, VerifyReport};
pub use cluster::{Cluster, ClusterParts};
pub use command::{Command, CommandResponse, Rejection};
pub use elections::ElectionTiming;
pub use error::StoreError;
pub use log_store::LogStore;
pub use node::NodeInfo;
pub use proposals::{
    default_max_in_flight, max_backup_record, max_payload_entries, BACKUP_RECORD_OVERHEAD, RESTORE_CHUNK_BYTES,
};
pub use reader::StateReader;
pub use state_machine::StateMachineStore;
pub use synced_log::SyncedLog;
pub use typ::TypeConfig;
pub use watch_log::{ChangeEvent, ChangeKind, WatchLog};

use std::path::Path;
use std::sync::Arc;

/// How a node's audit log is set up.
pub struct AuditSetup {
    pub keys: AuditKeys,
    pub retention: Retention,
    /// A file every record is also appended to, as JSON lines.
    pub sink: Option<std::fs::File>,
}

impl AuditSetup {
    /// Default retention, no file copy.
    pub fn new(keys: AuditKeys) -> Self {
        AuditSetup { keys, retention: Retention::default(), sink: None }
    }
}

/// Everything one node keeps on disk, opened from a data directory.
pub struct Storage {
    pub log_store: LogStore,
    pub state_machine: StateMachineStore,
    pub reader: StateReader,
    pub audit: AuditLog,
    pub synced: SyncedLog,
    /// The history of changes to secrets, for watchers.
    pub watch: WatchLog,
}

impl Storage {
    /// `audit` sets up the node's audit log (its chain keys, retention and file copy).
    pub async fn open(dir: &Path, node_id: u64, audit: AuditSetup) -> Result<Storage, StoreError> {
        let db = Arc::new(db::open(&dir.join("db"))?);
        let log_store = LogStore::open(db.clone())?;
        let synced = log_store.synced();
        let mut log = AuditLog::open(db.clone(), node_id, audit.keys)?.with_retention(audit.retention);
        if let Some(file) = audit.sink {
            log = log.with_sink(file);
        }
        log.check_at_start()?;
        let audit = log;
        let state_machine =
            StateMachineStore::open(db.clone(), dir.join("snapshots"), synced.clone(), audit.clone()).await?;
        let reader = StateReader::new(db.clone());
        let watch = state_machine.watch_log();
        Ok(Storage { log_store, state_machine, reader, audit, synced, watch })
    }
}
