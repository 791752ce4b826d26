//! `vault-bench` itself, in its shortest form: it must keep working for the benchmarks that
//! are run by hand (`make bench`), where nothing else would notice it broke.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vault_tests::{bin, test_dir};

/// A one-second run at one client with the peer links delayed 1 ms finishes, reports writes
/// without errors, carries the replication through the delay proxy (at least each write's
/// value to each of the two followers), and reports each node's CPU and context switches.
#[test]
fn the_bench_with_delayed_peer_links_reports_writes_through_the_proxy() {
    let dir = test_dir();
    let out = dir.path().join("bench.json");
    let mut child = Command::new(bin("vault-bench"))
        .args(["--skip-etcd", "--skip-scale", "--skip-rewrap", "--skip-watch", "--skip-agent"])
        .args(["--clients", "1", "--duration", "1", "--peer-delay-ms", "1", "--out"])
        .arg(&out)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vault-bench");
    let deadline = Instant::now() + Duration::from_secs(180);
    while child.try_wait().expect("poll vault-bench").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vault-bench did not finish within 180 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let done = child.wait_with_output().expect("vault-bench output");
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "vault-bench failed: {stderr}");
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(stdout.contains("peer links delayed 1 ms each way"), "the table says the links were delayed: {stdout}");

    let report: Value = serde_json::from_slice(&std::fs::read(&out).expect("read the bench's JSON")).expect("JSON");
    assert_eq!(report["peer_delay_ms"].as_f64(), Some(1.0));
    let write = report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["scenario"] == "write" && r["clients"] == 1)
        .unwrap_or_else(|| panic!("a write row at 1 client: {report}"));
    let vault = &write["vault"];
    let ops = vault["ops"].as_u64().expect("ops");
    assert!(ops > 0, "writes were done: {vault}");
    assert_eq!(vault["errors"].as_u64(), Some(0), "{vault}");
    let forwarded = report["extra"]["peer_delay"]["forwarded_bytes"]["vault"].as_u64().expect("proxy bytes");
    assert!(
        forwarded >= ops * 256 * 2,
        "the {ops} writes' 256-byte values went to both followers through the proxy: {forwarded} bytes forwarded"
    );
    let nodes = vault["nodes"].as_array().expect("per-node figures");
    assert_eq!(nodes.len(), 3, "{vault}");
    assert_eq!(nodes[0]["role"], "leader", "the leader comes first: {vault}");
    for n in nodes {
        assert!(n["cpu_us_per_op"].as_f64().is_some_and(|c| c > 0.0), "each node used CPU: {n}");
        let switches = &n["context_switches_per_op"];
        let total = switches["voluntary"].as_f64().unwrap_or(0.0) + switches["involuntary"].as_f64().unwrap_or(0.0);
        assert!(total > 0.0, "each node switched contexts to replicate: {n}");
    }
}
