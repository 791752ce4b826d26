//! Scheduled backups (`VAULT_BACKUP_EVERY`) to a local directory: taken by the leader only,
//! named `vault-<cluster>-<time>-<index>.vbk`, verified after writing, kept to
//! `VAULT_BACKUP_KEEP`, listed and restored by name; a failing destination is counted and shown,
//! and recovers; a leader change leaves no partial file and the new leader carries on.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use vault_tests::*;

fn mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// The backup files in `dir` (by the naming scheme), sorted; and whether anything else is there.
fn backups_in(dir: &Path) -> (Vec<String>, Vec<String>) {
    let mut good = Vec::new();
    let mut other = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("vault-") && name.ends_with(".vbk") {
            good.push(name);
        } else {
            other.push(name);
        }
    }
    good.sort();
    other.sort();
    (good, other)
}

/// `vault-<12 hex>-<yyyymmddThhmmssZ>-<index>.vbk`: the cluster id and index.
fn parts(name: &str) -> (String, String, u64) {
    let rest = name.strip_prefix("vault-").and_then(|r| r.strip_suffix(".vbk")).expect("scheme");
    let mut it = rest.split('-');
    let (cluster, stamp, index) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
    assert!(it.next().is_none(), "{name}");
    assert!(cluster.len() == 12 && cluster.chars().all(|c| c.is_ascii_hexdigit()), "{name}");
    assert!(stamp.len() == 16 && &stamp[8..9] == "T" && stamp.ends_with('Z'), "{name}");
    (cluster.to_string(), stamp.to_string(), index.parse().expect("index"))
}

fn json_of(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn status(url: &str, token: &str) -> Value {
    json_of(&must_vaultctl(url, Some(token), &["--output", "json", "status"]))
}

/// Waits up to `secs` for `f` to give `Some`.
async fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "waited {secs}s for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn with_backups(spec: &mut NodeSpec, dir: &Path, every: &str, keep: &str) {
    spec.set("VAULT_BACKUP_EVERY", every);
    spec.set("VAULT_BACKUP_DIR", dir.to_str().expect("utf-8 path"));
    spec.set("VAULT_BACKUP_KEEP", keep);
}

/// A single node backs itself up every second: the files appear under the naming scheme with
/// rising indexes, retention keeps the newest two, `snapshot list --verify` shows them
/// verified, status and metrics tell the last success. Restarted without a schedule it still
/// lists them; a corrupted copy is listed as failed and its restore is refused with nothing
/// changed; `snapshot restore --name` of a good one brings back every write acknowledged
/// before it.
#[test]
fn single_node_scheduled_backups_are_named_verified_kept_and_restore_by_name() {
    mt().block_on(async {
        let work = test_dir();
        let dest = work.path().join("backups");
        let mut metrics = String::new();
        let mut n = SingleNode::start(|s| {
            with_backups(s, &dest, "1s", "2");
            metrics = with_metrics(s);
        })
        .await;
        n.ctl(&["secret", "put", "app/a", "--value", "one"]);
        n.ctl(&["secret", "put", "app/b", "--value", "two"]);
        let acked_ms = vault_core::time::now_ms();

        // Backups appear; after several, only the newest two are left, and nothing else.
        let seen = wait_for(30, "four backups", || {
            let s = status(&n.url(), &n.token);
            let names = backups_in(&dest).0;
            (s["backup"]["last_success_ms"].as_u64().is_some() && names.len() == 2 && {
                let st = &s["backup"];
                st["failures"].as_u64() == Some(0)
                    && st["last_name"].as_str().is_some_and(|l| names.contains(&l.to_string()))
            })
            .then_some(names)
        })
        .await;
        let first = seen[0].clone();
        let later = wait_for(20, "retention to move on", || {
            let names = backups_in(&dest).0;
            (!names.contains(&first) && names.len() == 2).then_some(names)
        })
        .await;
        let (names, other) = backups_in(&dest);
        assert!(names.len() <= 2, "retention keeps 2: {names:?}");
        assert!(other.is_empty(), "no temporary or partial file left: {other:?}");
        let (cluster, _, i0) = parts(&later[0]);
        let (cluster1, _, i1) = parts(&later[1]);
        assert_eq!(cluster, cluster1);
        assert!(i1 >= i0 && later[1] > later[0], "later backups hold later times and indexes: {later:?}");

        let scrape = scrape(&metrics).await;
        let last = sample(&scrape, "vault_backup_last_success_timestamp_seconds").expect("success metric");
        assert!(last * 1000.0 >= acked_ms as f64, "{last}");
        assert!(sample(&scrape, "vault_backup_last_size_bytes").expect("size metric") > 0.0);
        assert!(sample(&scrape, "vault_backup_last_duration_seconds").is_some());
        let text = n.ctl(&["status"]);
        assert!(text.contains("backups every 1s") && text.contains("last success"), "{text}");

        // Restarted without a schedule: the destination is still listed and restored from.
        n.spec.env.remove("VAULT_BACKUP_EVERY");
        n.restart().await;
        let (names, _) = backups_in(&dest);
        let listed = json_of(&n.ctl(&["--output", "json", "snapshot", "list", "--verify"]));
        let listed: Vec<&Value> = listed["backups"].as_array().expect("backups").iter().collect();
        assert_eq!(listed.len(), names.len(), "{listed:?}");
        for b in &listed {
            assert_eq!(b["verified"], Value::Bool(true), "{b}");
            let name = b["name"].as_str().unwrap();
            assert!(names.contains(&name.to_string()));
            assert_eq!(b["applied_index"].as_u64(), Some(parts(name).2));
            assert_eq!(b["size_bytes"].as_u64(), Some(std::fs::metadata(dest.join(name)).unwrap().len()));
        }
        let good = names.last().unwrap().clone();
        let (_, stamp, index) = parts(&good);

        // A copy with one byte changed, named as a later backup of this cluster.
        let mut bytes = std::fs::read(dest.join(&good)).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        let bad = format!("vault-{cluster}-{stamp}-{}.vbk", index + 1);
        std::fs::write(dest.join(&bad), &bytes).unwrap();
        let out = vaultctl(&n.url(), Some(&n.token), &["snapshot", "list", "--verify"]);
        assert!(!out.status.success(), "a corrupted backup fails the listing");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text.lines().find(|l| l.starts_with(&bad)).unwrap_or_else(|| panic!("{text}"));
        assert!(line.contains("FAILED"), "{line}");
        assert!(text.lines().any(|l| l.starts_with(&good) && l.contains("verified")), "{text}");

        // An intact older backup renamed as a later one: its header says otherwise.
        let oldest = names.first().unwrap().clone();
        let renamed = format!("vault-{cluster}-{stamp}-{}.vbk", index + 2);
        std::fs::copy(dest.join(&oldest), dest.join(&renamed)).unwrap();
        let out = vaultctl(&n.url(), Some(&n.token), &["snapshot", "list", "--verify"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text.lines().find(|l| l.starts_with(&renamed)).unwrap_or_else(|| panic!("{text}"));
        assert!(line.contains("FAILED"), "a renamed backup is not taken for a newer one: {line}");
        let err = must_fail_vaultctl(&n.url(), Some(&n.token), &["snapshot", "restore", "--name", &renamed]);
        assert!(err.contains("does not match its contents"), "{err}");
        std::fs::remove_file(dest.join(&renamed)).unwrap();

        // Changes after the backup, then the corrupted one is refused with nothing changed.
        n.ctl(&["secret", "put", "app/a", "--value", "changed"]);
        n.ctl(&["secret", "delete", "app/b"]);
        n.ctl(&["secret", "put", "app/c", "--value", "new"]);
        let err = must_fail_vaultctl(&n.url(), Some(&n.token), &["snapshot", "restore", "--name", &bad]);
        assert!(err.contains("nothing was changed"), "{err}");
        assert_eq!(n.ctl(&["secret", "get", "app/a"]), "changed");
        let err = must_fail_vaultctl(&n.url(), Some(&n.token), &["snapshot", "restore", "--name", "../etc/passwd"]);
        assert!(err.contains("invalid argument"), "{err}");

        let said = n.ctl(&["snapshot", "restore", "--name", &good]);
        assert!(said.contains(&format!("at index {index}")), "{said}");
        assert_eq!(n.ctl(&["secret", "get", "app/a"]), "one");
        assert_eq!(n.ctl(&["secret", "get", "app/b"]), "two");
        let missing = must_fail_vaultctl(&n.url(), Some(&n.token), &["secret", "get", "app/c"]);
        assert!(missing.contains("not found"), "{missing}");
    });
}

/// A destination that cannot be written (a file where the directory should be) fails every
/// attempt: counted in `vault_backup_failures_total`, stamped in the failure metric, shown by
/// status (the reason only to admins, in `snapshot list`); once the path is free again the
/// next retry succeeds and the failing count goes back to 0.
#[test]
fn a_failing_destination_is_counted_shown_and_recovers() {
    mt().block_on(async {
        let work = test_dir();
        let dest = work.path().join("backups");
        std::fs::write(&dest, b"not a directory").unwrap();
        let mut metrics = String::new();
        let n = SingleNode::start(|s| {
            with_backups(s, &dest, "1s", "3");
            metrics = with_metrics(s);
        })
        .await;
        let failing = wait_for(30, "two failures", || {
            let s = status(&n.url(), &n.token);
            (s["backup"]["failing_since_success"].as_u64().unwrap_or(0) >= 2).then_some(s)
        })
        .await;
        assert!(failing["backup"]["last_success_ms"].is_null(), "{failing}");
        assert!(failing["backup"]["last_failure_ms"].as_u64().is_some(), "{failing}");
        let scrape = scrape(&metrics).await;
        assert!(total(&scrape, "vault_backup_failures_total", &[]) >= 2.0, "{scrape}");
        assert!(sample(&scrape, "vault_backup_last_failure_timestamp_seconds").is_some());
        let err = must_fail_vaultctl(&n.url(), Some(&n.token), &["snapshot", "list"]);
        assert!(err.contains("unavailable") && err.contains("Not a directory"), "{err}");
        assert!(n.node.log().contains("scheduled backup failed"), "one log line per failure");

        std::fs::remove_file(&dest).unwrap();
        let ok = wait_for(30, "a success after the failures", || {
            let s = status(&n.url(), &n.token);
            (s["backup"]["last_success_ms"].as_u64().is_some()).then_some(s)
        })
        .await;
        assert_eq!(ok["backup"]["failing_since_success"].as_u64(), Some(0), "{ok}");
        assert!(!backups_in(&dest).0.is_empty());
    });
}

/// `VAULT_BACKUP_MAX_AGE` removes this cluster's backups older than it (and nothing else in
/// the directory, not another cluster's backup), never the newest.
#[test]
fn backups_older_than_the_maximum_age_are_removed() {
    mt().block_on(async {
        let work = test_dir();
        let dest = work.path().join("backups");
        std::fs::create_dir_all(&dest).unwrap();
        let foreign = "vault-000000000000-20200101T000000Z-1.vbk";
        std::fs::write(dest.join(foreign), b"another cluster's").unwrap();
        let n = SingleNode::start(|s| {
            with_backups(s, &dest, "1s", "0");
            s.set("VAULT_BACKUP_MAX_AGE", "3s");
        })
        .await;
        let first = wait_for(30, "a first backup", || backups_in(&dest).0.into_iter().find(|n| n != foreign)).await;
        wait_for(30, "the first backup to age out", || (!backups_in(&dest).0.contains(&first)).then_some(())).await;
        let (names, _) = backups_in(&dest);
        assert!(names.contains(&foreign.to_string()), "another cluster's file is left alone: {names:?}");
        let now = vault_core::time::now_ms();
        // Listed (a restore after a key rotation finds backups under the old id), but it does not
        // verify: its MAC is not under this cluster's key.
        let out = n.node.vaultctl(Some(&n.token), &["--output", "json", "snapshot", "list", "--verify"]);
        let listed = json_of(&String::from_utf8_lossy(&out.stdout));
        let listed = listed["backups"].as_array().expect("backups").clone();
        let theirs = listed.iter().find(|b| b["name"] == foreign).expect("another cluster's name is listed");
        assert_eq!(theirs["verified"], serde_json::Value::Bool(false), "{theirs}");
        let listed: Vec<_> = listed.into_iter().filter(|b| b["name"] != foreign).collect();
        assert!(!listed.is_empty(), "the newest stays");
        for b in &listed {
            let at = b["created_ms"].as_u64().expect("created_ms");
            assert!(now.saturating_sub(at) < 6_000, "{b} is past the maximum age");
        }
        drop(n);
    });
}

/// Three nodes share one destination directory: only the leader writes; after a leader
/// transfer, and after the leader is killed, the new leader carries on with later indexes;
/// no partial file is ever left under a backup's name, and every file there verifies.
#[test]
fn three_nodes_back_up_from_the_leader_only_and_across_leader_changes() {
    mt().block_on(async {
        let work = test_dir();
        let dest = work.path().join("backups");
        let d = dest.clone();
        let mut c = TestCluster::start(3, move |s| with_backups(s, &d, "1s", "4")).await;
        c.ctl(0, &["secret", "put", "app/a", "--value", "one"]);
        let leader = c.leader_seen_by(0, |_| true).await;
        let by_leader = |c: &TestCluster, i: usize| {
            let s = status(&c.url(i), &c.token);
            s["backup"]["last_name"].as_str().filter(|n| !n.is_empty()).map(str::to_string)
        };
        wait_for(30, "a backup by the leader", || by_leader(&c, leader)).await;
        // While it leads, only the leader writes.
        let written = |c: &TestCluster, i: usize| c.nodes[i].log().matches("scheduled backup written").count();
        let before: Vec<usize> = (0..3).map(|i| written(&c, i)).collect();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(c.leader_seen_by(0, |_| true).await, leader, "the leader held on");
        for (i, was) in before.iter().enumerate() {
            let now = written(&c, i);
            if i == leader {
                assert!(now >= was + 2, "the leader writes every second: {was} then {now}");
            } else {
                assert_eq!(now, *was, "node index {i} follows and writes nothing");
            }
        }
        let later_than = |c: &TestCluster, i: usize, than: &str| {
            by_leader(c, i).filter(|n| parts(n).1 > parts(than).1 && parts(n).2 >= parts(than).2)
        };

        // Transfer: the new leader writes later backups.
        let target = (leader + 1) % 3;
        let target_id = c.specs[target].node_id;
        c.ctl(leader, &["cluster", "transfer-leader", &target_id.to_string()]);
        c.leader_seen_by(leader, |id| id == target_id).await;
        let first = by_leader(&c, leader).expect("the old leader's last");
        wait_for(30, "a backup by the new leader", || later_than(&c, target, &first)).await;

        // Killed: whoever leads next carries on.
        let after = by_leader(&c, target).expect("the new leader's last");
        c.nodes[target].kill();
        let survivor = (target + 1) % 3;
        let next = c.leader_seen_by(survivor, |id| id != target_id).await;
        wait_for(30, "a backup by the leader after the kill", || later_than(&c, next, &after)).await;

        // Everything under a backup's name is whole and verifies; the listing is the files.
        let listed = json_of(&c.ctl(next, &["--output", "json", "snapshot", "list", "--verify"]));
        let listed = listed["backups"].as_array().expect("backups").clone();
        assert!(!listed.is_empty() && listed.len() <= 5, "{listed:?}");
        for b in &listed {
            assert_eq!(b["verified"], Value::Bool(true), "{b}");
        }
        let (names, _) = backups_in(&dest);
        let clusters: std::collections::BTreeSet<String> = names.iter().map(|n| parts(n).0).collect();
        assert_eq!(clusters.len(), 1, "one cluster id across leaders: {names:?}");
        assert!(listed.iter().all(|b| names.contains(&b["name"].as_str().unwrap().to_string())));

        // Restore the newest by name: the write acknowledged before it reads back.
        c.ctl(next, &["secret", "put", "app/a", "--value", "later"]);
        let newest = listed.last().unwrap()["name"].as_str().unwrap().to_string();
        c.ctl(next, &["snapshot", "restore", "--name", &newest]);
        assert_eq!(c.ctl(next, &["secret", "get", "app/a"]), "one");
    });
}

/// Scheduled backups to S3 (moto on loopback): objects appear under the prefix with the naming
/// scheme, retention keeps the newest two, `snapshot list --verify` shows them verified, an
/// object altered in the bucket is listed as failed and refused, and `restore --name` of a
/// good one brings back the writes acknowledged before it.
#[test]
fn scheduled_backups_to_s3_are_verified_kept_listed_and_restore_by_name() {
    mt().block_on(async {
        let moto = vault_tests::moto::Moto::start();
        let (bucket, prefix) = ("vault-backups", "prod/");
        moto.create_bucket(bucket);
        let mut n = SingleNode::start(|s| {
            moto.configure_s3(s, bucket, prefix);
            s.set("VAULT_BACKUP_EVERY", "1s");
            s.set("VAULT_BACKUP_KEEP", "2");
        })
        .await;
        n.ctl(&["secret", "put", "app/a", "--value", "one"]);
        let first = wait_for(30, "a backup in S3", || moto.s3_keys(bucket, prefix).first().cloned()).await;
        let later = wait_for(30, "retention in S3", || {
            let keys = moto.s3_keys(bucket, prefix);
            (keys.len() == 2 && !keys.contains(&first)).then_some(keys)
        })
        .await;
        for k in &later {
            parts(k.strip_prefix(prefix).expect("under the prefix"));
        }
        let s = status(&n.url(), &n.token);
        assert_eq!(s["backup"]["failures"].as_u64(), Some(0), "{s}");
        assert_eq!(s["backup"]["destination"].as_str(), Some(""), "not told to all: {s}");
        let listed = json_of(&n.ctl(&["--output", "json", "snapshot", "list"]));
        assert_eq!(listed["destination"].as_str(), Some("s3://vault-backups/prod/"), "{listed}");

        n.spec.env.remove("VAULT_BACKUP_EVERY");
        n.restart().await;
        let listed = json_of(&n.ctl(&["--output", "json", "snapshot", "list", "--verify"]));
        let listed = listed["backups"].as_array().expect("backups").clone();
        let keys = moto.s3_keys(bucket, prefix);
        assert_eq!(listed.len(), keys.len(), "{listed:?} {keys:?}");
        assert!(listed.iter().all(|b| b["verified"] == Value::Bool(true)), "{listed:?}");
        let good = listed.last().unwrap()["name"].as_str().unwrap().to_string();
        let (cluster, stamp, index) = parts(&good);

        let (code, mut bytes) = moto.s3_request("GET", &format!("/{bucket}/{prefix}{good}"), b"");
        assert_eq!(code, 200);
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        let bad = format!("vault-{cluster}-{stamp}-{}.vbk", index + 1);
        assert_eq!(moto.s3_request("PUT", &format!("/{bucket}/{prefix}{bad}"), &bytes).0, 200);
        let out = vaultctl(&n.url(), Some(&n.token), &["snapshot", "list", "--verify"]);
        assert!(!out.status.success());
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.lines().any(|l| l.starts_with(&bad) && l.contains("FAILED")), "{text}");

        n.ctl(&["secret", "put", "app/a", "--value", "changed"]);
        let err = must_fail_vaultctl(&n.url(), Some(&n.token), &["snapshot", "restore", "--name", &bad]);
        assert!(err.contains("nothing was changed"), "{err}");
        assert_eq!(n.ctl(&["secret", "get", "app/a"]), "changed");
        n.ctl(&["snapshot", "restore", "--name", &good]);
        assert_eq!(n.ctl(&["secret", "get", "app/a"]), "one");
    });
}
