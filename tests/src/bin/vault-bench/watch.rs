//! The `watch` scenario: `--watchers` watchers (default 1000) on one node (the follower) watch
//! a prefix while the leader takes a trickle of puts; for every put and watcher, the time from
//! the put's acknowledgement (commit) to the event's delivery. Linearizable reads at 64
//! clients run on the same node with and without the watchers, under the same trickle, to show
//! what the watchers cost them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tonic::transport::Channel;
use vault_node::pb;
use vault_node::pb::secrets_client::SecretsClient;
use vault_tests::authed;

use super::{load, Op, Target, Until};

/// Watchers per HTTP/2 connection (under `VAULT_WATCH_MAX_PER_CONNECTION`'s default of 64).
const WATCHERS_PER_CONN: usize = 50;
/// Linearizable readers.
const READERS: usize = 64;
/// Keys each reader's run reads among (written first).
const READ_KEYS: u64 = 10;
/// Gap between the trickle's puts.
const PUT_EVERY: Duration = Duration::from_millis(50);

/// Where the scenario runs.
pub struct Setup<'a> {
    pub leader: &'a str,
    pub follower: &'a str,
    pub token: &'a str,
    /// The CA of the API's certificate, when it serves TLS.
    pub ca: Option<&'a std::path::Path>,
    pub servers: &'a [u32],
}

/// Puts `wb/<i>` on `url` every [`PUT_EVERY`] for `d`: when each was sent and acknowledged.
async fn trickle(
    url: String,
    ca: Option<std::path::PathBuf>,
    token: String,
    d: Duration,
) -> HashMap<String, (Instant, Instant)> {
    let mut acked = HashMap::new();
    let Ok(ch) = vault_tests::api_channel(&url, ca.as_deref()).await else { return acked };
    let mut c = SecretsClient::new(ch);
    let started = Instant::now();
    let mut i = 0u64;
    while started.elapsed() < d {
        let name = format!("wb/{i}");
        let sent = Instant::now();
        let r = pb::PutSecretRequest { name: name.clone(), value: b"v".to_vec(), ..Default::default() };
        if c.put_secret(authed(r, &token)).await.is_ok() {
            acked.insert(name, (sent, Instant::now()));
        }
        i += 1;
        tokio::time::sleep(PUT_EVERY).await;
    }
    acked
}

/// One watcher until `deadline`: every `wb/` event it got, with when.
async fn watcher(ch: Channel, deadline: tokio::time::Instant) -> Result<Vec<(String, Instant)>, tonic::Status> {
    let req = pb::WatchSecretsRequest { names: vec![], prefixes: vec!["wb/".into()], after_revision: 0 };
    let mut stream = SecretsClient::new(ch).watch_secrets(req).await?.into_inner();
    let mut got = Vec::new();
    while let Ok(next) = tokio::time::timeout_at(deadline, stream.message()).await {
        match next? {
            Some(m) => {
                let now = Instant::now();
                got.extend(m.events.into_iter().map(|e| (e.name, now)));
            }
            None => break,
        }
    }
    Ok(got)
}

/// Percentiles of `us` (microseconds), in milliseconds.
pub fn percentiles(mut us: Vec<u64>) -> Value {
    us.sort_unstable();
    let pct = |p: f64| us.get(((us.len() as f64 * p) as usize).min(us.len().saturating_sub(1))).copied().unwrap_or(0);
    json!({"samples": us.len(), "p50_ms": pct(0.50) as f64 / 1000.0, "p99_ms": pct(0.99) as f64 / 1000.0,
           "max_ms": us.last().copied().unwrap_or(0) as f64 / 1000.0})
}

/// Runs the scenario for `d` per phase.
pub async fn run(s: Setup<'_>, watchers: usize, d: Duration) -> Value {
    let reads = Target::vault(s.follower, s.ca, s.token, READERS, s.servers).await;
    let writes = Target::vault(s.leader, s.ca, s.token, READERS, s.servers).await;
    load("watch: read keys", &writes, Op::Write, "wr", READERS, Until::EachDid(READ_KEYS), None).await;
    let space = Some((READERS, READ_KEYS));

    // Reads without watchers, under the trickle.
    let t = tokio::spawn(trickle(s.leader.to_string(), s.ca.map(Into::into), s.token.to_string(), d));
    let without = load("read, no watchers", &reads, Op::Read, "wr", READERS, Until::Elapsed(d), space).await;
    let _ = t.await;

    // The watchers, then the same reads and trickle.
    let mut conns = Vec::new();
    for _ in 0..watchers.div_ceil(WATCHERS_PER_CONN) {
        match vault_tests::api_channel(s.follower, s.ca).await {
            Ok(ch) => conns.push(ch),
            Err(e) => return json!({"error": format!("connect: {e}")}),
        }
    }
    let deadline = tokio::time::Instant::now() + d + Duration::from_secs(5);
    let tasks: Vec<_> =
        (0..watchers).map(|w| tokio::spawn(watcher(conns[w / WATCHERS_PER_CONN].clone(), deadline))).collect();
    // Every watcher has its first message before the trickle starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = tokio::spawn(trickle(s.leader.to_string(), s.ca.map(Into::into), s.token.to_string(), d));
    let with = load("read, watchers", &reads, Op::Read, "wr", READERS, Until::Elapsed(d), space).await;
    let acked = Arc::new(t.await.unwrap_or_default());
    let (mut from_ack, mut from_send, mut failed) = (Vec::new(), Vec::new(), 0usize);
    let mut missing = 0usize;
    for task in tasks {
        match task.await {
            Ok(Ok(got)) => {
                let seen: std::collections::HashSet<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
                missing += acked.keys().filter(|n| !seen.contains(n.as_str())).count();
                for (name, at) in &got {
                    if let Some((sent, ack)) = acked.get(name) {
                        from_ack.push(at.saturating_duration_since(*ack).as_micros() as u64);
                        from_send.push(at.saturating_duration_since(*sent).as_micros() as u64);
                    }
                }
            }
            _ => failed += 1,
        }
    }
    let loss = 1.0 - with.per_sec() / without.per_sec().max(1e-9);
    let out = json!({
        "watchers": watchers, "failed_watchers": failed, "puts": acked.len(), "missed_deliveries": missing,
        "commit_to_delivery": percentiles(from_ack), "put_to_delivery": percentiles(from_send),
        "reads_64_without_watchers": without.json(), "reads_64_with_watchers": with.json(),
        "read_throughput_loss": (loss * 1000.0).round() / 1000.0,
    });
    eprintln!("watch scenario: {out}");
    out
}
