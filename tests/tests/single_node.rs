//! One real `vault-node` process, driven by the real `vaultctl` and a gRPC client.

use std::time::Duration;

use tonic::Code;
use vault_node::pb;
use vault_tests::*;

struct Dev {
    spec: NodeSpec,
    node: NodeProcess,
    token: String,
    master: String,
    /// Last: fields drop in declaration order, and the node must be gone before its directory.
    _dir: tempfile::TempDir,
}

async fn start_with(tune: impl FnOnce(&mut NodeSpec)) -> Dev {
    let dir = test_dir();
    let token = random_token();
    let master = random_master_key();
    let mut spec = NodeSpec::single(dir.path(), &token, &master);
    tune(&mut spec);
    let mut node = spec.start();
    node.wait_ready().await;
    Dev { _dir: dir, spec, node, token, master }
}

async fn start() -> Dev {
    start_with(|_| {}).await
}

impl Dev {
    fn ctl(&self, args: &[&str]) -> String {
        must_vaultctl(&self.node.url(), Some(&self.token), args)
    }

    fn ctl_err(&self, args: &[&str]) -> String {
        must_fail_vaultctl(&self.node.url(), Some(&self.token), args)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_versions_and_cas() {
    let d = start().await;
    assert_eq!(d.ctl(&["secret", "put", "app/db", "--value", "s3cr3t"]).trim(), "1");
    assert_eq!(d.ctl(&["secret", "get", "app/db"]), "s3cr3t", "value prints raw, no newline");
    assert_eq!(d.ctl(&["secret", "put", "app/db", "--value", "second", "--cas", "1"]).trim(), "2");
    assert_eq!(d.ctl(&["secret", "get", "app/db"]), "second");
    assert_eq!(d.ctl(&["secret", "get", "app/db", "--version", "1"]), "s3cr3t");

    let err = d.ctl_err(&["secret", "put", "app/db", "--value", "lost", "--cas", "1"]);
    assert!(err.contains("failed precondition") && err.contains("current version is 2"), "{err}");
    let err = d.ctl_err(&["secret", "put", "app/db", "--value", "lost", "--cas", "0"]);
    assert!(err.contains("failed precondition"), "{err}");
    assert_eq!(d.ctl(&["secret", "get", "app/db"]), "second", "a failed CAS changes nothing");

    let versions = d.ctl(&["--output", "json", "secret", "versions", "app/db"]);
    assert!(versions.contains("\"current_version\": 2"), "{versions}");
    assert!(!versions.contains("s3cr3t") && !versions.contains("second"), "versions never show values");

    // Lifecycle: soft delete falls back to the previous live version; undelete; destroy.
    d.ctl(&["secret", "delete", "app/db", "--versions", "2"]);
    assert_eq!(d.ctl(&["secret", "get", "app/db"]), "s3cr3t");
    let err = d.ctl_err(&["secret", "get", "app/db", "--version", "2"]);
    assert!(err.contains("not found") && err.contains("deleted"), "{err}");
    d.ctl(&["secret", "undelete", "app/db", "--versions", "2"]);
    assert_eq!(d.ctl(&["secret", "get", "app/db"]), "second");
    d.ctl(&["secret", "destroy", "app/db", "--versions", "1"]);
    let err = d.ctl_err(&["secret", "get", "app/db", "--version", "1"]);
    assert!(err.contains("destroyed"), "{err}");

    let listing = d.ctl(&["secret", "list", "--prefix", "app/"]);
    assert!(listing.contains("app/db"), "{listing}");
    // Deleting the secret soft-deletes every version: it can come back.
    d.ctl(&["secret", "delete", "app/db"]);
    let err = d.ctl_err(&["secret", "get", "app/db"]);
    assert!(err.starts_with("error: not found"), "{err}");
    d.ctl(&["secret", "undelete", "app/db", "--versions", "2"]);
    assert_eq!(d.ctl(&["secret", "get", "app/db"]), "second");
    // Destroying it purges every version for good, and its version numbers are never reused.
    d.ctl(&["secret", "destroy", "app/db", "--all"]);
    let err = d.ctl_err(&["secret", "get", "app/db", "--version", "2"]);
    assert!(err.contains("destroyed"), "{err}");
    assert_eq!(d.ctl(&["secret", "put", "app/db", "--value", "again"]).trim(), "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn value_from_file_and_stdin_free_binary_values() {
    let d = start().await;
    let path = d.spec.dir.join("blob.bin");
    let blob: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    std::fs::write(&path, &blob).unwrap();
    d.ctl(&["secret", "put", "bin/blob", "--file", path.to_str().unwrap()]);
    let out = vaultctl(&d.node.url(), Some(&d.token), &["secret", "get", "bin/blob"]);
    assert!(out.status.success());
    assert_eq!(out.stdout, blob, "binary values round-trip byte for byte");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_changes_nothing() {
    let d = start().await;
    d.ctl(&["secret", "put", "ok/one", "--value", "v1"]);

    let err = d.ctl_err(&["secret", "put", "bad name", "--value", "x"]);
    assert!(err.contains("invalid argument") && err.contains("not allowed"), "{err}");
    let err = d.ctl_err(&["secret", "put", "/abs", "--value", "x"]);
    assert!(err.contains("invalid argument") && err.contains("start with '/'"), "{err}");
    let err = d.ctl_err(&["secret", "put", "a/../b", "--value", "x"]);
    assert!(err.contains("invalid argument") && err.contains("'..'"), "{err}");

    let big = d.spec.dir.join("big.bin");
    std::fs::write(&big, vec![b'a'; 1024 * 1024]).unwrap();
    let err = d.ctl_err(&["secret", "put", "ok/one", "--file", big.to_str().unwrap()]);
    assert!(err.contains("invalid argument") && err.contains("1048576 bytes"), "{err}");

    let err = d.ctl_err(&["secret", "put", "ok/one", "--value", "x", "--cas", "7"]);
    assert!(err.contains("failed precondition"), "{err}");

    let err = must_fail_vaultctl(&d.node.url(), None, &["secret", "put", "ok/one", "--value", "x"]);
    assert!(err.contains("unauthenticated") && err.contains("Bearer"), "{err}");
    let err = must_fail_vaultctl(&d.node.url(), Some(&random_token()), &["secret", "put", "ok/one", "--value", "x"]);
    assert!(err.contains("unauthenticated") && err.contains("unknown or revoked"), "{err}");

    let err = d.ctl_err(&["role", "create", "r", "--grant", "fly:app/*"]);
    assert!(err.contains("invalid argument") && err.contains("unknown action"), "{err}");
    let err = d.ctl_err(&["role", "delete", "admin"]);
    assert!(err.contains("failed precondition"), "{err}");
    let err = d.ctl_err(&["token", "create", "t", "--role", "nope"]);
    assert!(err.contains("not found") && err.contains("role nope"), "{err}");

    // Nothing above changed the secret or created anything.
    let versions = d.ctl(&["--output", "json", "secret", "versions", "ok/one"]);
    assert!(versions.contains("\"current_version\": 1"), "{versions}");
    assert_eq!(d.ctl(&["secret", "get", "ok/one"]), "v1");
    let names = d.ctl(&["secret", "list"]);
    assert_eq!(names.lines().count(), 2, "header plus ok/one only: {names}");
    assert!(!d.ctl(&["token", "list"]).contains("\nt "));
    assert!(!d.ctl(&["role", "list"]).contains("\nr "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_grants_and_immediate_revocation() {
    let d = start().await;
    d.ctl(&["role", "create", "app-writer", "--grant", "create,update:app/*"]);
    let ci = d.ctl(&["token", "create", "ci", "--role", "app-writer"]).trim().to_string();
    assert_eq!(ci.len(), 43, "32 random bytes, base64url");
    let url = d.node.url();

    assert_eq!(must_vaultctl(&url, Some(&ci), &["secret", "put", "app/x", "--value", "1"]).trim(), "1");
    assert_eq!(must_vaultctl(&url, Some(&ci), &["secret", "put", "app/x", "--value", "2"]).trim(), "2");
    let err = must_fail_vaultctl(&url, Some(&ci), &["secret", "put", "other/x", "--value", "1"]);
    assert!(err.contains("permission denied") && err.contains("other/x"), "{err}");
    let err = must_fail_vaultctl(&url, Some(&ci), &["secret", "delete", "app/x"]);
    assert!(err.contains("permission denied"), "{err}");
    let err = must_fail_vaultctl(&url, Some(&ci), &["token", "list"]);
    assert!(err.contains("permission denied") && err.contains("admin"), "{err}");
    // Listing needs `list`, which this role grants on nothing.
    let err = must_fail_vaultctl(&url, Some(&ci), &["secret", "list"]);
    assert!(err.contains("permission denied"), "{err}");

    d.ctl(&["token", "revoke", "ci"]);
    let err = must_fail_vaultctl(&url, Some(&ci), &["secret", "put", "app/x", "--value", "3"]);
    assert!(err.contains("unauthenticated"), "{err}");
    assert_eq!(d.ctl(&["secret", "get", "app/x"]), "2");

    // Expiry.
    let short = d.ctl(&["token", "create", "short", "--role", "app-writer", "--ttl", "1s"]).trim().to_string();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let err = must_fail_vaultctl(&url, Some(&short), &["secret", "put", "app/y", "--value", "1"]);
    assert!(err.contains("expired"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_survive_restart_and_crash() {
    let mut d = start().await;
    for i in 0..20 {
        d.ctl(&["secret", "put", &format!("svc/{i}"), "--value", &format!("value-{i}")]);
    }
    d.node.stop();
    d.node = d.spec.start();
    d.node.wait_ready().await;
    for i in 0..20 {
        assert_eq!(d.ctl(&["secret", "get", &format!("svc/{i}")]), format!("value-{i}"));
    }
    // Acknowledged writes survive a SIGKILL.
    d.ctl(&["secret", "put", "svc/after", "--value", "acked"]);
    d.node.kill();
    d.node = d.spec.start();
    d.node.wait_ready().await;
    assert_eq!(d.ctl(&["secret", "get", "svc/after"]), "acked");
    // The bootstrap token from the environment still works and is not duplicated.
    let tokens = d.ctl(&["token", "list"]);
    assert_eq!(tokens.matches("bootstrap-admin").count(), 1, "{tokens}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_bootstrap_token_stays_revoked_after_restart() {
    let mut d = start().await;
    d.ctl(&["role", "create", "ops", "--grant", "*:*"]);
    let other_admin = d.ctl(&["token", "create", "ops-admin", "--role", "admin"]).trim().to_string();
    must_vaultctl(&d.node.url(), Some(&other_admin), &["token", "revoke", "bootstrap-admin"]);
    d.node.stop();
    d.node = d.spec.start();
    d.node.wait_ready().await;
    let err = must_fail_vaultctl(&d.node.url(), Some(&d.token), &["token", "list"]);
    assert!(err.contains("unauthenticated"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_master_key_cannot_read_and_says_so() {
    let mut d = start().await;
    d.ctl(&["secret", "put", "k/v", "--value", "v"]);
    d.node.stop();
    d.spec.set("VAULT_LOCAL_MASTER_KEY", &random_master_key());
    d.node = d.spec.start();
    // It never becomes ready (see tests/trust.rs for writes), but answers reads clearly.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !d.node.log().contains("is not the cluster's master key") {
        assert!(std::time::Instant::now() < deadline, "no key mismatch logged:\n{}", d.node.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let err = d.ctl_err(&["secret", "get", "k/v"]);
    assert!(err.contains("failed precondition") && err.contains("is not in this node's keyring"), "{err}");
}

/// The node keeps the cluster's master-key state in memory (every put checks it); a
/// `kms rotate` must reach that copy as it applies. Were the copy stale, the next put would be
/// sealed under the old key, refused by the apply step and re-sealed under the old key again
/// until its time ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_right_after_kms_rotate_seals_under_the_new_key() {
    let mut d = start().await;
    let k2 = random_master_key();
    let id_of = |k: &str| {
        vault_core::local_kms::local_key_id(&vault_core::keys::MasterKey::from_base64(k).expect("a master key"))
    };
    let (id1, id2) = (id_of(&d.master), id_of(&k2));
    d.node.stop();
    d.spec.env.remove("VAULT_LOCAL_MASTER_KEY");
    d.spec.set("VAULT_LOCAL_MASTER_KEYS", &format!("{k2},{}", d.master));
    d.node = d.spec.start();
    d.node.wait_ready().await;
    // Puts and reads under K1: the node's copy of the key state is warm.
    for v in ["one", "two"] {
        d.ctl(&["secret", "put", "mk/a", "--value", v]);
        assert_eq!(d.ctl(&["secret", "get", "mk/a"]), v);
    }
    let status = |d: &Dev| -> serde_json::Value {
        serde_json::from_str(&d.ctl(&["--output", "json", "kms", "status"])).expect("kms status json")
    };
    assert_eq!(status(&d)["cluster_key_id"], id1);
    d.ctl(&["kms", "rotate"]);
    let started = std::time::Instant::now();
    d.ctl(&["secret", "put", "mk/a", "--value", "three"]);
    assert!(started.elapsed() < Duration::from_secs(5), "the put took {:?}", started.elapsed());
    assert_eq!(d.ctl(&["secret", "get", "mk/a"]), "three");
    assert_eq!(d.ctl(&["secret", "get", "mk/a", "--version", "1"]), "one");
    let s = status(&d);
    assert_eq!(s["cluster_key_id"], id2);
    assert!(s["versions_by_key"][&id2].as_u64() >= Some(1), "no version under the new key: {s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_outside_the_allowlist_are_denied() {
    // Loopback is not in this allowlist.
    let d = start_with(|s| {
        s.set("VAULT_ALLOWED_IPS", "10.20.0.0/16, fd00::/8");
    })
    .await;
    d.ctl(&["secret", "put", "app/db", "--value", "x"]);
    let err = d.ctl_err(&["secret", "get", "app/db"]);
    assert!(err.contains("permission denied") && err.contains("127.0.0.1"), "{err}");

    let mut c = secrets_client(&d.node.url()).await;
    let r = c
        .batch_get_secrets(pb::BatchGetSecretsRequest {
            requests: vec![pb::GetSecretRequest { name: "app/db".into(), version: 0 }],
        })
        .await;
    assert_eq!(r.unwrap_err().code(), Code::PermissionDenied);

    let audit = d.ctl(&["audit", "list", "--limit", "5"]);
    assert!(audit.contains("secret.get") && audit.contains("app/db") && audit.contains("permission denied"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_allowlist_denies_every_read() {
    let d = start_with(|s| {
        s.set("VAULT_ALLOWED_IPS", "");
    })
    .await;
    d.ctl(&["secret", "put", "app/db", "--value", "x"]);
    let err = d.ctl_err(&["secret", "get", "app/db"]);
    assert!(err.contains("permission denied"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_client_allowlisted_by_v6_address() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIP ipv6_client_allowlisted_by_v6_address: no IPv6 loopback here");
        return;
    }
    let port = {
        let l = std::net::TcpListener::bind("[::1]:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let d = start_with(|s| {
        s.api_addr = format!("[::1]:{port}").parse().unwrap();
        s.set("VAULT_ALLOWED_IPS", "::1/128");
    })
    .await;
    d.ctl(&["secret", "put", "v6/x", "--value", "six"]);
    assert_eq!(d.ctl(&["secret", "get", "v6/x"]), "six");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_honoured_only_from_trusted_proxies_right_most_hop() {
    let d = start_with(|s| {
        s.set("VAULT_ALLOWED_IPS", "203.0.113.7");
        s.set("VAULT_TRUST_PROXY", "true");
        s.set("VAULT_TRUSTED_PROXIES", "127.0.0.1");
    })
    .await;
    d.ctl(&["secret", "put", "p/x", "--value", "proxied"]);
    let mut c = secrets_client(&d.node.url()).await;
    let get = |xff: &str| {
        let mut r = tonic::Request::new(pb::GetSecretRequest { name: "p/x".into(), version: 0 });
        r.metadata_mut().insert("x-forwarded-for", xff.parse().unwrap());
        r
    };
    let ok = c.get_secret(get("6.6.6.6, 203.0.113.7")).await.unwrap().into_inner();
    assert_eq!(ok.value, b"proxied");
    // A client cannot pick its address by putting it left-most.
    let denied = c.get_secret(get("203.0.113.7, 6.6.6.6")).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("6.6.6.6"), "{}", denied.message());
    let bad = c.get_secret(get("203.0.113.7, not-an-ip")).await.unwrap_err();
    assert_eq!(bad.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_get_reports_per_item() {
    let d = start().await;
    d.ctl(&["secret", "put", "b/one", "--value", "1"]);
    let mut c = secrets_client(&d.node.url()).await;
    let reqs = vec![
        pb::GetSecretRequest { name: "b/one".into(), version: 0 },
        pb::GetSecretRequest { name: "b/missing".into(), version: 0 },
        pb::GetSecretRequest { name: "bad name".into(), version: 0 },
    ];
    let r = c.batch_get_secrets(pb::BatchGetSecretsRequest { requests: reqs }).await.unwrap().into_inner();
    use pb::batch_get_result::Result as R;
    assert!(matches!(&r.results[0].result, Some(R::Secret(s)) if s.value == b"1"));
    assert!(matches!(&r.results[1].result, Some(R::Error(e)) if e.code == Code::NotFound as i32));
    assert!(matches!(&r.results[2].result, Some(R::Error(e)) if e.code == Code::InvalidArgument as i32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_calls_need_a_token_even_from_allowlisted_hosts() {
    let d = start().await;
    let mut c = secrets_client(&d.node.url()).await;
    let r = c.put_secret(pb::PutSecretRequest { name: "a".into(), value: b"v".to_vec(), ..Default::default() }).await;
    assert_eq!(r.unwrap_err().code(), Code::Unauthenticated);
    let r = c.list_secrets(authed(pb::ListSecretsRequest::default(), "not-a-token")).await;
    assert_eq!(r.unwrap_err().code(), Code::Unauthenticated);
    let r = c.list_secrets(authed(pb::ListSecretsRequest::default(), &d.token)).await;
    assert!(r.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_or_token_on_disk_or_in_logs() {
    let mut d = start_with(|s| {
        // Snapshot often, so snapshot files are searched too.
        s.set("VAULT_SNAPSHOT_LOG_ENTRIES", "5");
        s.set("VAULT_LOG", "debug");
    })
    .await;
    let value = canary("CANARY-VALUE");
    d.ctl(&["secret", "put", "canary/one", "--value", &value]);
    let raw = d.ctl(&["token", "create", "canary-token", "--role", "admin"]).trim().to_string();
    for i in 0..10 {
        d.ctl(&["secret", "put", "canary/one", "--value", &format!("{value}-{i}")]);
    }
    assert_eq!(d.ctl(&["secret", "get", "canary/one"]), format!("{value}-9"));
    assert!(must_vaultctl(&d.node.url(), Some(&raw), &["token", "list"]).contains("canary-token"));
    d.node.stop();

    let data = d.spec.data_dir();
    let snapshots = data.join("snapshots");
    assert!(
        std::fs::read_dir(&snapshots).unwrap().flatten().any(|e| e.file_name().to_string_lossy().starts_with("snap-")),
        "a snapshot file was written and is part of the search"
    );
    assert!(count_files(&data) > 5);
    for (what, needle) in [
        ("secret value", value.as_bytes().to_vec()),
        ("raw token", raw.as_bytes().to_vec()),
        ("bootstrap token", d.token.as_bytes().to_vec()),
        ("master key", d.master.as_bytes().to_vec()),
    ] {
        let hits = files_containing(&data, &needle);
        assert!(hits.is_empty(), "{what} found on disk in {hits:?}");
        let log = d.node.log();
        assert!(!log.as_bytes().windows(needle.len()).any(|w| w == needle.as_slice()), "{what} found in the node log");
    }
    // The log is not empty: the search above looked at something.
    assert!(d.node.log().contains("vault-node listening"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_reads_and_management_never_values() {
    let d = start().await;
    let value = canary("AUDIT-VALUE");
    d.ctl(&["secret", "put", "au/x", "--value", &value]);
    d.ctl(&["secret", "get", "au/x"]);
    let _ = vaultctl(&d.node.url(), Some(&d.token), &["secret", "get", "au/missing"]);
    let json = d.ctl(&["--output", "json", "audit", "list", "--limit", "20", "--secret", "au/x"]);
    assert!(json.contains("\"action\": \"secret.put\""), "{json}");
    assert!(json.contains("\"action\": \"secret.get\""), "{json}");
    assert!(json.contains("\"actor\": \"bootstrap-admin\""), "{json}");
    assert!(json.contains("\"actor\": \"127.0.0.1\""), "reads are attributed to the client IP: {json}");
    assert!(json.contains("\"client_ip\": \"127.0.0.1\""));
    assert!(!json.contains(&value), "audit never holds a value");
    let all = d.ctl(&["audit", "list", "--limit", "50"]);
    assert!(all.contains("au/missing") && all.contains("not found"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_of_a_single_node() {
    let d = start().await;
    let json = d.ctl(&["--output", "json", "cluster", "status"]);
    assert!(json.contains("\"state\": \"leader\""), "{json}");
    assert!(json.contains("\"role\": \"leader\""), "{json}");
    assert!(json.contains(&format!("\"api_addr\": \"{}\"", d.spec.api_addr)), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_versions_keeps_only_the_newest() {
    let d = start().await;
    for i in 1..=5 {
        d.ctl(&["secret", "put", "mv/x", "--value", &format!("v{i}"), "--max-versions", "2"]);
    }
    let v = d.ctl(&["secret", "versions", "mv/x"]);
    assert_eq!(v.lines().count(), 3, "header + versions 4 and 5: {v}");
    let err = d.ctl_err(&["secret", "get", "mv/x", "--version", "3"]);
    assert!(err.contains("not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_over_tls_serves_reads_and_sees_the_client_address() {
    let dir = test_dir();
    let certs = dir.path().join("certs");
    mint_certs(&certs, &[1]);
    let token = random_token();
    let mut spec = NodeSpec::single(dir.path(), &token, &random_master_key());
    spec.set("VAULT_TLS_CERT", &certs.join("node-1.pem").display().to_string());
    spec.set("VAULT_TLS_KEY", &certs.join("node-1.key").display().to_string());
    let node = spec.start();
    let addr = format!("https://{}", spec.api_addr);
    let ca = certs.join("ca.pem").display().to_string();
    let ctl = |args: &[&str]| {
        let mut all = vec!["--ca-cert", ca.as_str()];
        all.extend_from_slice(args);
        vaultctl(&addr, Some(&token), &all)
    };

    // The node is ready once a write goes through.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = ctl(&["secret", "put", "app/tls", "--value", "over-tls"]);
        if out.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no write over TLS in 30 s: {}; log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Handshakes run apart from the accept loop: clients that connected and sent nothing, or
    // sent something that is not TLS, hold up no one.
    let silent: Vec<std::net::TcpStream> =
        (0..3).map(|_| std::net::TcpStream::connect(spec.api_addr).expect("connect")).collect();
    let mut garbage = std::net::TcpStream::connect(spec.api_addr).expect("connect");
    std::io::Write::write_all(&mut garbage, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").expect("write");
    let out = ctl(&["secret", "get", "app/tls"]);
    assert!(out.status.success(), "get over TLS: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "over-tls");
    // Served while the silent ones still wait for their handshake: had the server done them
    // one by one, it would have reached this read only after timing each of them out.
    for mut s in silent {
        s.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 1];
        let r = std::io::Read::read(&mut s, &mut buf);
        assert!(
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "a silent client was dropped: {r:?}"
        );
    }

    // The allowlist decided on the real client address, seen through TLS.
    let out = ctl(&["audit", "list", "--limit", "5", "--output", "json"]);
    let audit = String::from_utf8_lossy(&out.stdout);
    assert!(audit.contains("\"action\": \"secret.get\"") && audit.contains("\"client_ip\": \"127.0.0.1\""), "{audit}");

    // Plaintext gets nothing from a TLS listener.
    let out = vaultctl(&format!("http://{}", spec.api_addr), Some(&token), &["secret", "get", "app/tls"]);
    assert!(!out.status.success(), "plaintext read of a TLS listener succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_and_hold_no_secret() {
    let d = start_with(|s| {
        s.set("VAULT_LOG_FORMAT", "json");
    })
    .await;
    let value = canary("JSON-LOG-VALUE");
    d.ctl(&["secret", "put", "log/x", "--value", &value]);
    d.ctl(&["secret", "get", "log/x"]);
    let log = d.node.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "{log}");
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }
    assert!(lines.iter().any(|l| l.contains("\"ready\"")), "{log}");
    assert!(!log.contains(&value) && !log.contains(&d.token), "no secret or token in a log line");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_reflection_lists_the_api_and_describes_it() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let d = start().await;
    let mut c = ServerReflectionClient::new(d.node.channel().await.unwrap());
    let ask = |m: MessageRequest| ServerReflectionRequest { host: String::new(), message_request: Some(m) };
    let requests = futures::stream::iter(vec![
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol("vault.v1.Secrets".into())),
    ]);
    let mut answers = c.server_reflection_info(requests).await.unwrap().into_inner();
    let first = answers.message().await.unwrap().unwrap().message_response;
    let Some(MessageResponse::ListServicesResponse(list)) = first else { panic!("{first:?}") };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in ["vault.v1.Secrets", "vault.v1.Admin", "grpc.health.v1.Health"] {
        assert!(names.contains(&want), "{names:?}");
    }
    let second = answers.message().await.unwrap().unwrap().message_response;
    let Some(MessageResponse::FileDescriptorResponse(files)) = second else { panic!("{second:?}") };
    assert!(!files.file_descriptor_proto.is_empty(), "the descriptor of vault.v1 comes back");

    // Tools that still speak v1alpha get the same answers.
    use tonic_reflection::pb::v1alpha as alpha;
    let mut c = alpha::server_reflection_client::ServerReflectionClient::new(d.node.channel().await.unwrap());
    let ask = |m: alpha::server_reflection_request::MessageRequest| alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    };
    let requests = futures::stream::iter(vec![
        ask(alpha::server_reflection_request::MessageRequest::ListServices(String::new())),
        ask(alpha::server_reflection_request::MessageRequest::FileContainingSymbol("vault.v1.Secrets".into())),
    ]);
    let mut answers = c.server_reflection_info(requests).await.expect("v1alpha reflection").into_inner();
    let first = answers.message().await.unwrap().unwrap().message_response;
    let Some(alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) = first else {
        panic!("{first:?}")
    };
    let alpha_names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in ["vault.v1.Secrets", "vault.v1.Admin", "grpc.health.v1.Health"] {
        assert!(alpha_names.contains(&want), "{alpha_names:?}");
    }
    let second = answers.message().await.unwrap().unwrap().message_response;
    let Some(alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) = second else {
        panic!("{second:?}")
    };
    assert!(!files.file_descriptor_proto.is_empty(), "v1alpha describes vault.v1 too");
}
