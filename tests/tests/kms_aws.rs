//! AWS KMS mode and the re-wrap worker against a real KMS API (moto's server on loopback).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tonic::Code;
use vault_node::pb;
use vault_tests::moto::Moto;
use vault_tests::*;

fn mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

async fn put(url: &str, token: &str, name: &str, value: &str) -> Result<u64, tonic::Status> {
    let mut c = secrets_client(url).await;
    Ok(c.put_secret(authed(
        pb::PutSecretRequest { name: name.into(), value: value.as_bytes().to_vec(), ..Default::default() },
        token,
    ))
    .await?
    .into_inner()
    .version)
}

async fn get(url: &str, name: &str) -> Result<Vec<u8>, tonic::Status> {
    let mut c = secrets_client(url).await;
    Ok(c.get_secret(pb::GetSecretRequest { name: name.into(), version: 0 }).await?.into_inner().value)
}

async fn versions(url: &str, token: &str, name: &str) -> pb::ListVersionsResponse {
    let mut c = secrets_client(url).await;
    c.list_versions(authed(pb::ListVersionsRequest { name: name.into() }, token)).await.expect("versions").into_inner()
}

async fn kms_status(url: &str, token: &str) -> pb::KmsStatusResponse {
    let ch = tonic::transport::Channel::from_shared(url.to_string()).unwrap().connect().await.unwrap();
    let mut admin = pb::admin_client::AdminClient::new(ch);
    admin.kms_status(authed(pb::KmsStatusRequest {}, token)).await.expect("kms status").into_inner()
}

/// Every version of every name: (ciphertext fingerprint, wrapped-DEK fingerprint, watermark, key id).
async fn snapshot_versions(
    url: &str,
    token: &str,
    names: &[String],
) -> BTreeMap<(String, u64), (String, String, u64, String)> {
    let mut out = BTreeMap::new();
    for n in names {
        for v in versions(url, token, n).await.versions {
            out.insert(
                (n.clone(), v.version),
                (v.ciphertext_sha256, v.wrapped_dek_sha256, v.rewrap_watermark_ms, v.key_id),
            );
        }
    }
    out
}

#[test]
fn aws_mode_cluster_seals_reads_and_stores_the_resolved_arn() {
    mt().block_on(async {
        let moto = Moto::start();
        let (_, arn) = moto.create_key("alias/vault-it").await;
        let c = TestCluster::start(3, |s| moto.configure(s, "alias/vault-it")).await;
        for i in 0..3 {
            put(&c.url(i), &c.token, &format!("aws/{i}"), &format!("sealed-by-kms-{i}")).await.unwrap();
        }
        for i in 0..3 {
            for j in 0..3 {
                assert_eq!(get(&c.url(j), &format!("aws/{i}")).await.unwrap(), format!("sealed-by-kms-{i}").as_bytes());
            }
            let v = versions(&c.url(i), &c.token, &format!("aws/{i}")).await;
            assert_eq!(v.versions[0].key_id, arn, "the alias resolves to the ARN, which is stored");
            assert!(arn.starts_with("arn:aws:kms:"), "{arn}");
        }
        let s = kms_status(&c.url(0), &c.token).await;
        assert_eq!(s.kind, "aws");
        assert_eq!(s.key_id, arn);
        assert!(!s.enabled, "the worker is off unless VAULT_KMS_REWRAP_ENABLED");
        let err = must_fail_vaultctl(&c.url(0), Some(&c.token), &["kms", "rewrap"]);
        assert!(err.contains("failed precondition") && err.contains("disabled"), "{err}");
    });
}

#[test]
fn worker_adopts_a_baseline_then_rewraps_every_version_after_a_rotation() {
    mt().block_on(async {
        let moto = Moto::start();
        let (key_id, arn) = moto.create_key("alias/vault-rw").await;
        let first_rotation = moto.rotate(&key_id).await;

        // Phase 1: worker off. Versions are written (watermark 0).
        let mut c = TestCluster::start(3, |s| moto.configure(s, "alias/vault-rw")).await;
        let mut names = Vec::new();
        for i in 0..8 {
            let name = format!("rw/{i}");
            put(&c.url(i % 3), &c.token, &name, &format!("v1-{i}")).await.unwrap();
            put(&c.url((i + 1) % 3), &c.token, &name, &format!("v2-{i}")).await.unwrap();
            names.push(name);
        }
        c.ctl(0, &["secret", "delete", "rw/0", "--versions", "2"]);
        c.ctl(0, &["secret", "destroy", "rw/1", "--versions", "1"]);
        let before = snapshot_versions(&c.url(0), &c.token, &names).await;

        // Phase 2: every node restarts with the worker on (rolling). The leader adopts the
        // newest rotation as its baseline and sweeps nothing.
        for i in 0..3 {
            c.nodes[i].stop();
            c.specs[i].set("VAULT_KMS_REWRAP_ENABLED", "true");
            c.specs[i].set("VAULT_KMS_REWRAP_POLL_SECS", "3600");
            c.specs[i].set("VAULT_KMS_REWRAP_MAX_PER_SEC", "50");
            c.nodes[i] = c.specs[i].start();
            c.nodes[i].wait_ready().await;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            let leader = c.leader_seen_by(0, |_| true).await;
            let s = kms_status(&c.url(leader), &c.token).await;
            if s.watermark_ms.is_some() {
                break s;
            }
            assert!(Instant::now() < deadline, "no baseline adopted: {s:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(status.enabled);
        assert_eq!(status.watermark_ms, Some(first_rotation), "baseline = newest rotation");
        assert_eq!(status.pending_versions, 0);
        assert_eq!(snapshot_versions(&c.url(1), &c.token, &names).await, before, "adoption sweeps nothing");

        // Phase 3: a new rotation; `kms rewrap` through a follower follows the leader.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let second_rotation = moto.rotate(&key_id).await;
        assert!(second_rotation > first_rotation);
        let leader = c.leader_seen_by(0, |_| true).await;
        let follower = (leader + 1) % 3;
        let out = c.ctl(follower, &["kms", "rewrap"]);
        assert!(out.contains("started") && out.contains("pass finished: 0 pending"), "{out}");

        let after = snapshot_versions(&c.url(follower), &c.token, &names).await;
        assert_eq!(after.len(), before.len());
        for (key, (ct, dek, watermark, key_arn)) in &after {
            let (ct0, dek0, _, _) = &before[key];
            assert_eq!(ct, ct0, "{key:?}: value ciphertext untouched");
            if ct.is_empty() {
                assert!(dek.is_empty(), "{key:?}: destroyed stays destroyed");
                continue;
            }
            assert_ne!(dek, dek0, "{key:?}: DEK re-wrapped");
            assert_eq!(*watermark, second_rotation, "{key:?}: watermark advanced");
            assert_eq!(key_arn, &arn);
        }
        for i in 1..8 {
            assert_eq!(get(&c.url(i % 3), &format!("rw/{i}")).await.unwrap(), format!("v2-{i}").as_bytes());
        }
        assert_eq!(get(&c.url(2), "rw/0").await.unwrap(), b"v1-0", "soft-deleted v2 hides; v1 still opens");
        c.ctl(0, &["secret", "undelete", "rw/0", "--versions", "2"]);
        assert_eq!(get(&c.url(1), "rw/0").await.unwrap(), b"v2-0", "a re-wrapped soft-deleted version opens");
        let s = kms_status(&c.url(leader), &c.token).await;
        assert_eq!((s.watermark_ms, s.pending_versions, s.pass_failed), (Some(second_rotation), 0, 0));

        // Re-running is harmless.
        let again = c.ctl(leader, &["kms", "rewrap"]);
        assert!(again.contains("up to date"), "{again}");
        assert_eq!(snapshot_versions(&c.url(0), &c.token, &names).await, after);
    });
}

#[test]
fn a_pass_interrupted_by_killing_the_leader_is_finished_by_the_next_one() {
    mt().block_on(async {
        let moto = Moto::start();
        let (key_id, _) = moto.create_key("alias/vault-kill").await;
        let mut c = TestCluster::start(3, |s| {
            moto.configure(s, "alias/vault-kill");
            s.set("VAULT_KMS_REWRAP_ENABLED", "true");
            s.set("VAULT_KMS_REWRAP_POLL_SECS", "3600");
            s.set("VAULT_KMS_REWRAP_MAX_PER_SEC", "6");
        })
        .await;
        let names: Vec<String> = (0..36).map(|i| format!("kill/{i}")).collect();
        for (i, n) in names.iter().enumerate() {
            put(&c.url(i % 3), &c.token, n, &format!("value-{i}")).await.unwrap();
        }
        let rotation = moto.rotate(&key_id).await;
        let leader = c.leader_seen_by(0, |_| true).await;
        let out = c.ctl(leader, &["kms", "rewrap", "--no-wait"]);
        assert!(out.contains("36 version(s)"), "{out}");
        // Let part of the pass happen, then crash the leader.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = kms_status(&c.url(leader), &c.token).await;
            if s.pass_done >= 6 {
                assert!(s.pass_done < 36, "the pass should still be running: {s:?}");
                break;
            }
            assert!(Instant::now() < deadline, "pass made no progress: {s:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Another request while the pass runs is answered at once with its progress: the
        // worker takes requests only between passes, so it would otherwise wait for the pass.
        let during = c.ctl(leader, &["kms", "rewrap", "--no-wait"]);
        assert!(during.contains("already running") && during.contains("/36 re-wrapped"), "{during}");
        c.nodes[leader].kill();
        let survivor = (leader + 1) % 3;
        let new_leader = c.leader_seen_by(survivor, |id| id != c.specs[leader].node_id).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let s = loop {
            let s = kms_status(&c.url(new_leader), &c.token).await;
            if s.pending_versions == 0 && s.watermark_ms == Some(rotation) {
                break s;
            }
            assert!(Instant::now() < deadline, "new leader did not finish the pass: {s:?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert!(s.pass_done < 36, "the new leader resumed rather than redoing everything: {s:?}");
        for (i, n) in names.iter().enumerate() {
            let v = versions(&c.url(survivor), &c.token, n).await;
            assert_eq!(v.versions[0].rewrap_watermark_ms, rotation, "{n}");
            assert_eq!(get(&c.url(new_leader), n).await.unwrap(), format!("value-{i}").as_bytes());
        }
    });
}

#[test]
fn kms_outage_reads_from_cache_within_ttl_then_unavailable_and_writes_fail_cleanly() {
    mt().block_on(async {
        let mut moto = Moto::start();
        moto.create_key("alias/vault-outage").await;
        let dir = test_dir();
        let token = random_token();
        let mut spec = NodeSpec::single(dir.path(), &token, &random_master_key());
        moto.configure(&mut spec, "alias/vault-outage");
        spec.set("VAULT_DEK_CACHE_TTL_SECS", "8");
        let mut node = spec.start();
        node.wait_ready().await;
        let url = node.url();
        put(&url, &token, "o/warm", "cached").await.unwrap();
        put(&url, &token, "o/cold", "never-read").await.unwrap();
        assert_eq!(get(&url, "o/warm").await.unwrap(), b"cached");
        // The DEK of o/warm entered the cache with the read above.
        let cached_at = Instant::now();

        moto.stop();
        assert_eq!(get(&url, "o/warm").await.unwrap(), b"cached", "served from the DEK cache");
        let cold = get(&url, "o/cold").await.unwrap_err();
        assert_eq!(cold.code(), Code::Unavailable, "{cold}");
        assert!(cold.message().contains("key management service unavailable"), "{}", cold.message());
        let w = put(&url, &token, "o/warm", "during-outage").await.unwrap_err();
        assert_eq!(w.code(), Code::Unavailable, "{w}");
        let w = put(&url, &token, "o/new", "during-outage").await.unwrap_err();
        assert_eq!(w.code(), Code::Unavailable, "{w}");

        tokio::time::sleep((Duration::from_secs(8) + Duration::from_millis(500)).saturating_sub(cached_at.elapsed()))
            .await;
        let e = get(&url, "o/warm").await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "past the TTL: {e}");

        // Nothing half-written: one version of o/warm, no o/new.
        let v = versions(&url, &token, "o/warm").await;
        assert_eq!(v.current_version, 1);
        let mut c = secrets_client(&url).await;
        let listed = c.list_secrets(authed(pb::ListSecretsRequest::default(), &token)).await.unwrap().into_inner();
        let names: Vec<&str> = listed.secrets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["o/cold", "o/warm"]);
        node.stop();
    });
}

#[test]
fn a_node_configured_with_another_aws_key_seals_nothing_and_loses_nothing() {
    mt().block_on(async {
        let moto = Moto::start();
        let (_, arn) = moto.create_key("alias/vault-cluster").await;
        let (_, other_arn) = moto.create_key("alias/vault-other").await;
        let mut c = TestCluster::start(1, |s| moto.configure(s, "alias/vault-cluster")).await;
        put(&c.url(0), &c.token, "aws/x", "v1").await.unwrap();
        c.nodes[0].stop();
        moto.configure(&mut c.specs[0], "alias/vault-other");
        c.nodes[0] = c.specs[0].start();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !c.nodes[0].log().contains("is not the cluster's master key") {
            assert!(Instant::now() < deadline, "no key mismatch logged:\n{}", c.nodes[0].log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = c.nodes[0].log();
        assert!(log.contains(&arn) && log.contains(&other_arn), "both ARNs logged:\n{log}");
        let e = put(&c.url(0), &c.token, "aws/x", "v2").await.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
        assert!(e.message().contains(&arn) && e.message().contains(&other_arn), "{e}");
        c.nodes[0].stop();
        moto.configure(&mut c.specs[0], "alias/vault-cluster");
        c.nodes[0] = c.specs[0].start();
        c.nodes[0].wait_ready().await;
        assert_eq!(get(&c.url(0), "aws/x").await.unwrap(), b"v1");
        let v = versions(&c.url(0), &c.token, "aws/x").await;
        assert_eq!(v.versions.iter().map(|v| v.version).collect::<Vec<_>>(), vec![1], "nothing acknowledged meanwhile");
    });
}

/// Credentials and region come from the SDK's default chain: here only from a profile in the
/// shared config and credentials files (no `AWS_*` key variables). Without any source the node
/// refuses to start and says where it looked. The instance-metadata lookup is off in tests.
#[test]
fn credentials_and_region_come_from_the_default_chain_profile_files() {
    mt().block_on(async {
        let moto = Moto::start();
        moto.create_key("alias/vault-profile").await;
        let dir = test_dir();
        let config = dir.path().join("aws-config");
        let credentials = dir.path().join("aws-credentials");
        std::fs::write(&config, format!("[profile vault-it]\nregion = {}\n", vault_tests::moto::REGION)).unwrap();
        std::fs::write(&credentials, "[vault-it]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
            .unwrap();
        let from_files = |s: &mut NodeSpec| {
            moto.configure(s, "alias/vault-profile");
            for k in ["AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
                s.env.remove(k);
            }
            s.set("AWS_CONFIG_FILE", config.to_str().unwrap());
            s.set("AWS_SHARED_CREDENTIALS_FILE", credentials.to_str().unwrap());
        };
        let n = SingleNode::start(|s| {
            from_files(s);
            s.set("AWS_PROFILE", "vault-it");
        })
        .await;
        put(&n.url(), &n.token, "aws/profile", "sealed-with-profile-credentials").await.unwrap();
        assert_eq!(get(&n.url(), "aws/profile").await.unwrap(), b"sealed-with-profile-credentials");

        // A profile that does not exist: no credentials anywhere. The node stops at start,
        // naming the chain.
        let scratch = test_dir();
        let mut spec = NodeSpec::single(scratch.path(), &random_token(), &random_master_key());
        from_files(&mut spec);
        spec.set("AWS_PROFILE", "no-such-profile").set("AWS_REGION", vault_tests::moto::REGION);
        let mut p = spec.start();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while p.is_running() {
            assert!(std::time::Instant::now() < deadline, "a node without credentials kept running");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = p.log();
        assert!(log.contains("no AWS credentials"), "{log}");
    });
}
