//! The disaster recovery drill: a three-node cluster takes scheduled backups to S3 (moto on
//! loopback) and ships its audit to a real rsyslog (started by the test on a private port);
//! all three data directories are destroyed; a new cluster (same master key, new bootstrap
//! token) lists the old cluster's backups and restores the newest by name, every write
//! acknowledged before that backup's index reads back, and the audit rsyslog received
//! verifies end to end off the node, every node's chain up to its head.

use std::time::{Duration, Instant};

use serde_json::Value;
use vault_tests::moto::Moto;
use vault_tests::*;

fn mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

#[test]
fn disaster_recovery_drill_restores_the_newest_s3_backup_and_the_shipped_audit_verifies() {
    mt().block_on(async {
        let moto = Moto::start();
        let (bucket, prefix) = ("vault-dr", "drill/");
        moto.create_bucket(bucket);
        let master = random_master_key();
        let work = test_dir();
        let syslog = vault_tests::rsyslog::Rsyslog::start(work.path()).await;
        let audit_key = work.path().join("audit.key");
        std::fs::write(&audit_key, random_master_key()).expect("audit key");
        let (key_path, target) = (audit_key.display().to_string(), syslog.target());
        let old = TestCluster::start_with_key(3, &master, |s| {
            moto.configure_s3(s, bucket, prefix);
            s.set("VAULT_BACKUP_EVERY", "1s");
            s.set("VAULT_BACKUP_KEEP", "5");
            s.set("VAULT_AUDIT_KEY_FILE", &key_path).set("VAULT_AUDIT_SYSLOG", &target);
        })
        .await;

        // Acknowledged writes, through whichever node (followers forward to the leader).
        let mut acked = Vec::new();
        for i in 0..30 {
            let (name, value) = (format!("dr/s{i}"), canary(&format!("dr-{i}")));
            old.ctl(i % 3, &["secret", "put", &name, "--value", &value]);
            acked.push((name, value));
        }
        // Every acknowledged write is at or below the leader's applied index now.
        let leader = old.leader_seen_by(0, |_| true).await;
        let applied = old.status(leader).await.expect("cluster status").last_applied_index.expect("applied index");
        let deadline = Instant::now() + Duration::from_secs(30);
        let newest = loop {
            let listed: Value = serde_json::from_str(&old.ctl(leader, &["--output", "json", "snapshot", "list"]))
                .expect("JSON listing");
            let newest = listed["backups"].as_array().and_then(|b| b.last()).cloned();
            if let Some(b) = newest.filter(|b| b["applied_index"].as_u64() >= Some(applied)) {
                break b;
            }
            assert!(Instant::now() < deadline, "no backup at index {applied} or later within 30 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        // Writes after it are not expected back (but more backups may hold them).
        old.ctl(leader, &["secret", "put", "dr/after", "--value", "later"]);

        // Each node's audit head, and rsyslog holding it, before the disaster.
        let mut heads = Vec::new();
        for i in 0..3 {
            let v: Value = serde_json::from_str(&old.ctl(i, &["--output", "json", "audit", "verify"])).expect("JSON");
            let head = v["head"].as_str().expect("a head").to_string();
            let (seq, mac) = head.split_once(':').expect("SEQ:MAC");
            heads.push((old.specs[i].node_id, seq.parse::<u64>().expect("seq"), mac.to_string()));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let lines = syslog.shipped_lines();
            let shipped: Vec<Value> = lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
            let has = |node: u64, seq: u64, mac: &str| {
                shipped.iter().any(|r| {
                    r["chain_node_id"].as_u64() == Some(node) && r["seq"].as_u64() == Some(seq) && r["mac"] == mac
                })
            };
            if heads.iter().all(|(node, seq, mac)| has(*node, *seq, mac)) {
                break;
            }
            assert!(Instant::now() < deadline, "rsyslog lacks a node's audit head after 20 s: {heads:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // The disaster: every node and every data directory gone.
        let mut old = old;
        for n in old.nodes.iter_mut() {
            n.kill();
        }
        for s in &old.specs {
            std::fs::remove_dir_all(s.data_dir()).expect("destroy a data directory");
        }

        // A new cluster with the same master key and the same destination, no schedule.
        let new = TestCluster::start_with_key(3, &master, |s| moto.configure_s3(s, bucket, prefix)).await;
        let listed: Value =
            serde_json::from_str(&new.ctl(0, &["--output", "json", "snapshot", "list", "--verify"])).expect("JSON");
        let backups = listed["backups"].as_array().expect("backups");
        assert!(backups.iter().all(|b| b["verified"] == Value::Bool(true)), "{backups:?}");
        let latest = backups.last().expect("the old cluster's backups are listed");
        assert!(latest["applied_index"].as_u64() >= newest["applied_index"].as_u64(), "{latest} {newest}");
        let name = latest["name"].as_str().expect("name");
        let said = new.ctl(0, &["snapshot", "restore", "--name", name]);
        let index = latest["applied_index"].as_u64().expect("index");
        assert!(said.contains(&format!("at index {index}")), "{said}");

        // The backup's tokens are the cluster's now: the old admin token reads everything back,
        // on every node.
        for (i, (name, value)) in acked.iter().enumerate() {
            let node = i % 3;
            let got = must_vaultctl(&new.url(node), Some(&old.token), &["secret", "get", name]);
            assert_eq!(&got, value, "{name} after the restore on node index {node}");
        }
        let refused = must_fail_vaultctl(&new.url(0), Some(&new.token), &["secret", "list"]);
        assert!(refused.contains("unauthenticated"), "the new cluster's bootstrap token is gone: {refused}");

        // The evidence survived too: what rsyslog received verifies off the node, each node's
        // chain from its first record to (at least) the head it had before the disaster.
        let file = work.path().join("drill-audit.jsonl");
        std::fs::write(&file, syslog.shipped_lines().join("\n")).expect("write the shipped records");
        let (ok, out) = vault_tests::rsyslog::verify_shipped(&[&file], &audit_key);
        assert!(ok, "{out}");
        for (node, seq, _) in &heads {
            let line = out.lines().find(|l| l.starts_with(&format!("node {node}:"))).unwrap_or_else(|| panic!("{out}"));
            let last: u64 = line
                .split("records 1 to ")
                .nth(1)
                .and_then(|r| r.split(':').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("node {node} shipped from its first record: {line}"));
            assert!(last >= *seq, "node {node} shipped up to {last}, its head was {seq}: {line}");
        }
    });
}
