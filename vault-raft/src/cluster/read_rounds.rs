//! Linearizable reads: read-index rounds shared by concurrent readers, and the wait for this
//! node's apply to reach the index, once per round.

use std::time::{Duration, Instant};

use openraft::error::RaftError;
use tokio::sync::oneshot;

use super::{Cluster, RETRY_PAUSE};
use crate::elections;
use crate::transport::{ForwardError, ForwardRequest, ForwardResponse};
use crate::typ::{CheckIsLeaderError, LogId};

pub(super) type ReadIndexResult = Result<Option<LogId>, ForwardError>;

/// Callers waiting for a read index, and whether a round of leadership confirmation is under
/// way. Every caller is answered by a round that started after it arrived, so concurrent
/// linearizable reads share one quorum round without losing linearizability.
#[derive(Default)]
pub(super) struct ReadRounds {
    waiting: Vec<ReadWaiter>,
    running: bool,
}

/// A caller of a read-index round, and whether it is answered only once this node has
/// applied up to the index (a local read) or at once (a follower's request to this leader).
struct ReadWaiter {
    tx: oneshot::Sender<ReadIndexResult>,
    applied: bool,
}

impl Cluster {
    /// Returns once this node has applied everything committed before the call, so a local
    /// read after it is linearizable. On a follower the leader confirms a read index with a
    /// quorum; this node then waits to apply up to it.
    pub async fn read_barrier(&self, timeout: Duration) -> Result<(), ForwardError> {
        let deadline = Instant::now() + timeout;
        loop {
            let leader_before = self.raft.metrics().borrow().current_leader;
            match self.read_barrier_once(deadline.saturating_duration_since(Instant::now())).await {
                // A read index is idempotent: any failure to reach a leader may be retried. If the
                // leader already changed meanwhile, ask the new one at once.
                Err(ForwardError::Unreachable(_)) | Err(ForwardError::NotLeader { leader: None })
                    if Instant::now() + RETRY_PAUSE < deadline =>
                {
                    self.retry_pause(leader_before, deadline).await;
                }
                other => return other,
            }
        }
    }

    /// A read index (see [`Self::read_index`]) this node has applied up to: the round waits
    /// for the apply once for all its callers, on the state machine's published index.
    async fn read_barrier_once(&self, timeout: Duration) -> Result<(), ForwardError> {
        self.join_read_round(timeout, true).await.map(|_| ())
    }

    /// A log id that every write committed before this call is at or below, confirmed by the
    /// leader with a quorum. Concurrent callers share rounds.
    pub(super) async fn read_index(&self, timeout: Duration) -> ReadIndexResult {
        self.join_read_round(timeout, false).await
    }

    async fn join_read_round(&self, timeout: Duration, applied: bool) -> ReadIndexResult {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut r = self.reads.lock().unwrap_or_else(|p| p.into_inner());
            r.waiting.push(ReadWaiter { tx, applied });
            !std::mem::replace(&mut r.running, true)
        };
        if start {
            let this = self.clone();
            tokio::spawn(async move { this.read_rounds(timeout).await });
        }
        rx.await.unwrap_or_else(|_| Err(ForwardError::Unavailable("read index round was dropped".into())))
    }

    async fn read_rounds(&self, timeout: Duration) {
        loop {
            let batch = {
                let mut r = self.reads.lock().unwrap_or_else(|p| p.into_inner());
                if r.waiting.is_empty() {
                    r.running = false;
                    return;
                }
                std::mem::take(&mut r.waiting)
            };
            let result = self.read_index_round(timeout).await;
            let (local, at_once): (Vec<_>, Vec<_>) = batch.into_iter().partition(|w| w.applied);
            for w in at_once {
                let _ = w.tx.send(result.clone());
            }
            match &result {
                // Not applied here yet (a follower behind its leader): the wait goes to a task
                // of its own, so the next round need not wait for it.
                Ok(Some(idx)) if !local.is_empty() && self.reader.applied().index() < idx.index => {
                    let applied = self.reader.applied().clone();
                    let (index, result) = (idx.index, result.clone());
                    tokio::spawn(async move {
                        let outcome = match applied.wait_for(index, timeout).await {
                            Ok(()) => result,
                            Err(e) => {
                                Err(ForwardError::Unavailable(format!("this node did not catch up for the read: {e}")))
                            }
                        };
                        for w in local {
                            let _ = w.tx.send(outcome.clone());
                        }
                    });
                }
                _ => {
                    for w in local {
                        let _ = w.tx.send(result.clone());
                    }
                }
            }
        }
    }

    async fn read_index_round(&self, timeout: Duration) -> ReadIndexResult {
        // A leader's round reaches every voter, which renews openraft's leader lease on each:
        // during a hand-over that would keep the target's votes refused.
        self.hand_over_done(timeout).await?;
        elections::leader_in_touch(self).map_err(ForwardError::Unavailable)?;
        let local = tokio::time::timeout(timeout, self.raft.get_read_log_id())
            .await
            .map_err(|_| ForwardError::Unavailable("timed out confirming leadership for a read".into()))?;
        match local {
            Ok((read_index, _)) => Ok(read_index),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => match f.leader_id.zip(f.leader_node) {
                Some((id, node)) if id != self.node_id => {
                    match self.ask_leader(id, &node, &ForwardRequest::ReadIndex, timeout).await? {
                        ForwardResponse::ReadIndex(idx) => Ok(idx),
                        other => Err(ForwardError::Unavailable(format!("unexpected read index reply {other:?}"))),
                    }
                }
                _ => Err(ForwardError::NotLeader { leader: None }),
            },
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q))) => {
                let got: Vec<String> = q.got.iter().map(|id| id.to_string()).collect();
                Err(ForwardError::Unavailable(format!(
                    "no quorum for a linearizable read: only node(s) {} answered",
                    got.join(", ")
                )))
            }
            Err(RaftError::Fatal(f)) => Err(ForwardError::Unavailable(format!("raft stopped: {f}"))),
        }
    }
}
