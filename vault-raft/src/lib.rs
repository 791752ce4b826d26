//! Raft plumbing for the vault: openraft type configuration, the RocksDB log store and
//! state machine, snapshot files, and the node-local audit log.
//!
//! One RocksDB instance per node holds everything, in column families:
//! the Raft log and its metadata, the state machine tables, and the audit log (which is
//! node-local and not part of the replicated state).

mod apply;
pub mod audit_log;
pub mod cluster;
pub mod codec;
pub mod command;
pub mod db;
pub mod error;
pub mod log_store;
pub mod node;
mod proposals;
pub mod reader;
pub mod snapshot_file;
pub mod state_machine;
pub mod synced_log;
mod tables;
pub mod transport;
pub mod typ;

pub use audit_log::AuditLog;
pub use cluster::{Cluster, ClusterParts};
pub use command::{Command, CommandResponse, Rejection};
pub use error::StoreError;
pub use log_store::LogStore;
pub use node::NodeInfo;
pub use proposals::max_payload_entries;
pub use reader::StateReader;
pub use state_machine::StateMachineStore;
pub use synced_log::SyncedLog;
pub use typ::TypeConfig;

use std::path::Path;
use std::sync::Arc;

/// Everything one node keeps on disk, opened from a data directory.
pub struct Storage {
    pub log_store: LogStore,
    pub state_machine: StateMachineStore,
    pub reader: StateReader,
    pub audit: AuditLog,
    pub synced: SyncedLog,
}

impl Storage {
    pub async fn open(dir: &Path, node_id: u64) -> Result<Storage, StoreError> {
        let db = Arc::new(db::open(&dir.join("db"))?);
        let log_store = LogStore::open(db.clone())?;
        let synced = log_store.synced();
        let state_machine = StateMachineStore::open(db.clone(), dir.join("snapshots"), synced.clone()).await?;
        let reader = StateReader::new(db.clone());
        let audit = AuditLog::open(db, node_id)?;
        Ok(Storage { log_store, state_machine, reader, audit, synced })
    }
}
