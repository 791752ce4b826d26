//! Group commit of the audit records of reads ([`AuditLog::append_all`]).
//!
//! Every read served leaves a record, written before its answer. One write per read (a chain
//! lock, an HMAC, the record and the head, a `db.write`) was the largest per-read cost at
//! many clients, so concurrent reads share writes:
//! - a caller that finds no write under way writes its own records at once, on its own task
//!   (no hand-off when reads do not overlap);
//! - callers that arrive meanwhile queue their records with a oneshot and wait;
//! - when the write is done, whatever queued meanwhile is written by a task spawned for it, as
//!   one `db.write` (k records, one head), again and again while more arrive. The caller that
//!   started it answers after its own write, not after other callers' records.
//!
//! Each caller returns only once the write holding its records is done, with that write's
//! outcome: no read answers without its record. A caller that gives up waiting (its request
//! was cancelled) leaves its records queued; they are written all the same.
//!
//! Records are stamped with the time they are written, so a record's time never goes back
//! along the chain (`audit list --since` walks back by time) however long a batch read took.
//! At most [`MAX_QUEUED`] callers wait (more are refused as busy, never answered unrecorded),
//! and a writer that panics fails its waiters and hands the queue back instead of leaving
//! every later read waiting.

use std::sync::Mutex;

use tokio::sync::oneshot;
use vault_core::model::AuditRecord;

use crate::audit_log::AuditLog;
use crate::StoreError;

/// Callers whose records may wait behind the write under way; past this, reads are refused
/// (`UNAVAILABLE`) until the writer catches up (a stalled disk, say).
pub(crate) const MAX_QUEUED: usize = 16_384;

/// The outcome of the write that held a caller's records.
type Outcome = Result<(), String>;

/// Records waiting for the write under way to finish, and whether one is.
#[derive(Default)]
pub(crate) struct Group {
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    writing: bool,
    waiting: Vec<(Vec<AuditRecord>, oneshot::Sender<Outcome>)>,
}

impl Group {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl AuditLog {
    /// Appends `records` (reads served by this node; `seq` and `node_id` are set here) and
    /// returns once they are written, in one write shared with the records of concurrent
    /// callers (see `audit_group`).
    pub async fn append_all(&self, records: Vec<AuditRecord>) -> Result<(), StoreError> {
        // A required sink that does not take records refuses the reads before anything waits.
        self.admit()?;
        let waiting = {
            let mut q = self.group().lock();
            if q.writing && q.waiting.len() >= MAX_QUEUED {
                return Err(StoreError::Busy(format!("{MAX_QUEUED} reads wait for their audit records")));
            }
            if q.writing {
                let (tx, rx) = oneshot::channel();
                q.waiting.push((records, tx));
                Err(rx)
            } else {
                q.writing = true;
                Ok(records)
            }
        };
        let records = match waiting {
            Ok(records) => records,
            Err(rx) => {
                return match rx.await {
                    Ok(outcome) => outcome.map_err(StoreError::SharedWrite),
                    Err(_) => Err(StoreError::SharedWrite("the audit writer stopped before writing".into())),
                }
            }
        };
        // No await from here to the hand-off: this write is never cut short by a cancelled
        // caller, and `writing` is always cleared or handed on.
        let writing = Writing(self);
        let result = self.append_now(records);
        std::mem::forget(writing);
        metrics::histogram!("vault_audit_write_reads").record(1.0);
        if self.more_queued() {
            let log = self.clone();
            tokio::spawn(async move { log.drain().await });
        }
        result
    }

    /// Writes `records` now, as one batch with one head.
    fn append_now(&self, mut records: Vec<AuditRecord>) -> Result<(), StoreError> {
        let now = vault_core::time::now_ms();
        for r in &mut records {
            r.node_id = self.node_id();
            r.time_ms = now;
        }
        self.commit(rocksdb::WriteBatch::default(), records)
    }

    /// Whether records queued during the write that just finished; if not, that write was
    /// the last one and the next caller writes at once.
    fn more_queued(&self) -> bool {
        let mut q = self.group().lock();
        q.writing = !q.waiting.is_empty();
        q.writing
    }

    /// Writes what is queued, one batch at a time, until nothing is.
    async fn drain(&self) {
        loop {
            let batch = std::mem::take(&mut self.group().lock().waiting);
            let (records, done): (Vec<Vec<AuditRecord>>, Vec<_>) = batch.into_iter().unzip();
            let writing = Writing(self);
            let outcome = self.append_now(records.into_iter().flatten().collect()).map_err(|e| e.to_string());
            std::mem::forget(writing);
            metrics::histogram!("vault_audit_write_reads").record(done.len() as f64);
            for tx in done {
                let _ = tx.send(outcome.clone());
            }
            if !self.more_queued() {
                return;
            }
            // Let the callers just answered (and others) queue more before the next write.
            tokio::task::yield_now().await;
        }
    }
}

/// Held while a write is under way; dropped only if the write panicked (a finished write
/// forgets it): then the write is no longer under way, and every queued caller gets an error
/// (the senders of the batch being written are dropped with the panic: their callers get one
/// too).
struct Writing<'a>(&'a AuditLog);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let mut q = self.0.group().lock();
        q.writing = false;
        for (_, tx) in q.waiting.drain(..) {
            let _ = tx.send(Err("the audit writer failed".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn read(i: usize) -> AuditRecord {
        AuditRecord {
            seq: 0,
            time_ms: 1,
            node_id: 0,
            actor: format!("reader-{i}"),
            client_ip: "127.0.0.1".into(),
            action: "secret.get".into(),
            secret: Some(format!("app/{i}")),
            outcome: "ok".into(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_are_all_written_once_in_one_chain_and_fewer_writes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Arc::new(crate::db::open(&dir.path().join("db")).expect("open db"));
        let key = vault_core::keys::AuditMacKey::generate();
        let keys = crate::audit_log::AuditKeys::new(vec![("k".into(), key)]).expect("keys");
        let log = AuditLog::open(db.clone(), 7, keys).expect("open");
        let callers: Vec<_> = (0..400)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append_all(vec![read(i)]).await })
            })
            .collect();
        for c in callers {
            c.await.expect("join").expect("written");
        }
        // A batch of two from one caller, after them.
        log.append_all(vec![read(1000), read(1001)]).await.expect("written");
        let report = log.verify().expect("verify");
        assert!(report.problem.is_none(), "{report:?}");
        let all = log.list(&crate::AuditQuery::newest(usize::MAX)).expect("list");
        assert_eq!(all.len(), 402);
        let mut actors: Vec<String> = all.iter().map(|r| r.actor.clone()).collect();
        actors.sort();
        actors.dedup();
        assert_eq!(actors.len(), 402, "each record once");
        assert!(all.iter().all(|r| r.node_id == 7));
        assert_eq!(all[0].actor, "reader-1001", "newest first");
        assert!(!log.group().lock().writing, "the writer is done");
        assert!(all.iter().all(|r| r.time_ms > 1), "stamped when written, not when built");
    }

    fn open_log(dir: &std::path::Path) -> AuditLog {
        let db = Arc::new(crate::db::open(&dir.join("db")).expect("open db"));
        let key = vault_core::keys::AuditMacKey::generate();
        let keys = crate::audit_log::AuditKeys::new(vec![("k".into(), key)]).expect("keys");
        AuditLog::open(db, 7, keys).expect("open")
    }

    #[tokio::test]
    async fn a_full_queue_refuses_the_read_as_busy_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = open_log(dir.path());
        let mut receivers = Vec::new();
        {
            let mut q = log.group().lock();
            q.writing = true;
            for i in 0..MAX_QUEUED {
                let (tx, rx) = oneshot::channel();
                q.waiting.push((vec![read(i)], tx));
                receivers.push(rx);
            }
        }
        let refused = log.append_all(vec![read(MAX_QUEUED)]).await;
        assert!(matches!(refused, Err(StoreError::Busy(_))), "{refused:?}");
        assert_eq!(log.group().lock().waiting.len(), MAX_QUEUED, "the refused read queued nothing");
    }

    #[tokio::test]
    async fn a_writer_that_panics_fails_its_waiters_and_frees_the_queue() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = open_log(dir.path());
        let (tx, rx) = oneshot::channel();
        {
            let mut q = log.group().lock();
            q.writing = true;
            q.waiting.push((vec![read(1)], tx));
        }
        let writer = {
            let log = log.clone();
            std::thread::spawn(move || {
                let _writing = Writing(&log);
                panic!("a writer that panics mid-write");
            })
        };
        assert!(writer.join().is_err(), "the writer panicked");
        assert!(matches!(rx.await, Ok(Err(_))), "the waiter got an error, not a success");
        assert!(!log.group().lock().writing, "the next caller writes at once");
        log.append_all(vec![read(2)]).await.expect("a later read is written");
        assert_eq!(log.list(&crate::AuditQuery::newest(usize::MAX)).expect("list").len(), 1);
    }
}
