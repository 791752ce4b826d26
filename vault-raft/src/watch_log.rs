//! The node-local history of changes to secrets, which `WatchSecrets` replays and follows.
//!
//! Applying a batch of entries records one event per change it made (see [`events_of`]), each
//! with the log index of its entry as its revision, in the same RocksDB batch as the changes:
//! no change is applied without its events, and no event exists for a change not applied. The
//! events live in their own column family, keyed by (revision, seq) in big-endian order, so a
//! replay from a revision is one forward scan. That family is **not** part of the replicated
//! state: it is not in `SM_CFS`, so snapshots and backups never carry it. Every node records
//! the same events for the same entries, so a revision means the same thing on every node.
//!
//! The **floor** is the oldest revision this node can replay from: every event after it is
//! kept. It starts at the applied index when the history is first opened on an existing store
//! (changes before were never recorded), rises to a snapshot's index when one is installed
//! (the changes it stands for were not applied here one by one), and rises as the oldest
//! events are pruned to keep about [`WatchLog::set_history`] events (by a range delete in the
//! apply batch, once the history is an eighth over its size, so tombstones stay few).
//!
//! After the batch is written, its events go out to live subscribers as one `Arc` (a
//! `tokio::sync::broadcast`): a subscriber that falls behind the broadcast reads the table
//! instead, so it loses nothing.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rocksdb::{IteratorMode, WriteBatch, DB};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::codec::{decode, encode};
use crate::command::{Command, CommandResponse};
use crate::db::{cf, CF_RAFT_META, CF_WATCH};
use crate::StoreError;

/// The floor (u64), in the node-local Raft metadata family.
pub(crate) const KEY_WATCH_FLOOR: &[u8] = b"watch_floor";
/// Applied batches a live subscriber may be behind before it reads the table instead.
const BROADCAST_BATCHES: usize = 4096;
/// Events kept when nothing else is set (`VAULT_WATCH_HISTORY`).
pub const DEFAULT_WATCH_HISTORY: u64 = 100_000;

/// What happened to a secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChangeKind {
    Put,
    Delete,
    Undelete,
    Destroy,
    Rotation,
    /// The secret and all its versions were removed (version 0).
    Remove,
    /// A restore replaced the store (name empty, version 0).
    Reset,
}

/// One change, as stored (the revision is in the key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StoredEvent {
    name: String,
    version: u64,
    kind: ChangeKind,
}

/// One change at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeEvent {
    pub revision: u64,
    pub name: String,
    pub version: u64,
    pub kind: ChangeKind,
}

/// What one applied batch (or an installed snapshot) tells live subscribers.
#[derive(Debug)]
pub struct Published {
    /// In commit order.
    pub events: Vec<ChangeEvent>,
    /// The last log index the batch applied.
    pub revision: u64,
    /// The floor after it: a subscriber that has not covered up to here cannot go on.
    pub floor: u64,
}

/// The events of a replay from the table.
#[derive(Debug)]
pub struct Replay {
    pub events: Vec<ChangeEvent>,
    /// More events follow the last one returned.
    pub more: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The revision asked for is older than the floor.
    #[error("revision {asked} was compacted; oldest kept is {floor}")]
    Compacted { asked: u64, floor: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A change as a command makes it: name, version, kind (the revision is its entry's index).
pub(crate) type Change = (String, u64, ChangeKind);

/// The events one command's response says it made, appended to `out` as (name, version,
/// kind). Only changes that happened: a rejected command, or a no-op, records nothing.
pub(crate) fn events_of(cmd: &Command, resp: &CommandResponse, out: &mut Vec<Change>) {
    let mut versions = |name: &str, kind: ChangeKind| {
        if let CommandResponse::Changed { versions } = resp {
            out.extend(versions.iter().map(|v| (name.to_string(), *v, kind)));
        }
    };
    match (cmd, resp) {
        (Command::PutSecret { name, .. }, CommandResponse::Written { version }) => {
            out.push((name.clone(), *version, ChangeKind::Put))
        }
        (Command::RotationDone { name, .. }, CommandResponse::Written { version }) => {
            out.push((name.clone(), *version, ChangeKind::Rotation))
        }
        (Command::DeleteSecret { name }, CommandResponse::Ok) => out.push((name.clone(), 0, ChangeKind::Remove)),
        (Command::RestoreCommit { .. }, CommandResponse::Restored { .. }) => {
            out.push((String::new(), 0, ChangeKind::Reset))
        }
        (Command::DeleteVersions { name, .. } | Command::SoftDeleteSecret { name, .. }, _) => {
            versions(name, ChangeKind::Delete)
        }
        (Command::UndeleteVersions { name, .. }, _) => versions(name, ChangeKind::Undelete),
        (Command::DestroyVersions { name, .. } | Command::DestroySecret { name, .. }, _) => {
            versions(name, ChangeKind::Destroy)
        }
        (Command::AsCaller { cmd, .. }, resp) => events_of(cmd, resp, out),
        (Command::Batch(cmds), CommandResponse::Batch(resps)) => {
            for (c, r) in cmds.iter().zip(resps) {
                events_of(c, r, out);
            }
        }
        _ => {}
    }
}

fn event_key(revision: u64, seq: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&revision.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn key_revision(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(..8)?.try_into().ok()?))
}

/// Empties the history and raises the floor to `index`, in `batch` (a snapshot install's
/// last batch): the changes up to the snapshot were not applied here one by one.
pub(crate) fn reset_in(db: &DB, batch: &mut WriteBatch, index: u64) -> Result<(), StoreError> {
    let floor = read_floor(db)?.unwrap_or(0).max(index);
    batch.delete_range_cf(cf(db, CF_WATCH)?, event_key(0, 0), event_key(u64::MAX, u32::MAX));
    batch.delete_cf(cf(db, CF_WATCH)?, event_key(u64::MAX, u32::MAX));
    batch.put_cf(cf(db, CF_RAFT_META)?, KEY_WATCH_FLOOR, encode(&floor)?);
    Ok(())
}

fn read_floor(db: &DB) -> Result<Option<u64>, StoreError> {
    db.get_cf(cf(db, CF_RAFT_META)?, KEY_WATCH_FLOOR)?.map(|b| decode(&b)).transpose()
}

/// Revisions in the table, oldest first, with how many events each has.
#[derive(Default)]
struct Index {
    revisions: VecDeque<(u64, u64)>,
    total: u64,
}

struct Inner {
    db: Arc<DB>,
    history: AtomicU64,
    /// The last applied index whose events are in the table; stored before they are
    /// broadcast, so a subscriber that reads it after subscribing receives every later one.
    applied: AtomicU64,
    /// The last applied index whose events have been broadcast.
    sent: AtomicU64,
    floor: AtomicU64,
    index: Mutex<Index>,
    tx: broadcast::Sender<Arc<Published>>,
    /// Runs once inside [`WatchLog::published`], between the store of `applied` and the
    /// broadcast: lets a test subscribe exactly there.
    #[cfg(test)]
    between: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

/// This node's history of changes: written by the state machine, read by watchers.
#[derive(Clone)]
pub struct WatchLog {
    inner: Arc<Inner>,
}

/// Events staged in an apply batch, published once it is written.
pub(crate) struct Staged {
    events: Vec<ChangeEvent>,
    /// The revisions pruned and the floor after them, if this batch prunes.
    prune: Option<(usize, u64)>,
}

impl WatchLog {
    /// Opens the history; `last_applied` is the floor when there is none yet.
    pub(crate) fn open(db: Arc<DB>, last_applied: u64) -> Result<Self, StoreError> {
        let floor = match read_floor(&db)? {
            Some(f) => f,
            None => {
                db.put_cf(cf(&db, CF_RAFT_META)?, KEY_WATCH_FLOOR, encode(&last_applied)?)?;
                last_applied
            }
        };
        let index = load_index(&db)?;
        let (tx, _) = broadcast::channel(BROADCAST_BATCHES);
        Ok(WatchLog {
            inner: Arc::new(Inner {
                db,
                history: AtomicU64::new(DEFAULT_WATCH_HISTORY),
                applied: AtomicU64::new(last_applied),
                sent: AtomicU64::new(last_applied),
                floor: AtomicU64::new(floor),
                index: Mutex::new(index),
                tx,
                #[cfg(test)]
                between: Mutex::new(None),
            }),
        })
    }

    /// Runs `hook` once, inside the next [`published`](Self::published) (see `Inner::between`).
    #[cfg(test)]
    pub(crate) fn set_between(&self, hook: Box<dyn FnOnce() + Send>) {
        *self.inner.between.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// How many events to keep (at least 1).
    pub fn set_history(&self, events: u64) {
        self.inner.history.store(events.max(1), Ordering::Relaxed);
    }

    /// Receives every applied batch with events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.inner.tx.subscribe()
    }

    /// The last applied index whose events are all in the table. A receiver subscribed
    /// before this is read receives every event after it: where a watch from now starts.
    pub fn applied(&self) -> u64 {
        self.inner.applied.load(Ordering::Acquire)
    }

    /// The last applied index whose events have all been broadcast: a subscriber that drains
    /// its receiver after reading this has received every event up to it.
    pub fn sent(&self) -> u64 {
        self.inner.sent.load(Ordering::Acquire)
    }

    pub fn floor(&self) -> u64 {
        self.inner.floor.load(Ordering::Acquire)
    }

    /// Events kept in the table.
    pub fn len(&self) -> u64 {
        self.inner.index.lock().unwrap_or_else(|p| p.into_inner()).total
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `events` (name, version, kind) of the entry at `revision` to `batch`, and prunes
    /// the oldest when the history is over its size. Call [`published`](Self::published) once
    /// the batch is written.
    pub(crate) fn stage(
        &self,
        batch: &mut WriteBatch,
        per_entry: Vec<(u64, Vec<Change>)>,
    ) -> Result<Staged, StoreError> {
        let family = cf(&self.inner.db, CF_WATCH)?;
        let mut events = Vec::new();
        for (revision, changes) in per_entry {
            for (seq, (name, version, kind)) in changes.into_iter().enumerate() {
                let seq = u32::try_from(seq).map_err(|_| StoreError::Corrupt("too many events in one entry".into()))?;
                let stored = StoredEvent { name, version, kind };
                batch.put_cf(family, event_key(revision, seq), encode(&stored)?);
                events.push(ChangeEvent { revision, name: stored.name, version, kind });
            }
        }
        let history = self.inner.history.load(Ordering::Relaxed);
        let index = self.inner.index.lock().unwrap_or_else(|p| p.into_inner());
        let total = index.total + events.len() as u64;
        let mut prune = None;
        if total > history + history.div_ceil(8) {
            // Down to `history`, whole revisions at a time; never the events just staged.
            let (mut left, mut cut, mut n) = (total, None, 0);
            for (rev, count) in index.revisions.iter() {
                if left <= history {
                    break;
                }
                left -= count;
                cut = Some(*rev);
                n += 1;
            }
            if let Some(cut) = cut {
                batch.delete_range_cf(family, event_key(0, 0), event_key(cut.saturating_add(1), 0));
                let floor = cut.max(self.floor());
                batch.put_cf(cf(&self.inner.db, CF_RAFT_META)?, KEY_WATCH_FLOOR, encode(&floor)?);
                prune = Some((n, floor));
            }
        }
        Ok(Staged { events, prune })
    }

    /// The batch holding `staged` is written, up to log index `applied`: updates the index
    /// and floor, and sends the events to live subscribers.
    pub(crate) fn published(&self, staged: Staged, applied: u64) {
        let Staged { events, prune } = staged;
        {
            let mut index = self.inner.index.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((n, floor)) = prune {
                for _ in 0..n {
                    if let Some((_, count)) = index.revisions.pop_front() {
                        index.total -= count;
                    }
                }
                self.inner.floor.store(floor, Ordering::Release);
            }
            for e in &events {
                match index.revisions.back_mut() {
                    Some((rev, count)) if *rev == e.revision => *count += 1,
                    _ => index.revisions.push_back((e.revision, 1)),
                }
                index.total += 1;
            }
        }
        // `applied` first: a subscriber that reads it between the two has the events up to it
        // in the table and receives the batch (see `applied`).
        self.inner.applied.store(applied, Ordering::Release);
        #[cfg(test)]
        if let Some(hook) = self.inner.between.lock().unwrap_or_else(|p| p.into_inner()).take() {
            hook();
        }
        if !events.is_empty() || prune.is_some() {
            let _ = self.inner.tx.send(Arc::new(Published { events, revision: applied, floor: self.floor() }));
        }
        self.inner.sent.store(applied, Ordering::Release);
    }

    /// After a snapshot install (which emptied the table, see [`reset_in`]): reloads the
    /// floor and tells live subscribers, which cannot go on from before it.
    pub(crate) fn installed(&self, index: u64) -> Result<(), StoreError> {
        let floor = read_floor(&self.inner.db)?.unwrap_or(index);
        *self.inner.index.lock().unwrap_or_else(|p| p.into_inner()) = load_index(&self.inner.db)?;
        self.inner.floor.store(floor, Ordering::Release);
        self.inner.applied.store(index, Ordering::Release);
        let _ = self.inner.tx.send(Arc::new(Published { events: Vec::new(), revision: index, floor }));
        self.inner.sent.store(index, Ordering::Release);
        Ok(())
    }

    /// Events after revision `after`, oldest first: at least every event of each revision
    /// returned, and about `max` events (more when the last revision has more). `Compacted`
    /// when `after` is older than the floor.
    pub fn read_after(&self, after: u64, max: usize) -> Result<Replay, ReplayError> {
        let db = &self.inner.db;
        // The floor and the events from one consistent view, so a prune between the two
        // cannot make a gap look like no events.
        let view = db.snapshot();
        let floor: u64 = view
            .get_cf(cf(db, CF_RAFT_META)?, KEY_WATCH_FLOOR)
            .map_err(StoreError::from)?
            .map(|b| decode(&b))
            .transpose()?
            .unwrap_or(0);
        if after < floor {
            return Err(ReplayError::Compacted { asked: after, floor });
        }
        let from = event_key(after.saturating_add(1), 0);
        let mut events: Vec<ChangeEvent> = Vec::new();
        let mode = IteratorMode::From(&from, rocksdb::Direction::Forward);
        for item in view.iterator_cf(cf(db, CF_WATCH)?, mode) {
            let (k, v) = item.map_err(StoreError::from)?;
            let revision = key_revision(&k).ok_or_else(|| StoreError::Corrupt("watch event key is short".into()))?;
            if events.len() >= max && events.last().is_some_and(|e| e.revision != revision) {
                return Ok(Replay { events, more: true });
            }
            let stored: StoredEvent = decode(&v)?;
            events.push(ChangeEvent { revision, name: stored.name, version: stored.version, kind: stored.kind });
        }
        Ok(Replay { events, more: false })
    }
}

fn load_index(db: &DB) -> Result<Index, StoreError> {
    let mut index = Index::default();
    for item in db.iterator_cf(cf(db, CF_WATCH)?, IteratorMode::Start) {
        let (k, _) = item?;
        let Some(rev) = key_revision(&k) else { continue };
        match index.revisions.back_mut() {
            Some((r, count)) if *r == rev => *count += 1,
            _ => index.revisions.push_back((rev, 1)),
        }
        index.total += 1;
    }
    Ok(index)
}
