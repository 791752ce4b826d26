//! Three (and four) real `vault-node` processes with Raft over mutual TLS on loopback.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;
use vault_node::pb;
use vault_raft::transport::node_server_name;
use vault_raft::transport::pb as raftpb;
use vault_tests::*;

fn mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

async fn put(url: &str, token: &str, name: &str, value: &str) -> Result<u64, tonic::Status> {
    put_keeping(url, token, name, value, None).await
}

/// A put that also sets how many versions the name keeps.
async fn put_keeping(
    url: &str,
    token: &str,
    name: &str,
    value: &str,
    max_versions: Option<u32>,
) -> Result<u64, tonic::Status> {
    let mut c = pb::secrets_client::SecretsClient::new(connect(url).await?);
    let mut req = authed(
        pb::PutSecretRequest {
            name: name.into(),
            value: value.as_bytes().to_vec(),
            max_versions,
            ..Default::default()
        },
        token,
    );
    req.set_timeout(Duration::from_secs(15));
    Ok(c.put_secret(req).await?.into_inner().version)
}

/// A channel to `url`; a node that is down is UNAVAILABLE, as to any client.
async fn connect(url: &str) -> Result<Channel, tonic::Status> {
    Endpoint::from_shared(url.to_string())
        .expect("url")
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))
}

async fn get(url: &str, name: &str) -> Result<Vec<u8>, tonic::Status> {
    get_version(url, name, 0).await
}

async fn get_version(url: &str, name: &str, version: u64) -> Result<Vec<u8>, tonic::Status> {
    let mut c = pb::secrets_client::SecretsClient::new(connect(url).await?);
    let mut req = tonic::Request::new(pb::GetSecretRequest { name: name.into(), version });
    req.set_timeout(Duration::from_secs(20));
    Ok(c.get_secret(req).await?.into_inner().value)
}

#[test]
fn writes_through_any_node_read_from_all_and_deletes_and_revocations_are_seen_at_once() {
    mt().block_on(async {
        let c = TestCluster::start(3, |_| {}).await;
        let status = c.status(0).await.unwrap();
        assert_eq!(status.members.len(), 3);
        assert_eq!(status.members.iter().filter(|m| m.role == "leader").count(), 1, "{status:?}");
        assert_eq!(status.members.iter().filter(|m| m.role == "follower").count(), 2, "{status:?}");

        for i in 0..3 {
            let v = put(&c.url(i), &c.token, &format!("any/{i}"), &format!("via-{i}")).await.unwrap();
            assert_eq!(v, 1);
        }
        for i in 0..3 {
            for j in 0..3 {
                assert_eq!(get(&c.url(j), &format!("any/{i}")).await.unwrap(), format!("via-{i}").as_bytes());
            }
        }
        // A delete through one node is never served afterwards by another.
        for round in 0..5 {
            let name = format!("gone/{round}");
            put(&c.url(round % 3), &c.token, &name, "x").await.unwrap();
            c.ctl((round + 1) % 3, &["secret", "delete", &name]);
            let err = get(&c.url((round + 2) % 3), &name).await.unwrap_err();
            assert_eq!(err.code(), Code::NotFound, "round {round}");
        }
        // A revocation through one node is honoured by the others at once.
        c.ctl(0, &["role", "create", "w", "--grant", "create,update:r/*"]);
        let t = c.ctl(1, &["token", "create", "temp", "--role", "w"]).trim().to_string();
        put(&c.url(2), &t, "r/1", "ok").await.unwrap();
        c.ctl(0, &["token", "revoke", "temp"]);
        for i in 0..3 {
            assert_eq!(put(&c.url(i), &t, "r/1", "no").await.unwrap_err().code(), Code::Unauthenticated);
        }
        // Status on a follower still shows replication lag, from the leader's view.
        let follower = (0..3).find(|i| c.nodes[*i].api_addr.to_string() != status.leader_api_addr).unwrap();
        let fs = c.status(follower).await.unwrap();
        assert!(fs.members.iter().all(|m| m.lag.is_some()), "{fs:?}");
    });
}

/// A read on a follower right after the leader acknowledged a write sees that write, many
/// times over with several writers: the follower applies up to the read index before it reads.
#[test]
fn follower_reads_see_every_write_acknowledged_before_them() {
    mt().block_on(async {
        let c = TestCluster::start(3, |_| {}).await;
        let status = c.status(0).await.unwrap();
        let leader = (0..3).find(|i| c.nodes[*i].api_addr.to_string() == status.leader_api_addr).unwrap();
        let followers: Vec<String> = (0..3).filter(|i| *i != leader).map(|i| c.url(i)).collect();
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let (leader, followers, token) = (c.url(leader), followers.clone(), c.token.clone());
                tokio::spawn(async move {
                    let name = format!("ryw/{w}");
                    for i in 0..40usize {
                        put(&leader, &token, &name, &i.to_string()).await.expect("put");
                        let got = get(&followers[i % 2], &name).await.expect("get");
                        assert_eq!(String::from_utf8_lossy(&got), i.to_string(), "writer {w}, write {i}");
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.expect("writer");
        }
    });
}

/// A token is usable on every node as soon as its creation is acknowledged, even on a node
/// that has not applied the creation yet: a write with a token the node does not know waits
/// for one linearizable barrier before it is refused.
#[test]
fn a_new_token_writes_at_once_through_every_node() {
    mt().block_on(async {
        let c = TestCluster::start(3, |_| {}).await;
        let leader = c.leader_seen_by(0, |_| true).await;
        c.ctl(leader, &["role", "create", "w", "--grant", "create,update:fresh/*"]);
        for i in 0..20 {
            // Created through the leader, used at once through a follower.
            let t = c.ctl(leader, &["token", "create", &format!("fresh-{i}"), "--role", "w"]).trim().to_string();
            let via = (leader + 1 + i % 2) % 3;
            let v = put(&c.url(via), &t, &format!("fresh/{i}"), "v").await;
            assert_eq!(v.map_err(|e| e.code()), Ok(1), "token fresh-{i} through node {via}");
        }
        // An unknown token is still refused everywhere, after the barrier.
        for i in 0..3 {
            let e = put(&c.url(i), &random_token(), "fresh/x", "v").await.unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated, "node {i}");
        }
    });
}

/// Concurrent writes through every node share log entries on the leader (fewer entries than
/// writes), and each is still answered on its own: distinct names get version 1, writers
/// racing on one name get distinct consecutive versions, and every node serves each
/// acknowledged version with exactly the value its writer sent.
#[test]
fn concurrent_writes_are_batched_and_each_gets_its_own_answer() {
    mt().block_on(async {
        let c = TestCluster::start(3, |_| {}).await;
        let leader = c.leader_seen_by(0, |_| true).await;
        let before = c.status(leader).await.unwrap().last_log_index.unwrap_or(0);
        const DISTINCT: usize = 48;
        const SHARED: usize = 6;
        let mut tasks = Vec::new();
        for i in 0..DISTINCT + SHARED {
            let url = c.url(i % 3);
            let token = c.token.clone();
            let (name, value) = if i < DISTINCT {
                (format!("batch/d/{i}"), format!("distinct-{i}"))
            } else {
                ("batch/shared".to_string(), format!("shared-{i}"))
            };
            tasks.push(tokio::spawn(async move {
                let r = put(&url, &token, &name, &value).await;
                (name, value, r)
            }));
        }
        let mut shared_versions = BTreeMap::new();
        let mut distinct = Vec::new();
        for t in tasks {
            let (name, value, r) = t.await.unwrap();
            let version = r.unwrap_or_else(|e| panic!("put {name}: {e}"));
            if name == "batch/shared" {
                assert!(shared_versions.insert(version, value).is_none(), "version {version} acknowledged twice");
            } else {
                assert_eq!(version, 1, "{name}");
                distinct.push((name, value));
            }
        }
        assert_eq!(shared_versions.keys().copied().collect::<Vec<_>>(), (1..=SHARED as u64).collect::<Vec<_>>());
        let after = c.status(leader).await.unwrap().last_log_index.unwrap_or(0);
        let writes = (DISTINCT + SHARED) as u64;
        assert!(
            after - before < writes,
            "{writes} concurrent writes took {} log entries: proposals were not batched",
            after - before
        );
        for node in 0..3 {
            for (name, value) in &distinct {
                assert_eq!(get(&c.url(node), name).await.unwrap(), value.as_bytes(), "node {node} {name}");
            }
            for (version, value) in &shared_versions {
                let got = get_version(&c.url(node), "batch/shared", *version).await.unwrap();
                assert_eq!(got, value.as_bytes(), "node {node} batch/shared v{version}");
            }
        }
    });
}

/// A follower that missed many large writes catches up through the log: the leader packs no
/// more entries into one `AppendEntries` than fit the transport's message limit (30 values of
/// 2.5 MiB would be a 75 MiB message at openraft's default of 300 entries).
#[test]
fn a_follower_that_missed_large_writes_catches_up() {
    mt().block_on(async {
        let mut c = TestCluster::start(3, |s| {
            s.set("VAULT_MAX_VALUE_BYTES", "3145728");
        })
        .await;
        let leader = c.leader_seen_by(0, |_| true).await;
        let lagging = (leader + 1) % 3;
        c.nodes[lagging].kill();
        let big = |i: usize| vec![b'a' + (i % 26) as u8; 5 << 19];
        for i in 0..30 {
            let mut client = secrets_client(&c.url(leader)).await;
            let req = authed(
                pb::PutSecretRequest { name: format!("big/{i}"), value: big(i), ..Default::default() },
                &c.token,
            );
            client.put_secret(req).await.unwrap_or_else(|e| panic!("put big/{i}: {e}"));
        }
        c.nodes[lagging] = c.specs[lagging].start();
        c.nodes[lagging].wait_ready().await;
        // Linearizable: answered only once the restarted node has applied every write above.
        // A read waits up to 10 s for that; 75 MiB to replicate can take longer while other
        // tests load the machine, so the node gets 90 s in all (a node stuck on an oversized
        // message never gets there).
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        let v = loop {
            match get(&c.url(lagging), "big/29").await {
                Err(e) if e.code() == tonic::Code::Unavailable && std::time::Instant::now() < deadline => continue,
                other => break other.unwrap_or_else(|e| panic!("the lagging node never caught up: {e}")),
            }
        };
        assert!(v == big(29), "the lagging node serves the last large value");
        let v = get(&c.url(lagging), "big/0").await.unwrap();
        assert!(v == big(0), "and the first");
    });
}

#[test]
fn leader_killed_during_writes_loses_no_acknowledged_write() {
    mt().block_on(async {
        let mut c = TestCluster::start(3, |_| {}).await;
        let leader = c.leader_seen_by(0, |_| true).await;
        let urls: Vec<String> = (0..3).map(|i| c.url(i)).collect();
        let token = c.token.clone();
        let kill_at = 40usize;
        let mut acked = Vec::new();
        let mut attempted = Vec::new();
        let mut acked_after_kill = 0;
        let started = Instant::now();
        let mut i = 0usize;
        // A paced client stream: one write every 20 ms, each to one node (never the dead one
        // after the kill), no client retries: an unacknowledged write stays unacknowledged.
        while acked_after_kill < 40 {
            assert!(started.elapsed() < Duration::from_secs(90), "writes did not resume after the failover");
            if i == kill_at {
                tracing::info!("killing the leader (node index {leader}) mid-stream");
                c.nodes[leader].kill();
            }
            let name = format!("stream/{i}");
            let value = format!("value-{i}");
            attempted.push(i);
            let target = (i + 1) % 3;
            let target = if i >= kill_at && target == leader { (target + 1) % 3 } else { target };
            if put(&urls[target], &token, &name, &value).await.is_ok() {
                acked.push(i);
                if i >= kill_at {
                    acked_after_kill += 1;
                }
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let total = i;
        assert!(acked.len() + 10 >= total, "{} of {total} writes acknowledged: failover lost too many", acked.len());
        // The old leader comes back with its data dir and catches up.
        c.nodes[leader] = c.specs[leader].start();
        c.nodes[leader].wait_ready().await;
        for node in 0..3 {
            for i in &attempted {
                let name = format!("stream/{i}");
                match get(&c.url(node), &name).await {
                    Ok(v) => assert_eq!(
                        v,
                        format!("value-{i}").as_bytes(),
                        "node {node}: {name} is exactly what was written"
                    ),
                    Err(e) => {
                        assert!(!acked.contains(i), "node {node}: acknowledged {name} missing: {e}");
                        assert_eq!(e.code(), Code::NotFound, "node {node}: {name}: {e}");
                    }
                }
            }
        }
        let new_leader = c.leader_seen_by(0, |_| true).await;
        let s = c.status(new_leader).await.unwrap();
        assert_eq!(s.members.len(), 3);
        tracing::info!(acked = acked.len(), "all acknowledged writes present on every node");
    });
}

/// Several entries in flight at once (the leader's write pipeline) and a SIGKILL of the leader
/// in the middle: every acknowledged write is there afterwards on every node, with the version
/// it was acknowledged with, and each name's versions have no hole and no value twice.
#[test]
fn pipelined_writes_survive_a_leader_kill_without_loss_holes_or_duplicates() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    mt().block_on(async {
        let mut c = TestCluster::start(3, |s| {
            s.set("VAULT_RAFT_MAX_IN_FLIGHT", "8");
        })
        .await;
        let leader = c.leader_seen_by(0, |_| true).await;
        let follower = (leader + 1) % 3;
        let stop = Arc::new(AtomicBool::new(false));
        const WRITERS: usize = 32;
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            // Most writers on the leader (that is where entries pile up), some forwarded.
            let urls = if w % 4 == 0 { [c.url(follower), c.url(leader)] } else { [c.url(leader), c.url(follower)] };
            let (token, stop) = (c.token.clone(), stop.clone());
            writers.push(tokio::spawn(async move {
                let name = format!("pipe/{w}");
                let mut acked: Vec<(u64, String)> = Vec::new();
                let (mut i, mut at) = (0usize, 0usize);
                // Fewer writes than the versions a name keeps.
                while !stop.load(Ordering::Relaxed) && i < 900 {
                    let value = format!("w{w}-{i}");
                    // Every version is kept, so the check below can read them all.
                    let keep = Some(vault_core::model::MAX_MAX_VERSIONS);
                    match put_keeping(&urls[at], &token, &name, &value, keep).await {
                        Ok(version) => acked.push((version, value)),
                        // After the kill, writes through the dead leader fail: try the other node.
                        Err(_) => {
                            at = 1 - at;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    i += 1;
                }
                (name, acked)
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while !c.nodes[leader].log().contains("write entries in flight") {
            assert!(Instant::now() < deadline, "32 concurrent writers never put two entries in flight");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.nodes[leader].kill();
        let new_leader = c.leader_seen_by(follower, |id| id != c.specs[leader].node_id).await;
        assert_ne!(new_leader, leader);
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::Relaxed);
        let mut results = Vec::new();
        for wtask in writers {
            results.push(wtask.await.expect("writer"));
        }
        let acked_total: usize = results.iter().map(|(_, a)| a.len()).sum();
        assert!(acked_total > WRITERS * 4, "only {acked_total} writes acknowledged");
        c.nodes[leader] = c.specs[leader].start();
        c.nodes[leader].wait_ready().await;
        for node in 0..3 {
            let mut client = pb::secrets_client::SecretsClient::new(connect(&c.url(node)).await.expect("connect"));
            for (name, acked) in &results {
                // Every version up to the newest acknowledged holds one of this writer's values,
                // in the order they were written: no hole, no write applied twice.
                let newest = acked.last().map_or(0, |(v, _)| *v);
                let writer = format!("w{}-", name.trim_start_matches("pipe/"));
                let mut stored = BTreeMap::new();
                let mut previous: Option<usize> = None;
                let versions: Vec<u64> = (1..=newest).collect();
                for chunk in versions.chunks(100) {
                    let requests =
                        chunk.iter().map(|v| pb::GetSecretRequest { name: name.clone(), version: *v }).collect();
                    let reply = client.batch_get_secrets(pb::BatchGetSecretsRequest { requests }).await;
                    let reply = reply.unwrap_or_else(|e| panic!("node {node}: batch read of {name}: {e}"));
                    let results = reply.into_inner().results;
                    assert_eq!(results.len(), chunk.len(), "node {node}: one answer per version asked");
                    for (version, item) in chunk.iter().zip(results) {
                        let text = match item.result {
                            Some(pb::batch_get_result::Result::Secret(s)) => {
                                String::from_utf8(s.value).expect("utf-8 value")
                            }
                            other => panic!("node {node}: {name} has a hole at v{version}: {other:?}"),
                        };
                        let seq: usize = text.strip_prefix(&writer).and_then(|n| n.parse().ok()).unwrap_or_else(|| {
                            panic!("node {node}: {name} v{version} holds a value its writer never wrote: {text}")
                        });
                        assert!(
                            previous.is_none_or(|p| seq > p),
                            "node {node}: {name} v{version} repeats or reorders ({text})"
                        );
                        previous = Some(seq);
                        stored.insert(*version, text);
                    }
                }
                for (version, value) in acked {
                    assert_eq!(stored.get(version), Some(value), "node {node}: acknowledged {name} v{version}");
                }
            }
        }
    });
}

#[test]
fn an_isolated_node_serves_no_reads_and_acknowledges_no_writes() {
    mt().block_on(async {
        let c = TestCluster::start(3, |_| {}).await;
        put(&c.url(0), &c.token, "iso/x", "before").await.unwrap();
        let leader = c.leader_seen_by(0, |_| true).await;
        let follower = (leader + 1) % 3;
        for isolated in [leader, follower] {
            let others: Vec<usize> = (0..3).filter(|i| *i != isolated).collect();
            for o in &others {
                c.nodes[*o].signal("STOP");
            }
            let started = Instant::now();
            let read = get(&c.url(isolated), "iso/x").await;
            let write = put(&c.url(isolated), &c.token, "iso/y", "lost?").await;
            for o in &others {
                c.nodes[*o].signal("CONT");
            }
            eprintln!("isolated node index {isolated}: read {read:?} write {write:?} after {:?}", started.elapsed());
            let read = read.expect_err("an isolated node must not serve a read");
            assert_eq!(read.code(), Code::Unavailable, "{read}");
            let write = write.expect_err("an isolated node must not acknowledge a write");
            assert!(matches!(write.code(), Code::Unavailable | Code::DeadlineExceeded), "{write}");
            assert!(started.elapsed() < Duration::from_secs(45));
            // Healed: reads work again everywhere.
            let deadline = Instant::now() + Duration::from_secs(30);
            while get(&c.url(isolated), "iso/x").await.is_err() {
                assert!(Instant::now() < deadline, "node did not serve reads after healing");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
}

#[test]
fn fourth_node_catches_up_by_snapshot_then_is_promoted_and_removed() {
    mt().block_on(async {
        // Snapshot and purge the log every 20 entries, so a new node cannot catch up by log.
        // Calls are cut off after 4 s, which cluster changes, waiting out their own bound, are not.
        let c = TestCluster::start(3, |s| {
            s.set("VAULT_SNAPSHOT_LOG_ENTRIES", "20");
            s.set("VAULT_API_REQUEST_TIMEOUT_SECS", "4");
        })
        .await;
        let mut expected = BTreeMap::new();
        for i in 0..80 {
            let (name, value) = (format!("snap/{i}"), format!("value-{i}"));
            put(&c.url(i % 3), &c.token, &name, &value).await.unwrap();
            expected.insert(name, value);
        }
        let mut spec = c.node_spec(4);
        spec.set("VAULT_JOIN", "true");
        spec.set("VAULT_SNAPSHOT_LOG_ENTRIES", "20");
        let mut n4 = spec.start();
        // It must not initialize a cluster of its own.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(n4.is_running());
        assert!(!n4.log().contains("initializing"), "{}", n4.log());

        let raft4 = spec.raft_addr.to_string();
        let api4 = spec.api_addr.to_string();
        let leader = c.leader_seen_by(0, |_| true).await;
        let before = c.status(leader).await.unwrap().last_log_index;
        // Node 4 is down when it is added, and back 6 s later: `cluster add`, sent to a
        // follower and forwarded to the leader, waits for it past the servers' request limit.
        n4.stop();
        let add = {
            let (url, token, raft4, api4) = (c.url((leader + 1) % 3), c.token.clone(), raft4.clone(), api4.clone());
            tokio::task::spawn_blocking(move || {
                must_vaultctl(&url, Some(&token), &["cluster", "add", "4", &raft4, &api4])
            })
        };
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(!add.is_finished(), "cluster add returned while node 4 was down");
        let mut n4 = spec.start();
        add.await.expect("cluster add");
        // `cluster add` returns once the learner has everything the leader had (openraft's
        // own wait ends within 5,000 entries of it, which here is at once).
        let s = c.status(leader).await.unwrap();
        let matched = s.members.iter().find(|m| m.id == 4).and_then(|m| m.matched_index);
        assert!(matched >= before, "cluster add returned with node 4 at {matched:?}, the leader was at {before:?}");
        n4.wait_ready().await;
        assert!(n4.log().contains("installed snapshot"), "node 4 caught up by snapshot:\\n{}", n4.log());
        for (name, value) in &expected {
            assert_eq!(get(&n4.url(), name).await.unwrap(), value.as_bytes());
        }
        let s = c.status(0).await.unwrap();
        assert_eq!(s.members.iter().find(|m| m.id == 4).map(|m| m.role.as_str()), Some("learner"), "{s:?}");

        c.ctl(2, &["cluster", "promote", "4"]);
        let s = c.status(0).await.unwrap();
        assert_eq!(s.members.iter().filter(|m| m.role != "learner").count(), 4, "{s:?}");
        put(&n4.url(), &c.token, "snap/after-promote", "yes").await.unwrap();
        assert_eq!(get(&c.url(0), "snap/after-promote").await.unwrap(), b"yes");

        c.ctl(0, &["cluster", "remove", "4"]);
        let s = c.status(0).await.unwrap();
        assert_eq!(s.members.len(), 3, "{s:?}");
        assert!(s.members.iter().all(|m| m.id != 4));
        n4.stop();
        put(&c.url(1), &c.token, "snap/after-remove", "still").await.unwrap();
        assert_eq!(get(&c.url(2), "snap/after-remove").await.unwrap(), b"still");
    });
}

#[test]
fn transfer_leader_and_restart_of_the_whole_cluster() {
    mt().block_on(async {
        let mut c = TestCluster::start(3, |_| {}).await;
        let leader = c.leader_seen_by(0, |_| true).await;
        let target = (leader + 1) % 3;
        let target_id = c.specs[target].node_id;
        c.ctl(leader, &["cluster", "transfer-leader", &target_id.to_string()]);
        let now = c.leader_seen_by(leader, |id| id == target_id).await;
        assert_eq!(now, target);
        put(&c.url(leader), &c.token, "t/after", "moved").await.unwrap();

        // Every node stops; all come back from their data dirs: same cluster, same data,
        // no second initialization.
        for n in c.nodes.iter_mut() {
            n.stop();
        }
        for i in 0..3 {
            c.nodes[i] = c.specs[i].start();
        }
        for n in c.nodes.iter_mut() {
            n.wait_ready().await;
        }
        for i in 0..3 {
            assert_eq!(get(&c.url(i), "t/after").await.unwrap(), b"moved");
            assert_eq!(
                c.nodes[i].log().matches("all peers reachable and new: initializing").count(),
                if i == 0 { 1 } else { 0 }
            );
        }
        let s = c.status(0).await.unwrap();
        assert_eq!(s.members.len(), 3);
    });
}

#[test]
fn the_raft_port_refuses_callers_without_a_cluster_certificate() {
    mt().block_on(async {
        let c = TestCluster::start(1, |_| {}).await;
        let raft = format!("https://{}", c.specs[0].raft_addr);
        let ca = std::fs::read(c.certs().join("ca.pem")).unwrap();

        // TLS that trusts the cluster CA, but no client certificate: refused during the
        // handshake, so such a caller holds no connection open (issue 28, finding 5).
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca)).domain_name(node_server_name(1));
        let attempt = async {
            let ch = Channel::from_shared(raft.clone()).unwrap().tls_config(tls).unwrap().connect().await?;
            let mut client = raftpb::raft_client::RaftClient::new(ch);
            client.node_state(raftpb::NodeStateRequest::default()).await.map_err(Box::<dyn std::error::Error>::from)?;
            Ok::<_, Box<dyn std::error::Error>>(())
        };
        let e = attempt.await.expect_err("a caller without a client certificate must not get through");
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        // Under TLS 1.3 the client may finish its side of the handshake before the server's alert
        // arrives: then it sees the connection closed (a reset, a broken pipe, an early end of
        // stream, depending on timing) instead of the alert naming the certificate.
        let text = text.to_lowercase();
        assert!(
            ["certificate", "connection closed", "connection reset", "broken pipe", "eof", "unexpected end"]
                .iter()
                .any(|w| text.contains(w)),
            "refused in the handshake, by an alert naming the missing certificate or by closing: {text}"
        );

        // A certificate from another CA is refused during the handshake.
        let other = c.dir.path().join("other-ca");
        mint_certs(&other, &[1]);
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca))
            .identity(Identity::from_pem(
                std::fs::read(other.join("node-1.pem")).unwrap(),
                std::fs::read(other.join("node-1.key")).unwrap(),
            ))
            .domain_name(node_server_name(1));
        let attempt = async {
            let ch = Channel::from_shared(raft.clone()).unwrap().tls_config(tls).unwrap().connect().await?;
            let mut client = raftpb::raft_client::RaftClient::new(ch);
            client.node_state(raftpb::NodeStateRequest::default()).await.map_err(Box::<dyn std::error::Error>::from)?;
            Ok::<_, Box<dyn std::error::Error>>(())
        };
        assert!(attempt.await.is_err(), "a foreign certificate must not get through");

        // Plaintext gets nothing either.
        let plain = format!("http://{}", c.specs[0].raft_addr);
        let attempt = async {
            let ch = Channel::from_shared(plain).unwrap().connect().await?;
            let mut client = raftpb::raft_client::RaftClient::new(ch);
            client.node_state(raftpb::NodeStateRequest::default()).await.map_err(Box::<dyn std::error::Error>::from)?;
            Ok::<_, Box<dyn std::error::Error>>(())
        };
        assert!(attempt.await.is_err());

        // With the node's own certificate the same call works: the checks above tested
        // the certificate, not a broken listener.
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca))
            .identity(Identity::from_pem(
                std::fs::read(c.certs().join("node-1.pem")).unwrap(),
                std::fs::read(c.certs().join("node-1.key")).unwrap(),
            ))
            .domain_name(node_server_name(1));
        let ch = Channel::from_shared(raft).unwrap().tls_config(tls).unwrap().connect().await.unwrap();
        let r = raftpb::raft_client::RaftClient::new(ch).node_state(raftpb::NodeStateRequest::default()).await.unwrap();
        assert_eq!(r.into_inner().node_id, 1);
    });
}

#[test]
fn insecure_dev_mode_still_needs_the_cluster_secret() {
    mt().block_on(async {
        let dir = test_dir();
        let token = random_token();
        let mut spec = NodeSpec::single(dir.path(), &token, &random_master_key());
        spec.set("VAULT_RAFT_INSECURE", "true");
        spec.set("VAULT_CLUSTER_SECRET", "dev-cluster-secret-0123456789");
        let mut node = spec.start();
        node.wait_ready().await;
        assert!(node.log().contains("PLAINTEXT"), "loud warning expected");
        let ch = Channel::from_shared(format!("http://{}", spec.raft_addr)).unwrap().connect().await.unwrap();
        let mut client = raftpb::raft_client::RaftClient::new(ch);
        let e = client.node_state(raftpb::NodeStateRequest::default()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        let mut req = tonic::Request::new(raftpb::NodeStateRequest::default());
        req.metadata_mut().insert("x-vault-cluster-secret", "wrong-secret-value-xxxxxxxx".parse().unwrap());
        assert_eq!(client.node_state(req).await.unwrap_err().code(), Code::Unauthenticated);
        let mut req = tonic::Request::new(raftpb::NodeStateRequest::default());
        req.metadata_mut().insert("x-vault-cluster-secret", "dev-cluster-secret-0123456789".parse().unwrap());
        assert_eq!(client.node_state(req).await.unwrap().into_inner().node_id, 1);
    });
}

#[test]
fn reads_on_followers_resume_once_a_hung_leader_is_replaced() {
    mt().block_on(async {
        let mut c = TestCluster::start(3, |_| {}).await;
        put(&c.url(0), &c.token, "hang/x", "v").await.unwrap();
        let leader = c.leader_seen_by(0, |_| true).await;
        let follower = (leader + 1) % 3;
        // Reads in flight on the follower when the leader hangs.
        c.nodes[leader].signal("STOP");
        let hung = Instant::now();
        let url = c.url(follower);
        let mut readers = Vec::new();
        for _ in 0..8 {
            let url = url.clone();
            readers.push(tokio::spawn(async move {
                loop {
                    if get(&url, "hang/x").await.is_ok() {
                        return Instant::now();
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }));
        }
        let mut first = None;
        for r in readers {
            let at = tokio::time::timeout(Duration::from_secs(30), r).await.expect("reads resume").unwrap();
            first = Some(first.map_or(at, |f: Instant| f.min(at)));
        }
        let gap = first.unwrap() - hung;
        eprintln!("reads on a follower resumed {gap:?} after the leader hung");
        c.nodes[leader].signal("CONT");
        // A read-index round stuck on the hung leader used to hold every read for its full 10 s
        // timeout, past the election; now a leader change ends it.
        assert!(gap < Duration::from_secs(8), "{gap:?}");
        c.nodes[leader].stop();
    });
}

/// Pre-vote: a follower that was paused for several election timeouts comes back without an
/// election. It never raised its term while away (its pre-votes found no majority that had
/// lost the leader), so the leader and the term stay as they were, and writes go on.
#[test]
fn a_returning_follower_does_not_depose_the_leader() {
    mt().block_on(async {
        let c = TestCluster::start(3, |_| {}).await;
        put(&c.url(0), &c.token, "prevote/x", "before").await.unwrap();
        let leader = c.leader_seen_by(0, |_| true).await;
        let before = c.status(leader).await.unwrap();
        let follower = (leader + 1) % 3;
        for _ in 0..2 {
            c.nodes[follower].signal("STOP");
            // Six default election timeouts: long enough that without pre-vote it campaigns.
            // No writes meanwhile: its log stays as new as the others', so only pre-vote
            // (not the log check) can keep it from winning an election.
            tokio::time::sleep(Duration::from_secs(3)).await;
            c.nodes[follower].signal("CONT");
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        put(&c.url(leader), &c.token, "prevote/x", "while away").await.unwrap();
        let after = c.status(leader).await.unwrap();
        assert_eq!(after.state, "leader", "the leader stays leader");
        assert_eq!(after.term, before.term, "no election happened");
        let seen = c.status(follower).await.unwrap();
        assert_eq!(seen.term, before.term, "the returning follower never raised its term");
        assert_eq!(get(&c.url(follower), "prevote/x").await.unwrap(), b"while away");
    });
}
