//! A node killed between its Raft log and its state machine loses no acknowledged write and
//! applies each entry once. The crashes are fail points (`vault_raft::crash_points`, armed by
//! `FAILPOINTS`; the test build of `vault-node` has them compiled in):
//!
//! - `apply_before_write`: the batch is synced in the Raft log, nothing of it in RocksDB;
//! - `apply_after_write`: the batch is written to RocksDB (unsynced), nothing else done.
//!
//! One writer puts versions of one secret, one at a time, each value naming its attempt. The
//! armed node kills itself at the first batch at or past a log index; it is restarted without
//! the point. Then every version `1..=m` must hold its own attempt's value (no gap, no version
//! applied twice), `m` must count every acknowledged put plus the one in flight at the crash
//! (its entry was committed, so the log replays it; or it was applied, and must not be applied
//! again), `ListVersions` must agree, each version must have exactly one audit record, and
//! `vaultctl audit verify` must find the chain intact.

use std::time::{Duration, Instant};

use vault_node::pb;
use vault_raft::crash_points::{APPLY_AFTER_WRITE, APPLY_BEFORE_WRITE};
use vault_tests::*;

const NAME: &str = "crash/counter";
/// Most puts a run makes before the armed node must have crashed.
const MAX_PUTS: u64 = 200;

fn value(attempt: u64) -> Vec<u8> {
    format!("attempt-{attempt}").into_bytes()
}

/// Arms `point` to crash the node at the first batch at or past log index `from`.
fn arm(spec: &mut NodeSpec, point: &str, from: u64) {
    spec.set("FAILPOINTS", &format!("{point}=return({from})"));
}

async fn put(url: &str, token: &str, attempt: u64) -> Result<u64, tonic::Status> {
    let mut c = secrets_client(url).await;
    let req = pb::PutSecretRequest {
        name: NAME.into(),
        value: value(attempt),
        // Keep every version: the check reads them all.
        max_versions: Some(1000),
        ..Default::default()
    };
    Ok(c.put_secret(authed(req, token)).await?.into_inner().version)
}

/// Puts attempts `first..`, one at a time, through `url` until one fails or `done()` says so:
/// the acknowledged versions, in order.
async fn write_until(url: &str, token: &str, first: u64, mut done: impl FnMut() -> bool) -> Vec<u64> {
    let mut acked = Vec::new();
    for attempt in first..first + MAX_PUTS {
        match put(url, token, attempt).await {
            Ok(v) => acked.push(v),
            Err(_) => return acked,
        }
        if done() {
            return acked;
        }
    }
    panic!("{MAX_PUTS} puts and the armed node never crashed");
}

/// The node exited by the fail point: killed by its own SIGKILL after naming the point.
fn assert_crashed_at(node: &mut NodeProcess, point: &str) {
    use std::os::unix::process::ExitStatusExt;
    let status = node.wait_exit(Duration::from_secs(20)).unwrap_or_else(|| panic!("not crashed; log:\n{}", node.log()));
    assert_eq!(status.signal(), Some(9), "killed by its fail point: {status}; log:\n{}", node.log());
    let said = format!("fail point {point} crashes the node at log index");
    assert!(node.log().contains(&said), "the node names the point it crashed at; log:\n{}", node.log());
}

/// The secret on the node at `url` holds versions `1..=m`, version `v` with attempt `v`'s
/// value; the node has one `secret.put` audit record per version and its chain verifies.
async fn assert_versions(node: &NodeProcess, token: &str, m: u64) {
    let url = node.url();
    let mut c = secrets_client(&url).await;
    let listed = c
        .list_versions(authed(pb::ListVersionsRequest { name: NAME.into() }, token))
        .await
        .expect("list versions")
        .into_inner();
    assert_eq!(listed.current_version, m, "current version at {url}");
    let numbers: Vec<u64> = listed.versions.iter().map(|v| v.version).collect();
    let mut sorted = numbers.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=m).collect::<Vec<_>>(), "versions listed at {url}: no gap, none twice");
    assert!(listed.versions.iter().all(|v| v.state == "live"), "{:?}", listed.versions);
    for v in 1..=m {
        let got = c
            .get_secret(authed(pb::GetSecretRequest { name: NAME.into(), version: v }, token))
            .await
            .unwrap_or_else(|e| panic!("version {v} at {url}: {e}"))
            .into_inner();
        assert_eq!((got.version, got.value), (v, value(v)), "version {v} at {url} holds attempt {v}");
    }
    let json =
        must_vaultctl(&url, Some(token), &["--output", "json", "audit", "list", "--secret", NAME, "--limit", "100000"]);
    let records: Vec<serde_json::Value> = serde_json::from_str(&json).expect("audit list json");
    // A put applied twice leaves no second version (its command names the version, and the
    // second apply is refused as a conflict) but it does leave a second record: every put
    // entry applied has one, with its outcome.
    let puts: Vec<&str> =
        records.iter().filter(|r| r["action"] == "secret.put").map(|r| r["outcome"].as_str().unwrap_or("")).collect();
    assert_eq!(puts.len() as u64, m, "one audit record per put entry applied, at {url}: {puts:?}");
    assert!(puts.iter().all(|o| *o == "ok"), "every put applied once, as it was first: {puts:?}");
    let verified = must_vaultctl(&url, Some(token), &["audit", "verify"]);
    assert!(verified.contains("audit chain intact"), "{url}: {verified}");
}

/// Log index past a node's bootstrap entries, where the crash hits one of the test's puts.
const SINGLE_CRASH_AT: u64 = 25;

async fn single_node_crashes_at(point: &str) {
    let mut n = SingleNode::start(|s| arm(s, point, SINGLE_CRASH_AT)).await;
    assert!(n.node.log().contains("fail points armed"), "the test build has the fail points; log:\n{}", n.node.log());
    let acked = write_until(&n.url(), &n.token, 1, || false).await;
    let k = acked.len() as u64;
    assert_eq!(acked, (1..=k).collect::<Vec<_>>(), "acknowledged versions in order");
    assert_crashed_at(&mut n.node, point);
    n.spec.env.remove("FAILPOINTS");
    n.node = n.spec.start();
    n.node.wait_ready().await;
    // The put in flight at the crash was committed (a one-node majority): the log replays it
    // before the write, or it was written and is not applied again.
    assert_versions(&n.node, &n.token, k + 1).await;
    assert_eq!(put(&n.url(), &n.token, k + 2).await.expect("put after the restart"), k + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_after_the_log_sync_before_the_apply_replays_the_entry_once() {
    single_node_crashes_at(APPLY_BEFORE_WRITE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_after_the_apply_before_the_answer_does_not_apply_again() {
    single_node_crashes_at(APPLY_AFTER_WRITE).await;
}

/// Waits until node `i` has applied everything the leader `l` has in its log.
async fn caught_up(c: &TestCluster, i: usize, l: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let target = c.status(l).await.expect("leader status").last_log_index.unwrap_or(0);
    loop {
        if let Ok(s) = c.status(i).await {
            if s.last_applied_index.unwrap_or(0) >= target {
                return;
            }
        }
        assert!(Instant::now() < deadline, "node index {i} did not apply up to {target} in 30s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A follower crashes at `point` while the leader goes on acknowledging writes (the other
/// follower is the majority); restarted, it catches up from the log and holds every version
/// once, as the leader does.
async fn a_follower_crashes_at(point: &str) {
    let mut c = TestCluster::start(3, |_| {}).await;
    let l = c.leader_seen_by(0, |_| true).await;
    let f = (l + 1) % 3;
    let from = c.status(l).await.expect("status").last_log_index.unwrap_or(0) + 20;
    c.nodes[f].kill();
    arm(&mut c.specs[f], point, from);
    c.nodes[f] = c.specs[f].start();
    c.nodes[f].wait_ready().await;
    let (url, token) = (c.url(l), c.token.clone());
    let mut crashed = false;
    let mut acked = {
        let node = &mut c.nodes[f];
        write_until(&url, &token, 1, || {
            crashed = !node.is_running();
            crashed
        })
        .await
    };
    assert!(crashed, "the leader refused a put while a follower was the one armed");
    assert_crashed_at(&mut c.nodes[f], point);
    // More acknowledged writes while it is down.
    let first = acked.len() as u64 + 1;
    let mut left = 10;
    acked.extend(
        write_until(&url, &token, first, || {
            left -= 1;
            left == 0
        })
        .await,
    );
    let m = acked.len() as u64;
    assert_eq!(acked, (1..=m).collect::<Vec<_>>(), "acknowledged versions in order");
    c.specs[f].env.remove("FAILPOINTS");
    c.nodes[f] = c.specs[f].start();
    c.nodes[f].wait_ready().await;
    caught_up(&c, f, l).await;
    assert_versions(&c.nodes[f], &token, m).await;
    assert_versions(&c.nodes[l], &token, m).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_after_the_log_sync_before_the_apply_catches_up_once() {
    a_follower_crashes_at(APPLY_BEFORE_WRITE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_after_the_apply_catches_up_once() {
    a_follower_crashes_at(APPLY_AFTER_WRITE).await;
}

/// The `vault-node` the tests run has the points compiled in (`tests/Cargo.toml`): said here
/// plainly, rather than by the crash tests above failing to see a crash.
#[test]
fn the_test_build_of_vault_node_has_the_fail_points() {
    let out = std::process::Command::new(bin("vault-node")).arg("--version").output().expect("vault-node --version");
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(version.contains("+failpoints"), "{version}");
}

/// Every member armed at the same index: the leader crashes at `point` with a put in flight
/// (the followers may crash there too, or are killed after it). Restarted without the point,
/// the cluster holds the put in flight (it was committed: a leader applies only committed
/// entries) once, on every member, and goes on from the next version.
async fn the_leader_crashes_at(point: &str) {
    let mut c = TestCluster::start(3, |s| arm(s, point, 30)).await;
    let l = c.leader_seen_by(0, |_| true).await;
    let (url, token) = (c.url(l), c.token.clone());
    let acked = write_until(&url, &token, 1, || false).await;
    let k = acked.len() as u64;
    assert_eq!(acked, (1..=k).collect::<Vec<_>>(), "acknowledged versions in order");
    assert_crashed_at(&mut c.nodes[l], point);
    for (node, spec) in c.nodes.iter_mut().zip(c.specs.iter_mut()) {
        node.kill();
        spec.env.remove("FAILPOINTS");
    }
    c.nodes = c.specs.iter().map(|s| s.start()).collect();
    for node in c.nodes.iter_mut() {
        node.wait_ready().await;
    }
    let l = c.leader_seen_by(0, |_| true).await;
    let mut left = 5;
    let more = write_until(&c.url(l), &token, k + 2, || {
        left -= 1;
        left == 0
    })
    .await;
    assert_eq!(more, (k + 2..k + 7).collect::<Vec<_>>(), "the put in flight at the crash holds version {}", k + 1);
    for i in 0..3 {
        caught_up(&c, i, l).await;
        assert_versions(&c.nodes[i], &token, k + 6).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_after_the_log_sync_before_the_apply_keeps_the_entry_in_flight_once() {
    the_leader_crashes_at(APPLY_BEFORE_WRITE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_after_the_apply_before_the_answer_keeps_the_entry_in_flight_once() {
    the_leader_crashes_at(APPLY_AFTER_WRITE).await;
}
