//! Fixtures the audit log's unit tests share: keys, a data directory, records, a started log.

use std::sync::Arc;

use rocksdb::DB;
use vault_core::keys::AuditMacKey;
use vault_core::model::AuditRecord;

use crate::audit_log::{AuditKeys, AuditLog};

/// A keyring of `(id, byte)`: each key is 32 copies of its byte.
pub(crate) fn keys(ids: &[(&str, u8)]) -> AuditKeys {
    AuditKeys::new(ids.iter().map(|(id, b)| (id.to_string(), AuditMacKey::from_slice(&[*b; 32]).unwrap())).collect())
        .unwrap()
}

pub(crate) fn open_db(dir: &std::path::Path) -> Arc<DB> {
    Arc::new(crate::db::open(&dir.join("db")).unwrap())
}

/// The log of node 1 over `db`, after its start-up check, as a node opens it.
pub(crate) fn start(db: &Arc<DB>, keys: AuditKeys) -> AuditLog {
    let log = AuditLog::open(db.clone(), 1, keys).unwrap();
    log.check_at_start().unwrap();
    log
}

/// A read of `app/<i>` by `actor-<i>` at `time_ms`.
pub(crate) fn record(i: u64, time_ms: u64) -> AuditRecord {
    AuditRecord {
        seq: 0,
        time_ms,
        node_id: 1,
        actor: format!("actor-{i}"),
        client_ip: "127.0.0.1".into(),
        action: "secret.get".into(),
        secret: Some(format!("app/{i}")),
        outcome: "ok".into(),
    }
}
