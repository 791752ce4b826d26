//! Audit shipping with real processes: records leave the node for a file (rotated with
//! SIGHUP), a TCP socket that stops and resumes, and a real rsyslog (Debian's `rsyslog`,
//! started here on a private port with its own configuration); a required sink that is down
//! refuses changes and reads. Every shipped stream is then checked off the node with
//! `vaultctl audit verify --file` and the audit key.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;
use tokio::task::JoinHandle;
use vault_tests::rsyslog::{verify_shipped, Rsyslog};
use vault_tests::*;

/// Starts a node shipping to `sinks` (settings), with its audit key in a file the test keeps.
async fn node_with(sinks: &[(&str, String)]) -> (SingleNode, PathBuf, String) {
    let mut key_file = PathBuf::new();
    let mut metrics = String::new();
    let n = SingleNode::start(|s| {
        key_file = s.dir.join("audit.key");
        std::fs::write(&key_file, random_master_key()).unwrap();
        s.set("VAULT_AUDIT_KEY_FILE", key_file.to_str().unwrap());
        for (k, v) in sinks {
            s.set(k, v);
        }
        metrics = with_metrics(s);
    })
    .await;
    (n, key_file, metrics)
}

async fn wait_until(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sink_gauge(metrics: &str, name: &str, sink: &str) -> f64 {
    sample(&scrape(metrics).await, &format!("{name}{{sink=\"{sink}\"}}")).unwrap_or(-1.0)
}

fn parse(lines: &[String]) -> Vec<serde_json::Value> {
    lines.iter().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

/// Sequence numbers of `records`, exact repeats (same seq and MAC) dropped; asserts they run
/// without a gap and that no seq came back with another MAC.
fn gapless(records: &[serde_json::Value]) -> Vec<u64> {
    let mut seen = std::collections::BTreeMap::new();
    let mut order = Vec::new();
    for r in records {
        let (seq, mac) = (r["seq"].as_u64().unwrap(), r["mac"].as_str().unwrap().to_string());
        match seen.get(&seq) {
            Some(m) => assert_eq!(m, &mac, "record {seq} came twice with different MACs"),
            None => {
                seen.insert(seq, mac);
                order.push(seq);
            }
        }
    }
    for w in order.windows(2) {
        assert_eq!(w[1], w[0] + 1, "the shipped records jump from {} to {}: {order:?}", w[0], w[1]);
    }
    order
}

fn has_put(records: &[serde_json::Value], name: &str) -> bool {
    records.iter().any(|r| r["action"] == "secret.put" && r["secret"] == name)
}

/// The node's head as `verify` prints it: sequence number and MAC.
fn head(n: &SingleNode) -> (u64, String) {
    let v: serde_json::Value = serde_json::from_str(&n.ctl(&["--output", "json", "audit", "verify"])).unwrap();
    let (seq, mac) = v["head"].as_str().unwrap().split_once(':').unwrap();
    (seq.parse().unwrap(), mac.to_string())
}

/// A TCP listener that keeps every line it reads, one connection at a time; `stop` drops the
/// listener and the connection.
struct LineListener {
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
    task: Option<JoinHandle<()>>,
}

impl LineListener {
    async fn start(port: u16, lines: Arc<Mutex<Vec<String>>>) -> LineListener {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind the test sink");
        let keep = lines.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let mut reader = tokio::io::BufReader::new(stream).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    keep.lock().unwrap().push(line);
                }
            }
        });
        LineListener { port, lines, task: Some(task) }
    }

    async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    fn records(&self) -> Vec<serde_json::Value> {
        parse(&self.lines.lock().unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_sink_that_stops_and_resumes_gets_every_record_without_a_gap() {
    let port = free_port();
    let mut sink = LineListener::start(port, Arc::default()).await;
    let (n, key, metrics) = node_with(&[("VAULT_AUDIT_SOCKET", format!("tcp:127.0.0.1:{port}"))]).await;
    for i in 0..3 {
        n.ctl(&["secret", "put", &format!("before/{i}"), "--value", "v"]);
    }
    wait_until("the socket has the first puts", Duration::from_secs(10), async || has_put(&sink.records(), "before/2"))
        .await;

    tracing::info!("the sink stops; the node keeps working (fail-open) and counts the lag");
    sink.stop().await;
    wait_until("the node sees the sink down", Duration::from_secs(10), async || {
        sink_gauge(&metrics, "vault_audit_sink_up", "socket").await == 0.0
    })
    .await;
    for i in 0..5 {
        n.ctl(&["secret", "put", &format!("while-down/{i}"), "--value", "v"]);
    }
    wait_until("the lag counts the records not shipped", Duration::from_secs(10), async || {
        sink_gauge(&metrics, "vault_audit_sink_lag_records", "socket").await >= 5.0
    })
    .await;
    assert!(!has_put(&sink.records(), "while-down/0"), "nothing reached a stopped sink");
    assert_eq!(n.node.log().matches("audit sink is not taking records").count(), 1, "one line says the sink failed");

    tracing::info!("the sink resumes: the records written meanwhile arrive, in order");
    let mut sink = LineListener::start(sink.port, sink.lines.clone()).await;
    n.ctl(&["secret", "put", "after/0", "--value", "v"]);
    let (head_seq, head_mac) = head(&n);
    wait_until("the resumed socket has everything up to the head", Duration::from_secs(15), async || {
        sink.records().iter().any(|r| r["seq"].as_u64() == Some(head_seq))
    })
    .await;
    let records = sink.records();
    for i in 0..5 {
        assert!(has_put(&records, &format!("while-down/{i}")), "while-down/{i} arrived after the resume");
    }
    let seqs = gapless(&records);
    assert_eq!(seqs.first(), Some(&1), "from the node's first record");
    let shipped_head = records.iter().find(|r| r["seq"].as_u64() == Some(head_seq)).unwrap();
    assert_eq!(shipped_head["mac"].as_str(), Some(head_mac.as_str()), "the shipped MAC is the node's");
    wait_until("one line says the sink recovered", Duration::from_secs(10), async || {
        n.node.log().contains("audit sink takes records again")
    })
    .await;
    wait_until("the lag is back to 0", Duration::from_secs(10), async || {
        sink_gauge(&metrics, "vault_audit_sink_lag_records", "socket").await == 0.0
    })
    .await;

    let file = n.dir.path().join("socket-capture.jsonl");
    std::fs::write(&file, sink.lines.lock().unwrap().join("\n")).unwrap();
    let (ok, out) = verify_shipped(&[&file], &key);
    assert!(ok, "{out}");
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_sink_that_is_down_refuses_changes_and_reads_until_it_returns() {
    let port = free_port();
    let mut sink = LineListener::start(port, Arc::default()).await;
    let (n, _key, metrics) = node_with(&[
        ("VAULT_AUDIT_SOCKET", format!("tcp:127.0.0.1:{port}")),
        ("VAULT_AUDIT_SOCKET_REQUIRED", "true".into()),
    ])
    .await;
    n.ctl(&["secret", "put", "app/up", "--value", "v"]);

    sink.stop().await;
    wait_until("the node sees the required sink down", Duration::from_secs(10), async || {
        sink_gauge(&metrics, "vault_audit_sink_up", "socket").await == 0.0
    })
    .await;
    let refused = n.node.vaultctl(Some(&n.token), &["secret", "put", "app/while-down", "--value", "v"]);
    let err = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(!refused.status.success(), "a change with a required sink down is refused");
    assert!(err.contains("unavailable") && err.contains("audit sink socket is not taking records"), "{err}");
    let read = n.node.vaultctl(Some(&n.token), &["secret", "get", "app/up"]);
    let err = String::from_utf8_lossy(&read.stderr).to_string();
    assert!(!read.status.success() && err.contains("audit sink socket is not taking records"), "{err}");

    let sink = LineListener::start(sink.port, sink.lines.clone()).await;
    wait_until("the node sees the sink back", Duration::from_secs(10), async || {
        sink_gauge(&metrics, "vault_audit_sink_up", "socket").await == 1.0
    })
    .await;
    let gone = n.node.vaultctl(Some(&n.token), &["secret", "get", "app/while-down"]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("not found"), "the refused put wrote nothing");
    n.ctl(&["secret", "put", "app/after", "--value", "v"]);
    assert_eq!(n.ctl(&["secret", "get", "app/up"]), "v");
    assert!(!has_put(&sink.records(), "app/while-down"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_sink_reopens_on_sighup_and_the_rotated_and_new_files_verify_together() {
    let dir = test_dir();
    let path = dir.path().join("audit.jsonl");
    let (n, key, _metrics) = node_with(&[("VAULT_AUDIT_FILE", path.to_str().unwrap().to_string())]).await;
    let records_in =
        |p: &Path| parse(&std::fs::read_to_string(p).unwrap_or_default().lines().map(String::from).collect::<Vec<_>>());
    for i in 0..3 {
        n.ctl(&["secret", "put", &format!("first/{i}"), "--value", "v"]);
    }
    wait_until("the file has the first puts", Duration::from_secs(10), async || has_put(&records_in(&path), "first/2"))
        .await;

    tracing::info!("logrotate: rename, then SIGHUP");
    let rotated = dir.path().join("audit.jsonl.1");
    std::fs::rename(&path, &rotated).unwrap();
    n.ctl(&["secret", "put", "between/0", "--value", "v"]);
    n.node.signal("HUP");
    wait_until("the node reopened the file", Duration::from_secs(10), async || path.exists()).await;
    for i in 0..3 {
        n.ctl(&["secret", "put", &format!("second/{i}"), "--value", "v"]);
    }
    let (head_seq, _) = head(&n);
    wait_until("the new file reaches the head", Duration::from_secs(10), async || {
        records_in(&path).iter().any(|r| r["seq"].as_u64() == Some(head_seq))
    })
    .await;
    let (old, new) = (records_in(&rotated), records_in(&path));
    assert!(has_put(&new, "second/2") && !has_put(&old, "second/0"), "records go on in the new file");
    assert!(!has_put(&new, "first/0"), "the new file starts after the rotated one");
    let mut both = old.clone();
    both.extend(new);
    assert_eq!(gapless(&both).first(), Some(&1), "the two files hold every record, in order");

    let (ok, out) = verify_shipped(&[&rotated, &path], &key);
    assert!(ok, "{out}");
    let (ok, out) = verify_shipped(&[&path], &key);
    assert!(ok, "the new file alone verifies from where it starts: {out}");
    // An edited, a removed and a reordered line are each caught.
    let text = std::fs::read_to_string(&rotated).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 4, "{lines:?}");
    let edited = lines.iter().map(|l| l.replacen("first/1", "first/9", 1)).collect::<Vec<_>>().join("\n");
    let mut removed = lines.clone();
    removed.remove(1);
    let mut reordered = lines.clone();
    reordered.swap(1, 2);
    for (what, body, says) in [
        ("edited", edited, "was altered"),
        ("removed", removed.join("\n"), "missing"),
        ("reordered", reordered.join("\n"), "missing"),
    ] {
        let f = dir.path().join(format!("{what}.jsonl"));
        std::fs::write(&f, body).unwrap();
        let (ok, out) = verify_shipped(&[&f], &key);
        assert!(!ok && out.contains(says), "{what}: {out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_a_real_rsyslog_over_tcp_and_verify_off_the_node() {
    let dir = test_dir();
    let syslog = Rsyslog::start(dir.path()).await;
    let (n, key, _metrics) =
        node_with(&[("VAULT_AUDIT_SYSLOG", syslog.target()), ("VAULT_AUDIT_SYSLOG_REQUIRED", "true".into())]).await;
    for i in 0..4 {
        n.ctl(&["secret", "put", &format!("app/{i}"), "--value", "v"]);
    }
    assert_eq!(n.ctl(&["secret", "get", "app/3"]), "v");
    let (head_seq, head_mac) = head(&n);
    let msg_json = |m: &String| -> serde_json::Value {
        serde_json::from_str(&m[m.find('{').expect("a JSON MSG")..]).expect("the MSG is the JSON line")
    };
    wait_until("rsyslog wrote the head's record", Duration::from_secs(15), async || {
        syslog.messages().iter().any(|m| msg_json(m)["seq"].as_u64() == Some(head_seq))
    })
    .await;
    let messages = syslog.messages();
    let mut extracted = Vec::new();
    for m in &messages {
        let r = msg_json(m);
        let mut fields = m.splitn(3, ' ');
        assert_eq!(fields.next(), Some("vault"), "APP-NAME: {m}");
        assert_eq!(fields.next(), r["action"].as_str(), "MSGID is the action: {m}");
        assert!(m.contains(&format!("seq=\"{}\"", r["seq"])), "structured data names the seq: {m}");
        extracted.push(m[m.find('{').unwrap()..].to_string());
    }
    let records = parse(&extracted);
    assert_eq!(gapless(&records).first(), Some(&1));
    assert!(has_put(&records, "app/3"));
    let at_head = records.iter().find(|r| r["seq"].as_u64() == Some(head_seq)).unwrap();
    assert_eq!(at_head["mac"].as_str(), Some(head_mac.as_str()));

    let file = dir.path().join("from-rsyslog.jsonl");
    std::fs::write(&file, extracted.join("\n")).unwrap();
    let (ok, out) = verify_shipped(&[&file], &key);
    assert!(ok, "{out}");
    drop(n);
}

/// The audit half of the disaster-recovery drill: three nodes ship to one rsyslog; once every
/// data directory is gone, what rsyslog wrote still verifies, per node, up to each node's head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_ships_to_one_rsyslog_and_its_audit_verifies_with_every_data_directory_gone() {
    let dir = test_dir();
    let syslog = Rsyslog::start(dir.path()).await;
    let key = dir.path().join("audit.key");
    std::fs::write(&key, random_master_key()).unwrap();
    let (key_path, target) = (key.to_str().unwrap().to_string(), syslog.target());
    let mut c = TestCluster::start(3, |s| {
        s.set("VAULT_AUDIT_KEY_FILE", &key_path).set("VAULT_AUDIT_SYSLOG", &target);
    })
    .await;
    let leader = c.leader_seen_by(0, |_| true).await;
    for i in 0..5 {
        c.ctl(leader, &["secret", "put", &format!("drill/{i}"), "--value", "v"]);
    }
    let mut heads = Vec::new();
    for i in 0..3 {
        assert_eq!(c.ctl(i, &["secret", "get", "drill/4"]), "v");
        let v: serde_json::Value = serde_json::from_str(&c.ctl(i, &["--output", "json", "audit", "verify"])).unwrap();
        let (seq, mac) =
            v["head"].as_str().unwrap().split_once(':').map(|(a, b)| (a.to_string(), b.to_string())).unwrap();
        heads.push((c.specs[i].node_id, seq.parse::<u64>().unwrap(), mac));
    }
    let shipped = || parse(&syslog.shipped_lines());
    wait_until("rsyslog has every node's head", Duration::from_secs(20), async || {
        let records = shipped();
        heads.iter().all(|(node, seq, _)| {
            records.iter().any(|r| r["chain_node_id"].as_u64() == Some(*node) && r["seq"].as_u64() == Some(*seq))
        })
    })
    .await;

    tracing::info!("every data directory destroyed");
    for (n, spec) in c.nodes.iter_mut().zip(&c.specs) {
        n.kill();
        std::fs::remove_dir_all(spec.data_dir()).unwrap();
    }
    let records = shipped();
    for (node, seq, mac) in &heads {
        let mine: Vec<_> = records.iter().filter(|r| r["chain_node_id"].as_u64() == Some(*node)).cloned().collect();
        assert_eq!(gapless(&mine).first(), Some(&1), "node {node} shipped from its first record");
        assert!(has_put(&mine, "drill/4"), "every node records every change");
        let at = mine.iter().find(|r| r["seq"].as_u64() == Some(*seq)).unwrap();
        assert_eq!(at["mac"].as_str(), Some(mac.as_str()), "node {node}'s head as shipped");
    }
    let file = dir.path().join("drill-audit.jsonl");
    std::fs::write(&file, syslog.shipped_lines().join("\n")).unwrap();
    let (ok, out) = verify_shipped(&[&file], &key);
    assert!(ok && out.contains("node 1:") && out.contains("node 2:") && out.contains("node 3:"), "{out}");
}
