//! Raft plumbing for the vault: openraft type configuration, the RocksDB log store and
//! state machine, snapshot files, and the node-local audit log.
//!
//! One RocksDB instance per node holds the state machine tables and the audit log (which is
//! node-local and not part of the replicated state), in column families. The Raft log is in
//! segment files beside it (`storage::raft_log`), or in RocksDB for a node held below feature
//! level 5 (`log_store`).

pub mod applied;
mod apply;
pub mod audit_chain;
pub mod audit_file_verify;
#[cfg(test)]
mod audit_fixtures;
mod audit_group;
#[cfg(test)]
mod audit_headless_tests;
pub mod audit_log;
mod audit_query;
pub mod audit_shipped;
pub mod audit_sinks;
mod audit_start;
#[cfg(test)]
mod audit_sticky_tests;
mod audit_verify;
pub mod backup_check;
mod caller_write;
pub mod cluster;
pub mod codec;
pub mod command;
pub mod crash_points;
pub mod db;
pub mod elections;
pub mod error;
pub mod features;
pub mod log_store;
pub mod node;
mod proposals;
pub mod reader;
pub mod room;
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

pub use audit_log::{AuditKeys, AuditLog, AuditQuery, Pruned, Retention, VerifyReport};
pub use audit_shipped::ShippedRecord;
pub use audit_sinks::{SinkBoard, SinkStatus};
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
pub use storage::node_log::NodeLog;
pub use synced_log::SyncedLog;
pub use typ::TypeConfig;
pub use watch_log::{ChangeEvent, ChangeKind, WatchLog};

use std::path::Path;
use std::sync::Arc;

use storage::raft_log::migrate::Backend;

/// How a node's audit log is set up.
pub struct AuditSetup {
    pub keys: AuditKeys,
    pub retention: Retention,
}

impl AuditSetup {
    /// Default retention, no file copy.
    pub fn new(keys: AuditKeys) -> Self {
        AuditSetup { keys, retention: Retention::default() }
    }
}

/// Everything one node keeps on disk, opened from a data directory.
pub struct Storage {
    pub log_store: NodeLog,
    pub state_machine: StateMachineStore,
    pub reader: StateReader,
    pub audit: AuditLog,
    pub synced: SyncedLog,
    /// The history of changes to secrets, for watchers.
    pub watch: WatchLog,
    db: Arc<rocksdb::DB>,
}

impl Storage {
    /// A consistent copy of the database as it is now (a RocksDB checkpoint) in `to`, which
    /// must not exist. The Raft log is not in it. Tests use it for a node that lost applies.
    pub fn checkpoint_db(&self, to: &Path) -> Result<(), StoreError> {
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(to)?;
        Ok(())
    }

    /// `audit` sets up the node's audit log (its chain keys, retention and file copy). The
    /// Raft log is the segment log (moved out of RocksDB first if this node ran on it).
    pub async fn open(dir: &Path, node_id: u64, audit: AuditSetup) -> Result<Storage, StoreError> {
        Storage::open_at_level(dir, node_id, audit, None).await
    }

    /// [`Storage::open`] for a node whose feature level is capped at `max_feature_level`
    /// (`VAULT_MAX_FEATURE_LEVEL`): below [`features::SEGMENT_LOG_LEVEL`] the node keeps (or
    /// starts) its Raft log in RocksDB and moves nothing, so the previous build can still run on
    /// its directory.
    pub async fn open_at_level(
        dir: &Path,
        node_id: u64,
        audit: AuditSetup,
        max_feature_level: Option<u32>,
    ) -> Result<Storage, StoreError> {
        let mut db = db::open(&dir.join("db"))?;
        let allowed = features::segment_log_allowed(max_feature_level);
        let backend = storage::raft_log::migrate::prepare(dir, &mut db, node_id, allowed)?;
        let db = Arc::new(db);
        let log_store = match backend {
            Backend::Rocks => NodeLog::Rocks(LogStore::open(db.clone())?),
            Backend::Segments => {
                let wal = storage::state_wal::StateWal::start(&db)?;
                let opts = storage::raft_log::Options { before_purge: Some(Arc::new(wal)), ..Default::default() };
                let log_dir = dir.join(storage::raft_log::migrate::LOG_DIR);
                NodeLog::Segments(storage::raft_log::SegmentLogStore::open(&log_dir, node_id, opts)?)
            }
        };
        let synced = log_store.synced();
        let log = AuditLog::open(db.clone(), node_id, audit.keys)?.with_retention(audit.retention);
        log.check_at_start()?;
        let audit = log;
        let state_machine =
            StateMachineStore::open(db.clone(), dir.join("snapshots"), synced.clone(), audit.clone()).await?;
        let reader = state_machine.reader().with_log_view(log_store.view());
        let watch = state_machine.watch_log();
        Ok(Storage { log_store, state_machine, reader, audit, synced, watch, db })
    }
}
