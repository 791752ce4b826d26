//! openraft's log storage over the segment files.
//!
//! One writer (a mutex around the active segment and a reused encode buffer) and an index in a
//! read-write lock, which also holds the segments' read handles so a reader picks both up at
//! once. Appends write inline on openraft's core task (a page-cache write) and leave the sync
//! to the syncer thread; votes, truncations and purges write and sync on the blocking pool.
//! Every change to the index happens under the writer lock, after its record is written, and
//! the in-memory tail ([`Recent`]) changes with it under the same state lock, so a read served
//! from the tail sees what a read from the files would.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::File;
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use openraft::storage::{RaftLogReader, RaftLogStorage};

use super::index::{Index, Loc};
use super::recent::Recent;
use super::record::{parse, Kind, Parsed};
use super::recover::recover;
use super::segment::{self, Segment};
use super::{checkpoint_record, entry_record, value_record, RaftLogError, ENTRY_PREFIX};
use crate::codec::decode;
use crate::error::{sto, IoKind};
use crate::synced_log::{SyncTarget, SyncedLog, Syncer};
use crate::typ::{Entry, LogFlushed, LogId, LogState, StorageError, TypeConfig, Vote};
use crate::StoreError;

/// Makes the state machine's applied state durable. The log calls it before it writes a purge
/// record: openraft cannot apply purged entries again, so `last_purged <= durable last_applied`
/// must hold after any crash. With the log in RocksDB the shared WAL gave that for free; the
/// node passes RocksDB's `flush_wal(true)` ([`crate::storage::state_wal`]).
pub trait StateDurability: Send + Sync + 'static {
    fn make_durable(&self) -> std::io::Result<()>;
}

/// How the log is kept.
#[derive(Clone)]
pub struct Options {
    /// A new segment is started once the active one is this large.
    pub segment_bytes: u64,
    /// Called before every purge record is written (see [`StateDurability`]). `None` only for
    /// a log without a state machine (tests).
    pub before_purge: Option<Arc<dyn StateDurability>>,
}

impl Default for Options {
    fn default() -> Self {
        Options { segment_bytes: 64 << 20, before_purge: None }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("segment_bytes", &self.segment_bytes)
            .field("before_purge", &self.before_purge.is_some())
            .finish()
    }
}

/// The Raft log in segment files. Cheap to clone.
#[derive(Clone)]
pub struct SegmentLogStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    node_id: u64,
    opts: Options,
    writer: Mutex<Writer>,
    state: Arc<RwLock<State>>,
    active: Arc<ActiveFile>,
    syncer: Syncer,
}

struct Writer {
    seg: Segment,
    buf: Vec<u8>,
}

struct State {
    index: Index,
    files: BTreeMap<u64, Arc<File>>,
    /// The newest entries, decoded: reads of the tail (replication) are served from here.
    recent: Recent,
}

/// The syncer's target: the segment appends go to. A segment is synced whole before the next
/// one becomes active, so syncing the active one covers everything written before the call.
struct ActiveFile(Mutex<Arc<File>>);

impl SyncTarget for ActiveFile {
    fn sync(&self) -> std::io::Result<()> {
        let file = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        file.sync_data()
    }
}

impl SegmentLogStore {
    /// Opens (or creates) the log in `dir`, recovering it; see `recover.rs`.
    pub fn open(dir: &Path, node_id: u64, opts: Options) -> Result<Self, RaftLogError> {
        let rec = recover(dir, node_id)?;
        let end = rec.index.next_index();
        let active = Arc::new(ActiveFile(Mutex::new(rec.active.reader())));
        let target: Weak<dyn SyncTarget> = Arc::downgrade(&active) as Weak<ActiveFile>;
        let syncer = Syncer::start_with(target, end).map_err(|e| RaftLogError::io("start syncer for", dir, e))?;
        let inner = Inner {
            dir: dir.to_path_buf(),
            node_id,
            opts,
            writer: Mutex::new(Writer { seg: rec.active, buf: Vec::new() }),
            state: Arc::new(RwLock::new(State { index: rec.index, files: rec.files, recent: Recent::default() })),
            active,
            syncer,
        };
        Ok(SegmentLogStore { inner: Arc::new(inner) })
    }

    /// How far this log is on disk.
    pub fn synced(&self) -> SyncedLog {
        self.inner.syncer.handle()
    }

    /// A read-only view of the log's in-memory state, for pre-votes.
    pub fn view(&self) -> LogView {
        LogView { state: self.inner.state.clone() }
    }

    /// Writes entries (unsynced) and tells the syncer; `append` without openraft's callback.
    pub(crate) fn append_entries(&self, entries: impl IntoIterator<Item = Entry>) -> Result<(), RaftLogError> {
        if let Some(last) = self.inner.append(entries.into_iter())? {
            self.inner.syncer.written(last);
        }
        Ok(())
    }

    fn blocking<T: Send + 'static>(
        &self,
        kind: IoKind,
        f: impl FnOnce(&Inner) -> Result<T, RaftLogError> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, StorageError>> {
        let inner = self.inner.clone();
        async move {
            match tokio::task::spawn_blocking(move || f(&inner)).await {
                Ok(r) => r.map_err(|e| sto(kind, e.into())),
                Err(e) => Err(sto(kind, StoreError::from(e))),
            }
        }
    }
}

/// The log's last entry, read from memory (no I/O, no thread hop): pre-votes ask for it.
#[derive(Clone)]
pub struct LogView {
    state: Arc<RwLock<State>>,
}

impl LogView {
    /// The last entry written (synced or not), or the last purged one when the log is empty.
    pub fn last_log_id(&self) -> Option<LogId> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).index.last_log_id()
    }
}

impl Inner {
    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the next segment if the active one is full. The full one is synced first, so
    /// only the newest segment ever holds unsynced bytes.
    fn rotate_if_full(&self, w: &mut Writer) -> Result<(), RaftLogError> {
        if w.seg.end() < self.opts.segment_bytes {
            return Ok(());
        }
        w.seg.sync_data()?;
        let seq = w.seg.seq() + 1;
        let first = checkpoint_record(seq, &self.read().index.checkpoint())?;
        let seg = Segment::create(&self.dir, seq, self.node_id, &first)?;
        {
            let mut st = self.write();
            st.index.add_segment(seq);
            st.files.insert(seq, seg.reader());
        }
        *self.active.0.lock().unwrap_or_else(|p| p.into_inner()) = seg.reader();
        w.seg = seg;
        Ok(())
    }

    /// Writes one record built by `build` to the active segment and syncs it.
    fn write_synced(
        &self,
        w: &mut Writer,
        build: impl FnOnce(&mut Vec<u8>, u64) -> Result<usize, RaftLogError>,
    ) -> Result<(), RaftLogError> {
        self.rotate_if_full(w)?;
        let mut buf = std::mem::take(&mut w.buf);
        buf.clear();
        let r = build(&mut buf, w.seg.seq()).and_then(|_| w.seg.append(&buf)).and_then(|_| w.seg.sync_data());
        w.buf = buf;
        r
    }

    fn append(&self, entries: impl Iterator<Item = Entry>) -> Result<Option<u64>, RaftLogError> {
        let mut w = self.writer();
        self.rotate_if_full(&mut w)?;
        let (seq, base) = (w.seg.seq(), w.seg.end());
        let mut buf = std::mem::take(&mut w.buf);
        buf.clear();
        let mut locs = Vec::new();
        let mut tail = Vec::new();
        for entry in entries {
            let off = base + buf.len() as u64;
            let len = entry_record(&mut buf, seq, &entry)?;
            locs.push(Loc { log_id: entry.log_id, seg: seq, off, len: len as u32 });
            tail.push((entry, len));
        }
        if locs.is_empty() {
            w.buf = buf;
            return Ok(None);
        }
        let written = w.seg.append(&buf);
        w.buf = buf;
        written?;
        let mut st = self.write();
        for loc in &locs {
            st.index.push(*loc);
        }
        for (entry, len) in tail {
            st.recent.push(entry, len);
        }
        Ok(locs.last().map(|l| l.log_id.index))
    }

    fn read_entries(locs: &[Loc], files: &[Arc<File>]) -> Result<Vec<Entry>, StoreError> {
        let mut out = Vec::with_capacity(locs.len());
        let mut i = 0;
        while i < locs.len() {
            // One read for each run of records that lie back to back in one file.
            let mut j = i + 1;
            while j < locs.len()
                && locs[j].seg == locs[i].seg
                && locs[j].off == locs[j - 1].off + locs[j - 1].len as u64
            {
                j += 1;
            }
            let span = (locs[j - 1].off + locs[j - 1].len as u64 - locs[i].off) as usize;
            let bytes = segment::read_at(&files[i], locs[i].off, span)?;
            let mut at = 0;
            for loc in &locs[i..j] {
                let entry = match parse(&bytes[at..], loc.seg) {
                    Parsed::Record { kind: Kind::Entry, body, len }
                        if len == loc.len as usize && body.len() >= ENTRY_PREFIX =>
                    {
                        decode::<Entry>(&body[ENTRY_PREFIX..])?
                    }
                    other => {
                        let why = format!(
                            "entry {} at offset {} of segment {}: {other:?}",
                            loc.log_id.index, loc.off, loc.seg
                        );
                        return Err(StoreError::Corrupt(why));
                    }
                };
                if entry.log_id != loc.log_id {
                    return Err(StoreError::Corrupt(format!(
                        "segment {} holds {} where {} was",
                        loc.seg, entry.log_id, loc.log_id
                    )));
                }
                at += loc.len as usize;
                out.push(entry);
            }
            i = j;
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for SegmentLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let Some((start, end)) = crate::storage::index_bounds(&range) else {
            return Ok(Vec::new());
        };
        let (locs, files) = {
            let st = self.inner.read();
            // The tail (what replication reads, on every message): no read, no decode, no
            // thread hop. Only a miss goes to the files, on the blocking pool.
            // (Below the log's first entry there is nothing to read.)
            let from = st.index.first_index().map_or(start, |first| start.max(first));
            if let Some(hit) = st.recent.get(from, Some(end)) {
                return Ok(hit);
            }
            let locs = st.index.locate(start, end);
            let files: Option<Vec<_>> = locs.iter().map(|l| st.files.get(&l.seg).cloned()).collect();
            (locs, files)
        };
        let files =
            files.ok_or_else(|| sto(IoKind::ReadLogs, StoreError::Corrupt("an entry's segment is gone".into())))?;
        if locs.is_empty() {
            return Ok(Vec::new());
        }
        tokio::task::spawn_blocking(move || Inner::read_entries(&locs, &files))
            .await
            .map_err(StoreError::from)
            .and_then(|r| r)
            .map_err(|e| sto(IoKind::ReadLogs, e))
    }
}

impl RaftLogStorage<TypeConfig> for SegmentLogStore {
    type LogReader = SegmentLogStore;

    async fn get_log_state(&mut self) -> Result<LogState, StorageError> {
        let st = self.inner.read();
        Ok(LogState { last_purged_log_id: st.index.last_purged(), last_log_id: st.index.last_log_id() })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let vote = *vote;
        self.blocking(IoKind::WriteVote, move |inner| {
            let mut w = inner.writer();
            inner.write_synced(&mut w, |buf, seq| value_record(buf, seq, Kind::Vote, &vote))?;
            inner.write().index.set_vote(vote);
            Ok(())
        })
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.inner.read().index.vote())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        if let Some(c) = committed {
            self.inner.syncer.committed(c.index);
        }
        Ok(())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        // Written inline, unsynced (a page-cache write), and reported at once; the syncer
        // thread syncs behind it. See `synced_log` for where durability is waited for.
        self.append_entries(entries).map_err(|e| sto(IoKind::WriteLogs, e.into()))?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let index = log_id.index;
        self.blocking(IoKind::WriteLogs, move |inner| {
            let mut w = inner.writer();
            // Synced: `synced_log` takes what remains after a truncation to be on disk.
            inner.write_synced(&mut w, |buf, seq| {
                super::record::encode_into(buf, seq, Kind::Truncate, |o| {
                    o.extend_from_slice(&index.to_le_bytes());
                    Ok(())
                })
            })?;
            let mut st = inner.write();
            st.index.truncate(index);
            st.recent.truncate(index);
            Ok(())
        })
        .await?;
        self.inner.syncer.truncated(index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.blocking(IoKind::WriteLogs, move |inner| {
            // The applies of the entries going away must be on disk before the record that
            // drops them: a crash then restarts from an applied state at or past the purge.
            if let Some(hook) = &inner.opts.before_purge {
                hook.make_durable().map_err(|e| RaftLogError::io("make durable before a purge of", &inner.dir, e))?;
            }
            let mut w = inner.writer();
            inner.write_synced(&mut w, |buf, seq| value_record(buf, seq, Kind::Purge, &log_id))?;
            let unneeded = {
                let mut st = inner.write();
                st.index.purge(log_id);
                st.recent.purge(log_id.index);
                st.index.unneeded_segments(w.seg.seq())
            };
            // A lost unlink leaves a file of purged entries, which replay drops again.
            for seq in &unneeded {
                let path = inner.dir.join(segment::file_name(*seq));
                std::fs::remove_file(&path).map_err(|e| RaftLogError::io("remove", &path, e))?;
                let mut st = inner.write();
                st.index.remove_segment(*seq);
                st.files.remove(seq);
            }
            Ok(())
        })
        .await?;
        self.inner.syncer.purged(log_id.index);
        Ok(())
    }
}
