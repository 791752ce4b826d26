//! openraft's storage conformance suite, run against the real RocksDB log store and state
//! machine.

use crate::test_keys;
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;
use vault_raft::typ::StorageError;
use vault_raft::{LogStore, StateMachineStore, Storage, TypeConfig};

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
