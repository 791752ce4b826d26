//! Cluster operations over the local Raft node and its peers: forwarding to the leader,
//! linearizable reads on any node, membership changes, leader transfer and bootstrap.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::{ChangeMembers, ServerState};
use tokio::sync::watch;

use crate::command::{Command, CommandResponse};
use crate::elections::{self, ElectionTiming, Hold};
use crate::features::{BASE_LEVEL, FEATURE_LEVEL};
use crate::node::NodeInfo;
use crate::proposals::{write_error, Proposals};
use crate::reader::StateReader;

/// Longest a command waits for an attempt to raise the cluster's feature level.
const FEATURE_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
use crate::synced_log::SyncedLog;
use crate::transport::{AdminOp, ForwardError, ForwardRequest, ForwardResponse, LeaderView, PeerClients};
use crate::typ::{NodeId, Raft};

mod read_rounds;
use read_rounds::ReadRounds;

/// Pause between attempts to reach a leader.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Longest wait for a new leader to show up before trying again.
const ELECTION_WAIT: Duration = Duration::from_secs(3);
/// How long a transfer target may campaign, and other voters hold their elections.
const TRANSFER_WINDOW: Duration = Duration::from_secs(3);
/// How long a transfer waits for the target to hold every entry, writes held meanwhile.
const TRANSFER_CATCH_UP: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Cluster {
    pub raft: Raft,
    pub node_id: NodeId,
    pub peers: PeerClients,
    /// Election timing (see `elections`).
    pub timing: ElectionTiming,
    pub(crate) election_hold: Arc<Hold>,
    /// True while this leader hands leadership over: new writes and read-index rounds wait
    /// (see `transfer_leader`).
    handing_over: Arc<watch::Sender<bool>>,
    reads: Arc<Mutex<ReadRounds>>,
    proposals: Proposals,
    /// How far this node's log is on disk.
    pub synced: SyncedLog,
    /// This node's applied state: membership and tokens, for admitting peers.
    pub reader: StateReader,
    /// Ids in `VAULT_PEERS`: the peers admitted before this node has a membership.
    pub bootstrap_ids: Arc<Vec<NodeId>>,
    /// Without `VAULT_PEERS` (a node waiting to join): the voters the leader that is adding it
    /// announced (see `transport::admission`), once one has.
    pub(crate) join_voters: Arc<Mutex<Option<BTreeSet<NodeId>>>>,
    /// Ids of the master keys this node holds (never the keys).
    pub key_ids: Arc<Vec<String>>,
    /// The feature level this node reports (its build's, or lower when capped).
    pub feature_level: u32,
    /// Whether this node has disk room for new writes (see `room`).
    pub room: crate::room::Room,
    /// This node's audit sinks: while a required one refuses, this node, as leader, refuses
    /// client changes (their records could not leave it).
    pub audit_sinks: crate::SinkBoard,
}

/// What a node is besides its Raft handle: how it reaches and admits peers.
pub struct ClusterParts {
    pub node_id: NodeId,
    pub peers: PeerClients,
    pub synced: SyncedLog,
    pub reader: StateReader,
    pub bootstrap_ids: Vec<NodeId>,
    pub key_ids: Vec<String>,
    /// `VAULT_MAX_FEATURE_LEVEL`: report at most this level (see `features`).
    pub max_feature_level: Option<u32>,
    pub timing: ElectionTiming,
    /// Entries this node keeps in flight from client writes while it leads.
    pub max_in_flight: usize,
}

fn not_leader<E>(leader_id: Option<NodeId>, leader_node: Option<NodeInfo>) -> Result<E, ForwardError> {
    Err(ForwardError::NotLeader { leader: leader_id.zip(leader_node) })
}

impl Cluster {
    pub fn new(raft: Raft, parts: ClusterParts) -> Self {
        Cluster {
            synced: parts.synced,
            proposals: Proposals::new(raft.clone(), parts.max_in_flight),
            raft,
            node_id: parts.node_id,
            peers: parts.peers,
            timing: parts.timing,
            election_hold: Arc::new(Hold::default()),
            handing_over: Arc::new(watch::channel(false).0),
            room: crate::room::Room::default(),
            reads: Arc::new(Mutex::new(ReadRounds::default())),
            reader: parts.reader,
            bootstrap_ids: Arc::new(parts.bootstrap_ids),
            join_voters: Arc::default(),
            key_ids: Arc::new(parts.key_ids),
            feature_level: parts.max_feature_level.map_or(FEATURE_LEVEL, |cap| cap.clamp(BASE_LEVEL, FEATURE_LEVEL)),
            audit_sinks: crate::SinkBoard::default(),
        }
    }

    /// Refuses client changes while a required sink of `sinks` does not take records.
    pub fn with_audit_sinks(mut self, sinks: crate::SinkBoard) -> Self {
        self.audit_sinks = sinks;
        self
    }

    /// Starts the election driver and the heartbeats (see `elections`); openraft's own
    /// election timer and heartbeats must be off.
    pub fn spawn_elections(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(elections::heartbeats(self.clone()));
        tokio::spawn(elections::drive(self.clone()))
    }

    /// The current leader and its addresses, as this node knows them.
    pub fn leader(&self) -> Option<(NodeId, NodeInfo)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let node = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, node))
    }

    /// Runs `req` here if this node can, else on the leader (one hop). When the leader is
    /// unknown, or could not be connected to (so nothing was sent), waits for an election and
    /// tries again, within `timeout`.
    pub async fn submit(&self, req: ForwardRequest, timeout: Duration) -> Result<ForwardResponse, ForwardError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let leader_before = self.raft.metrics().borrow().current_leader;
            let result = match self.handle_local(req.clone(), left).await {
                Err(ForwardError::NotLeader { leader: Some((id, node)) }) if id != self.node_id => {
                    self.ask_leader(id, &node, &req, left).await
                }
                other => other,
            };
            match result {
                Err(ForwardError::Unreachable(_)) | Err(ForwardError::NotLeader { leader: None })
                    if Instant::now() + RETRY_PAUSE < deadline =>
                {
                    self.retry_pause(leader_before, deadline).await;
                }
                other => return other,
            }
        }
    }

    /// Before trying again: a short pause if the leader already changed since the attempt
    /// began, else a wait for it to change (at most an election's worth).
    async fn retry_pause(&self, leader_before: Option<NodeId>, deadline: Instant) {
        if self.raft.metrics().borrow().current_leader == leader_before {
            self.await_leader_change(deadline).await;
        } else {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Waits (until `deadline`, at most an election's worth) for this node to see a leader
    /// other than the current one.
    async fn await_leader_change(&self, deadline: Instant) {
        let before = self.raft.metrics().borrow().current_leader;
        let wait = deadline.saturating_duration_since(Instant::now()).min(ELECTION_WAIT);
        let _ = self
            .raft
            .wait(Some(wait))
            .metrics(|m| m.current_leader.is_some() && m.current_leader != before, "leader change")
            .await;
        tokio::time::sleep(RETRY_PAUSE).await;
    }

    /// Sends a request to leader `id`, giving up as soon as this node sees another leader: a
    /// call stuck on a leader that hung or was cut off must not hold reads (or a name's write
    /// queue) past a leader change. An idempotent request (read index, replication view) then
    /// fails `Unreachable`, so callers retry it on the new leader; a write `Unavailable`, never
    /// retried, since it may still have been applied on the old one. Cluster changes are not
    /// cut short.
    async fn ask_leader(
        &self,
        id: NodeId,
        node: &NodeInfo,
        req: &ForwardRequest,
        timeout: Duration,
    ) -> Result<ForwardResponse, ForwardError> {
        let idempotent = matches!(req, ForwardRequest::ReadIndex | ForwardRequest::LeaderView);
        if !idempotent && !matches!(req, ForwardRequest::Write(_) | ForwardRequest::CallerWrite(_)) {
            // Cluster changes wait out their time for a definite answer.
            return self.peers.forward(id, &node.raft_addr, req, timeout).await;
        }
        let mut metrics = self.raft.metrics();
        let replaced = async {
            loop {
                if metrics.borrow().current_leader.is_some_and(|l| l != id) {
                    return;
                }
                if metrics.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            r = self.peers.forward(id, &node.raft_addr, req, timeout) => r,
            _ = replaced => {
                let why = format!("leader {id} was replaced before it answered");
                Err(if idempotent {
                    ForwardError::Unreachable(why)
                } else {
                    ForwardError::Unavailable(format!("{why}; the write may or may not have been applied"))
                })
            }
        }
    }

    /// Adds `id` as a learner and returns once it has every entry this leader had when the
    /// learner was added (by snapshot if the log before them was purged). openraft's own
    /// blocking add returns as soon as the learner is within `replication_lag_threshold`
    /// entries (5,000 by default) of the leader, which can be most of a large log.
    async fn add_learner(
        &self,
        id: NodeId,
        node: NodeInfo,
        timeout: Duration,
    ) -> Result<ForwardResponse, ForwardError> {
        let deadline = Instant::now() + timeout;
        let have = self.reader.feature_level().map_err(|e| ForwardError::Unavailable(e.to_string()))?;
        // Tell the node which voters it is joining, so it takes appends only from them (see
        // `transport::admission`). The node may still be starting: ask until the deadline.
        let voters: Vec<NodeId> = self.raft.metrics().borrow().membership_config.membership().voter_ids().collect();
        let state = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.peers.announce_join(id, &node.raft_addr, &voters, left.min(Duration::from_secs(5))).await {
                Ok(state) => break state,
                Err(e) if Instant::now() + Duration::from_millis(200) >= deadline => {
                    return Err(ForwardError::Unavailable(format!(
                        "node {id} did not answer which voters it joins and which feature level it understands ({})",
                        e.message()
                    )))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        // A node on an older build than the cluster's level could not decode what it would be
        // sent: refuse it before it joins.
        let level = crate::features::reported(state.feature_level);
        if have > BASE_LEVEL && level < have {
            return Err(ForwardError::Rejected(format!(
                "node {id} understands feature level {level}, the cluster runs at {have}: upgrade it first"
            )));
        }
        let still_behind = || ForwardError::Unavailable(format!("node {id} added as a learner but still catching up"));
        // One budget for the whole change: what the feature-level check used is gone.
        tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), self.raft.add_learner(id, node, true))
            .await
            .map_err(|_| still_behind())?
            .map_err(write_error)?;
        let target = self.raft.metrics().borrow().last_log_index;
        let caught_up = self
            .raft
            .wait(Some(deadline.saturating_duration_since(Instant::now())))
            .metrics(
                |m| match &m.replication {
                    // No longer leader, or the learner was removed meanwhile: stop waiting.
                    None => true,
                    Some(r) => r.get(&id).is_none_or(|matched| matched.map(|l| l.index) >= target),
                },
                "learner caught up",
            )
            .await
            .map_err(|_| still_behind())?;
        match &caught_up.replication {
            None => Err(ForwardError::Unavailable(format!(
                "node {id} was added, but this node stopped being the leader before it caught up"
            ))),
            Some(r) if !r.contains_key(&id) => {
                Err(ForwardError::Rejected(format!("node {id} was removed while catching up")))
            }
            Some(_) => Ok(ForwardResponse::Done),
        }
    }

    /// An operator's cluster change, on the leader (membership changes fail with `NotLeader`
    /// elsewhere).
    async fn admin(&self, op: AdminOp, timeout: Duration) -> Result<ForwardResponse, ForwardError> {
        match op {
            AdminOp::AddLearner { id, node } => self.add_learner(id, node, timeout).await,
            AdminOp::PromoteVoter { id } => {
                self.change(ChangeMembers::AddVoterIds(BTreeSet::from([id])), timeout).await
            }
            AdminOp::RemoveMember { id } => {
                let m = self.raft.metrics().borrow().membership_config.clone();
                let membership = m.membership();
                if membership.get_node(&id).is_none() {
                    return Err(ForwardError::NotFound(format!("node {id} is not a member")));
                }
                if membership.voter_ids().any(|v| v == id) {
                    self.change(ChangeMembers::RemoveVoters(BTreeSet::from([id])), timeout).await
                } else {
                    self.change(ChangeMembers::RemoveNodes(BTreeSet::from([id])), timeout).await
                }
            }
            AdminOp::TransferLeader { to } => self.transfer_leader(to).await,
            AdminOp::RotateMasterKey { key_id, check } => self.rotate_master_key(key_id, check, timeout).await,
            AdminOp::RaiseFeatureLevel => self.raise_feature_level(timeout).await,
        }
    }

    /// On the leader: asks every member which feature level it understands and raises the
    /// cluster's to the lowest of them, if that is above the current one. Answers with the
    /// cluster's level and each member's.
    pub async fn raise_feature_level(&self, timeout: Duration) -> Result<ForwardResponse, ForwardError> {
        let m = self.leader_metrics()?;
        let mut members = Vec::new();
        for (id, node) in m.membership_config.membership().nodes() {
            let level = if *id == self.node_id {
                self.feature_level
            } else {
                match self.peers.node_state(*id, &node.raft_addr, Duration::from_secs(5)).await {
                    Ok(state) => crate::features::reported(state.feature_level),
                    Err(e) => {
                        return Err(ForwardError::Unavailable(format!(
                            "node {id} did not say which feature level it understands ({}); every member must \
                             answer before the level is raised",
                            e.message()
                        )))
                    }
                }
            };
            members.push((*id, level));
        }
        let lowest = members.iter().map(|(_, l)| *l).min().unwrap_or(BASE_LEVEL);
        let current = self.reader.feature_level().map_err(|e| ForwardError::Unavailable(e.to_string()))?;
        let level = if lowest > current {
            match self.proposals.write(Command::SetFeatureLevel { level: lowest }, timeout).await? {
                CommandResponse::Rejected(r) => return Err(ForwardError::Rejected(format!("{r:?}"))),
                _ => {
                    tracing::info!(from = current, to = lowest, "cluster feature level raised");
                    lowest
                }
            }
        } else {
            current
        };
        Ok(ForwardResponse::FeatureLevel { level, members })
    }

    /// While this node leads, tries to raise the cluster's feature level (see
    /// [`Self::raise_feature_level`]) as it becomes leader and every `every` after: once the last
    /// member of a rolling upgrade restarts on the new build, and in a new cluster, the new
    /// level takes effect without an operator. Ends with Raft.
    pub fn spawn_feature_upgrades(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut metrics = this.raft.metrics();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut was_leader = false;
            loop {
                let leads = metrics.borrow().state == ServerState::Leader;
                let became_leader = leads && !was_leader;
                was_leader = leads;
                if became_leader {
                    this.try_raise_feature_level().await;
                }
                tokio::select! {
                    _ = tick.tick() => {
                        if metrics.borrow().state == ServerState::Leader {
                            this.try_raise_feature_level().await;
                        }
                    }
                    changed = metrics.changed() => if changed.is_err() { return },
                }
            }
        })
    }

    async fn try_raise_feature_level(&self) {
        if self.reader.feature_level().is_ok_and(|l| l < self.feature_level) {
            if let Err(e) = self.raise_feature_level(Duration::from_secs(10)).await {
                tracing::debug!(error = %e, "cluster feature level not raised yet");
            }
        }
    }

    /// This node's metrics if it leads; else `NotLeader`, naming the leader it knows.
    fn leader_metrics(&self) -> Result<crate::typ::RaftMetrics, ForwardError> {
        let m = self.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader {
            let node = m.current_leader.and_then(|l| m.membership_config.membership().get_node(&l).cloned());
            return not_leader(m.current_leader, node);
        }
        Ok(m)
    }

    /// Refuses a command above the cluster's feature level (some member might not decode it),
    /// after one attempt to raise the level (a new cluster, or an upgrade just finished).
    async fn check_feature_level(&self, cmd: &Command) -> Result<(), ForwardError> {
        let need = cmd.feature_level();
        if need <= BASE_LEVEL {
            return Ok(());
        }
        let mut have = self.reader.feature_level().map_err(|e| ForwardError::Unavailable(e.to_string()))?;
        if need > have && self.feature_level >= need {
            if let Ok(ForwardResponse::FeatureLevel { level, .. }) =
                self.raise_feature_level(FEATURE_CHECK_TIMEOUT).await
            {
                have = level;
            }
        }
        if need > have {
            return Err(ForwardError::Rejected(format!(
                "this needs cluster feature level {need}, and the cluster is at {have}: some member runs an older \
                 build (or VAULT_MAX_FEATURE_LEVEL holds it back); upgrade every member, then run `vaultctl cluster \
                 upgrade`"
            )));
        }
        Ok(())
    }

    /// Runs `req` on this node; `NotLeader` when it needs the leader and this is not it.
    pub async fn handle_local(&self, req: ForwardRequest, timeout: Duration) -> Result<ForwardResponse, ForwardError> {
        self.handle_from(self.node_id, req, timeout).await
    }

    /// Runs `req`, which node `from` (this one, or a peer whose certificate names it) asked
    /// for, on this node.
    pub(crate) async fn handle_from(
        &self,
        from: NodeId,
        req: ForwardRequest,
        timeout: Duration,
    ) -> Result<ForwardResponse, ForwardError> {
        match req {
            // Concurrent writes share entries (see `proposals`).
            // The leader's own writes (rotation, re-wrap) too: a required audit sink that
            // refuses stops every change whose record could not leave this node.
            ForwardRequest::Write(cmd) => {
                self.room.check().map_err(ForwardError::NoRoom)?;
                if let Some(why) = self.audit_sinks.refusal() {
                    return Err(ForwardError::Unavailable(format!("{why} on the leader; change refused")));
                }
                self.write(cmd, timeout).await
            }
            ForwardRequest::CallerWrite(w) => {
                if self.raft.metrics().borrow().state != ServerState::Leader {
                    let (id, node) = self.leader().unzip();
                    return not_leader(id, node);
                }
                self.room.check().map_err(ForwardError::NoRoom)?;
                if let Some(why) = self.audit_sinks.refusal() {
                    return Err(ForwardError::Unavailable(format!("{why} on the leader; change refused")));
                }
                let cmd = self.caller_command(w, from)?;
                self.write(cmd, timeout).await
            }
            ForwardRequest::ReadIndex => {
                // Followers' requests join this leader's rounds. A node that is no longer
                // leader says so rather than forwarding again.
                if self.raft.metrics().borrow().state != ServerState::Leader {
                    let (id, node) = self.leader().unzip();
                    return not_leader(id, node);
                }
                self.read_index(timeout).await.map(ForwardResponse::ReadIndex)
            }
            ForwardRequest::CallerAdmin { op, .. } => self.admin(op, timeout).await,
            ForwardRequest::AdminByHash { .. } => {
                Err(ForwardError::Refused("a token hash authorizes no cluster change".into()))
            }
            ForwardRequest::LeaderView => {
                let m = self.leader_metrics()?;
                let matched = m
                    .replication
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(id, log)| (id, log.map(|l| l.index)))
                    .collect::<BTreeMap<_, _>>();
                Ok(ForwardResponse::LeaderView(LeaderView { last_log_index: m.last_log_index, matched }))
            }
            ForwardRequest::PauseElections { for_ms } => {
                self.election_hold.hold_for(Duration::from_millis(for_ms));
                Ok(ForwardResponse::Done)
            }
            ForwardRequest::Campaign { for_ms } => self.campaign(Duration::from_millis(for_ms)).await,
            ForwardRequest::PreVote { candidate, last_log_id } => {
                Ok(ForwardResponse::PreVote { granted: elections::answer_pre_vote(self, candidate, last_log_id).await })
            }
        }
    }

    async fn write(&self, cmd: Command, timeout: Duration) -> Result<ForwardResponse, ForwardError> {
        self.check_feature_level(&cmd).await?;
        self.hand_over_done(timeout).await?;
        elections::leader_in_touch(self).map_err(ForwardError::Unavailable)?;
        self.proposals.write(cmd, timeout).await.map(ForwardResponse::Written)
    }

    async fn change(
        &self,
        change: ChangeMembers<NodeId, NodeInfo>,
        timeout: Duration,
    ) -> Result<ForwardResponse, ForwardError> {
        let r = tokio::time::timeout(timeout, self.raft.change_membership(change, false))
            .await
            .map_err(|_| ForwardError::Unavailable("timed out changing membership".into()))?;
        r.map(|_| ForwardResponse::Done).map_err(write_error)
    }

    /// Waits while a leader transfer holds writes and reads (bounded by `timeout`).
    async fn hand_over_done(&self, timeout: Duration) -> Result<(), ForwardError> {
        if !*self.handing_over.borrow() {
            return Ok(());
        }
        let mut held = self.handing_over.subscribe();
        tokio::time::timeout(timeout, held.wait_for(|h| !*h))
            .await
            .map(|_| ())
            .map_err(|_| ForwardError::Unavailable("a leader transfer held this request too long; retry".into()))
    }

    /// On the transfer target: campaign until leader, or `window` passed. Votes are refused
    /// for openraft's leader lease after the last message from the old leader, so the first
    /// attempt waits that out, and later ones retry promptly.
    async fn campaign(&self, window: Duration) -> Result<ForwardResponse, ForwardError> {
        let deadline = Instant::now() + window;
        let (_, lease_ms) = self.timing.openraft_timeouts_ms();
        tokio::time::sleep(Duration::from_millis(lease_ms + 10)).await;
        while Instant::now() < deadline {
            if self.raft.metrics().borrow().state == ServerState::Leader {
                return Ok(ForwardResponse::Done);
            }
            let _ = self.raft.trigger().elect().await;
            let _ = self
                .raft
                .wait(Some(Duration::from_millis(100)))
                .metrics(|m| m.state == ServerState::Leader, "won the election")
                .await;
        }
        Err(ForwardError::Unavailable(format!("node {} did not win an election in {window:?}", self.node_id)))
    }

    /// Leader transfer. New writes and reads wait (they go to the new leader once it is known); the
    /// target receives every entry; the other voters hold their elections and this node its
    /// heartbeats; then the target campaigns. Its log is then at least as new as every voter's,
    /// so its votes are granted, and it takes over with writes stalled only for the lease.
    async fn transfer_leader(&self, to: NodeId) -> Result<ForwardResponse, ForwardError> {
        let m = self.leader_metrics()?;
        if to == self.node_id {
            return Ok(ForwardResponse::Done);
        }
        let membership = m.membership_config.membership().clone();
        if !membership.voter_ids().any(|v| v == to) {
            return Err(ForwardError::Rejected(format!("node {to} is not a voter")));
        }
        let target = membership.get_node(&to).cloned().ok_or_else(|| ForwardError::NotFound(format!("node {to}")))?;
        let others: Vec<(NodeId, NodeInfo)> = membership
            .voter_ids()
            .filter(|v| *v != to && *v != self.node_id)
            .filter_map(|v| membership.get_node(&v).cloned().map(|n| (v, n)))
            .collect();
        self.handing_over.send_replace(true);
        let result = self.hand_over(to, &target, &others).await;
        self.handing_over.send_replace(false);
        self.election_hold.heartbeats_paused.store(false, std::sync::atomic::Ordering::SeqCst);
        self.election_hold.hold_for(Duration::ZERO);
        for (id, o) in &others {
            let _ = self
                .peers
                .forward(*id, &o.raft_addr, &ForwardRequest::PauseElections { for_ms: 0 }, Duration::from_secs(1))
                .await;
        }
        result?;
        let _ = self
            .raft
            .wait(Some(Duration::from_secs(3)))
            .metrics(|m| m.current_leader == Some(to), "new leader seen")
            .await;
        Ok(ForwardResponse::Done)
    }

    /// The part of a transfer that runs with writes held.
    async fn hand_over(
        &self,
        to: NodeId,
        target: &NodeInfo,
        others: &[(NodeId, NodeInfo)],
    ) -> Result<ForwardResponse, ForwardError> {
        // Writes that passed before the hold are still proposed and commit; once they are
        // all in the log, wait until the target holds every entry. (A write proposed after
        // the check would leave the target one entry short, and its votes refused.)
        if !self.proposals.drained(TRANSFER_CATCH_UP).await {
            return Err(ForwardError::Unavailable("writes in flight did not finish for the transfer; retry".into()));
        }
        let caught_up = self
            .raft
            .wait(Some(TRANSFER_CATCH_UP))
            .metrics(
                |m| {
                    let matched = m.replication.as_ref().and_then(|r| r.get(&to).cloned()).flatten().map(|l| l.index);
                    m.state != ServerState::Leader || matched >= m.last_log_index
                },
                "transfer target caught up",
            )
            .await
            .map_err(|_| {
                ForwardError::Unavailable(format!("node {to} did not catch up in {TRANSFER_CATCH_UP:?}; retry"))
            })?;
        if caught_up.state != ServerState::Leader {
            return Err(ForwardError::Unavailable("this node stopped being the leader during the transfer".into()));
        }
        let window_ms = TRANSFER_WINDOW.as_millis() as u64;
        for (id, o) in others {
            let _ = self
                .peers
                .forward(
                    *id,
                    &o.raft_addr,
                    &ForwardRequest::PauseElections { for_ms: window_ms },
                    Duration::from_secs(1),
                )
                .await;
        }
        self.election_hold.hold_for(TRANSFER_WINDOW);
        self.election_hold.heartbeats_paused.store(true, std::sync::atomic::Ordering::SeqCst);
        self.peers
            .forward(
                to,
                &target.raft_addr,
                &ForwardRequest::Campaign { for_ms: window_ms },
                TRANSFER_WINDOW + Duration::from_secs(1),
            )
            .await
    }

    /// Makes `key_id` the cluster's master key, once every member (learners too: any of them
    /// may seal a write) says it holds that key. On the leader only.
    async fn rotate_master_key(
        &self,
        key_id: String,
        check: Option<String>,
        timeout: Duration,
    ) -> Result<ForwardResponse, ForwardError> {
        let m = self.leader_metrics()?;
        let mut lacking = Vec::new();
        for (id, node) in m.membership_config.membership().nodes() {
            let holds = if *id == self.node_id {
                self.key_ids.contains(&key_id)
            } else {
                match self.peers.node_state(*id, &node.raft_addr, Duration::from_secs(5)).await {
                    Ok(state) => state.key_ids.contains(&key_id),
                    Err(e) => {
                        return Err(ForwardError::Unavailable(format!(
                            "node {id} did not say which keys it holds ({}); every member must hold the new key",
                            e.message()
                        )))
                    }
                }
            };
            if !holds {
                lacking.push(id.to_string());
            }
        }
        if !lacking.is_empty() {
            return Err(ForwardError::Rejected(format!(
                "node(s) {} do not hold key {key_id}: add it to their keyring (VAULT_LOCAL_MASTER_KEYS) and \
                 restart them first",
                lacking.join(", ")
            )));
        }
        let cmd = Command::SetMasterKey { key_id, check, now_ms: vault_core::time::now_ms(), rotate: true };
        match self.proposals.write(cmd, timeout).await? {
            CommandResponse::Rejected(r) => Err(ForwardError::Rejected(format!("{r:?}"))),
            r => Ok(ForwardResponse::Written(r)),
        }
    }

    /// First start of a cluster from `VAULT_PEERS`. Only the lowest id initializes, and only
    /// once every listed peer answers with the expected id and is uninitialized: exactly one
    /// initialization, never on restart, never beside an existing cluster.
    pub async fn bootstrap_from_peers(&self, peers: &[(NodeId, String)], me: &NodeInfo) {
        let lowest = peers.iter().map(|(id, _)| *id).min();
        if lowest != Some(self.node_id) {
            tracing::info!(node = self.node_id, "waiting for node {lowest:?} to initialize the cluster");
            return;
        }
        let mut attempt = 0u64;
        loop {
            match self.raft.is_initialized().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "raft stopped during bootstrap");
                    return;
                }
            }
            let mut nodes = BTreeMap::new();
            let mut waiting = Vec::new();
            for (id, addr) in peers {
                if *id == self.node_id {
                    nodes.insert(*id, NodeInfo { raft_addr: addr.clone(), api_addr: me.api_addr.clone() });
                    continue;
                }
                match self.peers.node_state(*id, addr, Duration::from_secs(2)).await {
                    Ok(r) if r.node_id != *id => {
                        tracing::error!(peer = addr, "peer says it is node {}, VAULT_PEERS says {id}", r.node_id);
                        waiting.push(*id);
                    }
                    Ok(r) if r.initialized => {
                        tracing::warn!(
                            peer = *id,
                            "peer already belongs to a cluster: not initializing; this node waits to be added"
                        );
                        return;
                    }
                    Ok(r) => {
                        nodes.insert(*id, NodeInfo { raft_addr: addr.clone(), api_addr: r.api_addr });
                    }
                    Err(e) => {
                        if attempt.is_multiple_of(10) {
                            tracing::info!(peer = *id, error = %e.message(), "peer not reachable yet");
                        }
                        waiting.push(*id);
                    }
                }
            }
            if waiting.is_empty() {
                tracing::info!(members = ?nodes.keys().collect::<Vec<_>>(), "all peers reachable and new: initializing the cluster");
                match self.raft.initialize(nodes).await {
                    Ok(()) => return,
                    Err(e) => tracing::warn!(error = %e, "initialize failed; retrying"),
                }
            }
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
