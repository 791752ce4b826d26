//! Starting the two systems under test, a 3-node vault cluster and a 3-member etcd, with their
//! peer links through the delay proxy when `--peer-delay-ms` asks for one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vault_tests::delay_proxy::DelayProxy;
use vault_tests::etcd::EtcdCluster;
use vault_tests::{free_port, NodeSpec, TestCluster};

use crate::measure::{cpu_us_of, Node};
use crate::workload::{Target, PROXY_THREADS};

/// Snapshot (and purge the log) every this many entries. An entry carries a batch of writes
/// (~100 in a preload at 256 clients), so the default of 20,000 entries would build no
/// snapshot during a preload of 1M secrets, and the 4th node would catch up from the log.
/// With 4,000 the preload (~10,000 entries) builds two and the timed runs after it (a few
/// hundred entries) none; with larger preload batches (1,024 clients: ~3,300 entries) one
/// was built in the middle of the write and read runs at 1M and slowed them down.
pub const SNAPSHOT_LOG_ENTRIES: &str = "4000";

/// The delay proxies of both systems' peer links, on a runtime of their own (one thread,
/// named [`PROXY_THREADS`], so its CPU time can be told from the generator's).
pub struct PeerDelay {
    pub delay: Duration,
    runtime: Option<tokio::runtime::Runtime>,
    proxies: Mutex<Vec<(&'static str, DelayProxy)>>,
}

impl PeerDelay {
    pub fn new(delay: Duration) -> std::io::Result<PeerDelay> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(PROXY_THREADS)
            .enable_all()
            .build()?;
        Ok(PeerDelay { delay, runtime: Some(runtime), proxies: Mutex::new(Vec::new()) })
    }

    /// A proxy in front of `target` for `system`'s peers to dial: its address.
    pub async fn proxy(&self, system: &'static str, target: SocketAddr) -> SocketAddr {
        let runtime = self.runtime.as_ref().expect("runtime lives as long as the proxies");
        let proxy = runtime
            .spawn(DelayProxy::start(target, self.delay))
            .await
            .expect("the proxy runtime runs")
            .unwrap_or_else(|e| panic!("start a delay proxy for {target}: {e}"));
        let addr = proxy.addr();
        self.proxies.lock().unwrap_or_else(|p| p.into_inner()).push((system, proxy));
        addr
    }

    /// Bytes the proxies forwarded so far, by system.
    pub fn json(&self) -> Value {
        let proxies = self.proxies.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = |system: &str| -> u64 {
            proxies.iter().filter(|(s, _)| *s == system).map(|(_, p)| p.forwarded_bytes()).sum()
        };
        json!({"ms_each_way": self.delay.as_secs_f64() * 1000.0,
               "forwarded_bytes": {"vault": bytes("vault"), "etcd": bytes("etcd")}})
    }
}

impl Drop for PeerDelay {
    fn drop(&mut self) {
        self.proxies.lock().unwrap_or_else(|p| p.into_inner()).clear();
        // Dropped from async code, where a runtime may not block on its own shutdown.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// One system under test: where "leader" and "follower" clients connect, and its server
/// processes (leader first).
pub struct System {
    pub name: &'static str,
    /// The admin token, for vault; etcd takes none.
    pub token: Option<String>,
    pub leader: String,
    pub follower: String,
    /// The CA of the API's certificate, when it serves TLS.
    pub ca: Option<PathBuf>,
    pub nodes: Vec<Node>,
}

impl System {
    pub async fn target(&self, leader_side: bool, clients: usize) -> Target {
        let url = if leader_side { &self.leader } else { &self.follower };
        match &self.token {
            Some(token) => Target::vault(url, self.ca.as_deref(), token, clients, &self.nodes).await,
            None => Target::etcd(url, clients, &self.nodes).await,
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.pid).collect()
    }
}

/// Nodes in the order leader first, then the others as numbered.
fn leader_first(mut nodes: Vec<Node>) -> Vec<Node> {
    nodes.sort_by_key(|n| (n.role != "leader", n.id));
    nodes
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Three vault nodes (Raft over mutual TLS, metrics on), tuned by `tune`. With `delay`, each
/// node's Raft listener stays where it is and its peers are told (`VAULT_PEERS`,
/// `VAULT_RAFT_ADVERTISE_ADDR`) to dial a proxy in front of it; the node certificates name
/// the node and 127.0.0.1, so TLS through the proxy verifies as it does direct.
pub async fn start_vault(delay: Option<&PeerDelay>, tune: impl Fn(&mut NodeSpec)) -> TestCluster {
    let direct: Vec<SocketAddr> = (0..3).map(|_| loopback(free_port())).collect();
    let mut advertised = direct.clone();
    if let Some(pd) = delay {
        for (a, d) in advertised.iter_mut().zip(&direct) {
            *a = pd.proxy("vault", *d).await;
        }
    }
    let peers: Vec<String> = advertised.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
    TestCluster::start(3, |s| {
        let i = (s.node_id - 1) as usize;
        s.raft_addr = direct[i];
        s.set("VAULT_PEERS", &peers.join(","));
        s.set("VAULT_RAFT_ADVERTISE_ADDR", &advertised[i].to_string());
        tune(s);
    })
    .await
}

/// The vault system: leader and follower as node 1 sees them.
pub async fn vault_system(cluster: &TestCluster) -> (System, usize) {
    let leader = cluster.leader_seen_by(0, |_| true).await;
    let follower = (leader + 1) % cluster.nodes.len();
    let nodes = cluster
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            Some(Node {
                id: cluster.specs[i].node_id,
                pid: n.pid()?,
                role: if i == leader { "leader" } else { "follower" },
                metrics: cluster.specs[i].env.get("VAULT_METRICS_ADDR").cloned(),
            })
        })
        .collect();
    let system = System {
        name: "vault",
        token: Some(cluster.token.clone()),
        leader: cluster.url(leader),
        follower: cluster.url(follower),
        ca: cluster.nodes[leader].api_ca.clone(),
        nodes: leader_first(nodes),
    };
    (system, leader)
}

/// A 4th vault node's spec, its peers dialing it through a proxy with `delay`; returns the
/// address to add it under.
pub async fn fourth_node(cluster: &TestCluster, delay: Option<&PeerDelay>) -> (NodeSpec, SocketAddr) {
    let mut spec = cluster.node_spec(4);
    spec.set("VAULT_JOIN", "true");
    spec.set("VAULT_LOG", "warn");
    spec.set("VAULT_SNAPSHOT_LOG_ENTRIES", SNAPSHOT_LOG_ENTRIES);
    let mut advertised = spec.raft_addr;
    if let Some(pd) = delay {
        advertised = pd.proxy("vault", spec.raft_addr).await;
        spec.set("VAULT_RAFT_ADVERTISE_ADDR", &advertised.to_string());
    }
    (spec, advertised)
}

/// Three etcd members under `dir`, their peer URLs through proxies with `delay`, and the
/// system that drives them; `None` (and why, on stderr) when etcd cannot start.
pub async fn start_etcd(dir: &Path, delay: Option<&PeerDelay>) -> Option<(EtcdCluster, System)> {
    let listen: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut advertised: Vec<SocketAddr> = listen.iter().map(|p| loopback(*p)).collect();
    if let Some(pd) = delay {
        for a in advertised.iter_mut() {
            *a = pd.proxy("etcd", *a).await;
        }
    }
    let etcd = match EtcdCluster::start_with_peers(dir, &listen, &advertised) {
        Ok(etcd) => etcd,
        Err(e) => {
            eprintln!("etcd baseline skipped: cannot start etcd ({e}); apt install etcd-server");
            return None;
        }
    };
    if let Err(e) = etcd.wait_ready().await {
        eprintln!("etcd baseline skipped: {e}");
        return None;
    }
    // As for vault: "leader" rows talk to the leader, "follower" rows to the next member.
    let leader = match etcd.leader().await {
        Ok(i) => i,
        Err(e) => {
            eprintln!("etcd leader unknown ({e}); member 1 takes the leader rows");
            0
        }
    };
    let nodes = etcd
        .pids()
        .into_iter()
        .enumerate()
        .map(|(i, pid)| Node {
            id: i as u64 + 1,
            pid,
            role: if i == leader { "leader" } else { "follower" },
            metrics: None,
        })
        .collect();
    let system = System {
        name: "etcd",
        token: None,
        leader: etcd.client_urls[leader].clone(),
        follower: etcd.client_urls[(leader + 1) % etcd.client_urls.len()].clone(),
        ca: None,
        nodes: leader_first(nodes),
    };
    Some((etcd, system))
}

/// The systems in the order the next scenario runs them: the order flips at every scenario,
/// so neither system always runs first (this machine's speed drifts over minutes).
pub fn in_turn<'a>(systems: &'a [System], turn: &mut usize) -> Vec<&'a System> {
    let mut order: Vec<&System> = systems.iter().collect();
    let k = *turn % systems.len().max(1);
    order.rotate_left(k);
    *turn += 1;
    order
}

/// Waits until every system's servers are idle (together under 10% of a core over half a
/// second), at most 30 s, so background work a run leaves behind (memtable flushes,
/// compactions, snapshots) is not charged to the next run, which may be the other system's.
pub async fn settle(systems: &[System]) {
    let pids: Vec<u32> = systems.iter().flat_map(System::pids).collect();
    let used = || cpu_us_of(&pids);
    let t0 = Instant::now();
    loop {
        let before = used();
        tokio::time::sleep(Duration::from_millis(500)).await;
        if used() - before < 50_000.0 {
            return;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            eprintln!("servers still busy after 30 s; measuring anyway");
            return;
        }
    }
}
