//! The node-local audit log: one record per read, refusal and change, in its own column family
//! of the node's RocksDB. Not part of the replicated state: each node keeps its own chain.
//!
//! - **Changes** are recorded by the apply step, in the same write batch as the change, from
//!   the audit context their Raft command carries (`Command::AsCaller`): every node records
//!   every change, and no change commits without its record.
//! - **Reads and refusals** are recorded by the node that served them ([`AuditLog::append`];
//!   reads through [`AuditLog::append_all`], where concurrent reads share one write).
//! - **Hash chain**: each record is stored with an HMAC-SHA256 over the previous record's MAC,
//!   its sequence number and its content, under the node's audit key (never stored here). The
//!   newest link (sequence number and MAC) and the *anchor* (the last link removed by
//!   retention) are kept together as a keyed *head* ([`crate::audit_chain`]).
//!   [`AuditLog::verify`] walks the chain and names the first record that is missing or was
//!   altered, and fails on anything under a key the node does not hold that no keyed record
//!   retires, on a head it cannot check, and on records without a head.
//! - **At start** ([`AuditLog::check_at_start`]) the head must match the newest record under a
//!   key the node holds; if not, the node writes a keyed `audit.chain_broken` record saying
//!   why, and keeps the break in the tagged head, so that neither new records (and a fresh
//!   head) nor retention can make it disappear. Records without a head, of any format, are a
//!   break; records from before chaining are adopted once, by a keyed record.
//! - **Retention** by age and size ([`Retention`]); records younger than the age floor are
//!   removed for size only past the hard cap, which is counted ([`AuditLog::over_hard_cap`])
//!   and recorded by a keyed `audit.pruned_over_hard_cap` record.
//!
//! Records go to RocksDB's WAL without their own fsync. Change records share their apply's
//! batch; the WAL is synced about ten times a second while written to, before a purge of the
//! Raft log and at a snapshot's publication (`storage::state_wal`). With a node on the RocksDB
//! log (held below feature level 5) the log's next group-commit sync (same WAL) does it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rocksdb::{Direction, IteratorMode, WriteBatch, DB};
use serde::{Deserialize, Serialize};
use vault_core::keys::AuditMacKey;
use vault_core::model::{audit_field, AuditRecord, MAX_AUDIT_FIELD};

pub use crate::audit_query::AuditQuery;

use crate::audit_chain::{
    legacy_adoption, node_record, record_mac, retirement, Break, Head, HeadV1, Link, ACTION_CHAIN_BROKEN,
    ACTION_HEAD_UPGRADED, ACTION_PRUNED_OVER_HARD_CAP, KEY_ANCHOR_V1, KEY_HEAD, KEY_HEAD_V1,
};
use crate::audit_start::StartCheck;
use crate::codec::{decode, encode};
use crate::db::{cf, CF_AUDIT, CF_RAFT_META};
use crate::StoreError;

pub use crate::audit_verify::VerifyReport;

use crate::audit_shipped::ShippedRecord;
use crate::audit_sinks::SinkBoard;

const DAY_MS: u64 = 86_400_000;

/// How long records are kept and how much room they may take.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Records older than this are removed.
    pub max_age_ms: u64,
    /// Past this size (estimated), the oldest records are removed...
    pub max_bytes: u64,
    /// ...but never one younger than this...
    pub min_age_ms: u64,
    /// ...unless the log is past this size: then the oldest go whatever their age.
    pub hard_max_bytes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { max_age_ms: 365 * DAY_MS, max_bytes: 1 << 30, min_age_ms: 30 * DAY_MS, hard_max_bytes: 4 << 30 }
    }
}

/// What one pass of retention removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub removed: u64,
    /// Of those, records younger than the age floor, removed because the log was past the hard
    /// cap.
    pub over_hard_cap: u64,
}

/// One stored record with its place in the chain.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Chained {
    pub record: AuditRecord,
    /// Id of the audit key the MAC was made with.
    pub key_id: String,
    pub mac: [u8; 32],
}

/// What is stored under a sequence number: chained, or from before chaining existed.
pub(crate) enum Stored {
    Chained(Chained),
    Legacy(AuditRecord),
}

pub(crate) fn decode_stored(bytes: &[u8]) -> Result<Stored, StoreError> {
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

    pub(crate) fn get(&self, id: &str) -> Option<&AuditMacKey> {
        self.0.iter().find(|(i, _)| i == id).map(|(_, k)| k)
    }
}

struct Chain {
    next_seq: u64,
    prev: [u8; 32],
    anchor: Option<Link>,
    /// The first break found at start, kept in every head from then on.
    broken: Option<Break>,
}

#[derive(Clone)]
pub struct AuditLog {
    db: Arc<DB>,
    node_id: u64,
    keys: AuditKeys,
    chain: Arc<Mutex<Chain>>,
    retention: Retention,
    /// The sinks records are shipped to (`vault-node`'s `audit_ship`), and whether a required
    /// one refuses them.
    sinks: SinkBoard,
    /// The newest record's sequence number, for shippers waiting for more.
    newest: Arc<tokio::sync::watch::Sender<u64>>,
    /// Writes to the log that failed.
    failures: Arc<Failures>,
    /// Records younger than the age floor removed over the hard cap, since the process started.
    over_hard_cap: Arc<AtomicU64>,
    /// Reads' records waiting to share a write (see `audit_group`).
    group: Arc<crate::audit_group::Group>,
}

/// Counts of failed audit writes since the process started (for metrics).
#[derive(Debug, Default)]
pub struct Failures {
    pub log: AtomicU64,
}

impl AuditLog {
    /// Opens the log where its head says it ends; [`AuditLog::check_at_start`] then checks
    /// that head.
    pub fn open(db: Arc<DB>, node_id: u64, keys: AuditKeys) -> Result<Self, StoreError> {
        let last = last_record(&db)?;
        let meta = cf(&db, CF_RAFT_META)?;
        let head: Option<Head> = db.get_cf(meta, KEY_HEAD)?.and_then(|b| Head::decode(&b).ok());
        let head_v1: Option<HeadV1> = db.get_cf(meta, KEY_HEAD_V1)?.and_then(|b| decode(&b).ok());
        let anchor_v1: Option<Link> = db.get_cf(meta, KEY_ANCHOR_V1)?.and_then(|b| decode(&b).ok());
        let (link, anchor) = match (&head, &head_v1) {
            (Some(h), _) => (Some(h.link), h.anchor),
            (None, Some(h)) => (Some(h.link), anchor_v1),
            (None, None) => (None, anchor_v1),
        };
        let last_seq = [last.as_ref().map(|l| l.seq), link.map(|l| l.seq), anchor.map(|a| a.seq)]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(0);
        let prev = link.map(|l| l.mac).or(last.and_then(|l| l.mac)).unwrap_or_default();
        let broken = head.and_then(|h| h.broken);
        Ok(AuditLog {
            db,
            node_id,
            keys,
            chain: Arc::new(Mutex::new(Chain { next_seq: last_seq + 1, prev, anchor, broken })),
            retention: Retention::default(),
            sinks: SinkBoard::default(),
            newest: Arc::new(tokio::sync::watch::channel(last_seq).0),
            failures: Arc::default(),
            over_hard_cap: Arc::default(),
            group: Arc::default(),
        })
    }

    /// Checks the head against the newest record, under a key this node holds, once at start,
    /// before anything is appended: a head cut back, re-labelled, re-tagged or removed would
    /// otherwise be replaced by the next append's and the change go unseen. What is wrong is
    /// written into the chain as a keyed `audit.chain_broken` record, which `verify` reports
    /// from then on. Also upgrades a head of older builds (adopting their untagged anchor),
    /// and retires the head's key when the current key is another one.
    pub fn check_at_start(&self) -> Result<(), StoreError> {
        let last = last_record(&self.db)?;
        let StartCheck { problems, upgrade, head, adopt_legacy, adopted_anchor } =
            crate::audit_start::check(&self.db, &self.keys, last.as_ref())?;
        let (current_id, _) = self.keys.current();
        if !problems.is_empty() {
            {
                // Chain the record onto what is there, so the walk reaches it.
                let mut chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(mac) = last.as_ref().and_then(|l| l.mac) {
                    chain.prev = mac;
                }
                if chain.broken.is_none() {
                    // Kept in the head from now on: removing the record does not clear it.
                    let reason = audit_field(&problems.join("; "), MAX_AUDIT_FIELD);
                    chain.broken = Some(Break { seq: chain.next_seq, reason });
                }
            }
            let why = format!("at start the node found: {}", problems.join("; "));
            tracing::error!(problem = %why, "the audit chain is broken; `vaultctl audit verify` reports it until retention removes this record");
            return self.commit(upgrade, vec![self.own(node_record(ACTION_CHAIN_BROKEN, why))]);
        }
        let mut records = Vec::new();
        if let Some(seq) = adopted_anchor {
            records.push(self.own(node_record(
                ACTION_HEAD_UPGRADED,
                format!("anchor {seq} adopted untagged from the head of an older build"),
            )));
        }
        if let Some(seq) = adopt_legacy {
            records.push(self.own(legacy_adoption(seq)));
        }
        if let Some((key_id, link, _)) = head.filter(|(key_id, _, _)| key_id != current_id) {
            // The old key's part of the chain is checked while the key is still held, and the
            // result kept in the retirement, so a break under it does not become "unverifiable".
            let found = crate::audit_verify::verify(&self.db, &self.keys)?.problem;
            records.push(self.own(retirement(&key_id, link.seq, current_id, found.as_deref())));
        }
        match records.is_empty() {
            true => self.commit_head(upgrade),
            false => self.commit(upgrade, records),
        }
    }

    fn own(&self, mut record: AuditRecord) -> AuditRecord {
        record.node_id = self.node_id;
        record
    }

    /// Writes `batch` with a head made from the chain as it stands.
    fn commit_head(&self, mut batch: WriteBatch) -> Result<(), StoreError> {
        let chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
        let (key_id, key) = self.keys.current();
        let link = Link { seq: chain.next_seq - 1, mac: chain.prev };
        let head = Head::new(key_id, key, link, chain.anchor, chain.broken.clone())?;
        batch.put_cf(cf(&self.db, CF_RAFT_META)?, KEY_HEAD, encode(&head)?);
        self.db.write(batch)?;
        Ok(())
    }

    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// The sinks this node ships records to; a required one that refuses makes
    /// [`AuditLog::append`] and [`AuditLog::append_all`] refuse too.
    pub fn sinks(&self) -> &SinkBoard {
        &self.sinks
    }

    /// The newest record's sequence number, which changes as records are written.
    pub fn newest(&self) -> tokio::sync::watch::Receiver<u64> {
        self.newest.subscribe()
    }

    /// At most `limit` records after record `after`, oldest first, as shipped (each with the
    /// MAC of the record before it; see [`crate::audit_shipped`]).
    pub fn shipped_after(&self, after: u64, limit: usize) -> Result<Vec<ShippedRecord>, StoreError> {
        let anchor = self.chain.lock().unwrap_or_else(|p| p.into_inner()).anchor;
        crate::audit_shipped::read_after(&self.db, self.node_id, anchor, after, limit)
    }

    /// Refused while a required sink does not take records: the record would be written but
    /// could not leave the node.
    pub(crate) fn admit(&self) -> Result<(), StoreError> {
        match self.sinks.refusal() {
            Some(why) => Err(StoreError::SinkRefuses(why)),
            None => Ok(()),
        }
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    pub(crate) fn group(&self) -> &crate::audit_group::Group {
        &self.group
    }

    /// Failed writes to the log so far.
    pub fn failures(&self) -> u64 {
        self.failures.log.load(Ordering::Relaxed)
    }

    /// Appends a read or refusal served by this node (its `seq` and `node_id` are set here).
    /// Refused, writing nothing, while a required sink does not take records.
    pub fn append(&self, mut record: AuditRecord) -> Result<(), StoreError> {
        self.admit()?;
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
        for record in records {
            let mut record = record.capped();
            record.seq = seq;
            let mac = record_mac(key, &prev, &record)?;
            batch.put_cf(family, seq.to_be_bytes(), encode(&Chained { record, key_id: key_id.clone(), mac })?);
            prev = mac;
            seq += 1;
        }
        let head = Head::new(key_id, key, Link { seq: seq - 1, mac: prev }, chain.anchor, chain.broken.clone())?;
        batch.put_cf(cf(&self.db, CF_RAFT_META)?, KEY_HEAD, encode(&head)?);
        self.db.write(batch)?;
        chain.next_seq = seq;
        chain.prev = prev;
        // Under the chain's lock, and never backwards: two commits publishing after the lock
        // could otherwise leave the older one last, and a shipper would read past the newest.
        self.newest.send_if_modified(|newest| {
            let moved = *newest < seq - 1;
            *newest = (*newest).max(seq - 1);
            moved
        });
        drop(chain);
        Ok(())
    }

    /// Newest first, at most `query.limit` of the records that match `query` (see
    /// [`AuditQuery`]). Walks back from the newest record and stops at the first one before
    /// `since_ms` (records are stamped when written, so times do not go back along the log).
    pub fn list(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let mut out = Vec::new();
        if query.limit == 0 {
            return Ok(out);
        }
        let it = self
            .db
            .iterator_cf(cf(&self.db, CF_AUDIT)?, IteratorMode::From(&u64::MAX.to_be_bytes(), Direction::Reverse));
        for item in it {
            let (_, v) = item?;
            let r = decode_stored(&v)?.into_record();
            if query.since_ms.is_some_and(|s| r.time_ms < s) {
                break;
            }
            if query.matches(&r) {
                out.push(r);
                if out.len() >= query.limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Walks the whole chain; see [`VerifyReport`].
    pub fn verify(&self) -> Result<VerifyReport, StoreError> {
        crate::audit_verify::verify(&self.db, &self.keys)
    }

    /// Whether the log still grows from `head` (sequence number and MAC of a head exported
    /// earlier, for example from `vaultctl audit verify`): `None` if so, else why not. Catches a
    /// rollback of the whole data directory, which `verify` alone cannot.
    pub fn extends(&self, head: (u64, [u8; 32])) -> Result<Option<String>, StoreError> {
        crate::audit_verify::extends(&self.db, head)
    }

    /// Records younger than the age floor that retention removed because the log was past its
    /// hard cap, since the process started.
    pub fn over_hard_cap(&self) -> u64 {
        self.over_hard_cap.load(Ordering::Relaxed)
    }

    /// Removes records past the retention's age, then (oldest first, never younger than the
    /// age floor) past its size, then (oldest first, whatever their age) past its hard cap.
    /// The last record removed becomes the anchor, tagged in the head, so the chain still
    /// verifies.
    pub fn prune(&self, now_ms: u64) -> Result<Pruned, StoreError> {
        let family = cf(&self.db, CF_AUDIT)?;
        let size = self.db.property_int_value_cf(family, "rocksdb.estimate-live-data-size")?.unwrap_or(0)
            + self.db.property_int_value_cf(family, "rocksdb.cur-size-all-mem-tables")?.unwrap_or(0);
        let mut excess = size.saturating_sub(self.retention.max_bytes);
        let mut hard_excess = size.saturating_sub(self.retention.hard_max_bytes);
        let too_old = now_ms.saturating_sub(self.retention.max_age_ms);
        let floor = now_ms.saturating_sub(self.retention.min_age_ms);
        let mut cut: Option<Link> = None;
        let mut first: Option<u64> = None;
        let mut pruned = Pruned::default();
        for item in self.db.iterator_cf(family, IteratorMode::Start) {
            let (k, v) = item?;
            let seq = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| StoreError::Corrupt("audit key".into()))?);
            let (time, mac) = match decode_stored(&v)? {
                Stored::Chained(c) => (c.record.time_ms, c.mac),
                Stored::Legacy(r) => (r.time_ms, [0; 32]),
            };
            let by_size = excess > 0 && time < floor;
            let by_hard_cap = hard_excess > 0;
            if time >= too_old && !by_size && !by_hard_cap {
                break;
            }
            if time >= too_old && !by_size {
                pruned.over_hard_cap += 1;
            }
            let bytes = (k.len() + v.len()) as u64;
            excess = excess.saturating_sub(bytes);
            hard_excess = hard_excess.saturating_sub(bytes);
            cut = Some(Link { seq, mac });
            first.get_or_insert(seq);
            pruned.removed += 1;
        }
        let Some(anchor) = cut else { return Ok(pruned) };
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(family, 0u64.to_be_bytes(), (anchor.seq + 1).to_be_bytes());
        // Under the chain's lock, so no append lands between the delete and the new head.
        let mut chain = self.chain.lock().unwrap_or_else(|p| p.into_inner());
        let (key_id, key) = self.keys.current();
        let link = Link { seq: chain.next_seq - 1, mac: chain.prev };
        let head = Head::new(key_id, key, link, Some(anchor), chain.broken.clone())?;
        batch.put_cf(cf(&self.db, CF_RAFT_META)?, KEY_HEAD, encode(&head)?);
        self.db.write(batch)?;
        chain.anchor = Some(anchor);
        drop(chain);
        self.over_hard_cap.fetch_add(pruned.over_hard_cap, Ordering::Relaxed);
        if pruned.over_hard_cap > 0 {
            // On record, so the removal of young records (a break's, say) shows in the chain.
            let first = first.unwrap_or(anchor.seq);
            let what = format!(
                "records {first} to {} removed past the hard size cap, {} of them younger than the age floor",
                anchor.seq, pruned.over_hard_cap
            );
            self.commit(WriteBatch::default(), vec![self.own(node_record(ACTION_PRUNED_OVER_HARD_CAP, what))])?;
        }
        Ok(pruned)
    }
}

/// The newest record: its sequence number, and its MAC if it is chained (`None`: from before
/// chaining, or not decodable).
pub(crate) struct LastRecord {
    pub seq: u64,
    pub mac: Option<[u8; 32]>,
}

fn last_record(db: &DB) -> Result<Option<LastRecord>, StoreError> {
    let Some(item) = db.iterator_cf(cf(db, CF_AUDIT)?, IteratorMode::End).next() else { return Ok(None) };
    let (k, v) = item?;
    let seq = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| StoreError::Corrupt("audit key".into()))?);
    let mac = match decode_stored(&v) {
        Ok(Stored::Chained(c)) => Some(c.mac),
        _ => None,
    };
    Ok(Some(LastRecord { seq, mac }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit_fixtures::{keys, record};

    fn log(dir: &std::path::Path) -> AuditLog {
        let db = Arc::new(crate::db::open(&dir.join("db")).unwrap());
        let keys = AuditKeys::new(vec![("k1".into(), AuditMacKey::from_slice(&[7; 32]).unwrap())]).unwrap();
        let log = AuditLog::open(db, 1, keys).unwrap();
        log.check_at_start().unwrap();
        log
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
            hard_max_bytes: u64::MAX,
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
        assert_eq!(a.prune(now).unwrap(), Pruned { removed: 10, over_hard_cap: 0 });
        let r = a.verify().unwrap();
        assert_eq!((r.first_seq, r.last_seq, r.checked, r.problem.clone()), (Some(11), Some(15), 5, None), "{r:?}");
        assert_eq!(a.list(&AuditQuery::newest(100)).unwrap().len(), 5);
        a.append(record(99, now)).unwrap();
        assert_eq!(a.verify().unwrap().problem, None);
    }

    fn reopen(a: AuditLog, keys: AuditKeys) -> AuditLog {
        let log = AuditLog::open(a.db.clone(), 1, keys).unwrap();
        log.check_at_start().unwrap();
        log
    }

    #[test]
    fn a_record_under_an_unknown_key_fails_unless_a_keyed_record_retires_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = log(dir.path());
        for i in 0..3 {
            a.append(record(i, 1_000)).unwrap();
        }
        // A new current key while the old one is still held: the old one is retired on record.
        let a = reopen(a, keys(&[("k2", 8), ("k1", 7)]));
        a.append(record(3, 1_000)).unwrap();
        let retired = a.list(&AuditQuery::newest(10)).unwrap();
        assert!(retired.iter().any(|r| r.action == crate::audit_chain::ACTION_KEY_RETIRED), "{retired:?}");
        // Then the old key goes: its records are unverifiable, not failures.
        let a = reopen(a, keys(&[("k2", 8)]));
        let r = a.verify().unwrap();
        assert_eq!((r.unverifiable, r.problem.clone()), (3, None), "{r:?}");

        // A record re-labelled with a key nobody retired fails.
        tamper(&a, 5, |v| {
            let mut c: Chained = decode(&v.unwrap()).unwrap();
            c.key_id = "k9".into();
            Some(encode(&c).unwrap())
        });
        let p = a.verify().unwrap().problem.unwrap();
        assert!(p.contains("record 5 is under key k9"), "{p}");
    }

    #[test]
    fn a_key_swapped_without_a_retirement_leaves_the_old_records_failing() {
        let dir = tempfile::tempdir().unwrap();
        let a = log(dir.path());
        a.append(record(0, 1_000)).unwrap();
        // The head's key is gone at start: a break is recorded, and verify keeps failing.
        let a = reopen(a, keys(&[("k2", 8)]));
        a.append(record(1, 1_000)).unwrap();
        let p = a.verify().unwrap().problem.unwrap();
        assert!(p.contains("record 1 is under key k1"), "{p}");
        let listed = a.list(&AuditQuery::newest(10)).unwrap();
        assert!(listed.iter().any(|r| r.action == ACTION_CHAIN_BROKEN && r.outcome.contains("head is under key k1")));
    }

    #[test]
    fn the_anchor_is_bound_into_the_tagged_head() {
        let dir = tempfile::tempdir().unwrap();
        let a = log(dir.path()).with_retention(Retention {
            max_age_ms: 100 * DAY_MS,
            max_bytes: u64::MAX,
            min_age_ms: 10 * DAY_MS,
            hard_max_bytes: u64::MAX,
        });
        let now = 1_000 * DAY_MS;
        for i in 0..4 {
            a.append(record(i, now - 200 * DAY_MS)).unwrap();
        }
        for i in 4..8 {
            a.append(record(i, now)).unwrap();
        }
        assert_eq!(a.prune(now).unwrap().removed, 4);
        assert_eq!(a.verify().unwrap().problem, None);
        // Records 5 and 6 cut, the anchor moved to record 6 (its MAC copied): the head's tag no
        // longer matches.
        let meta = cf(&a.db, CF_RAFT_META).unwrap();
        let mut head = Head::decode(&a.db.get_cf(meta, KEY_HEAD).unwrap().unwrap()).unwrap();
        let six: Chained =
            decode(&a.db.get_cf(cf(&a.db, CF_AUDIT).unwrap(), 6u64.to_be_bytes()).unwrap().unwrap()).unwrap();
        tamper(&a, 5, |_| None);
        tamper(&a, 6, |_| None);
        head.anchor = Some(Link { seq: 6, mac: six.mac });
        a.db.put_cf(meta, KEY_HEAD, encode(&head).unwrap()).unwrap();
        let p = a.verify().unwrap().problem.unwrap();
        assert!(p.contains("head was altered"), "{p}");
        // An untagged anchor in the old place is refused too.
        a.db.put_cf(meta, KEY_ANCHOR_V1, encode(&Link { seq: 6, mac: six.mac }).unwrap()).unwrap();
        let a = reopen(a, keys(&[("k1", 7)]));
        let listed = a.list(&AuditQuery::newest(1)).unwrap();
        assert_eq!(listed[0].action, ACTION_CHAIN_BROKEN, "{listed:?}");
    }

    #[test]
    fn a_head_of_older_builds_is_upgraded_at_start_with_its_anchor_and_a_bad_one_is_a_break() {
        use hmac::Mac;
        for good in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let a = log(dir.path()).with_retention(Retention {
                max_age_ms: 100 * DAY_MS,
                max_bytes: u64::MAX,
                min_age_ms: 10 * DAY_MS,
                hard_max_bytes: u64::MAX,
            });
            let now = 1_000 * DAY_MS;
            for i in 0..5 {
                a.append(record(i, now - if i < 2 { 200 * DAY_MS } else { 0 })).unwrap();
            }
            assert_eq!(a.prune(now).unwrap().removed, 2);
            // Put the head and anchor back the way older builds kept them.
            let meta = cf(&a.db, CF_RAFT_META).unwrap();
            let head = Head::decode(&a.db.get_cf(meta, KEY_HEAD).unwrap().unwrap()).unwrap();
            let mut m = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&[7; 32]).unwrap();
            m.update(b"vault audit head v1\0");
            m.update(&head.link.seq.to_be_bytes());
            m.update(&head.link.mac);
            let mut tag: [u8; 32] = m.finalize().into_bytes().into();
            if !good {
                tag[0] ^= 1;
            }
            let old = HeadV1 { link: head.link, key_id: head.key_id.clone(), tag };
            a.db.put_cf(meta, KEY_HEAD_V1, encode(&old).unwrap()).unwrap();
            a.db.put_cf(meta, KEY_ANCHOR_V1, encode(&head.anchor.unwrap()).unwrap()).unwrap();
            a.db.delete_cf(meta, KEY_HEAD).unwrap();
            assert!(a.verify().unwrap().problem.is_some(), "not upgraded yet");

            let a = reopen(a, keys(&[("k1", 7)]));
            let meta = cf(&a.db, CF_RAFT_META).unwrap();
            assert!(
                a.db.get_cf(meta, KEY_HEAD_V1).unwrap().is_none()
                    && a.db.get_cf(meta, KEY_ANCHOR_V1).unwrap().is_none()
            );
            let r = a.verify().unwrap();
            if good {
                // The adoption of the untagged anchor is on record (record 6), for every later verify.
                assert_eq!((r.first_seq, r.checked, r.problem.clone()), (Some(3), 4, None), "{r:?}");
                let newest = &a.list(&AuditQuery::newest(1)).unwrap()[0];
                assert_eq!(newest.action, crate::audit_chain::ACTION_HEAD_UPGRADED, "{newest:?}");
                assert!(newest.outcome.contains("anchor 2 adopted untagged"), "{newest:?}");
            } else {
                let p = r.problem.unwrap();
                assert!(p.contains("chain was broken") && p.contains("head was altered"), "{p}");
            }
        }
    }

    #[test]
    fn the_hard_cap_removes_records_younger_than_the_floor_and_the_chain_still_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let a = log(dir.path()).with_retention(Retention {
            max_age_ms: 100 * DAY_MS,
            max_bytes: 1,
            min_age_ms: 10 * DAY_MS,
            hard_max_bytes: 1,
        });
        let now = 1_000 * DAY_MS;
        for i in 0..6 {
            a.append(record(i, now)).unwrap(); // all younger than the floor
        }
        let p = a.prune(now).unwrap();
        assert_eq!(p, Pruned { removed: 6, over_hard_cap: 6 });
        assert_eq!(a.over_hard_cap(), 6);
        assert_eq!(a.verify().unwrap().problem, None);
        // The prune is on record (record 7).
        let newest = &a.list(&AuditQuery::newest(1)).unwrap()[0];
        assert_eq!(newest.action, ACTION_PRUNED_OVER_HARD_CAP, "{newest:?}");
        a.append(record(7, now)).unwrap();
        let a = reopen(a, keys(&[("k1", 7)]));
        a.append(record(8, now)).unwrap();
        let r = a.verify().unwrap();
        assert_eq!((r.first_seq, r.last_seq, r.problem.clone()), (Some(7), Some(9), None), "{r:?}");
        // Without the hard cap, the floor holds.
        let a = a.with_retention(Retention {
            max_age_ms: 100 * DAY_MS,
            max_bytes: 1,
            min_age_ms: 10 * DAY_MS,
            hard_max_bytes: u64::MAX,
        });
        assert_eq!(a.prune(now).unwrap().removed, 0);
    }

    #[test]
    fn an_exported_head_is_extended_by_the_log_and_a_rollback_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = log(dir.path());
        for i in 0..3 {
            a.append(record(i, 1_000)).unwrap();
        }
        let exported = a.verify().unwrap().head.unwrap();
        assert_eq!(exported.0, 3);
        // A copy of the directory as it is now, for the rollback below.
        let copy = tempfile::tempdir().unwrap();
        let cp = rocksdb::checkpoint::Checkpoint::new(&a.db).unwrap();
        cp.create_checkpoint(copy.path().join("db")).unwrap();
        drop(cp);
        for i in 3..6 {
            a.append(record(i, 1_000)).unwrap();
        }
        assert_eq!(a.extends(exported).unwrap(), None);
        let later = a.verify().unwrap().head.unwrap();
        drop(a);
        // The directory rolled back to the copy: it verifies, but does not extend the later head.
        let rolled =
            AuditLog::open(Arc::new(crate::db::open(&copy.path().join("db")).unwrap()), 1, keys(&[("k1", 7)])).unwrap();
        rolled.check_at_start().unwrap();
        assert_eq!(rolled.verify().unwrap().problem, None);
        assert_eq!(rolled.extends(exported).unwrap(), None);
        let p = rolled.extends(later).unwrap().unwrap();
        assert!(p.contains("rolled back"), "{p}");
        // Rolled back and then written to: the record at the exported place is another one.
        for i in 0..4 {
            rolled.append(record(100 + i, 1_000)).unwrap();
        }
        let p = rolled.extends(later).unwrap().unwrap();
        assert!(p.contains("record 6 is not the one exported"), "{p}");
    }

    #[test]
    fn records_are_listed_newest_first_by_secret_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let a = log(dir.path());
        for i in 0..5 {
            a.append(record(i % 2, 1_000 + i)).unwrap();
        }
        let all = a.list(&AuditQuery::newest(10)).unwrap();
        assert_eq!(all.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![5, 4, 3, 2, 1]);
        let seqs = |q: AuditQuery| a.list(&q).unwrap().iter().map(|r| r.seq).collect::<Vec<_>>();
        let by_secret = AuditQuery { secret: Some("app/1".into()), ..AuditQuery::newest(10) };
        assert_eq!(seqs(by_secret.clone()), vec![4, 2]);
        // The limit counts matching records: the newest match is not crowded out by others.
        assert_eq!(seqs(AuditQuery { limit: 1, ..by_secret }), vec![4]);
        assert_eq!(seqs(AuditQuery { since_ms: Some(1_003), ..AuditQuery::newest(10) }), vec![5, 4]);
        assert_eq!(seqs(AuditQuery { until_ms: Some(1_001), ..AuditQuery::newest(10) }), vec![2, 1]);
        assert_eq!(seqs(AuditQuery { until_ms: Some(1_003), since_ms: Some(1_002), ..AuditQuery::newest(1) }), vec![4]);
    }
}
