//! The `agent` scenario: the real `vaultctl agent` renders one secret, which has a `random:16`
//! rotation policy, into a file; the secret is rotated `--agent-rotations` times (100 by
//! default) through `RotateSecret` on the leader, one after the other, and for each rotation
//! the time until the rendered file shows the new version is taken by reading the file every
//! [`POLL`] (so each figure may be up to one poll late), twice over: from the RPC's
//! acknowledgement, and from its sending. `RotateSecret` answers only once the leader's
//! rotation worker has made the new version, which it checks for every 200 ms
//! (`ROTATE_POLL`), so the file often shows the new version before the acknowledgement
//! (then 0 from it); from the sending, the figure covers the whole `secret rotate`: queueing,
//! the rotation (the leader's rotation worker looks for due rotations every second), the
//! event and the render. A third figure isolates the watch and the agent: from the moment a
//! watch of the secret on the leader, held by the bench, receives the rotation's event (just
//! after its commit) to the file showing that version.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vault_node::pb;
use vault_node::pb::secrets_client::SecretsClient;
use vault_tests::{authed, bin, test_dir, TestCluster};

use super::watch::percentiles;

/// The secret the agent renders.
const SECRET: &str = "bench/agent";
/// How often the rendered file is read while a rotation is awaited.
const POLL: Duration = Duration::from_millis(5);
/// A rotation not in the file after this long counts as missed.
const GIVE_UP: Duration = Duration::from_secs(10);
/// Pause between one rotation reaching the file and the next rotation.
const GAP: Duration = Duration::from_millis(20);

/// Where the scenario runs.
pub struct Setup<'a> {
    pub cluster: &'a TestCluster,
    /// Index of the leader, which takes the rotations.
    pub leader: usize,
}

/// A running `vaultctl agent`; killed when dropped.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The first line of the rendered file: `version <n>`.
fn rendered_version(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().next()?.strip_prefix("version ")?.parse().ok()
}

/// Runs the scenario: its figures, or what stopped it.
pub async fn run(s: Setup<'_>, rotations: usize) -> Value {
    let out = match measure(s, rotations).await {
        Ok(v) => v,
        Err(e) => json!({ "error": e }),
    };
    eprintln!("agent scenario: {out}");
    out
}

async fn measure(s: Setup<'_>, rotations: usize) -> Result<Value, String> {
    let c = s.cluster;
    let ctl = |args: &[&str]| {
        let out = c.nodes[s.leader].vaultctl(Some(&c.token), args);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("vaultctl {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim()))
        }
    };
    ctl(&["secret", "put", SECRET, "--value", "agent-bench-initial"])?;
    ctl(&["secret", "rotation", "set", SECRET, "--every", "1h", "--generator", "random:16"])?;

    let dir = test_dir();
    let file = dir.path().join("rendered.conf");
    let addrs: Vec<String> = (0..c.nodes.len()).map(|i| c.url(i)).collect();
    let mut config = format!("addrs = {addrs:?}\n");
    if let Some(ca) = &c.nodes[s.leader].api_ca {
        config.push_str(&format!("ca_file = {:?}\n", ca.display().to_string()));
    }
    config.push_str(&format!(
        "\n[[template]]\ncontents = {:?}\ndestination = {:?}\nsecrets = [{SECRET:?}]\n",
        format!("version {{{{ secret_version({SECRET:?}) }}}}\nvalue {{{{ secret({SECRET:?}) }}}}\n"),
        file.display().to_string(),
    ));
    let config_path = dir.path().join("agent.toml");
    std::fs::write(&config_path, config).map_err(|e| format!("write the agent config: {e}"))?;
    let log = std::fs::File::create(dir.path().join("agent.log")).map_err(|e| format!("create the agent log: {e}"))?;
    let child = Command::new(bin("vaultctl"))
        .env_clear()
        .env("VAULT_LOG", "warn")
        .arg("agent")
        .arg("--config")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("start vaultctl agent: {e}"))?;
    let _agent = Agent(child);

    let started = Instant::now();
    while rendered_version(&file).is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default();
            return Err(format!("the agent rendered nothing in 30 s; its log: {log}"));
        }
        tokio::time::sleep(POLL).await;
    }
    let first_render_ms = started.elapsed().as_millis() as u64;

    let ch = vault_tests::api_channel(&c.url(s.leader), c.nodes[s.leader].api_ca.as_deref())
        .await
        .map_err(|e| format!("connect to the leader: {e}"))?;
    let mut client = SecretsClient::new(ch.clone());
    // When each version's event reached the bench's own watch on the leader.
    let events: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let req = pb::WatchSecretsRequest { names: vec![SECRET.into()], prefixes: vec![], after_revision: 0 };
    let mut watch = SecretsClient::new(ch).watch_secrets(req).await.map_err(|e| format!("watch: {e}"))?.into_inner();
    let seen = events.clone();
    let watcher = tokio::spawn(async move {
        while let Ok(Some(m)) = watch.message().await {
            let now = Instant::now();
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            for e in m.events {
                seen.insert(e.version, now);
            }
        }
    });
    let mut from_event = Vec::new();
    let (mut took, mut from_send, mut missed, mut failed) = (Vec::new(), Vec::new(), 0usize, 0usize);
    for _ in 0..rotations {
        let req = pb::RotateSecretRequest { name: SECRET.into() };
        let sent = Instant::now();
        let version = match client.rotate_secret(authed(req, &c.token)).await {
            Ok(r) => r.into_inner().version,
            Err(e) => {
                eprintln!("agent scenario: rotate: {e}");
                failed += 1;
                continue;
            }
        };
        let acked = Instant::now();
        loop {
            if rendered_version(&file).is_some_and(|v| v >= version) {
                took.push(acked.elapsed().as_micros() as u64);
                from_send.push(sent.elapsed().as_micros() as u64);
                let at = events.lock().unwrap_or_else(|p| p.into_inner()).get(&version).copied();
                if let Some(at) = at {
                    from_event.push(at.elapsed().as_micros() as u64);
                }
                break;
            }
            if acked.elapsed() > GIVE_UP {
                missed += 1;
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        tokio::time::sleep(GAP).await;
    }
    watcher.abort();
    let within_1s = from_send.iter().filter(|us| **us <= 1_000_000).count();
    let within_1s_of_event = from_event.iter().filter(|us| **us <= 1_000_000).count();
    Ok(json!({
        "rotations": rotations, "failed_rotations": failed, "missed": missed,
        "poll_ms": POLL.as_millis() as u64, "first_render_ms": first_render_ms,
        "within_1s_of_sending": within_1s, "rotate_ack_to_file": percentiles(took),
        "rotate_sent_to_file": percentiles(from_send),
        "event_to_file": percentiles(from_event), "within_1s_of_event": within_1s_of_event,
    }))
}
