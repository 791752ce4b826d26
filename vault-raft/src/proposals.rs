//! Proposal batching and pipelining on the leader: concurrent writes share Raft entries, and
//! several entries are in flight at once when writes arrive faster than one entry commits.
//!
//! openraft handles each entry on its core task (append, replicate, commit, apply, respond),
//! so that per-entry cost, not the disk, bounds writes per second. Here writes queue up and
//! proposers take everything queued (up to a size bound) as one `Command::Batch`. Under no
//! load a write is proposed at once, alone; batching never waits for a batch to fill.
//!
//! One proposer has one entry in flight. Another starts when as many writes are waiting as
//! the entry most recently proposed carries: writes then arrive faster than entries commit,
//! and with a second entry in flight the next batch replicates while the first is applied and
//! answered, instead of queueing behind it. So the number of entries in flight follows the
//! load, up to a limit set by the cores (`default_max_in_flight`, or `VAULT_RAFT_MAX_IN_FLIGHT`); on two cores, where CPU rather than
//! latency bounds writes, fewer and larger entries cost less per write.
//!
//! Each command in a batch is applied in order and answered on its own, exactly as if it were
//! its own entry; a rejection of one does not affect the others. Writes to one name take turns
//! on a node (the API's name queue), so two entries in flight never race for one version.
//!
//! What the pipeline does is exported (with `VAULT_METRICS_ADDR`): each write's wait for a
//! proposer (`vault_raft_write_queue_seconds`), each entry's commands, the entries in flight
//! when it was proposed, and its time from proposal to answer (append, replication, commit,
//! apply: `vault_raft_write_entry_seconds`). The sum of entry times over a span of time is the
//! mean number of entries in flight in it: at most one would be stop-and-wait.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::oneshot;

use crate::command::{Command, CommandResponse};
use crate::node::NodeInfo;
use crate::transport::ForwardError;
use crate::typ::{NodeId, Raft};

/// Entries a leader may have in flight from client writes by default: a quarter of the cores,
/// at least two and at most eight (`VAULT_RAFT_MAX_IN_FLIGHT` sets it; 1 turns pipelining off).
pub fn default_max_in_flight() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores / 4).clamp(2, 8)
}

/// Fewest waiting writes that start another entry in flight: below this, the writes join the
/// next batch of a proposer already running.
const MIN_PIPELINED_BATCH: usize = 4;
/// Bounds on one batch. A single command larger than the byte bound still goes, alone.
const MAX_BATCH_COMMANDS: usize = 512;
const MAX_BATCH_BYTES: usize = 512 << 10;
/// Room for framing and the non-value fields of one command.
const COMMAND_OVERHEAD: usize = 4 << 10;

/// Entries per `AppendEntries` such that a full message of the largest possible entries (a
/// full batch, or one command with a value of `max_value_bytes`) stays within
/// `MAX_APPEND_BYTES` (far below the transport's message limit). openraft's default (300)
/// could otherwise build a message the transport refuses, or one too slow to send in time, and
/// a lagging follower would never catch up.
pub fn max_payload_entries(max_value_bytes: usize) -> u64 {
    let largest_entry = MAX_BATCH_BYTES.max(max_value_bytes + COMMAND_OVERHEAD);
    (MAX_APPEND_BYTES / largest_entry).clamp(1, 300) as u64
}

/// Bytes of records one `RestoreChunk` carries at most (one larger record goes alone).
pub const RESTORE_CHUNK_BYTES: usize = 256 << 10;
/// Room beside a secret value in one backup record: the version's key, nonce, wrapped data
/// key, key id and encoding. A record's bound is the value limit (at least 64 KiB, the default,
/// so roles and rules of ordinary size always fit) plus this.
pub const BACKUP_RECORD_OVERHEAD: usize = 2 << 10;
const _: () = assert!(RESTORE_CHUNK_BYTES <= MAX_BATCH_BYTES);
// A `RestoreChunk` of one largest record, in its `AsCaller` envelope, is a command of at most
// the largest entry `max_payload_entries` plans for.
const _: () = assert!(BACKUP_RECORD_OVERHEAD + 1024 <= COMMAND_OVERHEAD);

/// Largest backup record (key and value) a restore takes, for a node whose value limit is
/// `max_value_bytes`: no `RestoreChunk` built of such records outgrows a Raft message.
pub fn max_backup_record(max_value_bytes: usize) -> usize {
    max_value_bytes.max(64 << 10) + BACKUP_RECORD_OVERHEAD
}

/// Bytes of entries one AppendEntries message should carry at most (one entry larger than this
/// still goes, alone): openraft gives each message only its `heartbeat_interval` (a few hundred
/// milliseconds) before it gives up and sends it again, so a catching-up follower must be fed
/// in pieces it can take, sync and acknowledge in that time.
const MAX_APPEND_BYTES: usize = 8 << 20;
const _: () = assert!(MAX_APPEND_BYTES <= crate::transport::MAX_MESSAGE / 2);

type Reply = oneshot::Sender<Result<CommandResponse, ForwardError>>;

/// A queued write: the command, where its answer goes, and when it was queued.
type Waiting = (Command, Reply, Instant);

struct Queue {
    waiting: VecDeque<Waiting>,
    /// `approx_size` of everything in `waiting`.
    bytes: usize,
    proposers: usize,
    max_proposers: usize,
    /// Commands in the batch most recently taken.
    last_batch: usize,
    /// The most proposers ever running at once.
    most_proposers: usize,
}

impl Queue {
    fn new(max_proposers: usize) -> Self {
        Queue {
            waiting: VecDeque::new(),
            bytes: 0,
            proposers: 0,
            max_proposers: max_proposers.max(1),
            last_batch: 0,
            most_proposers: 0,
        }
    }

    /// Whether a new proposer should start for what is queued now.
    fn wants_proposer(&self) -> bool {
        if self.proposers == 0 {
            return true;
        }
        if self.proposers >= self.max_proposers {
            return false;
        }
        let full = self.waiting.len() >= MAX_BATCH_COMMANDS || self.bytes >= MAX_BATCH_BYTES;
        full || self.waiting.len() >= self.last_batch.max(MIN_PIPELINED_BATCH)
    }
}

#[derive(Clone)]
pub(crate) struct Proposals {
    raft: Raft,
    queue: Arc<Mutex<Queue>>,
    /// Entries proposed from client writes and not yet answered.
    in_flight: Arc<AtomicUsize>,
}

fn commit_timeout() -> ForwardError {
    ForwardError::Unavailable("timed out waiting for the write to commit (no quorum?); it may still apply".into())
}

pub(crate) fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> ForwardError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            ForwardError::NotLeader { leader: f.leader_id.zip(f.leader_node) }
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => ForwardError::Rejected(c.to_string()),
        RaftError::Fatal(f) => ForwardError::Unavailable(format!("raft stopped: {f}")),
    }
}

impl Proposals {
    pub(crate) fn new(raft: Raft, max_in_flight: usize) -> Self {
        Proposals {
            raft,
            queue: Arc::new(Mutex::new(Queue::new(max_in_flight))),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Proposes `cmd` and waits for its own response. On timeout the command may still apply.
    pub(crate) async fn write(&self, cmd: Command, timeout: Duration) -> Result<CommandResponse, ForwardError> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            q.bytes += cmd.approx_size();
            q.waiting.push_back((cmd, tx, Instant::now()));
            let start = q.wants_proposer();
            if start {
                q.proposers += 1;
                if q.proposers > q.most_proposers {
                    q.most_proposers = q.proposers;
                    if q.proposers > 1 {
                        // At most `max_proposers` lines in a process's life: when the pipeline
                        // first reaches a new depth.
                        tracing::info!(in_flight = q.proposers, limit = q.max_proposers, "write entries in flight");
                    }
                }
            }
            start
        };
        if start {
            let this = self.clone();
            tokio::spawn(async move { this.propose_until_empty(timeout).await });
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ForwardError::Unavailable("the proposal was dropped".into())),
            Err(_) => Err(commit_timeout()),
        }
    }

    /// Waits (at most `timeout`) until nothing is queued or being proposed; false if it did
    /// not get there. Used with new writes held, so the queue only drains.
    pub(crate) async fn drained(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                if q.proposers == 0 && q.waiting.is_empty() {
                    return true;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// One proposer: proposes what is queued, one entry at a time, until the queue is empty.
    async fn propose_until_empty(&self, timeout: Duration) {
        loop {
            let batch = {
                let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                let batch = take_batch(&mut q);
                if batch.is_empty() {
                    q.proposers -= 1;
                    return;
                }
                q.last_batch = batch.len();
                batch
            };
            self.propose(batch, timeout).await;
        }
    }

    async fn propose(&self, batch: Vec<Waiting>, timeout: Duration) {
        let single = batch.len() == 1;
        let proposed = Instant::now();
        let mut cmds = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        let queued = metrics::histogram!("vault_raft_write_queue_seconds");
        for (cmd, reply, since) in batch {
            queued.record(proposed.saturating_duration_since(since));
            cmds.push(cmd);
            replies.push(reply);
        }
        metrics::histogram!("vault_raft_write_entry_commands").record(cmds.len() as f64);
        let in_flight = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::histogram!("vault_raft_write_in_flight").record(in_flight as f64);
        let cmd = if single { cmds.swap_remove(0) } else { Command::Batch(cmds.into()) };
        let written = tokio::time::timeout(timeout, self.raft.client_write(cmd)).await;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        metrics::histogram!("vault_raft_write_entry_seconds").record(proposed.elapsed());
        let responses = match written {
            Err(_) => Err(commit_timeout()),
            Ok(Err(e)) => Err(write_error(e)),
            Ok(Ok(resp)) => match resp.data {
                resp if single => Ok(vec![resp]),
                CommandResponse::Batch(resps) if resps.len() == replies.len() => Ok(resps),
                other => Err(ForwardError::Unavailable(format!("unexpected response to a batch: {other:?}"))),
            },
        };
        match responses {
            Ok(resps) => {
                for (r, resp) in replies.into_iter().zip(resps) {
                    let _ = r.send(Ok(resp));
                }
            }
            Err(e) => {
                for r in replies {
                    let _ = r.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Takes queued commands from the front, within the batch bounds (at least one if any is
/// queued). Commands whose caller has gone away (cancelled or timed out) are dropped unproposed.
fn take_batch(q: &mut Queue) -> Vec<Waiting> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    while let Some((cmd, reply, _)) = q.waiting.front() {
        let size = cmd.approx_size();
        let abandoned = reply.is_closed();
        if !abandoned && !batch.is_empty() && (batch.len() >= MAX_BATCH_COMMANDS || bytes + size > MAX_BATCH_BYTES) {
            break;
        }
        let Some(item) = q.waiting.pop_front() else { break };
        q.bytes = q.bytes.saturating_sub(size);
        if !abandoned {
            bytes += size;
            batch.push(item);
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_entries_keep_a_message_within_the_transport_limit() {
        for max_value in [1, 64 << 10, 1 << 20, 3 << 20] {
            let n = max_payload_entries(max_value) as usize;
            let largest = MAX_BATCH_BYTES.max(max_value + COMMAND_OVERHEAD);
            assert!(n >= 1);
            assert!(n * largest <= MAX_APPEND_BYTES.max(largest), "{max_value}: {n} entries");
            assert!(n * largest <= crate::transport::MAX_MESSAGE / 2, "{max_value}: {n} entries");
        }
        assert_eq!(max_payload_entries(64 << 10), 16);
    }

    /// A `RestoreChunk` is at most `RESTORE_CHUNK_BYTES` of records or one record of the
    /// largest size a restore takes; either, as a client command, fits the largest entry the
    /// AppendEntries budget plans for, so a restore never builds a message the transport refuses.
    #[test]
    fn restore_chunks_fit_the_entry_budget() {
        use crate::snapshot_file::FamilyRecord;
        for max_value in [1, 64 << 10, 1 << 20, 3 << 20] {
            let largest_entry = MAX_BATCH_BYTES.max(max_value + COMMAND_OVERHEAD);
            let one = max_backup_record(max_value);
            let record = FamilyRecord { family: 2, key: vec![b'k'; 264], value: vec![7; one - 264] };
            let chunk = Command::RestoreChunk { id: 1, seq: 0, records: vec![record] };
            let wrapped = Command::AsCaller {
                auth: vault_core::token::TokenHash([0; 32]),
                now_ms: 1,
                cmd: Box::new(chunk.clone()),
                audit: vault_core::model::AuditContext {
                    node_id: 1,
                    actor: "a".repeat(vault_core::model::MAX_AUDIT_FIELD),
                    client_ip: "b".repeat(vault_core::model::MAX_AUDIT_FIELD),
                    action: "snapshot.restore".into(),
                },
            };
            let encoded = crate::codec::encode(&wrapped).unwrap().len();
            assert!(encoded <= largest_entry, "{max_value}: {encoded} > {largest_entry}");
            assert!(RESTORE_CHUNK_BYTES + one <= crate::transport::MAX_MESSAGE / 4);
        }
    }

    fn queue_of(n: usize) -> (Queue, Vec<oneshot::Receiver<Result<CommandResponse, ForwardError>>>) {
        let mut q = Queue::new(4);
        let mut receivers = Vec::new();
        for i in 0..n {
            let (tx, rx) = oneshot::channel();
            let cmd = Command::DeleteSecret { name: format!("s{i}") };
            q.bytes += cmd.approx_size();
            q.waiting.push_back((cmd, tx, Instant::now()));
            receivers.push(rx);
        }
        (q, receivers)
    }

    #[test]
    fn entries_in_flight_follow_the_load_up_to_the_limit() {
        let (mut q, _rx) = queue_of(3);
        assert!(q.wants_proposer(), "an idle leader proposes at once");
        q.proposers = 1;
        assert!(!q.wants_proposer(), "a few waiting writes join the next batch");
        // Writes arrive faster than the entry in flight commits: as many wait as it carries.
        let (mut busy, _rx) = queue_of(40);
        busy.proposers = 1;
        busy.last_batch = 40;
        assert!(busy.wants_proposer(), "a second entry goes while the first commits");
        busy.last_batch = 41;
        assert!(!busy.wants_proposer(), "fewer waiting than the entry in flight carries");
        busy.last_batch = 0;
        assert!(busy.wants_proposer());
        let (mut tiny, _rx) = queue_of(MIN_PIPELINED_BATCH - 1);
        tiny.proposers = 1;
        assert!(!tiny.wants_proposer(), "never an entry in flight for a handful of writes");
        let (mut full, _rx) = queue_of(MAX_BATCH_COMMANDS);
        full.proposers = 1;
        full.last_batch = MAX_BATCH_COMMANDS + 1;
        assert!(full.wants_proposer(), "a full batch waiting always pipelines");
        full.proposers = full.max_proposers;
        assert!(!full.wants_proposer(), "never past the limit");
        let (mut heavy, _rx) = queue_of(1);
        heavy.proposers = 1;
        heavy.bytes = MAX_BATCH_BYTES;
        assert!(heavy.wants_proposer(), "a backlog of large values pipelines");
        let mut off = Queue::new(1);
        off.proposers = 1;
        off.waiting = queue_of(MAX_BATCH_COMMANDS).0.waiting;
        assert!(!off.wants_proposer(), "a limit of 1 turns pipelining off");
    }

    #[test]
    fn the_default_limit_grows_with_the_cores_within_bounds() {
        let n = default_max_in_flight();
        assert!((2..=8).contains(&n), "{n}");
    }

    #[test]
    fn taking_a_batch_keeps_the_byte_count_and_drops_abandoned_commands() {
        let (mut q, mut rx) = queue_of(MAX_BATCH_COMMANDS + 10);
        let before = q.bytes;
        drop(rx.remove(0));
        let batch = take_batch(&mut q);
        assert_eq!(batch.len(), MAX_BATCH_COMMANDS, "the abandoned first command is not proposed");
        assert!(matches!(&batch[0].0, Command::DeleteSecret { name } if name == "s1"));
        assert_eq!(q.waiting.len(), 9);
        let left: usize = q.waiting.iter().map(|(c, _, _)| c.approx_size()).sum();
        assert_eq!(q.bytes, left);
        assert!(q.bytes < before);
        let rest = take_batch(&mut q);
        assert_eq!(rest.len(), 9);
        assert_eq!(q.bytes, 0);
    }
}
