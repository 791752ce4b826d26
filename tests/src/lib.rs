//! Test harness: starts real `vault-node` processes on free loopback ports with temporary
//! data directories, drives them with the real `vaultctl` or a gRPC client, and cleans up.
//! It only ever signals the PIDs it started.

pub mod certs;
pub mod delay_proxy;
pub mod etcd;
pub mod faults;
pub mod moto;
pub mod raft_peer;
pub mod rsyslog;
pub mod watch;

pub use certs::{mint_certs, mint_reader_cert};

use std::collections::BTreeMap;
use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use tempfile::TempDir;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use vault_node::pb::secrets_client::SecretsClient;

/// Path of a binary built by this workspace (next to the test executable's `deps/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current executable");
    let mut dir = exe.parent().expect("executable dir").to_path_buf();
    // Test binaries live in `<profile>/deps`; other binaries in `<profile>`.
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(path.exists(), "{} not found: run `cargo build --workspace --all-targets` first", path.display());
    path
}

/// A free TCP port on 127.0.0.1 for a node to bind, now or after a restart.
///
/// A port from the kernel (`bind(:0)`) is an ephemeral one: once released, any outgoing
/// connection on the machine may take it as its source port before the node binds it (seen as
/// "Address already in use" when tests run in parallel). So ports come from below the
/// ephemeral range, which outgoing connections never use, at random, and each is claimed for
/// the life of this test process with an abstract Unix socket named after it, so concurrent
/// test processes never pick the same one. The claim needs no file and ends with the process.
pub fn free_port() -> u16 {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
    static CLAIMS: std::sync::Mutex<Vec<UnixDatagram>> = std::sync::Mutex::new(Vec::new());
    let (lo, hi) = port_pool();
    for _ in 0..10_000 {
        let port = lo + (u32::from_le_bytes([rand_byte(), rand_byte(), rand_byte(), 0]) % u32::from(hi - lo)) as u16;
        let Ok(name) = UnixAddr::from_abstract_name(format!("vault-test-port-{port}")) else { continue };
        let Ok(claim) = UnixDatagram::bind_addr(&name) else { continue };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            CLAIMS.lock().unwrap_or_else(|p| p.into_inner()).push(claim);
            return port;
        }
    }
    panic!("no free port in {lo}..{hi}");
}

/// Ports below the kernel's ephemeral range (`ip_local_port_range`), above the well-known ones.
fn port_pool() -> (u16, u16) {
    let ephemeral_lo = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    assert!(
        ephemeral_lo > 12_000,
        "the ephemeral port range starts at {ephemeral_lo}: no room below it for test ports"
    );
    (10_000, ephemeral_lo)
}

pub fn random_token() -> String {
    let bytes: Vec<u8> = (0..32).map(|_| rand_byte()).collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn random_master_key() -> String {
    let bytes: Vec<u8> = (0..32).map(|_| rand_byte()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn rand_byte() -> u8 {
    use std::io::Read;
    let mut b = [0u8; 1];
    fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).expect("read /dev/urandom");
    b[0]
}

/// A unique printable marker, to search for in files and logs.
pub fn canary(label: &str) -> String {
    let bytes: Vec<u8> = (0..12).map(|_| rand_byte()).collect();
    format!("{label}-{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Settings of one node process; `start` launches it.
pub struct NodeSpec {
    pub node_id: u64,
    pub dir: PathBuf,
    pub api_addr: SocketAddr,
    pub raft_addr: SocketAddr,
    pub env: BTreeMap<String, String>,
    /// CA that signed the API's certificate, when the API serves TLS (`serve_api_tls`).
    pub api_ca: Option<PathBuf>,
    /// Network namespace to run the node in (`ip netns exec`, which execs the node: the PID
    /// is still the node's own).
    pub netns: Option<String>,
}

impl NodeSpec {
    /// A single node on free loopback ports with a local master key and bootstrap token.
    pub fn single(dir: &Path, admin_token: &str, master_key: &str) -> NodeSpec {
        let mut env = BTreeMap::new();
        env.insert("VAULT_KMS_MODE".into(), "local".into());
        env.insert("VAULT_LOCAL_MASTER_KEY".into(), master_key.into());
        env.insert("VAULT_BOOTSTRAP_TOKEN".into(), admin_token.into());
        env.insert("VAULT_ALLOWED_IPS".into(), "127.0.0.1,::1".into());
        env.insert("VAULT_LOG".into(), "info,openraft=warn".into());
        // Test nodes write little: a small free-space margin, so a busy build disk does not
        // turn every test's writes away (tests/disk_full.rs sets its own).
        env.insert("VAULT_DISK_MIN_FREE_MB".into(), "64".into());
        env.insert("VAULT_DISK_MIN_FREE_PERCENT".into(), "0".into());
        NodeSpec {
            node_id: 1,
            dir: dir.to_path_buf(),
            api_addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            raft_addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            env,
            api_ca: None,
            netns: None,
        }
    }

    /// Serves the API over TLS with this node's cluster certificate (its SANs include
    /// 127.0.0.1), which the cluster CA verifies. Needs the `VAULT_RAFT_TLS_*` settings.
    pub fn serve_api_tls(&mut self) -> &mut Self {
        let get = |k: &str| self.env.get(k).cloned().unwrap_or_else(|| panic!("serve_api_tls needs {k}"));
        let (cert, key, ca) = (get("VAULT_RAFT_TLS_CERT"), get("VAULT_RAFT_TLS_KEY"), get("VAULT_RAFT_TLS_CA"));
        self.set("VAULT_TLS_CERT", &cert).set("VAULT_TLS_KEY", &key);
        self.api_ca = Some(PathBuf::from(ca));
        self
    }

    pub fn set(&mut self, key: &str, value: &str) -> &mut Self {
        self.env.insert(key.into(), value.into());
        self
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("node{}.log", self.node_id))
    }

    pub fn start(&self) -> NodeProcess {
        fs::create_dir_all(&self.dir).expect("create node dir");
        let log = fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("open node log");
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("vault-node"));
                c
            }
            None => Command::new(bin("vault-node")),
        };
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("VAULT_NODE_ID", self.node_id.to_string())
            .env("VAULT_DATA_DIR", self.data_dir())
            .env("VAULT_API_ADDR", self.api_addr.to_string())
            .env("VAULT_RAFT_ADDR", self.raft_addr.to_string())
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        let child = cmd.spawn().expect("spawn vault-node");
        NodeProcess {
            child: Some(child),
            api_addr: self.api_addr,
            log_path: self.log_path(),
            api_ca: self.api_ca.clone(),
        }
    }
}

/// A running node. Dropping it kills the process (by its own PID only).
pub struct NodeProcess {
    child: Option<Child>,
    pub api_addr: SocketAddr,
    pub log_path: PathBuf,
    pub api_ca: Option<PathBuf>,
}

impl NodeProcess {
    pub fn url(&self) -> String {
        let scheme = if self.api_ca.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.api_addr)
    }

    /// A connected channel to this node's API (verifying its certificate when it serves TLS).
    pub async fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        api_channel(&self.url(), self.api_ca.as_deref()).await
    }

    /// `args` for `vaultctl` against this node: `--ca-cert` first when it serves TLS.
    fn ctl_args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let ca = self.api_ca.as_ref().map(|c| c.to_str().expect("utf-8 path"));
        ca.map(|c| vec!["--ca-cert", c]).unwrap_or_default().into_iter().chain(args.iter().copied()).collect()
    }

    /// The real `vaultctl` against this node.
    pub fn vaultctl(&self, token: Option<&str>, args: &[&str]) -> Output {
        vaultctl(&self.url(), token, &self.ctl_args(args))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the node answers health checks as serving.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("vault-node exited early with {status}; log:\n{}", self.log());
                }
            }
            // Serving once a leader is known and the bootstrap is applied.
            if serving(&self.url(), self.api_ca.as_deref()).await {
                return;
            }
            assert!(Instant::now() < deadline, "node at {} not ready in 30s; log:\n{}", self.api_addr, self.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, then wait for exit.
    pub fn stop(&mut self) {
        self.terminate();
    }

    /// SIGTERM, then waits up to 15 s: the exit status, or `None` if it had to be killed (or
    /// was not running).
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Sends a signal (`STOP`, `CONT`, ...) to this node's own PID. `STOP` returns only once
    /// every thread of the node has stopped: kill(2) returns as soon as the signal is queued,
    /// and on a loaded machine the node's other threads can go on answering peers for
    /// milliseconds, until the thread that takes the signal is scheduled and stops them.
    pub fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let ok = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().map(|s| s.success());
            assert!(matches!(ok, Ok(true)), "kill -{sig} {pid} failed");
            if sig == "STOP" {
                wait_all_threads_stopped(pid);
            }
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits up to `limit` for the node to exit on its own (a fail point's crash): its exit
    /// status, or `None` if it still runs (it is left running).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => {
                    self.child = None;
                    return Some(status);
                }
                Some(Ok(None)) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => return None,
            }
        }
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The workspace's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// The Python of the venv `make test` sets up (`make clients`, `make console` install into it);
/// `VAULT_PYTHON` overrides it.
pub fn venv_python() -> PathBuf {
    if let Some(p) = std::env::var_os("VAULT_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    home.join(".cache/vault/venv/bin/python")
}

/// A temporary directory for one test, kept on failure when `VAULT_TEST_KEEP` is set.
pub fn test_dir() -> TempDir {
    let keep = std::env::var_os("VAULT_TEST_KEEP").is_some();
    tempfile::Builder::new().prefix("vault-test-").disable_cleanup(keep).tempdir().expect("temp dir")
}

/// Runs the real `vaultctl` against `addr` with `token`.
pub fn vaultctl(addr: &str, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin("vaultctl"));
    cmd.env_clear().env("VAULT_ADDR", addr).args(args).stdin(Stdio::null());
    if let Some(t) = token {
        cmd.env("VAULT_TOKEN", t);
    }
    cmd.output().expect("run vaultctl")
}

/// `vaultctl` that must succeed; returns stdout.
pub fn must_vaultctl(addr: &str, token: Option<&str>, args: &[&str]) -> String {
    let out = vaultctl(addr, token, args);
    assert!(out.status.success(), "vaultctl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// `vaultctl` that must fail; returns its one-line stderr.
pub fn must_fail_vaultctl(addr: &str, token: Option<&str>, args: &[&str]) -> String {
    let out = vaultctl(addr, token, args);
    assert!(
        !out.status.success(),
        "vaultctl {args:?} unexpectedly succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(err.starts_with("error: "), "stderr should be one `error:` line, got {err:?}");
    assert_eq!(err.lines().count(), 1, "stderr should be one line: {err:?}");
    err
}

/// Whether the node at `url` answers its health check as serving.
pub async fn serving(url: &str, ca: Option<&Path>) -> bool {
    let Ok(ch) = api_channel(url, ca).await else { return false };
    let req = HealthCheckRequest { service: "vault.v1.Secrets".into() };
    matches!(HealthClient::new(ch).check(req).await, Ok(r) if r.get_ref().status == ServingStatus::Serving as i32)
}

/// A connected channel to a node's API at `url`; with `ca`, over TLS verified by that CA.
pub async fn api_channel(url: &str, ca: Option<&Path>) -> Result<Channel, tonic::transport::Error> {
    let mut ep = Channel::from_shared(url.to_string()).expect("url");
    if let Some(ca) = ca {
        let pem = fs::read(ca).expect("read the API's CA certificate");
        ep = ep.tls_config(
            tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(pem)),
        )?;
    }
    ep.connect().await
}

pub async fn secrets_client(url: &str) -> SecretsClient<Channel> {
    SecretsClient::new(api_channel(url, None).await.expect("connect"))
}

/// A request carrying `authorization: Bearer <token>`.
pub fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("header"));
    r
}

/// Every file below `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = fs::read(&p) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(p);
                }
            }
        }
    }
    hits
}

/// Number of files below `dir`.
pub fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

/// N real nodes on loopback, Raft over mutual TLS, sharing a local master key.
pub struct TestCluster {
    pub dir: TempDir,
    pub token: String,
    pub master: String,
    pub specs: Vec<NodeSpec>,
    pub nodes: Vec<NodeProcess>,
}

impl TestCluster {
    pub fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// The spec of node `id` (not started), with certificates minted for it.
    pub fn node_spec(&self, id: u64) -> NodeSpec {
        mint_certs(&self.certs(), &[id]);
        let mut spec = NodeSpec::single(&self.dir.path().join(format!("node-{id}")), &self.token, &self.master);
        spec.node_id = id;
        let certs = self.certs();
        spec.set("VAULT_RAFT_TLS_CA", certs.join("ca.pem").to_str().expect("utf-8 path"));
        spec.set("VAULT_RAFT_TLS_CERT", certs.join(format!("node-{id}.pem")).to_str().expect("utf-8 path"));
        spec.set("VAULT_RAFT_TLS_KEY", certs.join(format!("node-{id}.key")).to_str().expect("utf-8 path"));
        spec
    }

    pub async fn start(n: u64, tune: impl Fn(&mut NodeSpec)) -> TestCluster {
        Self::start_with_key(n, &random_master_key(), tune).await
    }

    /// [`start`](Self::start) with the given local master key (base64).
    pub async fn start_with_key(n: u64, master: &str, tune: impl Fn(&mut NodeSpec)) -> TestCluster {
        let dir = test_dir();
        let mut c = TestCluster {
            dir,
            token: random_token(),
            master: master.to_string(),
            specs: Vec::new(),
            nodes: Vec::new(),
        };
        mint_certs(&c.certs(), &(1..=n).collect::<Vec<_>>());
        let mut specs: Vec<NodeSpec> = (1..=n).map(|id| c.node_spec(id)).collect();
        let peers: Vec<String> = specs.iter().map(|s| format!("{}={}", s.node_id, s.raft_addr)).collect();
        for s in specs.iter_mut() {
            s.set("VAULT_PEERS", &peers.join(","));
            tune(s);
        }
        c.nodes = specs.iter().map(|s| s.start()).collect();
        c.specs = specs;
        for node in c.nodes.iter_mut() {
            node.wait_ready().await;
        }
        c
    }

    pub fn url(&self, i: usize) -> String {
        self.nodes[i].url()
    }

    pub fn ctl(&self, i: usize, args: &[&str]) -> String {
        must_vaultctl(&self.url(i), Some(&self.token), &self.nodes[i].ctl_args(args))
    }

    pub async fn status(&self, i: usize) -> Result<vault_node::pb::ClusterStatusResponse, tonic::Status> {
        let ch = self.nodes[i].channel().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut admin = vault_node::pb::admin_client::AdminClient::new(ch);
        Ok(admin.cluster_status(authed(vault_node::pb::ClusterStatusRequest {}, &self.token)).await?.into_inner())
    }

    /// Index of the leader as node `via` sees it, waiting up to 30 s for one that `accept`s.
    pub async fn leader_seen_by(&self, via: usize, accept: impl Fn(u64) -> bool) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(s) = self.status(via).await {
                if let Some(id) = s.leader_id.filter(|id| accept(*id)) {
                    if let Some(i) = self.specs.iter().position(|sp| sp.node_id == id) {
                        return i;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no acceptable leader seen by node index {via} within 30s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // Resume anything a test stopped, so the kill below is delivered and nothing lingers.
        for n in self.nodes.iter_mut() {
            if n.is_running() {
                let _ = n.pid().map(|pid| Command::new("kill").arg("-CONT").arg(pid.to_string()).status());
            }
            n.kill();
        }
    }
}

/// One node with its own directory, admin token and master key, started and ready.
pub struct SingleNode {
    pub node: NodeProcess,
    pub spec: NodeSpec,
    pub token: String,
    /// Last: fields drop in declaration order, and a node still running while its directory
    /// is removed can write a file into it meanwhile (a memtable flush), which leaves the
    /// directory behind. (Bind it first when taking a `SingleNode` apart, for the same reason.)
    pub dir: TempDir,
}

impl SingleNode {
    /// Starts a node after `tune` adjusts its settings, and waits until it serves.
    pub async fn start(tune: impl FnOnce(&mut NodeSpec)) -> SingleNode {
        let dir = test_dir();
        let token = random_token();
        let mut spec = NodeSpec::single(dir.path(), &token, &random_master_key());
        tune(&mut spec);
        let mut node = spec.start();
        node.wait_ready().await;
        SingleNode { dir, spec, node, token }
    }

    pub fn url(&self) -> String {
        self.node.url()
    }

    /// The real `vaultctl` with the admin token; must succeed.
    pub fn ctl(&self, args: &[&str]) -> String {
        must_vaultctl(&self.node.url(), Some(&self.token), args)
    }

    /// Stops the node (SIGTERM) and starts it again with the same settings.
    pub async fn restart(&mut self) {
        self.node.stop();
        self.node = self.spec.start();
        self.node.wait_ready().await;
    }
}

/// Waits until every thread of `pid` is in the stopped state (`T` in /proc), at most 10 s.
fn wait_all_threads_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let running: Vec<String> = fs::read_dir(format!("/proc/{pid}/task"))
            .map(|dir| {
                dir.flatten()
                    .filter_map(|t| fs::read_to_string(t.path().join("stat")).ok())
                    // The state follows the command name, which is in parentheses.
                    .filter_map(|stat| {
                        stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned))
                    })
                    .filter(|state| state != "T" && state != "t" && state != "Z" && state != "X")
                    .collect()
            })
            .unwrap_or_default();
        if running.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "threads of {pid} still not stopped after SIGSTOP: states {running:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A plain HTTP/1.1 GET of `path` on `addr` (the metrics listener): status code and body.
/// `None` when nothing answers within 5 s.
pub async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let code = head.split_whitespace().nth(1)?.parse().ok()?;
        let chunked = head.lines().any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
        Some((code, if chunked { dechunk(body) } else { body.to_string() }))
    };
    tokio::time::timeout(Duration::from_secs(5), fetch).await.ok().flatten()
}

/// The payload of a chunked HTTP/1.1 body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

/// The value of the Prometheus sample `series` (name with its labels exactly as rendered,
/// e.g. `vault_raft_term` or `vault_x{a="b"}`) in a scrape, if present.
pub fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Serves metrics on a free loopback port (`VAULT_METRICS_ADDR`); returns the address.
pub fn with_metrics(spec: &mut NodeSpec) -> String {
    let addr = format!("127.0.0.1:{}", free_port());
    spec.set("VAULT_METRICS_ADDR", &addr);
    addr
}

/// One `/metrics` scrape of the listener at `addr`, which must answer 200.
pub async fn scrape(addr: &str) -> String {
    let (code, body) = http_get(addr, "/metrics").await.expect("the metrics listener answers");
    assert_eq!(code, 200, "{body}");
    body
}

/// Sum of every sample of metric `name` whose labels contain all of `labels`.
pub fn total(scrape: &str, name: &str, labels: &[&str]) -> f64 {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let bare = series.split('{').next()?;
            (bare == name && labels.iter().all(|want| series.contains(want))).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}
