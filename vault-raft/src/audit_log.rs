//! The node-local audit log: one record per read and management action, in its own column
//! family of the node's RocksDB. Not replicated: each node records what it served.
//!
//! Records go to the WAL without their own fsync; the next Raft log sync (same WAL) makes
//! them durable. Old records beyond the retention count are dropped in the background.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rocksdb::{Direction, IteratorMode, WriteBatch, DB};
use vault_core::model::AuditRecord;

use crate::codec::{decode, encode};
use crate::db::{cf, CF_AUDIT};
use crate::StoreError;

/// Records kept per node.
pub const DEFAULT_RETAIN: u64 = 1_000_000;

#[derive(Clone)]
pub struct AuditLog {
    db: Arc<DB>,
    node_id: u64,
    next_seq: Arc<AtomicU64>,
    retain: u64,
}

impl AuditLog {
    pub fn open(db: Arc<DB>, node_id: u64) -> Result<Self, StoreError> {
        let last = match db.iterator_cf(cf(&db, CF_AUDIT)?, IteratorMode::End).next() {
            Some(item) => {
                let (k, _) = item?;
                u64::from_be_bytes(k.as_ref().try_into().map_err(|_| StoreError::Corrupt("audit key".into()))?)
            }
            None => 0,
        };
        Ok(AuditLog { db, node_id, next_seq: Arc::new(AtomicU64::new(last + 1)), retain: DEFAULT_RETAIN })
    }

    /// Appends a record (its `seq` and `node_id` are assigned here).
    pub fn append(&self, mut record: AuditRecord) -> Result<(), StoreError> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        record.seq = seq;
        record.node_id = self.node_id;
        let family = cf(&self.db, CF_AUDIT)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(family, seq.to_be_bytes(), encode(&record)?);
        if seq.is_multiple_of(4096) && seq > self.retain {
            batch.delete_range_cf(family, 0u64.to_be_bytes(), (seq - self.retain).to_be_bytes());
        }
        self.db.write(batch)?;
        Ok(())
    }

    /// Newest first, at most `limit`, optionally only those about `secret`.
    pub fn list(&self, limit: usize, secret: Option<&str>) -> Result<Vec<AuditRecord>, StoreError> {
        let mut out = Vec::new();
        let it = self
            .db
            .iterator_cf(cf(&self.db, CF_AUDIT)?, IteratorMode::From(&u64::MAX.to_be_bytes(), Direction::Reverse));
        for item in it {
            let (_, v) = item?;
            let r: AuditRecord = decode(&v)?;
            if secret.is_none_or(|s| r.secret.as_deref() == Some(s)) {
                out.push(r);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}
