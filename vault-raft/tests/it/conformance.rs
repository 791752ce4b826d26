//! openraft's storage conformance suite, run against the real log stores (the segment-file log
//! a node runs on, and the RocksDB log a node held below feature level 5 keeps), through
//! `Storage` as the node opens it, and the real state machine.

use std::sync::Arc;

use crate::test_keys;
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;
use vault_raft::storage::raft_log::{Options, SegmentLogStore};
use vault_raft::typ::StorageError;
use vault_raft::{AuditLog, NodeLog, StateMachineStore, Storage, TypeConfig};

/// `Storage` as a node opens it, at a feature level cap (`None`: this build's).
struct NodeBuilder(Option<u32>);

impl StoreBuilder<TypeConfig, NodeLog, StateMachineStore, TempDir> for NodeBuilder {
    async fn build(&self) -> Result<(TempDir, NodeLog, StateMachineStore), StorageError> {
        let dir = TempDir::new().expect("create temp dir");
        let storage = Storage::open_at_level(dir.path(), 1, test_keys(), self.0).await.expect("open storage");
        assert_eq!(matches!(storage.log_store, NodeLog::Segments(_)), self.0.is_none(), "log chosen by level");
        Ok((dir, storage.log_store, storage.state_machine))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(NodeBuilder(None)) {
        panic!("openraft storage suite failed: {e}");
    }
}

#[test]
fn openraft_storage_suite_on_the_rocksdb_log_below_level_5() {
    if let Err(e) = Suite::test_all(NodeBuilder(Some(4))) {
        panic!("openraft storage suite failed on the RocksDB log: {e}");
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
