//! `vault-bench`: throughput, latency and scale of a 3-node vault cluster on loopback, beside a
//! 3-member etcd cluster driven by the same generator (value size, concurrency, durability).
//!
//! Every load phase is bounded in time (or in count, for preloading) and stops by itself.
//! Prints a markdown table and writes JSON. Run by `make bench`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use tonic::transport::Channel;
use vault_node::pb;
use vault_node::pb::secrets_client::SecretsClient;
use vault_tests::etcd::{pb as etcdpb, EtcdCluster};
use vault_tests::moto::Moto;
use vault_tests::{authed, test_dir, NodeSpec, TestCluster};

#[path = "vault-bench/agent.rs"]
mod agent;
#[path = "vault-bench/watch.rs"]
mod watch;

#[derive(Parser)]
#[command(name = "vault-bench")]
struct Args {
    /// Secrets stored before the scale runs.
    #[arg(long, default_value_t = 1_000_000)]
    scale: u64,
    /// Seconds per measured run.
    #[arg(long, default_value_t = 4)]
    duration: u64,
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    clients: Vec<usize>,
    /// Concurrent clients writing the secrets stored before the scale runs.
    #[arg(long, default_value_t = 256)]
    preload_clients: usize,
    /// Versions re-wrapped in the re-wrap run.
    #[arg(long, default_value_t = 2000)]
    rewrap_versions: u64,
    #[arg(long)]
    skip_etcd: bool,
    #[arg(long)]
    skip_scale: bool,
    #[arg(long)]
    skip_rewrap: bool,
    /// Watchers of the watch scenario (see `watch`).
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    #[arg(long)]
    skip_watch: bool,
    /// Rotations of the agent scenario (see `agent`).
    #[arg(long, default_value_t = 100)]
    agent_rotations: usize,
    #[arg(long)]
    skip_agent: bool,
    /// Leave out the write and read runs at each `--clients` (the table's rows).
    #[arg(long)]
    skip_throughput: bool,
    /// Serve the vault cluster's API over TLS (`VAULT_TLS_CERT`) and load it over TLS. The
    /// etcd baseline stays plaintext, so leave it out (`--skip-etcd`) to compare like with like.
    #[arg(long)]
    api_tls: bool,
    #[arg(long, default_value = "bench-results.json")]
    out: PathBuf,
    /// Record every timed run of the server processes and of this generator with `perf` into
    /// this directory, one file per run and process (for profiling, not for the figures:
    /// perf costs CPU too).
    #[arg(long)]
    perf: Option<PathBuf>,
    /// With `--perf`: `record` samples call graphs; `stat` counts system calls, context
    /// switches and CPU time exactly.
    #[arg(long, value_enum, default_value_t = PerfMode::Record)]
    perf_mode: PerfMode,
    /// `NAME=VALUE` set in the environment of every vault node (repeatable), to compare
    /// settings on one build: `--node-env VAULT_RAFT_MAX_IN_FLIGHT=1` turns pipelining off.
    #[arg(long = "node-env", value_parser = parse_node_env)]
    node_env: Vec<(String, String)>,
}

fn parse_node_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected NAME=VALUE, not {s:?}")),
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PerfMode {
    Record,
    Stat,
}

/// What `--perf-mode stat` counts: all system calls, the ones a gRPC server or client makes
/// per request, context switches and CPU time.
const PERF_STAT_EVENTS: &str = "raw_syscalls:sys_enter,syscalls:sys_enter_futex,syscalls:sys_enter_epoll_wait,\
syscalls:sys_enter_recvfrom,syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_writev,\
syscalls:sys_enter_sendmsg,syscalls:sys_enter_sendto,syscalls:sys_enter_pwrite64,syscalls:sys_enter_fdatasync,\
syscalls:sys_enter_getrandom,syscalls:sys_enter_sched_yield,syscalls:sys_enter_madvise,syscalls:sys_enter_mmap,\
syscalls:sys_enter_munmap,syscalls:sys_enter_mprotect,syscalls:sys_enter_lseek,syscalls:sys_enter_fsync,\
syscalls:sys_enter_statx,syscalls:sys_enter_newfstatat,syscalls:sys_enter_openat,syscalls:sys_enter_close,\
context-switches,task-clock";

/// Where `--perf` puts its files, and how it makes them.
static PERF: std::sync::OnceLock<(PathBuf, PerfMode)> = std::sync::OnceLock::new();

/// `perf` attached to some processes for as long as it lives; stopped with SIGINT, as perf
/// expects, and waited for so the files are complete.
struct Perf(Vec<std::process::Child>);

impl Perf {
    /// One perf per process: `<dir>/<name>.<k>.data` (or `.txt` for `stat`), `k` the
    /// process's place in `pids`.
    fn start(name: &str, pids: &[u32]) -> Option<Perf> {
        let (dir, mode) = PERF.get()?;
        let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let mut children = Vec::new();
        for (k, pid) in pids.iter().enumerate() {
            let mut cmd = std::process::Command::new("perf");
            match mode {
                PerfMode::Record => {
                    cmd.args(["record", "-q", "-F", "999", "--call-graph", "dwarf,16384", "-o"])
                        .arg(dir.join(format!("{name}.{k}.data")));
                }
                PerfMode::Stat => {
                    cmd.args(["stat", "-x,", "-e", PERF_STAT_EVENTS, "-o"]).arg(dir.join(format!("{name}.{k}.txt")));
                }
            }
            match cmd.args(["-p", &pid.to_string()]).stdout(std::process::Stdio::null()).spawn() {
                Ok(c) => children.push(c),
                Err(e) => eprintln!("perf not started ({e})"),
            }
        }
        Some(Perf(children))
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = std::process::Command::new("kill").args(["-INT", &c.id().to_string()]).status();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

const VALUE_LEN: usize = 256;
/// Snapshot (and purge the log) every this many entries. An entry carries a batch of writes
/// (~100 in a preload at 256 clients), so the default of 20,000 entries would build no
/// snapshot during a preload of 1M secrets, and the 4th node would catch up from the log.
/// With 4,000 the preload (~10,000 entries) builds two and the timed runs after it (a few
/// hundred entries) none; with larger preload batches (1,024 clients: ~3,300 entries) one
/// was built in the middle of the write and read runs at 1M and slowed them down.
const SNAPSHOT_LOG_ENTRIES: &str = "4000";
const SCALE_CLIENTS: usize = 64;

#[derive(Clone, Debug, Default)]
struct Stats {
    ops: u64,
    errors: u64,
    secs: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    /// Fewest operations any one client issued: after a write run, every client's keys
    /// `0..min_per_client` exist.
    min_per_client: u64,
    /// CPU time per completed operation, in microseconds: all server processes together, and
    /// this load generator.
    server_cpu_us: f64,
    client_cpu_us: f64,
}

impl Stats {
    fn per_sec(&self) -> f64 {
        self.ops as f64 / self.secs.max(1e-9)
    }

    fn json(&self) -> Value {
        json!({"ops": self.ops, "errors": self.errors, "secs": self.secs, "ops_per_sec": self.per_sec().round(),
               "p50_ms": ms(self.p50_us), "p99_ms": ms(self.p99_us), "max_ms": ms(self.max_us),
               "cpu_us_per_op": {"servers": self.server_cpu_us.round(), "client": self.client_cpu_us.round()}})
    }
}

fn ms(us: u64) -> f64 {
    (us as f64 / 10.0).round() / 100.0
}

/// One system under test, with a pool of channels (16 clients share one HTTP/2 connection)
/// and the server processes whose CPU time a run is charged with.
#[derive(Clone)]
struct Target {
    kind: Kind,
    servers: Vec<u32>,
}

#[derive(Clone)]
enum Kind {
    Vault { pool: Vec<SecretsClient<Channel>>, token: String },
    Etcd { pool: Vec<etcdpb::kv_client::KvClient<Channel>> },
}

/// One HTTP/2 connection per 16 clients; over TLS verified by `ca` if given.
async fn channels(url: &str, ca: Option<&Path>, clients: usize) -> Vec<Channel> {
    let mut out = Vec::new();
    for _ in 0..clients.div_ceil(16) {
        out.push(vault_tests::api_channel(url, ca).await.expect("connect"));
    }
    out
}

#[derive(Clone, Copy)]
enum Op {
    Write,
    Read,
}

impl Target {
    async fn vault(url: &str, ca: Option<&Path>, token: &str, clients: usize, servers: &[u32]) -> Target {
        let pool = channels(url, ca, clients).await.into_iter().map(SecretsClient::new).collect();
        Target { kind: Kind::Vault { pool, token: token.to_string() }, servers: servers.to_vec() }
    }

    async fn etcd(url: &str, clients: usize, servers: &[u32]) -> Target {
        let pool = channels(url, None, clients).await.into_iter().map(etcdpb::kv_client::KvClient::new).collect();
        Target { kind: Kind::Etcd { pool }, servers: servers.to_vec() }
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

/// Keys `prefix/<client>/<i>`; reads pick pseudo-random ones among `existing` per client.
/// The value every write stores.
fn value() -> Vec<u8> {
    (0..VALUE_LEN).map(|i| b'a' + (i % 26) as u8).collect()
}

fn key(prefix: &str, client: usize, i: u64) -> String {
    format!("{prefix}/{client}/{i}")
}

/// How long a load runs.
#[derive(Clone, Copy)]
enum Until {
    /// A measured run of this length.
    Elapsed(Duration),
    /// Until every client has done this many operations (preloading).
    EachDid(u64),
}

/// Runs `clients` concurrent loops until `until`.
async fn load(
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
    // Only timed runs are recorded: a preload would make gigabytes of samples.
    let perf = match until {
        Until::Elapsed(_) => {
            let pids: Vec<u32> = target.servers.iter().copied().chain([std::process::id()]).collect();
            Perf::start(&format!("{system}-{label}-x{clients}"), &pids)
        }
        Until::EachDid(_) => None,
    };
    let cpu_before = (cpu_us("self"), cpu_us_of(&target.servers));
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
    let cpu_after = (cpu_us("self"), cpu_us_of(&target.servers));
    drop(perf);
    let done = all.len().max(1) as f64;
    let per_op = |used: f64| used / done;
    all.sort_unstable();
    let pct =
        |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).copied().unwrap_or(0);
    Stats {
        ops: all.len() as u64,
        errors,
        secs,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        max_us: all.last().copied().unwrap_or(0),
        min_per_client: if min_per_client == u64::MAX { 0 } else { min_per_client },
        server_cpu_us: per_op(cpu_after.1 - cpu_before.1),
        client_cpu_us: per_op(cpu_after.0 - cpu_before.0),
    }
}

/// Puts per etcd transaction in its preload (etcd's default `--max-txn-ops` is 128).
const ETCD_TXN_PUTS: u64 = 128;

/// Stores the keys a preload of `clients` x `per_client` writes would (`key("scale", c, i)`,
/// the same values) in etcd, in transactions of [`ETCD_TXN_PUTS`] puts: much faster than
/// one put per request, and the state the scale runs need is the same. vault has no batch
/// write, so its preload goes through `load`; the two rates are not comparable.
async fn etcd_txn_preload(url: &str, clients: usize, per_client: u64) -> Value {
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

fn fdatasync_ms(dir: &Path) -> f64 {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).expect("probe file");
    let buf = [7u8; 4096];
    let mut times = Vec::new();
    for _ in 0..200 {
        f.write_all(&buf).expect("write probe");
        let t0 = Instant::now();
        f.sync_data().expect("fdatasync");
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let _ = std::fs::remove_file(&path);
    times.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    times[times.len() / 2]
}

/// User plus system CPU time of a process (`self` or a pid) so far, in microseconds.
fn cpu_us(pid: &str) -> f64 {
    static TICKS_PER_SEC: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let hz = *TICKS_PER_SEC.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is the first, utime and
    // stime the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / hz * 1e6
}

/// CPU time of several processes together, in microseconds.
fn cpu_us_of(pids: &[u32]) -> f64 {
    pids.iter().map(|p| cpu_us(&p.to_string())).sum()
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    (kb / 1024.0 * 10.0).round() / 10.0
}

/// RSS and on-disk size of the `i`-th node of a cluster.
fn node_json(i: usize, pid: Option<u32>, dir: &Path) -> Value {
    json!({"node": i + 1, "rss_mib": pid.map(rss_mib).unwrap_or(0.0), "disk_mib": dir_mib(dir)})
}

fn dir_mib(dir: &Path) -> f64 {
    fn walk(p: &Path) -> u64 {
        let Ok(rd) = std::fs::read_dir(p) else { return 0 };
        rd.flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    }
    (walk(dir) as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0
}

struct Row {
    scenario: String,
    clients: usize,
    vault: Stats,
    etcd: Option<Stats>,
}

fn cell(s: Option<&Stats>) -> String {
    match s {
        Some(s) => format!("{:.0} | {:.2} | {:.2} | {:.2}", s.per_sec(), ms(s.p50_us), ms(s.p99_us), ms(s.max_us)),
        None => "- | - | - | -".into(),
    }
}

async fn leader_and_follower(c: &TestCluster) -> (usize, usize) {
    let leader = c.leader_seen_by(0, |_| true).await;
    (leader, (leader + 1) % 3)
}

/// One system under test: where "leader" and "follower" clients connect, and the server
/// processes whose CPU time its runs are charged with.
struct System {
    name: &'static str,
    /// The admin token, for vault; etcd takes none.
    token: Option<String>,
    leader: String,
    follower: String,
    /// The CA of the API's certificate, when it serves TLS.
    ca: Option<PathBuf>,
    pids: Vec<u32>,
}

impl System {
    async fn target(&self, leader_side: bool, clients: usize) -> Target {
        let url = if leader_side { &self.leader } else { &self.follower };
        match &self.token {
            Some(token) => Target::vault(url, self.ca.as_deref(), token, clients, &self.pids).await,
            None => Target::etcd(url, clients, &self.pids).await,
        }
    }
}

/// The systems in the order the next scenario runs them: the order flips at every scenario,
/// so neither system always runs first (this machine's speed drifts over minutes).
fn in_turn<'a>(systems: &'a [System], turn: &mut usize) -> Vec<&'a System> {
    let mut order: Vec<&System> = systems.iter().collect();
    let k = *turn % systems.len().max(1);
    order.rotate_left(k);
    *turn += 1;
    order
}

/// Waits until every system's servers are idle (together under 10% of a core over half a
/// second), at most 30 s, so background work a run leaves behind (memtable flushes,
/// compactions, snapshots) is not charged to the next run, which may be the other system's.
async fn settle(systems: &[System]) {
    let pids: Vec<u32> = systems.iter().flat_map(|s| s.pids.iter().copied()).collect();
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

/// Measured runs, per system.
#[derive(Default)]
struct Runs(Vec<(&'static str, String, usize, Stats)>);

impl Runs {
    fn add(&mut self, system: &'static str, scenario: &str, clients: usize, stats: Stats) {
        eprintln!(
            "{system} {scenario} x{clients}: {:.0}/s p99 {:.2} ms, {:.0} µs server CPU/op ({} errors)",
            stats.per_sec(),
            ms(stats.p99_us),
            stats.server_cpu_us,
            stats.errors
        );
        self.0.push((system, scenario.to_string(), clients, stats));
    }

    fn get(&self, system: &str, scenario: &str, clients: usize) -> Option<&Stats> {
        self.0.iter().find(|(s, sc, n, _)| *s == system && sc == scenario && *n == clients).map(|(_, _, _, st)| st)
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Some(dir) = &args.perf {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("--perf {}: {e}", dir.display());
            std::process::exit(2);
        }
        let _ = PERF.set((dir.clone(), args.perf_mode));
    }
    let d = Duration::from_secs(args.duration);
    let dir = test_dir();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let fsync = fdatasync_ms(dir.path());
    eprintln!("vault-bench: {cores} cores, fdatasync p50 {fsync:.2} ms; data under {}", dir.path().display());
    let mut extra = serde_json::Map::new();

    // Both clusters stay up for the whole bench, and every scenario runs on each in turn.
    let mut cluster = TestCluster::start(3, |s| {
        s.set("VAULT_LOG", "warn");
        // As in production; the leader's write-pipeline histograms are read around each run.
        vault_tests::with_metrics(s);
        for (k, v) in &args.node_env {
            s.set(k, v);
        }
        s.set("VAULT_SNAPSHOT_LOG_ENTRIES", SNAPSHOT_LOG_ENTRIES);
        if args.api_tls {
            s.serve_api_tls();
        }
    })
    .await;
    let (leader, follower) = leader_and_follower(&cluster).await;
    let leader_metrics = cluster.specs[leader].env.get("VAULT_METRICS_ADDR").cloned().unwrap_or_default();
    let mut pipelines = Vec::new();
    let mut systems = vec![System {
        name: "vault",
        token: Some(cluster.token.clone()),
        leader: cluster.url(leader),
        follower: cluster.url(follower),
        ca: cluster.nodes[leader].api_ca.clone(),
        pids: cluster.nodes.iter().filter_map(|n| n.pid()).collect(),
    }];
    let edir = test_dir();
    let etcd = if args.skip_etcd {
        None
    } else {
        match EtcdCluster::start(edir.path(), 3) {
            Err(e) => {
                eprintln!("etcd baseline skipped: cannot start etcd ({e}); apt install etcd-server");
                None
            }
            Ok(etcd) => match etcd.wait_ready().await {
                Err(e) => {
                    eprintln!("etcd baseline skipped: {e}");
                    None
                }
                Ok(()) => Some(etcd),
            },
        }
    };
    if let Some(etcd) = &etcd {
        // As for vault: "leader" rows talk to the leader, "follower" rows to the next member.
        let leader = match etcd.leader().await {
            Ok(i) => i,
            Err(e) => {
                eprintln!("etcd leader unknown ({e}); member 1 takes the leader rows");
                0
            }
        };
        systems.push(System {
            name: "etcd",
            token: None,
            leader: etcd.client_urls[leader].clone(),
            follower: etcd.client_urls[(leader + 1) % etcd.client_urls.len()].clone(),
            ca: None,
            pids: etcd.pids(),
        });
    }

    let mut runs = Runs::default();
    let mut turn = 0;
    let read_rows = [("read (leader)", true), ("read (follower)", false)];
    let clients: &[usize] = if args.skip_throughput { &[] } else { &args.clients };
    for &n in clients {
        // Reads pick among keys every client of this system's write run wrote.
        let mut written = std::collections::HashMap::new();
        for sys in in_turn(&systems, &mut turn) {
            settle(&systems).await;
            let target = sys.target(true, n).await;
            let before = if sys.token.is_some() { scrape_series(&leader_metrics).await } else { None };
            let w = load("write", &target, Op::Write, "w", n, Until::Elapsed(d), None).await;
            if let Some(before) = before {
                match scrape_series(&leader_metrics).await {
                    Some(after) => pipelines.push((n, pipeline(&before, &after, w.secs))),
                    None => eprintln!("the vault leader's metrics did not answer after the write run"),
                }
            }
            written.insert(sys.name, w.min_per_client.max(1));
            runs.add(sys.name, "write", n, w);
        }
        for (label, leader_side) in read_rows {
            for sys in in_turn(&systems, &mut turn) {
                settle(&systems).await;
                let space = Some((n, written.get(sys.name).copied().unwrap_or(1)));
                let r =
                    load(label, &sys.target(leader_side, n).await, Op::Read, "w", n, Until::Elapsed(d), space).await;
                runs.add(sys.name, label, n, r);
            }
        }
    }

    if !args.skip_watch {
        settle(&systems).await;
        let setup = watch::Setup {
            leader: &systems[0].leader,
            follower: &systems[0].follower,
            token: &cluster.token,
            ca: systems[0].ca.as_deref(),
            servers: &systems[0].pids,
        };
        extra.insert("watch".into(), watch::run(setup, args.watchers, d).await);
    }

    if !args.skip_agent {
        settle(&systems).await;
        let setup = agent::Setup { cluster: &cluster, leader };
        extra.insert("agent".into(), agent::run(setup, args.agent_rotations).await);
    }

    if !args.skip_scale {
        let preload_clients = args.preload_clients.max(1);
        let per_client = args.scale.div_ceil(preload_clients as u64);
        for sys in in_turn(&systems, &mut turn) {
            settle(&systems).await;
            if sys.token.is_none() {
                let pre = etcd_txn_preload(&sys.leader, preload_clients, per_client).await;
                eprintln!("{} preload: {pre}", sys.name);
                extra.insert(format!("{}_preload", sys.name), pre);
                continue;
            }
            let t = sys.target(true, preload_clients).await;
            let pre = load("preload", &t, Op::Write, "scale", preload_clients, Until::EachDid(per_client), None).await;
            eprintln!("{} preload {} secrets: {:.0}/s ({} errors)", sys.name, pre.ops, pre.per_sec(), pre.errors);
            extra.insert(format!("{}_preload", sys.name), pre.json());
        }
        for sys in in_turn(&systems, &mut turn) {
            settle(&systems).await;
            let w = load(
                "write @1M",
                &sys.target(true, SCALE_CLIENTS).await,
                Op::Write,
                "w1m",
                SCALE_CLIENTS,
                Until::Elapsed(d),
                None,
            )
            .await;
            runs.add(sys.name, "write @1M", SCALE_CLIENTS, w);
        }
        for (label, leader_side) in [("read @1M (leader)", true), ("read @1M (follower)", false)] {
            for sys in in_turn(&systems, &mut turn) {
                settle(&systems).await;
                let t = sys.target(leader_side, SCALE_CLIENTS).await;
                let space = Some((preload_clients, per_client));
                runs.add(
                    sys.name,
                    label,
                    SCALE_CLIENTS,
                    load(label, &t, Op::Read, "scale", SCALE_CLIENTS, Until::Elapsed(d), space).await,
                );
            }
        }
        let nodes: Vec<Value> = cluster
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| node_json(i, node.pid(), &cluster.specs[i].data_dir()))
            .collect();
        eprintln!("vault nodes at scale: {nodes:?}");
        extra.insert("vault_nodes_at_scale".into(), json!(nodes));
        if let Some(etcd) = &etcd {
            let nodes: Vec<Value> = etcd
                .pids()
                .iter()
                .enumerate()
                .map(|(i, pid)| node_json(i, Some(*pid), &edir.path().join(format!("etcd{i}"))))
                .collect();
            extra.insert("etcd_nodes_at_scale".into(), json!(nodes));
        }

        // An empty fourth node catches up: by snapshot, once the log was purged. `cluster add`
        // returns when it has every entry the leader had.
        settle(&systems).await;
        let mut spec = cluster.node_spec(4);
        spec.set("VAULT_JOIN", "true");
        spec.set("VAULT_LOG", "warn");
        spec.set("VAULT_SNAPSHOT_LOG_ENTRIES", SNAPSHOT_LOG_ENTRIES);
        let mut n4 = spec.start();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t0 = Instant::now();
        let token = cluster.token.clone();
        let out = cluster.nodes[leader]
            .vaultctl(Some(&token), &["cluster", "add", "4", &spec.raft_addr.to_string(), &spec.api_addr.to_string()]);
        let catch_up = t0.elapsed().as_secs_f64();
        let ok = out.status.success();
        // A node keeps the snapshot it installed as its own snapshot file.
        let by_snapshot = vault_tests::count_files(&spec.data_dir().join("snapshots")) > 0;
        eprintln!(
            "4th node catch-up: {catch_up:.1} s (ok: {ok}, by snapshot: {by_snapshot}) {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        extra.insert(
            "snapshot_catch_up".into(),
            json!({"secs": (catch_up * 10.0).round() / 10.0, "ok": ok, "by_snapshot": by_snapshot,
                   "rss_mib": n4.pid().map(rss_mib).unwrap_or(0.0)}),
        );
        let _ = cluster.nodes[leader].vaultctl(Some(&token), &["cluster", "remove", "4"]);
        n4.stop();
    }
    for n in cluster.nodes.iter_mut() {
        n.stop();
    }
    drop(cluster);
    drop(etcd);

    // ---- re-wrap against moto ----
    if !args.skip_rewrap {
        match rewrap_rate(args.rewrap_versions).await {
            Ok(v) => {
                eprintln!("re-wrap: {v}");
                extra.insert("rewrap".into(), v);
            }
            Err(e) => eprintln!("re-wrap run failed: {e}"),
        }
    }

    let rows: Vec<Row> = runs
        .0
        .iter()
        .filter(|(system, ..)| *system == "vault")
        .map(|(_, scenario, clients, vault)| Row {
            scenario: scenario.clone(),
            clients: *clients,
            vault: vault.clone(),
            etcd: runs.get("etcd", scenario, *clients).cloned(),
        })
        .collect();

    let mut api = if args.api_tls { ", vault API over TLS".to_string() } else { String::new() };
    for (k, v) in &args.node_env {
        api.push_str(&format!(", {k}={v}"));
    }
    println!(
        "\n## vault-bench: 3 nodes on loopback{api}, {VALUE_LEN}-byte values, {cores} cores, fdatasync p50 {fsync:.2} ms\n"
    );
    println!("| scenario | clients | vault ops/s | p50 ms | p99 ms | max ms | etcd ops/s | p50 ms | p99 ms | max ms | vault/etcd |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let ratio =
            r.etcd.as_ref().map(|e| format!("{:.2}x", r.vault.per_sec() / e.per_sec().max(1e-9))).unwrap_or("-".into());
        println!("| {} | {} | {} | {} | {ratio} |", r.scenario, r.clients, cell(Some(&r.vault)), cell(r.etcd.as_ref()));
    }
    println!("\nCPU time per operation (µs): the 3 server processes together, and the load generator.\n");
    println!("| scenario | clients | vault servers | vault client | etcd servers | etcd client |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &rows {
        let (es, ec) = r
            .etcd
            .as_ref()
            .map(|e| (format!("{:.0}", e.server_cpu_us), format!("{:.0}", e.client_cpu_us)))
            .unwrap_or(("-".into(), "-".into()));
        println!(
            "| {} | {} | {:.0} | {:.0} | {es} | {ec} |",
            r.scenario, r.clients, r.vault.server_cpu_us, r.vault.client_cpu_us
        );
    }
    if !pipelines.is_empty() {
        println!("\nThe vault leader's write pipeline in each write run (from its `/metrics`): entries in flight");
        println!("is the sum of entry times over the run's time (Little's law; stop-and-wait is at most 1),");
        println!("\"behind another\" the share of entries proposed while another was in flight. Times are means.\n");
        println!("| clients | entries/s | writes per entry | entries in flight | proposed behind another | queue wait ms | entry ms (proposed → answered) | own-sync wait ms | apply ms | fsyncs/s | entries per fsync | fsync ms |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (clients, p) in &pipelines {
            let f = |k: &str| p.get(k).and_then(Value::as_f64).unwrap_or(0.0);
            println!(
                "| {clients} | {:.0} | {:.1} | {:.2} | {:.0}% | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} | {:.1} | {:.3} |",
                f("entries_per_sec"),
                f("writes_per_entry"),
                f("mean_entries_in_flight"),
                f("proposed_behind_another_pct"),
                f("queue_wait_ms"),
                f("entry_ms"),
                f("own_sync_wait_ms"),
                f("apply_ms"),
                f("fsyncs_per_sec"),
                f("entries_per_fsync"),
                f("fsync_ms"),
            );
        }
        let list: Vec<Value> = pipelines.iter().map(|(c, p)| json!({"clients": c, "leader": p})).collect();
        extra.insert("vault_write_pipeline".into(), json!(list));
    }
    println!("\n| measure | vault | etcd |\n|---|---|---|");
    let show = |k: &str| measure_cell(extra.get(k));
    println!("| preload of {} secrets | {} | {} |", args.scale, show("vault_preload"), show("etcd_preload"));
    println!("| nodes at scale (RSS, disk) | {} | {} |", show("vault_nodes_at_scale"), show("etcd_nodes_at_scale"));
    println!("| empty 4th node catch-up | {} | - |", show("snapshot_catch_up"));
    println!("| re-wrap against moto (pacing off) | {} | - |", show("rewrap"));
    println!("| watch: commit → delivery, {} watchers on a follower | {} | - |", args.watchers, show("watch"));
    println!("| agent: rotate → rendered file, {} rotations | {} | - |", args.agent_rotations, show("agent"));

    let out = json!({
        "cores": cores,
        "fdatasync_p50_ms": (fsync * 100.0).round() / 100.0,
        "value_bytes": VALUE_LEN,
        "duration_secs": args.duration,
        "api_tls": args.api_tls,
        "node_env": args.node_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "scale": args.scale,
        "rows": rows.iter().map(|r| json!({"scenario": r.scenario, "clients": r.clients, "vault": r.vault.json(),
                                           "etcd": r.etcd.as_ref().map(|e| e.json())})).collect::<Vec<_>>(),
        "extra": extra,
    });
    if let Err(e) = std::fs::write(&args.out, serde_json::to_string_pretty(&out).unwrap_or_default()) {
        eprintln!("cannot write {}: {e}", args.out.display());
    } else {
        eprintln!("wrote {}", args.out.display());
    }
}

/// One `/metrics` page, or `None` if the listener does not answer 200 (the bench goes on).
async fn scrape_series(addr: &str) -> Option<String> {
    match vault_tests::http_get(addr, "/metrics").await? {
        (200, body) => Some(body),
        _ => None,
    }
}

/// What a leader's write pipeline did between two scrapes `secs` apart (see `proposals.rs`).
fn pipeline(before: &str, after: &str, secs: f64) -> Value {
    let at = |page: &str, k: &str| vault_tests::sample(page, k).unwrap_or(0.0);
    let delta = |k: &str| at(after, k) - at(before, k);
    let per = |num: f64, den: f64| if den > 0.0 { num / den } else { 0.0 };
    let mean_ms = |h: &str| 1000.0 * per(delta(&format!("{h}_sum")), delta(&format!("{h}_count")));
    let entries = delta("vault_raft_write_entry_seconds_count");
    let alone = delta(r#"vault_raft_write_in_flight_bucket{le="1"}"#);
    let syncs = delta("vault_raft_log_sync_seconds_count");
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({
        "entries_per_sec": round(per(entries, secs)),
        "writes_per_entry": round(per(delta("vault_raft_write_entry_commands_sum"), entries)),
        "mean_entries_in_flight": round(per(delta("vault_raft_write_entry_seconds_sum"), secs)),
        "proposed_behind_another_pct": round(100.0 * per(entries - alone, entries)),
        "queue_wait_ms": round(mean_ms("vault_raft_write_queue_seconds")),
        "entry_ms": round(mean_ms("vault_raft_write_entry_seconds")),
        "own_sync_wait_ms": round(mean_ms("vault_raft_apply_sync_wait_seconds")),
        "apply_ms": round(mean_ms("vault_raft_apply_seconds")),
        "fsyncs_per_sec": round(per(syncs, secs)),
        "entries_per_fsync": round(per(delta("vault_raft_log_sync_entries_sum"), syncs)),
        "fsync_ms": round(mean_ms("vault_raft_log_sync_seconds")),
    })
}

/// One cell of the "measure" table in words; raw JSON for a shape it does not know (an error).
fn measure_cell(v: Option<&Value>) -> String {
    let Some(v) = v else { return "-".into() };
    let num = |k: &str| v.get(k).and_then(Value::as_f64);
    if let (Some(rate), Some(p99)) = (num("ops_per_sec"), num("p99_ms")) {
        let cpu = |k: &str| v.get("cpu_us_per_op").and_then(|c| c.get(k)).and_then(Value::as_f64).unwrap_or(0.0);
        let errors = num("errors").unwrap_or(0.0);
        return format!(
            "{rate:.0}/s, p99 {p99:.1} ms, {errors:.0} errors; CPU/op servers {:.0} µs, client {:.0} µs",
            cpu("servers"),
            cpu("client")
        );
    }
    if let Some(nodes) = v.as_array() {
        let list = |k: &str| {
            let each: Vec<String> =
                nodes.iter().map(|n| format!("{:.0}", n.get(k).and_then(Value::as_f64).unwrap_or(0.0))).collect();
            each.join(", ")
        };
        return format!("RSS {} MiB; disk {} MiB", list("rss_mib"), list("disk_mib"));
    }
    if let (Some(keys), Some(per_sec), Some(txn)) = (num("keys"), num("keys_per_sec"), num("txn_puts")) {
        let failed = num("failed_txns").unwrap_or(0.0);
        return format!(
            "{keys:.0} keys at {per_sec:.0}/s in transactions of {txn:.0} puts, {failed:.0} failed (not comparable)"
        );
    }
    if let (Some(secs), Some(ok)) = (num("secs"), v.get("ok").and_then(Value::as_bool)) {
        let rss = num("rss_mib").unwrap_or(0.0);
        let how = match v.get("by_snapshot").and_then(Value::as_bool) {
            Some(true) => " by snapshot",
            _ => " from the log (no snapshot was needed)",
        };
        return format!("{secs:.1} s{how}{} (its RSS after: {rss:.0} MiB)", if ok { "" } else { ", FAILED" });
    }
    if let (Some(per_sec), Some(versions), Some(secs)) = (num("per_sec"), num("versions"), num("secs")) {
        let failed = num("failed").unwrap_or(0.0);
        return format!("{versions:.0} versions in {secs:.1} s: {per_sec:.0}/s, {failed:.0} failed");
    }
    let pcts = |k: &str| {
        let p = v.get(k)?;
        let ms = |q: &str| p.get(q).and_then(Value::as_f64).unwrap_or(0.0);
        Some(format!("p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", ms("p50_ms"), ms("p99_ms"), ms("max_ms")))
    };
    if let (Some(lat), Some(loss)) = (pcts("commit_to_delivery"), num("read_throughput_loss")) {
        let (failed, missed) = (num("failed_watchers").unwrap_or(0.0), num("missed_deliveries").unwrap_or(0.0));
        return format!(
            "{lat}; linearizable reads at 64 clients lose {:.1}%; {failed:.0} watchers failed, {missed:.0} deliveries missed",
            loss * 100.0
        );
    }
    if let (Some(ack), Some(sent), Some(missed)) =
        (pcts("rotate_ack_to_file"), pcts("rotate_sent_to_file"), num("missed"))
    {
        let within = num("within_1s_of_sending").unwrap_or(0.0);
        let event = pcts("event_to_file").unwrap_or_default();
        let failed = num("failed_rotations").unwrap_or(0.0);
        return format!(
            "from the rotation's event {event}; from the acknowledgement {ack}; from the sending {sent}, \
             {within:.0} within 1 s; {missed:.0} missed, {failed:.0} rotations failed"
        );
    }
    v.to_string()
}

/// Versions re-wrapped per second by the worker against moto, pacing off.
async fn rewrap_rate(versions: u64) -> Result<Value, String> {
    let moto = Moto::start();
    let (key_id, _) = moto.create_key("alias/vault-bench").await;
    let dir = test_dir();
    let token = vault_tests::random_token();
    let mut spec = NodeSpec::single(dir.path(), &token, &vault_tests::random_master_key());
    moto.configure(&mut spec, "alias/vault-bench");
    spec.set("VAULT_KMS_REWRAP_ENABLED", "true");
    spec.set("VAULT_KMS_REWRAP_MAX_PER_SEC", "0");
    spec.set("VAULT_KMS_REWRAP_POLL_SECS", "3600");
    spec.set("VAULT_LOG", "warn");
    let mut node = spec.start();
    node.wait_ready().await;
    let t = Target::vault(&node.url(), None, &token, 64, &node.pid().into_iter().collect::<Vec<_>>()).await;
    let per_client = versions.div_ceil(64);
    let w = load("rewrap setup", &t, Op::Write, "rw", 64, Until::EachDid(per_client), None).await;
    moto.rotate(&key_id).await;
    let ch = node.channel().await.map_err(|e| e.to_string())?;
    let mut admin = pb::admin_client::AdminClient::new(ch);
    let t0 = Instant::now();
    admin.kms_rewrap(authed(pb::KmsRewrapRequest {}, &token)).await.map_err(|e| e.to_string())?;
    loop {
        let s =
            admin.kms_status(authed(pb::KmsStatusRequest {}, &token)).await.map_err(|e| e.to_string())?.into_inner();
        if !s.running && s.pending_versions == 0 {
            let secs = t0.elapsed().as_secs_f64();
            node.stop();
            return Ok(json!({"versions": s.pass_done, "secs": (secs * 10.0).round() / 10.0,
                             "per_sec": (s.pass_done as f64 / secs).round(), "written": w.ops, "failed": s.pass_failed}));
        }
        if t0.elapsed() > Duration::from_secs(300) {
            return Err(format!("re-wrap did not finish: {s:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
