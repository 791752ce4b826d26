//! When this node starts an election: pre-vote, and a leader that has lost its quorum steps
//! aside for clients.
//!
//! openraft 0.9 has neither pre-vote nor check-quorum, and its own election timer fires only
//! after a full leader lease plus the election timeout. So openraft's timer is off
//! (`enable_elect = false`) and this driver decides:
//!
//! - A voter that has not heard from a leader for `timeout` plus a random part of it first
//!   asks the other voters whether they would vote for it (`PreVote`), without changing its
//!   term. A voter says yes only if it has not heard from a leader for `timeout` itself (a
//!   leader: not from a quorum) and the candidate's log is at least as new as its own. Only
//!   with a majority of yeses does the node call openraft's election. A node cut off by a
//!   partition or paused therefore never raises its term, and cannot depose a healthy leader
//!   when it returns.
//! - openraft's leader lease (its `election_timeout_max`) is kept below `timeout`, so a real
//!   vote that follows a successful pre-vote is not refused by the lease.
//! - A leader whose last quorum acknowledgement is older than `timeout` refuses new writes
//!   and reads at once (`Unavailable`) instead of holding them until they time out: it has
//!   most likely been replaced.
//!
//! None of this touches read safety: a linearizable read is still confirmed by a quorum round
//! from the leader at the time of the read (openraft's read index), never by a clock lease.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::transport::{ForwardRequest, ForwardResponse};
use crate::typ::{LogId, NodeId};

/// The election timing of a cluster, from one setting: how long without a leader before a
/// voter campaigns (`VAULT_RAFT_ELECTION_TIMEOUT_MS`).
#[derive(Clone, Copy, Debug)]
pub struct ElectionTiming {
    pub timeout: Duration,
}

impl Default for ElectionTiming {
    fn default() -> Self {
        ElectionTiming { timeout: Duration::from_millis(500) }
    }
}

impl ElectionTiming {
    /// How often a leader sends heartbeats (this driver sends them, see [`heartbeats`]): a
    /// fifth of the timeout, so a follower misses several before it gives up on the leader.
    pub fn heartbeat_ms(&self) -> u64 {
        (self.timeout.as_millis() as u64 / 5).max(20)
    }

    /// openraft's `heartbeat_interval`, which is not the heartbeat period here (openraft's own
    /// heartbeats are off) but the time every AppendEntries call, and a follower's answer to a
    /// read-index round, may take: three fifths of the timeout, so that a catching-up
    /// follower's large messages fit.
    pub fn openraft_heartbeat_ms(&self) -> u64 {
        (self.timeout.as_millis() as u64 * 3 / 5).max(30)
    }

    /// openraft's `election_timeout_min` / `_max`. openraft's timer is off, but the max is its
    /// leader lease: a voter refuses real votes for that long after hearing from a leader.
    /// openraft wants it above `heartbeat_interval`; it must stay below the pre-vote timeout,
    /// else an election that won its pre-vote could still be refused.
    pub fn openraft_timeouts_ms(&self) -> (u64, u64) {
        let t = self.timeout.as_millis() as u64;
        ((t * 7 / 10).max(35), (t * 4 / 5).max(40))
    }

    /// How long a node waits without a leader before its next pre-vote: the timeout plus a
    /// random half of it, so that voters rarely campaign at once.
    fn candidate_wait(&self, jitter: &Jitter) -> Duration {
        self.timeout + self.timeout.mul_f64(jitter.next_unit() / 2.0)
    }

    /// While a node waits on nobody (its own election failed, or a fresh start), tries come
    /// sooner: a random fifth to half of the timeout.
    fn retry_wait(&self, jitter: &Jitter) -> Duration {
        self.timeout.mul_f64(0.2 + 0.3 * jitter.next_unit())
    }

    /// How long a pre-vote granted binds the voter (see `Hold::promised`): long enough for
    /// the candidate's election, short enough that a candidate that died is soon forgotten.
    fn promise(&self) -> Duration {
        self.timeout / 2
    }

    /// How long a leader may go without a quorum's acknowledgement before it stops serving.
    pub fn quorum_silence(&self) -> Duration {
        self.timeout
    }
}

/// Cheap randomness for timer jitter (not for anything secret).
struct Jitter {
    state: RandomState,
    n: AtomicU64,
}

impl Jitter {
    fn new() -> Self {
        Jitter { state: RandomState::new(), n: AtomicU64::new(0) }
    }

    /// Uniform in [0, 1).
    fn next_unit(&self) -> f64 {
        let x = self.state.hash_one(self.n.fetch_add(1, Ordering::Relaxed));
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Elections held off on this node until a deadline (during a leader transfer), and the
/// last pre-vote it granted.
#[derive(Default)]
pub(crate) struct Hold {
    /// Milliseconds since `EPOCH` until which elections are held; 0: not held.
    until_ms: AtomicU64,
    /// Set while a leader transfer holds this leader's heartbeats.
    pub(crate) heartbeats_paused: std::sync::atomic::AtomicBool,
    /// The candidate this node last said yes to, and when. For a while after, it says no to
    /// others and does not campaign itself, so that voters who lose their leader together
    /// line up behind the first candidate instead of deposing one another in turn.
    promised: std::sync::Mutex<Option<(NodeId, Instant)>>,
}

static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn millis_now() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Hold {
    /// Holds elections for `d`; zero releases them.
    pub(crate) fn hold_for(&self, d: Duration) {
        let until = if d.is_zero() { 0 } else { millis_now() + d.as_millis() as u64 };
        self.until_ms.store(until, Ordering::SeqCst);
    }

    fn held(&self) -> bool {
        millis_now() < self.until_ms.load(Ordering::SeqCst)
    }

    /// The candidate promised to within `within`, if any.
    fn promised_to(&self, within: Duration) -> Option<NodeId> {
        let p = self.promised.lock().unwrap_or_else(|e| e.into_inner());
        p.filter(|(_, at)| at.elapsed() < within).map(|(id, _)| id)
    }

    fn promise(&self, candidate: NodeId) {
        *self.promised.lock().unwrap_or_else(|e| e.into_inner()) = Some((candidate, Instant::now()));
    }
}

/// This node's role, from openraft's own state.
struct Role {
    state: ServerState,
    /// When it last heard from a leader, or changed its vote.
    heard: Option<Instant>,
    /// Whether its vote is for an established leader (not for a candidate, nor its own
    /// candidacy).
    follows_leader: bool,
    /// Whom its vote is for (itself while it campaigns).
    voted_for: Option<NodeId>,
}

impl Role {
    /// Whether this node waits on nobody: it follows no leader and has voted for nobody but
    /// itself. A node that voted for another candidate gives that one a full timeout to win,
    /// as Raft resets the election timer when it grants a vote.
    fn waits_on_nobody(&self, me: NodeId) -> bool {
        !self.follows_leader && self.voted_for.is_none_or(|v| v == me)
    }
}

async fn role(cluster: &Cluster) -> Option<Role> {
    cluster
        .raft
        .with_raft_state(|st| Role {
            state: st.server_state,
            heard: st.vote_last_modified(),
            follows_leader: st.vote_ref().is_committed(),
            voted_for: st.vote_ref().leader_id().voted_for(),
        })
        .await
        .ok()
}

/// The last entry id in this node's log; `Err` if it could not be read.
async fn last_log_id(cluster: &Cluster) -> Result<Option<LogId>, ()> {
    let reader = cluster.reader.clone();
    let read = if reader.log_in_memory() {
        Ok(reader.last_log_id())
    } else {
        tokio::task::spawn_blocking(move || reader.last_log_id()).await
    };
    match read {
        Ok(Ok(id)) => Ok(id),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "read the last log id for a pre-vote");
            Err(())
        }
        Err(_) => Err(()),
    }
}

fn voters(cluster: &Cluster) -> Vec<NodeId> {
    cluster.raft.metrics().borrow().membership_config.membership().voter_ids().collect()
}

/// This node's answer to `candidate`'s pre-vote.
pub(crate) async fn answer_pre_vote(cluster: &Cluster, candidate: NodeId, candidate_log: Option<LogId>) -> bool {
    let timing = cluster.timing;
    if !voters(cluster).contains(&candidate) {
        return false;
    }
    if cluster.election_hold.promised_to(timing.promise()).is_some_and(|c| c != candidate) {
        return false;
    }
    let Some(me) = role(cluster).await else { return false };
    let quiet = if me.state == ServerState::Leader {
        // A leader in touch with a quorum is healthy: no election. A new one that has no
        // acknowledgement yet counts from when it took office.
        match cluster.raft.metrics().borrow().millis_since_quorum_ack {
            Some(ms) => Duration::from_millis(ms) > timing.timeout,
            None => me.heard.is_none_or(|t| t.elapsed() > timing.timeout),
        }
    } else {
        // Without a leader or a candidate to wait on there is nothing to protect.
        me.waits_on_nobody(cluster.node_id)
            || (!me.follows_leader && me.voted_for == Some(candidate))
            || me.heard.is_none_or(|t| t.elapsed() > timing.timeout)
    };
    let granted = quiet && last_log_id(cluster).await.is_ok_and(|mine| candidate_log >= mine);
    if granted && candidate != cluster.node_id {
        cluster.election_hold.promise(candidate);
    }
    granted
}

/// Whether this node, as leader, has heard from a quorum recently enough to serve.
pub(crate) fn leader_in_touch(cluster: &Cluster) -> Result<(), String> {
    let (state, acked) = {
        let m = cluster.raft.metrics();
        let m = m.borrow();
        (m.state, m.millis_since_quorum_ack)
    };
    if state != ServerState::Leader {
        return Ok(());
    }
    match acked {
        Some(ms) if Duration::from_millis(ms) > cluster.timing.quorum_silence() => {
            Err(format!("this leader has not heard from a quorum for {ms} ms and is probably being replaced; retry"))
        }
        _ => Ok(()),
    }
}

/// Runs until the Raft node stops: while this node leads, sends a heartbeat to every follower
/// each `heartbeat_ms` (unless a transfer holds them).
pub(crate) async fn heartbeats(cluster: Cluster) {
    let mut every = tokio::time::interval(Duration::from_millis(cluster.timing.heartbeat_ms()));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let (stopped, leading) = {
            let m = cluster.raft.metrics();
            let m = m.borrow();
            (m.running_state.is_err(), m.state == ServerState::Leader)
        };
        if stopped {
            return;
        }
        if leading && !cluster.election_hold.heartbeats_paused.load(Ordering::SeqCst) {
            let _ = cluster.raft.trigger().heartbeat().await;
        }
    }
}

/// Runs until the Raft node stops: campaigns when the leader is gone and a majority agrees.
pub(crate) async fn drive(cluster: Cluster) {
    let timing = cluster.timing;
    let jitter = Arc::new(Jitter::new());
    let tick = Duration::from_millis((timing.heartbeat_ms() / 5).clamp(5, 20));
    let mut wait = timing.candidate_wait(&jitter);
    // After a pre-vote, the next one waits a little (a lost one changed nothing to wait on).
    let mut next_try = Instant::now();
    // How soon to try again while no leader is established (a split vote, a fresh start).
    let mut retry = timing.retry_wait(&jitter);
    loop {
        tokio::time::sleep(tick).await;
        if cluster.raft.metrics().borrow().running_state.is_err() {
            return;
        }
        if cluster.election_hold.held() || cluster.election_hold.promised_to(timing.promise()).is_some() {
            continue;
        }
        let voter_ids = voters(&cluster);
        if !voter_ids.contains(&cluster.node_id) {
            continue;
        }
        let Some(me) = role(&cluster).await else { continue };
        let quiet_for = if me.waits_on_nobody(cluster.node_id) { retry } else { wait };
        if me.state == ServerState::Leader
            || me.heard.is_some_and(|t| t.elapsed() < quiet_for)
            || Instant::now() < next_try
        {
            continue;
        }
        wait = timing.candidate_wait(&jitter);
        retry = timing.retry_wait(&jitter);
        next_try = Instant::now() + timing.timeout.mul_f64(0.25 + jitter.next_unit() / 4.0);
        let Ok(mine) = last_log_id(&cluster).await else { continue };
        let granted = pre_vote(&cluster, &voter_ids, mine).await;
        if granted * 2 > voter_ids.len() {
            tracing::info!(granted, voters = voter_ids.len(), "pre-vote won: starting an election");
            let _ = cluster.raft.trigger().elect().await;
        } else {
            tracing::debug!(granted, voters = voter_ids.len(), "pre-vote lost");
        }
    }
}

/// Asks every other voter; counts yeses including this node's own.
async fn pre_vote(cluster: &Cluster, voter_ids: &[NodeId], last_log_id: Option<LogId>) -> usize {
    let membership = cluster.raft.metrics().borrow().membership_config.clone();
    let asks = voter_ids.iter().filter(|id| **id != cluster.node_id).filter_map(|id| {
        let node = membership.membership().get_node(id)?.clone();
        let req = ForwardRequest::PreVote { candidate: cluster.node_id, last_log_id };
        let peers = cluster.peers.clone();
        let id = *id;
        Some(async move {
            matches!(
                peers.forward(id, &node.raft_addr, &req, cluster.timing.timeout / 2).await,
                Ok(ForwardResponse::PreVote { granted: true })
            )
        })
    });
    1 + futures::future::join_all(asks).await.into_iter().filter(|g| *g).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timing_keeps_the_lease_below_the_pre_vote_timeout_and_heartbeats_well_inside_it() {
        for ms in [100, 250, 500, 1_000, 5_000, 60_000] {
            let t = ElectionTiming { timeout: Duration::from_millis(ms) };
            let (min, max) = t.openraft_timeouts_ms();
            let rpc = t.openraft_heartbeat_ms();
            assert!(rpc < min && min < max, "{ms}: openraft wants heartbeat < min < max");
            assert!(Duration::from_millis(max) < t.timeout, "{ms}: lease below the pre-vote timeout");
            assert!(t.heartbeat_ms() * 4 <= ms, "{ms}: several heartbeats per timeout");
            assert!(t.promise() < t.timeout);
            let j = Jitter::new();
            for _ in 0..100 {
                let w = t.candidate_wait(&j);
                assert!(w >= t.timeout && w <= t.timeout * 3 / 2);
                let r = t.retry_wait(&j);
                assert!(r >= t.timeout / 5 && r <= t.timeout / 2);
            }
        }
    }

    #[test]
    fn a_hold_and_a_promise_expire() {
        let h = Hold::default();
        h.hold_for(Duration::from_millis(30));
        assert!(h.held());
        h.hold_for(Duration::ZERO);
        assert!(!h.held());
        h.promise(3);
        assert_eq!(h.promised_to(Duration::from_secs(1)), Some(3));
        assert_eq!(h.promised_to(Duration::ZERO), None);
    }
}
