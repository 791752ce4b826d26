//! Storage tests against real RocksDB files in temporary directories.

mod apply_semantics;
mod backups;
mod conformance;
mod log_ahead;
mod migration;
mod snapshots;

/// An audit key for storage opened by these tests.
pub fn test_keys() -> vault_raft::AuditSetup {
    let keys = vault_raft::AuditKeys::new(vec![("test".into(), vault_core::keys::AuditMacKey::generate())]);
    vault_raft::AuditSetup::new(keys.expect("one key"))
}
