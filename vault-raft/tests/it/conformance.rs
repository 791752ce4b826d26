//! openraft's storage conformance suite, run against the real log stores (RocksDB, and the
//! segment-file log that replaces it) and the real state machine.

use std::sync::Arc;

use crate::test_keys;
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;
use vault_raft::storage::raft_log::{Options, SegmentLogStore};
use vault_raft::typ::StorageError;
use vault_raft::{AuditLog, LogStore, StateMachineStore, Storage, TypeConfig};

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = TempDir::new().expect("create temp dir");
        let storage = Storage::open(dir.path(), 1, test_keys()).await.expect("open storage");
        Ok((dir, storage.log_store, storage.state_machine))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(RocksBuilder) {
        panic!("openraft storage suite failed: {e}");
    }
}

/// The segment log with small segments, so the suite's appends and purges cross and unlink
/// segment files; the state machine waits on this log's syncer, as it will in the node.
struct SegmentBuilder;

impl StoreBuilder<TypeConfig, SegmentLogStore, StateMachineStore, TempDir> for SegmentBuilder {
    async fn build(&self) -> Result<(TempDir, SegmentLogStore, StateMachineStore), StorageError> {
        let dir = TempDir::new().expect("create temp dir");
        let log = SegmentLogStore::open(
            &dir.path().join("raft-log"),
            1,
            Options { segment_bytes: 512, ..Options::default() },
        )
        .expect("open segment log");
        let db = Arc::new(vault_raft::db::open(&dir.path().join("db")).expect("open db"));
        let audit = AuditLog::open(db.clone(), 1, test_keys().keys).expect("open audit log");
        audit.check_at_start().expect("audit log check");
        let sm = StateMachineStore::open(db, dir.path().join("snapshots"), log.synced(), audit)
            .await
            .expect("open state machine");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_on_segment_log() {
    if let Err(e) = Suite::test_all(SegmentBuilder) {
        panic!("openraft storage suite failed on the segment log: {e}");
    }
}
