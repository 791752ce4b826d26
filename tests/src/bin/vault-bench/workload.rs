//! The load: one generator for both systems (same values, keys, concurrency), bounded in time
//! or in count, and what one run measured.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tonic::transport::Channel;
use vault_node::pb;
use vault_node::pb::secrets_client::SecretsClient;
use vault_tests::authed;
use vault_tests::etcd::pb as etcdpb;

use crate::measure::{self, Node, NodeUse, Probe};
use crate::perf::Perf;

pub const VALUE_LEN: usize = 256;

/// The name of the delay proxy's threads, whose CPU time is not the generator's.
pub const PROXY_THREADS: &str = "delay-proxy";

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub ops: u64,
    pub errors: u64,
    pub secs: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    /// Fewest operations any one client issued: after a write run, every client's keys
    /// `0..min_per_client` exist.
    pub min_per_client: u64,
    /// CPU time per completed operation, in microseconds: all server processes together, this
    /// load generator, and the delay proxy (`--peer-delay-ms`, which runs in the generator's
    /// process but is not counted as the generator's).
    pub server_cpu_us: f64,
    pub client_cpu_us: f64,
    pub proxy_cpu_us: f64,
    /// Each server process, per operation (timed runs only).
    pub nodes: Vec<NodeUse>,
    /// What the vault leader's write pipeline did (vault write runs).
    pub pipeline: Option<Value>,
}

impl Stats {
    pub fn per_sec(&self) -> f64 {
        self.ops as f64 / self.secs.max(1e-9)
    }

    pub fn json(&self) -> Value {
        let mut cpu = json!({"servers": self.server_cpu_us.round(), "client": self.client_cpu_us.round()});
        if self.proxy_cpu_us > 0.0 {
            cpu["delay_proxy"] = json!(self.proxy_cpu_us.round());
        }
        let mut v = json!({"ops": self.ops, "errors": self.errors, "secs": self.secs, "ops_per_sec": self.per_sec().round(),
               "p50_ms": ms(self.p50_us), "p99_ms": ms(self.p99_us), "max_ms": ms(self.max_us),
               "cpu_us_per_op": cpu});
        if !self.nodes.is_empty() {
            v["nodes"] = json!(self.nodes.iter().map(NodeUse::json).collect::<Vec<_>>());
        }
        v
    }
}

pub fn ms(us: u64) -> f64 {
    (us as f64 / 10.0).round() / 100.0
}

/// One system under test, with a pool of channels (16 clients share one HTTP/2 connection)
/// and the server processes a run is charged with.
#[derive(Clone)]
pub struct Target {
    kind: Kind,
    nodes: Vec<Node>,
}

#[derive(Clone)]
enum Kind {
    Vault { pool: Vec<SecretsClient<Channel>>, token: String },
    Etcd { pool: Vec<etcdpb::kv_client::KvClient<Channel>> },
}

/// One HTTP/2 connection per 16 clients; over TLS verified by `ca` if given.
pub async fn channels(url: &str, ca: Option<&Path>, clients: usize) -> Vec<Channel> {
    let mut out = Vec::new();
    for _ in 0..clients.div_ceil(16) {
        out.push(vault_tests::api_channel(url, ca).await.expect("connect"));
    }
    out
}

#[derive(Clone, Copy)]
pub enum Op {
    Write,
    Read,
}

impl Target {
    pub async fn vault(url: &str, ca: Option<&Path>, token: &str, clients: usize, nodes: &[Node]) -> Target {
        let pool = channels(url, ca, clients).await.into_iter().map(SecretsClient::new).collect();
        Target { kind: Kind::Vault { pool, token: token.to_string() }, nodes: nodes.to_vec() }
    }

    pub async fn etcd(url: &str, clients: usize, nodes: &[Node]) -> Target {
        let pool = channels(url, None, clients).await.into_iter().map(etcdpb::kv_client::KvClient::new).collect();
        Target { kind: Kind::Etcd { pool }, nodes: nodes.to_vec() }
    }

    fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.pid).collect()
    }

    async fn call(&self, client: usize, op: Op, key: String, value: &[u8]) -> bool {
        match &self.kind {
            Kind::Vault { pool, token } => {
                let mut c = pool[client % pool.len()].clone();
                match op {
                    Op::Write => c
                        .put_secret(authed(
                            pb::PutSecretRequest { name: key, value: value.to_vec(), ..Default::default() },
                            token,
                        ))
                        .await
                        .is_ok(),
                    Op::Read => c.get_secret(pb::GetSecretRequest { name: key, version: 0 }).await.is_ok(),
                }
            }
            Kind::Etcd { pool } => {
                let mut c = pool[client % pool.len()].clone();
                match op {
                    Op::Write => c
                        .put(etcdpb::PutRequest { key: key.into_bytes(), value: value.to_vec(), lease: 0 })
                        .await
                        .is_ok(),
                    Op::Read => c
                        .range(etcdpb::RangeRequest {
                            key: key.into_bytes(),
                            serializable: false,
                            ..Default::default()
                        })
                        .await
                        .map(|r| !r.into_inner().kvs.is_empty())
                        .unwrap_or(false),
                }
            }
        }
    }
}

/// The value every write stores.
pub fn value() -> Vec<u8> {
    (0..VALUE_LEN).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Keys `prefix/<client>/<i>`; reads pick pseudo-random ones among `existing` per client.
pub fn key(prefix: &str, client: usize, i: u64) -> String {
    format!("{prefix}/{client}/{i}")
}

/// How long a load runs.
#[derive(Clone, Copy)]
pub enum Until {
    /// A measured run of this length.
    Elapsed(Duration),
    /// Until every client has done this many operations (preloading).
    EachDid(u64),
}

/// Runs `clients` concurrent loops until `until`. Timed runs also measure each server
/// process (CPU, context switches, allocations with `--alloc`, `perf` with `--perf`).
pub async fn load(
    label: &str,
    target: &Target,
    op: Op,
    prefix: &str,
    clients: usize,
    until: Until,
    read_space: Option<(usize, u64)>,
) -> Stats {
    let value: Arc<Vec<u8>> = Arc::new(value());
    let system = match target.kind {
        Kind::Vault { .. } => "vault",
        Kind::Etcd { .. } => "etcd",
    };
    let timed = matches!(until, Until::Elapsed(_));
    // Only timed runs are probed and recorded: a preload would make gigabytes of samples.
    let mut probe = if timed { Some(Probe::start(&target.nodes).await) } else { None };
    let perf = if timed {
        let pids: Vec<u32> = target.pids().into_iter().chain([std::process::id()]).collect();
        Perf::start(&format!("{system}-{label}-x{clients}"), &pids)
    } else {
        None
    };
    if let Some(p) = probe.as_mut() {
        p.open();
    }
    let pids = target.pids();
    let cpu_before = (measure::cpu_us("self"), measure::cpu_us_of(&pids), measure::own_threads_cpu_us(PROXY_THREADS));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let t = target.clone();
        let value = value.clone();
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let mut i = 0u64;
            let mut rng = (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            loop {
                let done = match until {
                    Until::Elapsed(d) => started.elapsed() >= d,
                    Until::EachDid(n) => i >= n,
                };
                if done {
                    break;
                }
                let k = match (op, read_space) {
                    (Op::Read, Some((space_clients, per_client))) => {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        key(&prefix, (rng % space_clients as u64) as usize, (rng >> 20) % per_client)
                    }
                    _ => key(&prefix, c, i),
                };
                let t0 = Instant::now();
                if t.call(c, op, k, &value).await {
                    lat.push(t0.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
                i += 1;
            }
            (lat, errors, i)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut min_per_client = u64::MAX;
    for t in tasks {
        if let Ok((lat, e, issued)) = t.await {
            all.extend(lat);
            errors += e;
            min_per_client = min_per_client.min(issued);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu_after = (measure::cpu_us("self"), measure::cpu_us_of(&pids), measure::own_threads_cpu_us(PROXY_THREADS));
    if let Some(p) = probe.as_mut() {
        p.close();
    }
    let perf_counts = perf.map(Perf::finish).unwrap_or_default();
    let done = all.len().max(1) as f64;
    let per_op = |used: f64| used / done;
    let (nodes, pipeline) = match probe {
        Some(probe) => {
            let before = probe.leader_page.clone();
            let (nodes, after) = probe.finish(done, &perf_counts).await;
            let pipeline = match (op, system, before, after) {
                (Op::Write, "vault", Some(b), Some(a)) => Some(measure::pipeline(&b, &a, secs)),
                _ => None,
            };
            (nodes, pipeline)
        }
        None => (Vec::new(), None),
    };
    all.sort_unstable();
    let pct =
        |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or(0);
    let proxy = cpu_after.2 - cpu_before.2;
    Stats {
        ops: all.len() as u64,
        errors,
        secs,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        max_us: all.last().copied().unwrap_or(0),
        min_per_client: if min_per_client == u64::MAX { 0 } else { min_per_client },
        server_cpu_us: per_op(cpu_after.1 - cpu_before.1),
        client_cpu_us: per_op(cpu_after.0 - cpu_before.0 - proxy),
        proxy_cpu_us: per_op(proxy),
        nodes,
        pipeline,
    }
}

/// Puts per etcd transaction in its preload (etcd's default `--max-txn-ops` is 128).
const ETCD_TXN_PUTS: u64 = 128;

/// Stores the keys a preload of `clients` x `per_client` writes would (`key("scale", c, i)`,
/// the same values) in etcd, in transactions of [`ETCD_TXN_PUTS`] puts: much faster than
/// one put per request, and the state the scale runs need is the same. vault has no batch
/// write, so its preload goes through `load`; the two rates are not comparable.
pub async fn etcd_txn_preload(url: &str, clients: usize, per_client: u64) -> Value {
    let value = value();
    const WORKERS: usize = 64;
    let pool: Vec<_> = channels(url, None, WORKERS).await.into_iter().map(etcdpb::kv_client::KvClient::new).collect();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let mut kv = pool[w % pool.len()].clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let (mut stored, mut errors) = (0u64, 0u64);
            for c in (w..clients).step_by(WORKERS) {
                let mut i = 0;
                while i < per_client {
                    let end = (i + ETCD_TXN_PUTS).min(per_client);
                    let success = (i..end)
                        .map(|j| etcdpb::RequestOp {
                            request: Some(etcdpb::request_op::Request::RequestPut(etcdpb::PutRequest {
                                key: key("scale", c, j).into_bytes(),
                                value: value.clone(),
                                lease: 0,
                            })),
                        })
                        .collect();
                    match kv.txn(etcdpb::TxnRequest { success }).await {
                        Ok(_) => stored += end - i,
                        Err(_) => errors += 1,
                    }
                    i = end;
                }
            }
            (stored, errors)
        }));
    }
    let (mut stored, mut errors) = (0, 0);
    for t in tasks {
        if let Ok((s, e)) = t.await {
            stored += s;
            errors += e;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    json!({"keys": stored, "secs": secs, "keys_per_sec": (stored as f64 / secs.max(1e-9)).round(),
           "txn_puts": ETCD_TXN_PUTS, "failed_txns": errors})
}
