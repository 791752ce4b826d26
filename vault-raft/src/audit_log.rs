//! The node-local audit log: one record per read, refusal and change, in its own column family
//! of the node's RocksDB. Not part of the replicated state: each node keeps its own chain.
//!
//! - **Changes** are recorded by the apply step, in the same write batch as the change, from
//!   the audit context their Raft command carries (`Command::AsCaller`): every node records
//!   every change, and no change commits without its record.
//! - **Reads and refusals** are recorded by the node that served them ([`AuditLog::append`]).
//! - **Hash chain**: each record is stored with an HMAC-SHA256 over the previous record's MAC,
//!   its sequence number and its content, under the node's audit key (never stored here). The
//!   newest sequence number and MAC are kept as a keyed *head*; the MAC of the last record
//!   removed by retention as the *anchor*. [`AuditLog::verify`] walks the chain and names the
//!   first record that is missing or was altered.
//! - **Retention** by age and size ([`Retention`]); records younger than the age floor are
//!   never removed for size.
//!
//! Records go to the WAL without their own fsync; the next Raft log sync (same WAL) makes
//! them durable.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use vault_core::keys::AuditMacKey;
use vault_core::model::AuditRecord;

use crate::codec::{decode, encode};
use crate::db::{cf, CF_AUDIT, CF_RAFT_META};
use crate::StoreError;

const KEY_HEAD: &[u8] = b"audit_head";
const KEY_ANCHOR: &[u8] = b"audit_anchor";
const DAY_MS: u64 = 86_400_000;

/// How long records are kept and how much room they may take.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Records older than this are removed.
    pub max_age_ms: u64,
    /// Past this size (estimated), the oldest records are removed...
    pub max_bytes: u64,
    /// ...but never one younger than this.
    pub min_age_ms: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { max_age_ms: 365 * DAY_MS, max_bytes: 1 << 30, min_age_ms: 30 * DAY_MS }
    }
}

/// One stored record with its place in the chain.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Chained {
    record: AuditRecord,
    /// Id of the audit key the MAC was made with.
    key_id: String,
    mac: [u8; 32],
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Link {
    seq: u64,
    mac: [u8; 32],
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Head {
    link: Link,
    key_id: String,
    /// Keyed over the link, so the newest records cannot be cut off and the head rolled back
    /// without the key.
    tag: [u8; 32],
}

/// What is stored under a sequence number: chained, or from before chaining existed.
enum Stored {
    Chained(Chained),
    Legacy(AuditRecord),
}

fn decode_stored(bytes: &[u8]) -> Result<Stored, StoreError> {
    match decode::<Chained>(bytes) {
        Ok(c) => Ok(Stored::Chained(c)),
        Err(_) => decode::<AuditRecord>(bytes).map(Stored::Legacy),
    }
}

impl Stored {
    fn into_record(self) -> AuditRecord {
        match self {
            Stored::Chained(c) => c.record,
            Stored::Legacy(r) => r,
        }
    }
}

/// The node's audit keys: the first makes new MACs; the others still verify older records
/// (for example after a local master-key rotation, when the key is derived from it).
#[derive(Clone)]
pub struct AuditKeys(Arc<Vec<(String, AuditMacKey)>>);

impl AuditKeys {
    /// `keys` must not be empty.
    pub fn new(keys: Vec<(String, AuditMacKey)>) -> Result<Self, StoreError> {
        if keys.is_empty() {
            return Err(StoreError::Corrupt("no audit key".into()));
        }
        Ok(AuditKeys(Arc::new(keys)))
    }

    fn current(&self) -> &(String, AuditMacKey) {
        &self.0[0]
    }

    fn get(&self, id: &str) -> Option<&AuditMacKey> {
        self.0.iter().find(|(i, _)| i == id).map(|(_, k)| k)
    }
}

fn mac_of(key: &AuditMacKey, prev: &[u8; 32], record: &AuditRecord) -> Result<[u8; 32], StoreError> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key.expose()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    m.update(b"vault audit record v1\0");
    m.update(prev);
    m.update(&record.seq.to_be_bytes());
    m.update(&encode(record)?);
    Ok(m.finalize().into_bytes().into())
}

fn head_tag(key: &AuditMacKey, link: &Link) -> Result<[u8; 32], StoreError> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key.expose()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    m.update(b"vault audit head v1\0");
    m.update(&link.seq.to_be_bytes());
    m.update(&link.mac);
    Ok(m.finalize().into_bytes().into())
}

/// What `verify` found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Chained records whose MAC was checked.
    pub checked: u64,
    /// Records from before chaining (not covered).
    pub legacy: u64,
    /// Records chained under a key this node does not hold (not checkable here).
    pub unverifiable: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// The first problem: a record missing, altered, or the newest records cut off.
    pub problem: Option<String>,
}

struct Chain {
    next_seq: u64,
    prev: [u8; 32],
}

#[derive(Clone)]
pub struct AuditLog {
    db: Arc<DB>,
    node_id: u64,
    keys: AuditKeys,
    chain: Arc<Mutex<Chain>>,
    retention: Retention,
    /// JSON-lines copy of every record, for log shippers.
    sink: Option<Arc<Mutex<File>>>,
    /// Writes that failed: to the log itself, and to the file sink.
    failures: Arc<Failures>,
}

/// Counts of failed audit writes since the process started (for metrics).
#[derive(Debug, Default)]
pub struct Failures {
    pub log: AtomicU64,
    pub sink: AtomicU64,
}

impl AuditLog {
    pub fn open(db: Arc<DB>, node_id: u64, keys: AuditKeys) -> Result<Self, StoreError> {
        let last = match db.iterator_cf(cf(&db, CF_AUDIT)?, IteratorMode::End).next() {
            Some(item) => {
                let (k, _) = item?;
                u64::from_be_bytes(k.as_ref().try_into().map_err(|_| StoreError::Corrupt("audit key".into()))?)
            }
            None => 0,
        };
        let head: Option<Head> = db.get_cf(cf(&db, CF_RAFT_META)?, KEY_HEAD)?.map(|b| decode(&b)).transpose()?;
        let prev = head.map(|h| h.link.mac).unwrap_or_default();
        Ok(AuditLog {
            db,
            node_id,
            keys,
            chain: Arc::new(Mutex::new(Chain { next_seq: last + 1, prev })),
            retention: Retention::default(),
            sink: None,
            failures: Arc::default(),
        })
    }

    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Also appends every record, as one JSON object per line, to `file`.
    pub fn with_sink(mut self, file: File) -> Self {
        self.sink = Some(Arc::new(Mutex::new(file)));
        self
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Failed writes so far: `(log, sink)`.
    pub fn failures(&self) -> (u64, u64) {
        (self.failures.log.load(Ordering::Relaxed), self.failures.sink.load(Ordering::Relaxed))
    }

    /// Appends a read or refusal served by this node (its `seq` and `node_id` are set here).
    pub fn append(&self, mut record: AuditRecord) -> Result<(), StoreError> {
        record.node_id = self.node_id;
        self.commit(WriteBatch::default(), vec![record])
    }

    /// Writes `batch` with `records` chained onto the log, atomically: the apply step's way
    /// of recording changes with the changes themselves.
    pub fn commit(&self, batch: WriteBatch, records: Vec<AuditRecord>) -> Result<(), StoreError> {
        let result = self.commit_inner(batch, records);
        if result.is_err() {
            self.failures.log.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn commit_inner(&self, mut batch: WriteBatch, records: Vec<AuditRecord>) -> Result<(), StoreError> {
        if records.is_empty() {
            self.db.write(batch)?;
            return Ok(());
        }
        let family = cf(&self.db, CF_AUDIT)?;
        let (key_id, key) = self.keys.current();
        let mut chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
        let (mut seq, mut prev) = (chain.next_seq, chain.prev);
        let mut written = Vec::with_capacity(records.len());
        for record in records {
            let mut record = record.capped();
            record.seq = seq;
            let mac = mac_of(key, &prev, &record)?;
            batch.put_cf(
                family,
                seq.to_be_bytes(),
                encode(&Chained { record: record.clone(), key_id: key_id.clone(), mac })?,
            );
            written.push(record);
            prev = mac;
            seq += 1;
        }
        let link = Link { seq: seq - 1, mac: prev };
        let head = Head { tag: head_tag(key, &link)?, link, key_id: key_id.clone() };
        batch.put_cf(cf(&self.db, CF_RAFT_META)?, KEY_HEAD, encode(&head)?);
        self.db.write(batch)?;
        chain.next_seq = seq;
        chain.prev = prev;
        drop(chain);
        self.to_sink(&written);
        Ok(())
    }

    fn to_sink(&self, records: &[AuditRecord]) {
        let Some(sink) = &self.sink else { return };
        let mut f = sink.lock().unwrap_or_else(|p| p.into_inner());
        for r in records {
            let line = match serde_json::to_string(r) {
                Ok(l) => l,
                Err(e) => {
                    self.failures.sink.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "encode an audit record for the file sink");
                    continue;
                }
            };
            if let Err(e) = writeln!(f, "{line}") {
                self.failures.sink.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, seq = r.seq, "audit file sink write failed (the record is in the node's log)");
            }
        }
    }

    /// Newest first, at most `limit`, optionally only those about `secret` and at or after
    /// `since_ms`.
    pub fn list(
        &self,
        limit: usize,
        secret: Option<&str>,
        since_ms: Option<u64>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut out = Vec::new();
        let it = self
            .db
            .iterator_cf(cf(&self.db, CF_AUDIT)?, IteratorMode::From(&u64::MAX.to_be_bytes(), Direction::Reverse));
        for item in it {
            let (_, v) = item?;
            let r = decode_stored(&v)?.into_record();
            if since_ms.is_some_and(|s| r.time_ms < s) {
                break;
            }
            if secret.is_none_or(|s| r.secret.as_deref() == Some(s)) {
                out.push(r);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Walks the whole chain; see [`VerifyReport`].
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        let meta = cf(&self.db, CF_RAFT_META)?;
        let anchor: Option<Link> = self.db.get_cf(meta, KEY_ANCHOR)?.map(|b| decode(&b)).transpose()?;
        let head: Option<Head> = self.db.get_cf(meta, KEY_HEAD)?.map(|b| decode(&b)).transpose()?;
        let mut report = VerifyReport::default();
        let mut prev = anchor.as_ref().map(|a| a.mac).unwrap_or_default();
        let mut last: Option<u64> = anchor.as_ref().map(|a| a.seq);
        let mut chained_seen = false;
        let problem = |r: &mut VerifyReport, p: String| {
            if r.problem.is_none() {
                r.problem = Some(p);
            }
        };
        for item in self.db.iterator_cf(cf(&self.db, CF_AUDIT)?, IteratorMode::Start) {
            let (k, v) = item?;
            let seq = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| StoreError::Corrupt("audit key".into()))?);
            report.first_seq.get_or_insert(seq);
            report.last_seq = Some(seq);
            let stored = match decode_stored(&v) {
                Ok(s) => s,
                Err(_) => {
                    problem(&mut report, format!("record {seq} cannot be decoded (altered)"));
                    continue;
                }
            };
            let c = match stored {
                Stored::Legacy(_) if !chained_seen => {
                    report.legacy += 1;
                    last = Some(seq);
                    continue;
                }
                Stored::Legacy(_) => {
                    problem(&mut report, format!("record {seq} is not chained (altered or inserted)"));
                    continue;
                }
                Stored::Chained(c) => c,
            };
            if let Some(l) = last.filter(|l| seq != l + 1) {
                problem(&mut report, format!("record {} is missing (the chain jumps from {l} to {seq})", l + 1));
            }
            chained_seen = true;
            last = Some(seq);
            if c.record.seq != seq {
                problem(&mut report, format!("record {seq} was altered (it says it is record {})", c.record.seq));
            }
            match self.keys.get(&c.key_id) {
                None => report.unverifiable += 1,
                Some(key) => {
                    report.checked += 1;
                    if mac_of(key, &prev, &c.record)? != c.mac {
                        problem(&mut report, format!("record {seq} was altered, or the one before it is missing"));
                    }
                }
            }
            prev = c.mac;
        }
        if let Some(h) = head {
            match self.keys.get(&h.key_id) {
                Some(key) if head_tag(key, &h.link)? != h.tag => {
                    problem(&mut report, "the chain's head record was altered".into())
                }
                _ => {}
            }
            if last.is_none_or(|l| l < h.link.seq) {
                let from = last.map_or(1, |l| l + 1);
                problem(&mut report, format!("records {from} to {} are missing (cut from the end)", h.link.seq));
            } else if last == Some(h.link.seq) && prev != h.link.mac {
                problem(&mut report, format!("record {} was altered (it does not match the head)", h.link.seq));
            }
        }
        Ok(report)
    }

    /// Removes records past the retention's age, then (oldest first, never younger than the
    /// age floor) past its size. Returns how many were removed.
    pub fn prune(&self, now_ms: u64) -> Result<u64, StoreError> {
        let family = cf(&self.db, CF_AUDIT)?;
        let size = self.db.property_int_value_cf(family, "rocksdb.estimate-live-data-size")?.unwrap_or(0)
            + self.db.property_int_value_cf(family, "rocksdb.cur-size-all-mem-tables")?.unwrap_or(0);
        let mut excess = size.saturating_sub(self.retention.max_bytes);
        let too_old = now_ms.saturating_sub(self.retention.max_age_ms);
        let floor = now_ms.saturating_sub(self.retention.min_age_ms);
        let mut cut: Option<Link> = None;
        let mut removed = 0u64;
        for item in self.db.iterator_cf(family, IteratorMode::Start) {
            let (k, v) = item?;
            let seq = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| StoreError::Corrupt("audit key".into()))?);
            let (time, mac) = match decode_stored(&v)? {
                Stored::Chained(c) => (c.record.time_ms, c.mac),
                Stored::Legacy(r) => (r.time_ms, [0; 32]),
            };
            let by_size = excess > 0 && time < floor;
            if time >= too_old && !by_size {
                break;
            }
            excess = excess.saturating_sub((k.len() + v.len()) as u64);
            cut = Some(Link { seq, mac });
            removed += 1;
        }
        let Some(anchor) = cut else { return Ok(0) };
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(family, 0u64.to_be_bytes(), (anchor.seq + 1).to_be_bytes());
        batch.put_cf(cf(&self.db, CF_RAFT_META)?, KEY_ANCHOR, encode(&anchor)?);
        // Under the chain's lock, so no append lands between the delete and the anchor.
        let _chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
        self.db.write(batch)?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(dir: &std::path::Path) -> AuditLog {
        let db = Arc::new(crate::db::open(&dir.join("db")).unwrap());
        let keys = AuditKeys::new(vec![("k1".into(), AuditMacKey::from_slice(&[7; 32]).unwrap())]).unwrap();
        AuditLog::open(db, 1, keys).unwrap()
    }

    fn record(i: u64, time_ms: u64) -> AuditRecord {
        AuditRecord {
            seq: 0,
            time_ms,
            node_id: 0,
            actor: format!("actor-{i}"),
            client_ip: "127.0.0.1".into(),
            action: "secret.get".into(),
            secret: Some(format!("app/{i}")),
            outcome: "ok".into(),
        }
    }

    fn tamper(a: &AuditLog, seq: u64, edit: impl FnOnce(Option<Vec<u8>>) -> Option<Vec<u8>>) {
        let family = cf(&a.db, CF_AUDIT).unwrap();
        match edit(a.db.get_cf(family, seq.to_be_bytes()).unwrap()) {
            Some(v) => a.db.put_cf(family, seq.to_be_bytes(), v).unwrap(),
            None => a.db.delete_cf(family, seq.to_be_bytes()).unwrap(),
        }
    }

    #[test]
    fn an_untouched_chain_verifies_and_each_kind_of_tampering_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = log(dir.path());
        for i in 0..10 {
            a.append(record(i, 1_000 + i)).unwrap();
        }
        let ok = a.verify().unwrap();
        assert_eq!((ok.checked, ok.problem.clone()), (10, None), "{ok:?}");

        // Edited: the actor of record 4 changed, MAC left alone.
        tamper(&a, 4, |v| {
            let mut c: Chained = decode(&v.unwrap()).unwrap();
            c.record.actor = "someone-else".into();
            Some(encode(&c).unwrap())
        });
        let p = a.verify().unwrap().problem.unwrap();
        assert!(p.contains("record 4 was altered"), "{p}");
    }

    #[test]
    fn a_deleted_record_in_the_middle_or_at_the_end_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = log(dir.path());
        for i in 0..6 {
            a.append(record(i, 1_000)).unwrap();
        }
        tamper(&a, 3, |_| None);
        let p = a.verify().unwrap().problem.unwrap();
        assert!(p.contains("record 3 is missing"), "{p}");

        let dir = tempfile::tempdir().unwrap();
        let a = log(dir.path());
        for i in 0..6 {
            a.append(record(i, 1_000)).unwrap();
        }
        tamper(&a, 6, |_| None);
        let p = a.verify().unwrap().problem.unwrap();
        assert!(p.contains("records 6 to 6 are missing"), "{p}");
    }

    #[test]
    fn retention_removes_by_age_keeps_the_chain_verifiable_and_respects_the_floor() {
        let dir = tempfile::tempdir().unwrap();
        let a = log(dir.path()).with_retention(Retention {
            max_age_ms: 100 * DAY_MS,
            max_bytes: 0,
            min_age_ms: 10 * DAY_MS,
        });
        let now = 1_000 * DAY_MS;
        for i in 0..5 {
            a.append(record(i, now - 200 * DAY_MS)).unwrap(); // past the age limit
        }
        for i in 5..10 {
            a.append(record(i, now - 50 * DAY_MS)).unwrap(); // over the size limit (0), older than the floor
        }
        for i in 10..15 {
            a.append(record(i, now - DAY_MS)).unwrap(); // younger than the floor: kept whatever the size
        }
        assert_eq!(a.prune(now).unwrap(), 10);
        let r = a.verify().unwrap();
        assert_eq!((r.first_seq, r.last_seq, r.checked, r.problem.clone()), (Some(11), Some(15), 5, None), "{r:?}");
        assert_eq!(a.list(100, None, None).unwrap().len(), 5);
        a.append(record(99, now)).unwrap();
        assert_eq!(a.verify().unwrap().problem, None);
    }

    #[test]
    fn records_are_listed_newest_first_by_secret_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let a = log(dir.path());
        for i in 0..5 {
            a.append(record(i % 2, 1_000 + i)).unwrap();
        }
        let all = a.list(10, None, None).unwrap();
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![5, 4, 3, 2, 1]);
        assert_eq!(a.list(10, Some("app/1"), None).unwrap().len(), 2);
        assert_eq!(a.list(10, None, Some(1_003)).unwrap().iter().map(|r| r.seq).collect::<Vec<_>>(), vec![5, 4]);
    }
}
