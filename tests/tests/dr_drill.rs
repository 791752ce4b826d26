//! The disaster recovery drill (issue 32), backup half: a three-node cluster takes scheduled
//! backups to S3 (moto on loopback), all three data directories are destroyed, a new cluster
//! (same master key, new bootstrap token) lists the old cluster's backups and restores the
//! newest by name, and every write acknowledged before that backup's index reads back.

use std::time::{Duration, Instant};

use serde_json::Value;
use vault_tests::moto::Moto;
use vault_tests::*;

fn mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

#[test]
fn disaster_recovery_drill_restores_the_newest_s3_backup_into_a_new_cluster() {
    mt().block_on(async {
        let moto = Moto::start();
        let (bucket, prefix) = ("vault-dr", "drill/");
        moto.create_bucket(bucket);
        let master = random_master_key();
        let old = TestCluster::start_with_key(3, &master, |s| {
            moto.configure_s3(s, bucket, prefix);
            s.set("VAULT_BACKUP_EVERY", "1s");
            s.set("VAULT_BACKUP_KEEP", "5");
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
    });
}
