//! One run: a fresh cluster in the lab, concurrent clients, one nemesis (or several), then
//! the history's check and availability figures.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use vault_node::pb::admin_client::AdminClient;
use vault_node::pb::ClusterStatusRequest;

use super::checker::{self, Event, Op, Outcome, Ret};
use super::lab::{node_ip, Lab, CLIENT_IP};
use super::workload::{Client, Recorder, MAX_VERSIONS};
use crate::{authed, mint_certs, random_master_key, random_token, vaultctl, NodeProcess, NodeSpec};

mod crash;

/// The faults, one per run; `Combined` draws several in sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Nemesis {
    KillLeader,
    KillAll,
    PauseLeader,
    PauseFollower,
    PartitionLeader,
    PartitionFollower,
    Bridge,
    Flapping,
    TransferLeader,
    Membership,
    Combined,
    CrashInApply,
}

impl Nemesis {
    pub const ALL: [Nemesis; 12] = [
        Nemesis::KillLeader,
        Nemesis::KillAll,
        Nemesis::PauseLeader,
        Nemesis::PauseFollower,
        Nemesis::PartitionLeader,
        Nemesis::PartitionFollower,
        Nemesis::Bridge,
        Nemesis::Flapping,
        Nemesis::TransferLeader,
        Nemesis::Membership,
        Nemesis::Combined,
        Nemesis::CrashInApply,
    ];

    pub fn name(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
    }

    pub fn parse(s: &str) -> Option<Nemesis> {
        Nemesis::ALL.into_iter().find(|n| n.name() == s)
    }
}

/// What a fault did to the cluster, for the availability targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Impact {
    /// The leader was lost (killed, paused, cut off): failover.
    LeaderLoss,
    /// A follower was lost; its return is the heal.
    FollowerLoss,
    /// A planned leader transfer.
    Transfer,
    /// Everything else (whole-cluster kill, bridges, flapping, membership).
    Other,
}

impl Impact {
    /// Longest gap (writes and reads alike) the issue accepts after the fault and the heal.
    pub fn targets(self) -> (Option<Duration>, Option<Duration>) {
        match self {
            Impact::LeaderLoss => (Some(Duration::from_millis(1500)), Some(Duration::from_millis(1500))),
            Impact::FollowerLoss => (Some(Duration::from_millis(500)), Some(Duration::from_millis(500))),
            Impact::Transfer => (Some(Duration::from_millis(500)), None),
            Impact::Other => (None, None),
        }
    }
}

/// A fault and, for those that end, its heal.
#[derive(Clone, Debug, Serialize)]
pub struct Mark {
    pub what: String,
    pub impact: Impact,
    pub fault_ns: u64,
    pub heal_ns: Option<u64>,
}

/// Longest stretches without an acknowledged write and without a successful read.

#[derive(Clone, Debug, Default, Serialize)]
pub struct Gaps {
    pub write_ms: f64,
    pub read_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct MarkFigures {
    pub mark: Mark,
    pub after_fault: Gaps,
    pub after_heal: Option<Gaps>,
    pub within_target: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub nemesis: Nemesis,
    pub nodes: u64,
    pub ops: usize,
    pub ok_writes: usize,
    pub ok_reads: usize,
    pub unknown: usize,
    pub anomalies: Vec<String>,
    pub inconclusive_keys: usize,
    /// Longest stretch without an acknowledged write / successful read while faults ran.
    pub longest_write_gap_ms: f64,
    pub longest_read_gap_ms: f64,
    pub marks: Vec<MarkFigures>,
    pub transfers_ok: usize,
    pub transfers_tried: usize,
    /// Node log lines showing HTTP/2 reset-flood protection cutting a connection (GOAWAY
    /// ENHANCE_YOUR_CALM after too many reset streams): none expected.
    pub reset_floods: usize,
    pub seconds: f64,
}

/// Lines of the nodes' logs under `dir` that show HTTP/2's reset-flood protection firing.
fn reset_flood_lines(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(entry.path()).into_iter().flatten().flatten() {
            if f.path().extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(f.path()).unwrap_or_default();
                n += text
                    .lines()
                    .filter(|l| {
                        let l = l.to_ascii_lowercase();
                        l.contains("too_many_resets")
                            || l.contains("enhance_your_calm")
                            || l.contains("streams reached limit")
                    })
                    .count();
            }
        }
    }
    n
}

pub struct Settings {
    pub clients: u32,
    pub keys: usize,
    /// How long each fault lasts before it is healed.
    pub fault_for: Duration,
    pub verbose: bool,
}

/// The cluster of one run: node processes in their namespaces.
struct Nodes {
    specs: Vec<NodeSpec>,
    procs: Vec<Option<NodeProcess>>,
    token: String,
    /// Node ids that are members (spares join through `Membership`).
    members: Vec<u64>,
    stopped: BTreeSet<u64>,
}

/// Every node PID the suite started, to prove none outlives it.
static STARTED: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

fn started(p: NodeProcess) -> NodeProcess {
    if let Some(pid) = p.pid() {
        STARTED.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
    }
    p
}

/// PIDs this suite started that still run `vault-node`.
pub fn survivors() -> Vec<u32> {
    let pids = STARTED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    pids.into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains("vault-node"))
        })
        .collect()
}

const API_PORT: u16 = 8200;
const RAFT_PORT: u16 = 8201;

fn url(id: u64) -> String {
    format!("http://{}:{API_PORT}", node_ip(id))
}

impl Nodes {
    fn start(lab: &Lab, dir: &Path, n: u64) -> anyhow::Result<Nodes> {
        let token = random_token();
        let master = random_master_key();
        let certs = dir.join("certs");
        let ids: Vec<u64> = (1..=lab.node_ns.len() as u64).collect();
        mint_certs(&certs, &ids);
        let peers: Vec<String> = (1..=n).map(|i| format!("{i}={}:{RAFT_PORT}", node_ip(i))).collect();
        let mut specs = Vec::new();
        for id in ids {
            let mut s = NodeSpec::single(&dir.join(format!("node-{id}")), &token, &master);
            s.node_id = id;
            s.netns = Some(lab.node_ns[id as usize - 1].clone());
            s.api_addr = SocketAddr::new(node_ip(id).parse()?, API_PORT);
            s.raft_addr = SocketAddr::new(node_ip(id).parse()?, RAFT_PORT);
            let path = |f: String| certs.join(f).to_string_lossy().into_owned();
            s.set("VAULT_RAFT_TLS_CA", &path("ca.pem".into()))
                .set("VAULT_RAFT_TLS_CERT", &path(format!("node-{id}.pem")))
                .set("VAULT_RAFT_TLS_KEY", &path(format!("node-{id}.key")))
                .set("VAULT_ALLOWED_IPS", &format!("{CLIENT_IP}/32"))
                .set("VAULT_LOG", &std::env::var("FAULTS_NODE_LOG").unwrap_or_else(|_| "info,openraft=warn".into()));
            if id <= n {
                s.set("VAULT_PEERS", &peers.join(","));
            } else {
                s.set("VAULT_JOIN", "true");
            }
            specs.push(s);
        }
        let procs = specs.iter().map(|s| (s.node_id <= n).then(|| started(s.start()))).collect();
        Ok(Nodes { specs, procs, token, members: (1..=n).collect(), stopped: BTreeSet::new() })
    }

    fn spec(&self, id: u64) -> &NodeSpec {
        &self.specs[id as usize - 1]
    }

    fn kill(&mut self, id: u64) {
        if let Some(mut p) = self.procs[id as usize - 1].take() {
            if self.stopped.remove(&id) {
                p.signal("CONT");
            }
            p.kill();
        }
    }

    fn restart(&mut self, id: u64) {
        if self.procs[id as usize - 1].is_none() {
            self.procs[id as usize - 1] = Some(started(self.spec(id).start()));
        }
    }

    /// Whether node `id` was started and has exited on its own.
    fn exited(&mut self, id: u64) -> bool {
        self.procs[id as usize - 1].as_mut().is_some_and(|p| !p.is_running())
    }

    fn signal(&mut self, id: u64, sig: &str) {
        if let Some(p) = &self.procs[id as usize - 1] {
            p.signal(sig);
            if sig == "STOP" {
                self.stopped.insert(id);
            } else {
                self.stopped.remove(&id);
            }
        }
    }

    /// Resumes, restarts: every member running and serving again.
    fn heal_processes(&mut self) {
        for id in self.stopped.clone() {
            self.signal(id, "CONT");
        }
        for id in self.members.clone() {
            self.restart(id);
        }
    }

    /// The leader, as the running members see it (the highest term wins); none if none is
    /// known within `wait`.
    async fn leader(&self, wait: Duration) -> Option<u64> {
        let deadline = Instant::now() + wait;
        loop {
            let mut best: Option<(u64, u64)> = None;
            for id in &self.members {
                if self.procs[*id as usize - 1].is_none() || self.stopped.contains(id) {
                    continue;
                }
                let Ok(s) = status(*id, &self.token).await else { continue };
                if s.state == "leader" && best.is_none_or(|(t, _)| s.term > t) {
                    best = Some((s.term, *id));
                }
            }
            if let Some((_, id)) = best {
                return Some(id);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for id in 1..=self.procs.len() as u64 {
            self.kill(id);
        }
    }
}

async fn status(id: u64, token: &str) -> anyhow::Result<vault_node::pb::ClusterStatusResponse> {
    let ch = tonic::transport::Endpoint::from_shared(url(id))?
        .connect_timeout(Duration::from_millis(300))
        .timeout(Duration::from_millis(700))
        .connect()
        .await?;
    Ok(AdminClient::new(ch).cluster_status(authed(ClusterStatusRequest {}, token)).await?.into_inner())
}

/// A small xorshift for choosing faults and operations (reproducible from the printed seed;
/// not for secrets).
pub struct Dice(pub u64);

impl Dice {
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// What `Ctx::strike` does to its victim.
#[derive(Clone, Copy)]
enum Blow {
    Kill,
    Pause,
    Isolate,
}

/// Everything a nemesis needs while the clients run.
struct Ctx<'a> {
    lab: &'a Lab,
    nodes: Nodes,
    rec: Arc<Recorder>,
    marks: Vec<Mark>,
    settings: &'a Settings,
    dice: Dice,
    transfers: (usize, usize),
}

impl Ctx<'_> {
    fn now_ns(&self) -> u64 {
        self.rec.ns(Instant::now())
    }

    fn say(&self, what: &str) {
        if self.settings.verbose {
            eprintln!("  [{:>7.3}s] {what}", self.rec.since_start().as_secs_f64());
        }
    }

    fn fault(&mut self, what: String, impact: Impact) -> usize {
        self.say(&what);
        self.marks.push(Mark { what, impact, fault_ns: self.now_ns(), heal_ns: None });
        self.marks.len() - 1
    }

    fn healed(&mut self, mark: usize) {
        self.say("heal");
        self.marks[mark].heal_ns = Some(self.now_ns());
    }

    async fn leader(&mut self) -> anyhow::Result<u64> {
        self.nodes.leader(Duration::from_secs(20)).await.context("no leader within 20 s")
    }

    async fn follower(&mut self) -> anyhow::Result<u64> {
        let leader = self.leader().await?;
        let others: Vec<u64> = self.nodes.members.iter().copied().filter(|m| *m != leader).collect();
        Ok(others[self.dice.below(others.len() as u64) as usize])
    }

    fn isolate(&self, id: u64) -> anyhow::Result<()> {
        let cut = self.nodes.members.iter().filter(|m| **m != id).map(|m| (id.min(*m), id.max(*m))).collect();
        self.lab.partition(&cut)
    }

    async fn hold(&self) {
        tokio::time::sleep(self.settings.fault_for).await;
    }

    async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }

    async fn run(&mut self, nemesis: Nemesis) -> anyhow::Result<()> {
        match nemesis {
            Nemesis::KillLeader => self.strike(true, Blow::Kill).await?,
            Nemesis::KillAll => {
                let m = self.fault("SIGKILL every node".into(), Impact::Other);
                for id in self.nodes.members.clone() {
                    self.nodes.kill(id);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                for id in self.nodes.members.clone() {
                    self.nodes.restart(id);
                }
                self.healed(m);
                self.settle().await;
                self.settle().await;
            }
            Nemesis::PauseLeader => self.strike(true, Blow::Pause).await?,
            Nemesis::PauseFollower => self.strike(false, Blow::Pause).await?,
            Nemesis::PartitionLeader => self.strike(true, Blow::Isolate).await?,
            Nemesis::PartitionFollower => self.strike(false, Blow::Isolate).await?,
            Nemesis::Bridge => {
                let ms = self.nodes.members.clone();
                let mid = ms.len() / 2;
                let (left, right) = (&ms[..mid], &ms[mid + 1..]);
                let cut = left.iter().flat_map(|a| right.iter().map(move |b| (*a.min(b), *a.max(b)))).collect();
                let m = self.fault(format!("bridge: {left:?} | {} | {right:?}", ms[mid]), Impact::Other);
                self.lab.partition(&cut)?;
                self.hold().await;
                self.hold().await;
                self.lab.heal()?;
                self.healed(m);
                self.settle().await;
            }
            Nemesis::Flapping => {
                let m = self.fault("flapping partitions".into(), Impact::Other);
                let until = Instant::now() + self.settings.fault_for * 2;
                while Instant::now() < until {
                    let ms = self.nodes.members.clone();
                    let victim = ms[self.dice.below(ms.len() as u64) as usize];
                    match self.dice.below(3) {
                        0 => self.lab.heal()?,
                        _ => self.isolate(victim)?,
                    }
                    tokio::time::sleep(Duration::from_millis(300 + self.dice.below(500))).await;
                }
                self.lab.heal()?;
                self.healed(m);
                self.settle().await;
            }
            Nemesis::TransferLeader => {
                for _ in 0..4 {
                    self.transfer().await?;
                }
            }
            Nemesis::Membership => self.membership().await?,
            Nemesis::CrashInApply => self.crash_in_apply().await?,
            Nemesis::Combined => {
                for _ in 0..4 {
                    let pick = [
                        Nemesis::KillLeader,
                        Nemesis::PauseFollower,
                        Nemesis::PartitionLeader,
                        Nemesis::TransferLeader,
                        Nemesis::Bridge,
                        Nemesis::PauseLeader,
                    ];
                    let n = pick[self.dice.below(pick.len() as u64) as usize];
                    self.say(&format!("combined: {}", n.name()));
                    match n {
                        Nemesis::TransferLeader => self.transfer().await?,
                        other => Box::pin(self.run(other)).await?,
                    }
                }
            }
        }
        Ok(())
    }

    /// Twice: the leader (or a random follower) is killed, paused or cut off for
    /// `fault_for`, then restarted, resumed or reconnected.
    async fn strike(&mut self, leader: bool, blow: Blow) -> anyhow::Result<()> {
        for _ in 0..2 {
            let (victim, role, impact) = if leader {
                (self.leader().await?, "leader", Impact::LeaderLoss)
            } else {
                (self.follower().await?, "follower", Impact::FollowerLoss)
            };
            let verb = match blow {
                Blow::Kill => "SIGKILL",
                Blow::Pause => "SIGSTOP",
                Blow::Isolate => "isolate",
            };
            let m = self.fault(format!("{verb} {role} {victim}"), impact);
            match blow {
                Blow::Kill => self.nodes.kill(victim),
                Blow::Pause => self.nodes.signal(victim, "STOP"),
                Blow::Isolate => self.isolate(victim)?,
            }
            self.hold().await;
            match blow {
                Blow::Kill => self.nodes.restart(victim),
                Blow::Pause => self.nodes.signal(victim, "CONT"),
                Blow::Isolate => self.lab.heal()?,
            }
            self.healed(m);
            self.settle().await;
        }
        Ok(())
    }

    async fn transfer(&mut self) -> anyhow::Result<()> {
        let l = self.leader().await?;
        let to = self.follower().await?;
        let m = self.fault(format!("transfer leader {l} -> {to}"), Impact::Transfer);
        self.transfers.1 += 1;
        match self.ctl_blocking(l, vec!["cluster".into(), "transfer-leader".into(), to.to_string()]).await {
            Ok(_) => self.transfers.0 += 1,
            Err(e) => self.say(&format!("transfer failed: {e:#}")),
        }
        self.healed(m);
        self.settle().await;
        Ok(())
    }

    /// Adds the spare node as a learner, promotes it, then removes the leader it joined.
    async fn membership(&mut self) -> anyhow::Result<()> {
        let spare = self.nodes.members.len() as u64 + 1;
        if spare as usize > self.nodes.specs.len() {
            bail!("no spare node for the membership nemesis");
        }
        self.nodes.restart(spare);
        let (raft, api) = (self.nodes.spec(spare).raft_addr.to_string(), self.nodes.spec(spare).api_addr.to_string());
        let l = self.leader().await?;
        let m = self.fault(format!("add node {spare} as learner, promote it"), Impact::Other);
        self.ctl_blocking(l, vec!["cluster".into(), "add".into(), spare.to_string(), raft, api]).await?;
        let l = self.leader().await?;
        self.ctl_blocking(l, vec!["cluster".into(), "promote".into(), spare.to_string()]).await?;
        self.nodes.members.push(spare);
        self.healed(m);
        self.settle().await;
        let l = self.leader().await?;
        let m = self.fault(format!("remove leader {l}"), Impact::Other);
        self.ctl_blocking(l, vec!["cluster".into(), "remove".into(), l.to_string()]).await?;
        self.nodes.members.retain(|x| *x != l);
        self.healed(m);
        self.settle().await;
        self.nodes.kill(l);
        self.settle().await;
        Ok(())
    }

    async fn ctl_blocking(&self, via: u64, args: Vec<String>) -> anyhow::Result<String> {
        let token = self.nodes.token.clone();
        tokio::task::spawn_blocking(move || {
            let out = vaultctl(&url(via), Some(&token), &args.iter().map(String::as_str).collect::<Vec<_>>());
            if !out.status.success() {
                bail!("vaultctl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        })
        .await?
    }
}

/// Runs one nemesis on a fresh `n`-node cluster and checks what the clients saw.
pub async fn run(
    lab: &Lab,
    dir: &Path,
    n: u64,
    nemesis: Nemesis,
    seed: u64,
    settings: &Settings,
) -> anyhow::Result<RunReport> {
    let began = Instant::now();
    lab.heal()?;
    let nodes = Nodes::start(lab, dir, n)?;
    for id in 1..=n {
        wait_serving(id, Duration::from_secs(60)).await.with_context(|| format!("node {id} did not start"))?;
    }
    let rec = Recorder::new(Instant::now());
    let keys: Arc<Vec<String>> = Arc::new((0..settings.keys).map(|k| format!("faults/k{k}")).collect());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for p in 0..settings.clients {
        let node = u64::from(p) % n + 1;
        let c = Client {
            process: p,
            node,
            url: url(node),
            token: nodes.token.clone(),
            keys: keys.clone(),
            rec: rec.clone(),
        };
        tasks.push(tokio::spawn(c.run(stop_rx.clone())));
    }
    let mut ctx =
        Ctx { lab, nodes, rec: rec.clone(), marks: Vec::new(), settings, dice: Dice(seed | 1), transfers: (0, 0) };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let load_from = ctx.now_ns();
    let outcome = ctx.run(nemesis).await;
    let load_to = ctx.now_ns();
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    lab.heal()?;
    ctx.nodes.heal_processes();
    outcome?;

    // Final reads of every key, from a member, once the cluster serves again.
    let reader_node = ctx.nodes.members[0];
    wait_serving(reader_node, Duration::from_secs(60)).await.context("cluster did not serve after the faults")?;
    let events = rec.events();
    let highest = highest_versions(&events, &keys);
    let final_client = Client {
        process: 10_000,
        node: reader_node,
        url: url(reader_node),
        token: ctx.nodes.token.clone(),
        keys: keys.clone(),
        rec: rec.clone(),
    };
    final_client.final_reads(&highest, Instant::now() + Duration::from_secs(60)).await?;
    let events = rec.events();

    if let Some(d) = std::env::var_os("FAULTS_HISTORY_DIR") {
        let lines: Vec<String> =
            ctx.marks.iter().map(|m| format!("{m:?}")).chain(events.iter().map(|e| e.to_string())).collect();
        let path = Path::new(&d).join(format!("{}-{n}-{seed}.txt", nemesis.name()));
        std::fs::write(&path, lines.join("\n")).with_context(|| format!("write {}", path.display()))?;
    }
    let report = checker::check(&events, MAX_VERSIONS);
    let anomalies: Vec<String> = if report.anomalies.is_empty() { Vec::new() } else { vec![checker::render(&report)] };
    let (ok_writes, ok_reads) = (ok_times(&events, true), ok_times(&events, false));
    let marks = figures(&ctx.marks, &ok_writes, &ok_reads, load_to);
    Ok(RunReport {
        nemesis,
        nodes: n,
        ops: events.len(),
        ok_writes: ok_writes.len(),
        ok_reads: ok_reads.len(),
        unknown: events.iter().filter(|e| e.outcome == Outcome::Unknown).count(),
        anomalies,
        inconclusive_keys: report.inconclusive.len(),
        longest_write_gap_ms: longest_gap(&ok_writes, load_from, load_to),
        longest_read_gap_ms: longest_gap(&ok_reads, load_from, load_to),
        marks,
        transfers_ok: ctx.transfers.0,
        transfers_tried: ctx.transfers.1,
        reset_floods: reset_flood_lines(dir),
        seconds: began.elapsed().as_secs_f64(),
    })
}

/// Per mark: the longest stretch without an acknowledged write / successful read from the
/// fault until its heal (or the next fault), and from the heal until the next fault (or the
/// end of the load). A stretch that starts at the mark counts from the mark.
fn figures(marks: &[Mark], ok_writes: &[u64], ok_reads: &[u64], load_to: u64) -> Vec<MarkFigures> {
    marks
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let next = marks.get(i + 1).map_or(load_to, |n| n.fault_ns);
            let window = |from: u64, to: u64| Gaps {
                write_ms: longest_gap(ok_writes, from, to),
                read_ms: longest_gap(ok_reads, from, to),
            };
            let after_fault = window(m.fault_ns, m.heal_ns.unwrap_or(next));
            let after_heal = m.heal_ns.map(|h| window(h, next.max(h)));
            let (fault_target, heal_target) = m.impact.targets();
            let fits = |g: &Gaps, t: Option<Duration>| {
                t.is_none_or(|t| g.write_ms <= t.as_secs_f64() * 1e3 && g.read_ms <= t.as_secs_f64() * 1e3)
            };
            let within_target =
                fits(&after_fault, fault_target) && after_heal.as_ref().is_none_or(|g| fits(g, heal_target));
            MarkFigures { mark: m.clone(), after_fault, after_heal, within_target }
        })
        .collect()
}

/// Waits until node `id` answers a health check as serving.
async fn wait_serving(id: u64, wait: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait;
    while !crate::serving(&url(id), None).await {
        if Instant::now() > deadline {
            bail!("node {id} not serving after {wait:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The highest version any operation saw per key (for the final reads).
fn highest_versions(events: &[Event], keys: &[String]) -> Vec<u64> {
    keys.iter()
        .map(|k| {
            events
                .iter()
                .filter(|e| &e.key == k)
                .filter_map(|e| match &e.outcome {
                    Outcome::Ok(Ret::Written { version }) | Outcome::Ok(Ret::Found { version, .. }) => Some(*version),
                    _ => None,
                })
                .max()
                .unwrap_or(0)
        })
        .collect()
}

/// Completion times of acknowledged writes (puts and deletes) or successful reads, sorted.
fn ok_times(events: &[Event], writes: bool) -> Vec<u64> {
    let mut t: Vec<u64> = events
        .iter()
        .filter(|e| e.process < 10_000)
        .filter(|e| match (&e.op, &e.outcome) {
            (Op::Get { .. }, Outcome::Ok(_)) => !writes,
            (Op::Put { .. } | Op::Delete, Outcome::Ok(Ret::Written { .. } | Ret::Deleted)) => writes,
            _ => false,
        })
        .filter_map(|e| e.complete_ns)
        .collect();
    t.sort_unstable();
    t
}

/// Longest stretch in [from, to] without a completion, in milliseconds.
fn longest_gap(times: &[u64], from: u64, to: u64) -> f64 {
    let mut last = from;
    let mut longest = 0;
    for t in times.iter().copied().filter(|t| *t > from && *t <= to) {
        longest = longest.max(t - last);
        last = t;
    }
    longest.max(to.saturating_sub(last)) as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_measured_from_the_mark_and_between_completions() {
        let t = [1_000_000, 5_000_000, 6_000_000];
        assert_eq!(longest_gap(&t, 0, 10_000_000), 4.0);
        assert_eq!(longest_gap(&t, 2_000_000, 5_500_000), 3.0, "from the mark to the first completion");
        assert_eq!(longest_gap(&t, 5_500_000, 9_000_000), 3.0, "from the last completion to the end");
        assert_eq!(longest_gap(&[], 0, 2_000_000), 2.0);
    }

    #[test]
    fn nemesis_names_round_trip() {
        for n in Nemesis::ALL {
            assert_eq!(Nemesis::parse(&n.name()), Some(n));
        }
        assert_eq!(Nemesis::parse("kill-leader"), Some(Nemesis::KillLeader));
    }
}
