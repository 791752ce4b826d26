//! A three-member etcd cluster on loopback (Debian's etcd-server), the benchmark's baseline.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// Generated client for the KV subset in `proto/bench/etcd_kv.proto`.
pub mod pb {
    #![allow(clippy::all)]
    tonic::include_proto!("etcdserverpb");
}

pub struct EtcdCluster {
    children: Vec<Child>,
    pub client_urls: Vec<String>,
}

impl EtcdCluster {
    /// Starts `n` members with data under `dir` (fsync on, etcd's defaults).
    pub fn start(dir: &Path, n: usize) -> std::io::Result<EtcdCluster> {
        let peers: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let direct: Vec<SocketAddr> = peers.iter().map(|p| SocketAddr::from(([127, 0, 0, 1], *p))).collect();
        Self::start_with_peers(dir, &peers, &direct)
    }

    /// Starts one member per entry of `listen`, member `i` listening for peers on port
    /// `listen[i]` and telling its peers to dial `advertise[i]` (a proxy in front of that
    /// port, or the port itself). Clients dial the members directly.
    pub fn start_with_peers(dir: &Path, listen: &[u16], advertise: &[SocketAddr]) -> std::io::Result<EtcdCluster> {
        assert_eq!(listen.len(), advertise.len(), "one advertised peer address per member");
        let n = listen.len();
        let clients: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let initial: Vec<String> = (0..n).map(|i| format!("e{i}=http://{}", advertise[i])).collect();
        let mut children = Vec::new();
        for i in 0..n {
            let log = std::fs::File::create(dir.join(format!("etcd{i}.log")))?;
            let child = Command::new("etcd")
                .args(["--name", &format!("e{i}")])
                .arg("--data-dir")
                .arg(dir.join(format!("etcd{i}")))
                .args(["--listen-client-urls", &format!("http://127.0.0.1:{}", clients[i])])
                .args(["--advertise-client-urls", &format!("http://127.0.0.1:{}", clients[i])])
                .args(["--listen-peer-urls", &format!("http://127.0.0.1:{}", listen[i])])
                .args(["--initial-advertise-peer-urls", &format!("http://{}", advertise[i])])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-state", "new", "--initial-cluster-token", "vault-bench"])
                .args(["--quota-backend-bytes", "8589934592", "--log-level", "warn"])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()?;
            children.push(child);
        }
        Ok(EtcdCluster { children, client_urls: clients.iter().map(|p| format!("http://127.0.0.1:{p}")).collect() })
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|c| c.id()).collect()
    }

    /// Waits until a linearizable read succeeds on every member.
    pub async fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        for url in &self.client_urls {
            loop {
                let ok = async {
                    let mut kv = pb::kv_client::KvClient::new(channel(url).await.ok()?);
                    kv.range(pb::RangeRequest { key: b"ready".to_vec(), ..Default::default() }).await.ok()
                }
                .await;
                if ok.is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("etcd at {url} not ready in 30s"));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    /// Index (into `client_urls`) of the member that leads now, from each member's status.
    pub async fn leader(&self) -> Result<usize, String> {
        for (i, url) in self.client_urls.iter().enumerate() {
            let status = pb::maintenance_client::MaintenanceClient::new(channel(url).await?)
                .status(pb::StatusRequest {})
                .await
                .map_err(|e| format!("etcd status at {url}: {e}"))?
                .into_inner();
            if status.header.is_some_and(|h| h.member_id == status.leader) {
                return Ok(i);
            }
        }
        Err("no etcd member reports itself as leader".into())
    }
}

async fn channel(url: &str) -> Result<tonic::transport::Channel, String> {
    let endpoint = tonic::transport::Channel::from_shared(url.to_string()).map_err(|e| e.to_string())?;
    endpoint.connect().await.map_err(|e| format!("etcd at {url}: {e}"))
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
