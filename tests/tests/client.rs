//! The Rust client (`vault-client`) against real nodes: failover of reads and writes across a
//! leader kill, a listed node that is down, TLS with a reader certificate, the token from a
//! file, typed errors, and a watch that outlives its node.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use vault_client::{Client, Error};
use vault_tests::*;

fn mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// An address nothing listens on.
fn dead_addr() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

fn utf8(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

/// The client's view of `name`: its current value as text.
async fn value(c: &Client, name: &str) -> Result<String, Error> {
    let s = c.get(name).await?;
    Ok(String::from_utf8(s.value.to_vec()).expect("utf-8 value"))
}

/// vaultctl (through the client) and the server's audit log name codes with the same words.
#[test]
fn the_client_and_the_server_name_codes_alike() {
    for i in 0..=16 {
        let code = tonic::Code::from_i32(i);
        assert_eq!(vault_client::code_words(code), vault_node::error::code_words(code), "{code:?}");
    }
}

/// Given every address (a dead one first, the leader next), the client reads past the dead
/// one; after the leader is SIGKILLed, reads keep answering (another node, once the cluster
/// has a new leader) and a write goes through the new leader; the write it made is read back.
/// With only dead addresses, a call fails as `Unavailable` having tried them all.
#[test]
fn reads_and_writes_follow_the_cluster_across_a_leader_kill() {
    mt().block_on(async {
        let mut c = TestCluster::start(3, |_| {}).await;
        let leader = c.leader_seen_by(0, |_| true).await;
        let mut addrs = vec![dead_addr(), c.url(leader)];
        addrs.extend((0..3).filter(|i| *i != leader).map(|i| c.url(i)));
        let client =
            Client::builder().addrs(&addrs).token(&c.token).timeout(Duration::from_secs(30)).build().expect("client");

        let v1 = canary("before");
        assert_eq!(client.put("app/db", v1.as_bytes()).await.expect("put before the kill"), 1);
        assert_eq!(value(&client, "app/db").await.expect("read past the dead address"), v1);
        assert_eq!(client.leader().as_deref(), Some(c.url(leader).as_str()), "the write went to the leader");

        tracing::info!("SIGKILL the leader");
        c.nodes[leader].kill();
        for round in 0..5 {
            assert_eq!(
                value(&client, "app/db").await.unwrap_or_else(|e| panic!("read {round} after the kill: {e}")),
                v1
            );
        }
        let v2 = canary("after");
        let version = client.put("app/db", v2.as_bytes()).await.expect("write through the new leader");
        assert_eq!(version, 2);
        assert_ne!(client.leader().as_deref(), Some(c.url(leader).as_str()), "the write went elsewhere");
        assert_eq!(value(&client, "app/db").await.expect("read the new version"), v2);

        let nowhere = Client::builder().addrs([dead_addr(), dead_addr()]).build().expect("client");
        match nowhere.get("app/db").await {
            Err(Error::Unavailable { tried: 2, last }) => {
                assert!(matches!(*last, Error::Transport { connected: false, .. }), "{last:?}")
            }
            other => panic!("expected Unavailable after trying both addresses, got {other:?}"),
        }
    });
}

/// Refusals come back as their own error kinds: a missing secret `NotFound`, a write outside
/// the token's grants `PermissionDenied`, no token `Unauthenticated`, a stale check-and-set
/// `CasMismatch`; a bad name `InvalidArgument`. The token comes from `VAULT_TOKEN_FILE`.
#[test]
fn refusals_are_typed_errors_and_the_token_comes_from_a_file() {
    mt().block_on(async {
        let n = SingleNode::start(|_| {}).await;
        let dir = test_dir();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{}\n", n.token)).expect("write token file");
        let env = [("VAULT_ADDR", format!("{},{}", dead_addr(), n.url())), ("VAULT_TOKEN_FILE", utf8(&token_file))];
        let client = Client::builder()
            .with_vars(|k| env.iter().find(|(name, _)| *name == k).map(|(_, v)| v.clone()))
            .build()
            .expect("client from the environment");
        assert!(client.has_token());
        assert!(!format!("{client:?}").contains(&n.token), "Debug shows no token");

        assert_eq!(client.put("app/a", "one").await.expect("put with the token from the file"), 1);
        assert!(matches!(client.get("app/missing").await, Err(Error::NotFound(_))));
        match client.put_if_version("app/a", "two", 5).await {
            Err(Error::CasMismatch(m)) => assert!(m.contains("current version is 1"), "{m}"),
            other => panic!("expected CasMismatch, got {other:?}"),
        }
        assert_eq!(client.put_if_version("app/a", "two", 1).await.expect("check-and-set at 1"), 2);
        assert!(matches!(client.put("bad//name", "x").await, Err(Error::InvalidArgument(_))));

        n.ctl(&["role", "create", "app-writer", "--grant", "create,update:app/*"]);
        let limited = n.ctl(&["token", "create", "w", "--role", "app-writer"]).trim().to_string();
        let writer = Client::builder().addrs([n.url()]).token(&limited).build().expect("client");
        assert_eq!(writer.put("app/b", "x").await.expect("inside the grant"), 1);
        assert!(matches!(writer.put("other/b", "x").await, Err(Error::PermissionDenied(_))));
        let anonymous = Client::builder().addrs([n.url()]).build().expect("client");
        assert!(matches!(anonymous.put("app/c", "x").await, Err(Error::Unauthenticated(_))));
    });
}

/// Over TLS, with the CA from `VAULT_CACERT` and a reader certificate from
/// `VAULT_CLIENT_CERT` / `VAULT_CLIENT_KEY`, the client reads what the certificate's rule grants
/// and gets `PermissionDenied` for the rest; without the certificate it reads nothing.
#[test]
fn a_reader_certificate_over_tls_reads_what_its_rule_grants() {
    mt().block_on(async {
        let work = test_dir();
        let (certs, readers) = (work.path().join("certs"), work.path().join("readers"));
        mint_certs(&certs, &[1]);
        let minted = Command::new(bin("vaultctl"))
            .env_clear()
            .args(["reader", "cert", "app-reader", "--out"])
            .arg(&readers)
            .stdin(Stdio::null())
            .output()
            .expect("run vaultctl reader cert");
        assert!(minted.status.success(), "{}", String::from_utf8_lossy(&minted.stderr));
        let n = SingleNode::start(|s| {
            s.set("VAULT_TLS_CERT", &utf8(&certs.join("node-1.pem")));
            s.set("VAULT_TLS_KEY", &utf8(&certs.join("node-1.key")));
            s.set("VAULT_TLS_CLIENT_CA", &utf8(&readers.join("reader-ca.pem")));
            s.api_ca = Some(certs.join("ca.pem"));
        })
        .await;
        let secret = canary("tls");
        n.node.vaultctl(Some(&n.token), &["secret", "put", "app/x", "--value", &secret]);
        n.node.vaultctl(Some(&n.token), &["secret", "put", "ops/x", "--value", "ops"]);
        let made = n
            .node
            .vaultctl(Some(&n.token), &["reader", "create", "app", "--cert-cn", "app-reader", "--grant", "app/*"]);
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));

        let addr = n.node.api_addr.to_string();
        let env = [
            ("VAULT_ADDR", addr.clone()),
            ("VAULT_CACERT", utf8(&certs.join("ca.pem"))),
            ("VAULT_CLIENT_CERT", utf8(&readers.join("reader-app-reader.pem"))),
            ("VAULT_CLIENT_KEY", utf8(&readers.join("reader-app-reader.key"))),
        ];
        let var = |k: &str| env.iter().find(|(name, _)| *name == k).map(|(_, v)| v.clone());
        let reader = Client::builder().with_vars(var).build().expect("client");
        assert_eq!(reader.nodes(), [format!("https://{addr}")], "host:port with a CA means https");
        assert_eq!(value(&reader, "app/x").await.expect("read with the reader certificate"), secret);
        assert!(matches!(reader.get("ops/x").await, Err(Error::PermissionDenied(_))));
        let got = reader.batch_get(&[("app/x", 0), ("ops/x", 0)]).await.expect("batch");
        assert!(got[0].is_ok() && matches!(got[1], Err(Error::PermissionDenied(_))), "{got:?}");

        let no_cert = Client::builder().addrs([format!("https://{addr}")]).ca_cert_file(certs.join("ca.pem")).build();
        let no_cert = no_cert.expect("client");
        assert!(matches!(no_cert.get("app/x").await, Err(Error::PermissionDenied(_))));
    });
}

/// Writes the new secret `name` as a careful application does when a node may die under it:
/// only if it does not exist yet (check-and-set on version 0), and again after an error that
/// leaves open whether it was applied (a connection that broke, a timeout, `UNAVAILABLE`); a
/// check-and-set mismatch on such a repeat means the earlier try was applied. Returns the
/// version written.
async fn put_new(writer: &Client, name: &str) -> u64 {
    let value = canary("w");
    let mut ambiguous = None;
    for _ in 0..5 {
        match writer.put_if_version(name, value.clone(), 0).await {
            Ok(v) => return v,
            Err(vault_client::Error::CasMismatch(m)) if ambiguous.is_some() => {
                tracing::info!(name, %m, "an earlier try was applied");
                return writer.get(name).await.expect("read back").version;
            }
            Err(e) if e.is_node_failure() || matches!(e, vault_client::Error::Unavailable { .. }) => {
                tracing::info!(name, %e, "ambiguous failure; trying again");
                ambiguous = Some(e);
            }
            Err(e) => panic!("put {name}: {e}"),
        }
    }
    panic!("put {name}: still failing: {ambiguous:?}")
}

/// A watch on `app/` subscribed to one node of three keeps going when that node is SIGKILLed:
/// it resumes on another from the last revision received, and every write made before,
/// during and after the loss arrives exactly once, in order, one revision per write.
#[test]
fn a_watch_survives_the_loss_of_its_node_without_gaps_or_repeats() {
    mt().block_on(async {
        use futures::StreamExt;
        let mut c = TestCluster::start(3, |_| {}).await;
        let addrs: Vec<String> = (0..3).map(|i| c.url(i)).collect();
        let writer =
            Client::builder().addrs(&addrs).token(&c.token).timeout(Duration::from_secs(30)).build().expect("client");
        let watcher = Client::builder().addrs(&addrs).build().expect("client");
        let mut watch =
            watcher.watch(vault_client::WatchRequest { prefixes: vec!["app/".into()], ..Default::default() });
        // The first message (progress) says the watch is subscribed.
        let first = tokio::time::timeout(Duration::from_secs(20), watch.next()).await.expect("subscribed in time");
        first.expect("stream open").expect("first message");
        let on = watch.node().expect("subscribed to a node");
        let victim = addrs.iter().position(|a| *a == on).expect("one of ours");

        let mut written = Vec::new();
        for i in 0..6 {
            let name = format!("app/s{i}");
            let v = put_new(&writer, &name).await;
            written.push((name.clone(), v));
            // Noise outside the prefix must not show up.
            writer.put(&format!("other/s{i}"), "x").await.expect("put outside the prefix");
        }
        tracing::info!("SIGKILL node {victim}, which serves the watch");
        c.nodes[victim].kill();
        for i in 0..6 {
            let name = format!("app/t{i}");
            let v = put_new(&writer, &name).await;
            written.push((name, v));
        }

        let mut seen: Vec<(String, u64, u64)> = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while seen.len() < written.len() {
            let batch = tokio::time::timeout_at(deadline, watch.next())
                .await
                .unwrap_or_else(|_| panic!("only {} of {} events within 60 s: {seen:?}", seen.len(), written.len()))
                .expect("the stream goes on")
                .expect("no error");
            for e in batch.events {
                assert_eq!(e.kind, vault_client::ChangeKind::Put, "{e:?}");
                seen.push((e.name, e.version, e.revision));
            }
        }
        assert_ne!(watch.node().as_deref(), Some(on.as_str()), "resumed on another node");
        let names: Vec<(String, u64)> = seen.iter().map(|(n, v, _)| (n.clone(), *v)).collect();
        assert_eq!(names, written, "every write once, in order");
        assert!(seen.windows(2).all(|w| w[0].2 < w[1].2), "revisions increase: {seen:?}");
        // Nothing more is pending: a repeat would arrive with the next progress message.
        if let Ok(Some(Ok(batch))) = tokio::time::timeout(Duration::from_secs(6), watch.next()).await {
            assert!(batch.events.is_empty(), "nothing after the last write: {:?}", batch.events);
        }
    });
}

/// `vaultctl secret watch --prefix` prints one JSON line per change, with its revision.
#[test]
fn vaultctl_secret_watch_prints_one_line_per_change() {
    mt().block_on(async {
        use std::io::BufRead;
        let n = SingleNode::start(|_| {}).await;
        let mut child = Command::new(bin("vaultctl"))
            .env_clear()
            .env("VAULT_ADDR", n.url())
            .args(["--output", "json", "secret", "watch", "--prefix", "app/", "ops/one"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start vaultctl secret watch");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        // It watches from "now": write a marker until it shows, then the real changes.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            n.ctl(&["secret", "put", "app/ready", "--value", "r"]);
            if rx.recv_timeout(Duration::from_secs(1)).is_ok() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "vaultctl secret watch printed nothing in 30 s");
        }
        for args in [
            &["secret", "put", "app/a", "--value", "1"][..],
            &["secret", "put", "other/x", "--value", "2"],
            &["secret", "put", "ops/one", "--value", "3"],
            &["secret", "delete", "app/a", "--versions", "1"],
        ] {
            n.ctl(args);
        }
        let mut events: Vec<serde_json::Value> = Vec::new();
        while events.len() < 3 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| panic!("only {events:?} in 30 s"));
            let e: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            if e["name"] != "app/ready" {
                events.push(e);
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let shown: Vec<(&str, &str, u64)> = events
            .iter()
            .map(|e| {
                (e["kind"].as_str().unwrap_or(""), e["name"].as_str().unwrap_or(""), e["version"].as_u64().unwrap_or(0))
            })
            .collect();
        assert_eq!(shown, [("put", "app/a", 1), ("put", "ops/one", 1), ("delete", "app/a", 1)], "{events:?}");
        let lines = &events;
        assert!(events.iter().all(|e| e["revision"].as_u64().is_some_and(|r| r > 0)), "{lines:?}");
    });
}
