//! The trust boundaries inside the cluster, with real processes: peer certificates bound to
//! node ids and membership on the Raft port, what a peer may forward, a wrong master key
//! refused without losing anything, and a local master-key rotation.

use std::path::Path;
use std::time::{Duration, Instant};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::Code;
use vault_core::envelope::SealedValue;
use vault_core::keys::MasterKey;
use vault_core::local_kms::local_key_id;
use vault_core::model::AuditContext;
use vault_core::token::RawToken;
use vault_raft::transport::pb as raftpb;
use vault_raft::transport::{node_server_name, CallerWrite, ForwardRequest, ForwardResponse};
use vault_raft::{Command, CommandResponse, Rejection};
use vault_tests::raft_peer::*;
use vault_tests::*;

fn mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// An `AppendStream` call: requests go out on the sender, answers come back on the stream.
type AppendStream = (tokio::sync::mpsc::Sender<raftpb::Blob>, tonic::Streaming<raftpb::Blob>);

async fn open_stream_as(c: &mut RaftClient) -> Result<AppendStream, tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let answers = c.append_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    Ok((tx, answers))
}

/// One empty append on an open stream, in `leader`'s name at `term`; its answer or the status
/// that ended the stream.
async fn stream_append(s: &mut AppendStream, leader: u64, term: u64) -> Result<(), tonic::Status> {
    s.0.send(empty_append(leader, term)).await.map_err(|_| tonic::Status::unavailable("stream closed"))?;
    match s.1.message().await? {
        Some(_) => Ok(()),
        None => Err(tonic::Status::unavailable("stream ended without an answer")),
    }
}

fn audit_ctx(node_id: u64) -> AuditContext {
    AuditContext { node_id, actor: "test".into(), client_ip: "127.0.0.1".into(), action: "token.create".into() }
}

fn key_id_of(b64: &str) -> String {
    local_key_id(&MasterKey::from_base64(b64).unwrap())
}

fn denied(r: Result<impl std::fmt::Debug, tonic::Status>, what: &str) -> String {
    match r {
        Err(s) if s.code() == Code::PermissionDenied => s.message().to_string(),
        other => panic!("{what}: expected PERMISSION_DENIED, got {other:?}"),
    }
}

#[test]
fn removed_impostor_and_non_member_certificates_are_refused_on_the_raft_port() {
    mt().block_on(async {
        let c = TestCluster::start(3, |_| {}).await;
        let leader = c.leader_seen_by(0, |_| true).await;
        let leader_id = c.specs[leader].node_id;
        let target = c.specs[leader].raft_addr;
        let certs = c.certs();

        tracing::info!("node 4 joins as a learner, then is removed");
        let mut spec4 = c.node_spec(4);
        spec4.set("VAULT_JOIN", "true");
        let mut node4 = spec4.start();
        c.ctl(0, &["cluster", "add", "4", &spec4.raft_addr.to_string(), &spec4.api_addr.to_string()]);
        let mut as4 = raft_as(&certs, 4, leader_id, target).await;
        // While a member, node 4's certificate is admitted: the refusals below are about removal.
        let ok = forward_as(&mut as4, 4, ForwardRequest::LeaderView).await.expect("member admitted");
        assert!(ok.is_ok(), "{ok:?}");
        // A replication stream opened while a member; but a learner is no voter, so even an
        // append in its own name at term 0 (below every vote) is refused.
        let mut stream4 = open_stream_as(&mut as4).await.expect("a member opens a replication stream");
        let why = denied(stream_append(&mut stream4, 4, 0).await, "a learner's append");
        assert!(why.contains("not a voter"), "{why}");
        let mut stream4 = open_stream_as(&mut as4).await.expect("a member opens a replication stream");
        c.ctl(0, &["cluster", "remove", "4"]);
        node4.kill();
        let term_before = c.status(leader).await.unwrap().term;

        let why = denied(vote_as(&mut as4, 4, term_before + 100).await, "removed node's vote");
        assert!(why.contains("not a member"), "{why}");
        denied(append_as(&mut as4, 4, term_before + 100).await, "removed node's append");
        // The stream it opened as a member is refused from its next message on, and it opens no
        // new one.
        denied(stream_append(&mut stream4, 4, term_before + 100).await, "removed node's streamed append");
        denied(open_stream_as(&mut as4).await.map(|_| ()), "removed node's new stream");
        let create = ForwardRequest::Write(Command::AsCaller {
            auth: hash_of(&c.token),
            now_ms: 1,
            cmd: Box::new(Command::CreateToken { record: token_record("from-removed") }),
            audit: audit_ctx(4),
        });
        denied(forward_as(&mut as4, 4, create).await, "removed node's forward");
        // No restart happened, and the removed node's high-term vote deposed no one.
        for i in 0..3 {
            let s = c.status(i).await.unwrap();
            assert_eq!(s.term, term_before, "node index {i}");
            assert_eq!(s.leader_id, Some(leader_id));
        }

        tracing::info!("node 2's certificate claiming to be node 3");
        let mut as2 = raft_as(&certs, 2, leader_id, target).await;
        let why = denied(vote_as(&mut as2, 3, term_before + 100).await, "impostor vote");
        assert!(why.contains("node 2") && why.contains("node 3"), "{why}");
        denied(append_as(&mut as2, 3, term_before + 100).await, "impostor append");
        let mut stream2 = open_stream_as(&mut as2).await.expect("a member opens a replication stream");
        let why = denied(stream_append(&mut stream2, 3, term_before + 100).await, "impostor streamed append");
        assert!(why.contains("node 2") && why.contains("node 3"), "{why}");
        denied(forward_as(&mut as2, 3, ForwardRequest::LeaderView).await, "impostor forward");

        tracing::info!("pre-votes: only in the caller's own name, only from a member, and a healthy leader says no");
        let newest = Some(openraft::LogId::new(openraft::CommittedLeaderId::new(u64::MAX / 2, 2), u64::MAX / 2));
        let why = denied(
            forward_as(&mut as2, 2, ForwardRequest::PreVote { candidate: 3, last_log_id: newest }).await,
            "pre-vote in another's name",
        );
        assert!(why.contains("pre-vote"), "{why}");
        denied(
            forward_as(&mut as4, 4, ForwardRequest::PreVote { candidate: 4, last_log_id: newest }).await,
            "removed node's pre-vote",
        );
        match forward_as(&mut as2, 2, ForwardRequest::PreVote { candidate: 2, last_log_id: newest }).await.unwrap() {
            Ok(ForwardResponse::PreVote { granted: false }) => {}
            other => panic!("a leader in touch with its quorum refuses a pre-vote, even for a newer log: {other:?}"),
        }
        assert_eq!(c.status(leader).await.unwrap().term, term_before, "a pre-vote changes no term");

        tracing::info!("a member may forward only client writes carrying their caller");
        let raw = ForwardRequest::Write(Command::CreateToken { record: token_record("raw-create") });
        let member = if leader_id == 2 { 1 } else { 2 };
        let mut as_member = raft_as(&certs, member, leader_id, target).await;
        let why = denied(forward_as(&mut as_member, member, raw).await, "raw command");
        assert!(why.contains("create_token"), "{why}");
        let watermark = ForwardRequest::Write(Command::AdvanceRewrapWatermark { watermark_ms: u64::MAX });
        denied(forward_as(&mut as_member, member, watermark).await, "leader-only command");
        let bootstrap = ForwardRequest::Write(Command::SetMasterKey {
            key_id: "local:00".into(),
            check: None,
            now_ms: 1,
            rotate: true,
        });
        denied(forward_as(&mut as_member, member, bootstrap).await, "master key from a peer");
        // A client write with a token nobody holds is refused by the leader before it proposes it.
        let forged = ForwardRequest::CallerWrite(CallerWrite {
            token: RawToken::generate(),
            cmd: Command::CreateToken { record: token_record("forged-caller") },
            client_ip: "127.0.0.1".into(),
            action: "token.create".into(),
        });
        match forward_as(&mut as_member, member, forged).await {
            Err(s) if s.code() == Code::Unavailable => {}
            other => panic!("a forged caller must be refused: {other:?}"),
        }
        // A put sealed under a key that is not the cluster's is refused at apply, even with a
        // valid admin caller.
        let sealed = SealedValue {
            key_id: "local:00000000000000000000000000000000".into(),
            wrapped_dek: vec![1; 73],
            nonce: vec![0; 24],
            ciphertext: vec![0; 32],
        };
        let put = ForwardRequest::CallerWrite(CallerWrite {
            token: RawToken::parse_strict(&c.token).expect("a valid token"),
            cmd: Command::PutSecret {
                name: "wrong/key".into(),
                version: 1,
                sealed,
                expected_version: None,
                max_versions: None,
                now_ms: vault_core::time::now_ms(),
                auth: None,
            },
            client_ip: "127.0.0.1".into(),
            action: "secret.put".into(),
        });
        match forward_as(&mut as_member, member, put).await.unwrap() {
            Ok(ForwardResponse::Written(CommandResponse::Rejected(Rejection::WrongMasterKey { .. }))) => {}
            other => panic!("a put under another key must be refused at apply: {other:?}"),
        }
        // Election control comes only from the leader.
        denied(forward_as(&mut as_member, member, ForwardRequest::Campaign { for_ms: 1 }).await, "campaign");

        tracing::info!("a CA-signed certificate of a node that never was a member");
        mint_certs(&certs, &[9]);
        let mut as9 = raft_as(&certs, 9, leader_id, target).await;
        let create = ForwardRequest::Write(Command::AsCaller {
            auth: hash_of(&c.token),
            now_ms: vault_core::time::now_ms(),
            cmd: Box::new(Command::CreateToken { record: token_record("from-outsider") }),
            audit: audit_ctx(9),
        });
        denied(forward_as(&mut as9, 9, create).await, "outsider's token creation");
        denied(vote_as(&mut as9, 9, term_before + 100).await, "outsider's vote");

        let tokens = c.ctl(0, &["token", "list"]);
        for name in ["from-removed", "raw-create", "forged-caller", "from-outsider"] {
            assert!(!tokens.contains(name), "{name} must not exist:\n{tokens}");
        }
        assert!(must_fail_vaultctl(&c.url(0), None, &["secret", "get", "wrong/key"]).contains("not found"));
    });
}

#[test]
fn a_node_checks_the_certificate_of_the_peer_it_dials() {
    mt().block_on(async {
        let c = TestCluster::start(1, |_| {}).await;
        let certs = c.certs();
        let addr = c.specs[0].raft_addr;
        // Node 1's listener, dialed as if it were node 2: its certificate names node 1.
        let read = |f: &str| std::fs::read(certs.join(f)).unwrap();
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("ca.pem")))
            .identity(Identity::from_pem(read("node-1.pem"), read("node-1.key")))
            .domain_name(node_server_name(2));
        let attempt = async {
            let ch = Channel::from_shared(format!("https://{addr}"))?.tls_config(tls)?.connect().await?;
            RaftClient::new(ch).node_state(raftpb::NodeStateRequest::default()).await?;
            Ok::<_, Box<dyn std::error::Error>>(())
        };
        assert!(attempt.await.is_err(), "a server certificate for another node id must fail verification");
        let mut right = raft_as(&certs, 1, 1, addr).await;
        assert_eq!(right.node_state(raftpb::NodeStateRequest::default()).await.unwrap().into_inner().node_id, 1);
    });
}

#[test]
fn a_renewed_certificate_is_used_after_sighup_without_a_restart() {
    mt().block_on(async {
        let c = TestCluster::start(1, |_| {}).await;
        let certs = c.certs();
        let addr = c.specs[0].raft_addr;
        let served = || async {
            let ch = Channel::from_shared(format!("https://{addr}"))
                .unwrap()
                .tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(std::fs::read(certs.join("ca.pem")).unwrap()))
                        .domain_name(node_server_name(1)),
                )
                .unwrap();
            // A fresh TCP connection each time, to see what a new peer would get.
            match ch.connect().await {
                Ok(ch) => RaftClient::new(ch).node_state(raftpb::NodeStateRequest::default()).await.is_ok(),
                Err(_) => false,
            }
        };
        assert!(!served().await, "listener up; a caller without a client certificate fails the handshake");
        let pid = c.nodes[0].pid().unwrap();
        let before = std::fs::read(certs.join("node-1.pem")).unwrap();
        let out = std::process::Command::new(bin("vaultctl"))
            .args(["cluster", "certs", "--renew", "--out"])
            .arg(&certs)
            .args(["--nodes", "1", "--san", "127.0.0.1"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_ne!(std::fs::read(certs.join("node-1.pem")).unwrap(), before);
        c.nodes[0].signal("HUP");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !c.nodes[0].log().contains("reloaded the Raft TLS") {
            assert!(Instant::now() < deadline, "no reload logged:\n{}", c.nodes[0].log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(c.nodes[0].pid(), Some(pid), "same process");
        // The listener now presents the renewed certificate.
        let tls_cert = tls_server_cert(addr).await;
        let renewed = tokio_pem_der(&std::fs::read(certs.join("node-1.pem")).unwrap());
        assert_eq!(tls_cert, renewed, "new connections get the renewed certificate");
        // And the node still works: its own writes go through Raft as before.
        c.ctl(0, &["secret", "put", "after/renew", "--value", "v"]);
    });
}

/// The leaf certificate (DER) a TLS server at `addr` presents.
async fn tls_server_cert(addr: std::net::SocketAddr) -> Vec<u8> {
    use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use tokio_rustls::rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
    #[derive(Debug)]
    struct AcceptAny;
    impl ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, tokio_rustls::rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, tokio_rustls::rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            tokio_rustls::rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
        }
    }
    let config = ClientConfig::builder_with_provider(std::sync::Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(std::sync::Arc::new(AcceptAny))
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("vault-node-1").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn tokio_pem_der(pem: &[u8]) -> Vec<u8> {
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer};
    CertificateDer::from_pem_slice(pem).unwrap().to_vec()
}

/// Waits for `needle` in node `i`'s log.
async fn wait_log(node: &NodeProcess, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !node.log().contains(needle) {
        assert!(Instant::now() < deadline, "{needle:?} not logged:\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The version numbers `secret versions` lists for `name`.
fn versions_of(node: &NodeProcess, token: &str, name: &str) -> Vec<u64> {
    let out = node.vaultctl(Some(token), &["secret", "versions", name]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines().filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect()
}

#[test]
fn a_single_node_with_a_wrong_master_key_acknowledges_no_write_and_loses_nothing() {
    mt().block_on(async {
        let dir = test_dir();
        let token = random_token();
        let (k1, k2) = (random_master_key(), random_master_key());
        let mut spec = NodeSpec::single(dir.path(), &token, &k1);
        let mut node = spec.start();
        node.wait_ready().await;
        for v in ["one", "two"] {
            must_vaultctl(&node.url(), Some(&token), &["secret", "put", "app/db", "--value", v]);
        }
        node.stop();

        spec.set("VAULT_LOCAL_MASTER_KEY", &k2);
        let metrics = with_metrics(&mut spec);
        let mut wrong = spec.start();
        wait_log(&wrong, "is not the cluster's master key").await;
        let log = wrong.log();
        let ids = [key_id_of(&k1), key_id_of(&k2)];
        assert!(ids.iter().all(|id| log.contains(id)), "both ids logged:\n{log}");
        // Callers without credentials learn that it is not ready, not which keys it holds; the
        // overall gRPC health (service "", what probes ask) agrees with /readyz.
        let (code, body) = http_get(&metrics, "/readyz").await.expect("readyz");
        assert_eq!(code, 503, "{body}");
        let ch = wrong.channel().await.expect("channel");
        let status = vault_node::pb::admin_client::AdminClient::new(ch.clone())
            .server_status(vault_node::pb::ServerStatusRequest {})
            .await
            .expect("status needs no token")
            .into_inner();
        assert!(!status.ready && !status.not_ready.is_empty(), "{status:?}");
        for id in &ids {
            assert!(
                !body.contains(id.as_str()) && !status.not_ready.contains(id.as_str()),
                "{id} shown: {body} / {status:?}"
            );
        }
        for service in ["", "vault.v1.Secrets"] {
            let req = tonic_health::pb::HealthCheckRequest { service: service.into() };
            let got = tonic_health::pb::health_client::HealthClient::new(ch.clone()).check(req).await.expect("health");
            let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
            assert_eq!(got.into_inner().status, not_serving, "health of {service:?}");
        }
        let e = must_fail_vaultctl(&wrong.url(), Some(&token), &["secret", "put", "app/db", "--value", "lost?"]);
        assert!(e.contains("failed precondition"), "{e}");
        assert!(e.contains(&key_id_of(&k1)) && e.contains(&key_id_of(&k2)), "{e}");
        let e = must_fail_vaultctl(&wrong.url(), Some(&token), &["secret", "put", "new/one", "--value", "x"]);
        assert!(e.contains("failed precondition"), "{e}");
        wrong.stop();

        spec.set("VAULT_LOCAL_MASTER_KEY", &k1);
        let mut right = spec.start();
        right.wait_ready().await;
        for (v, want) in [("1", "one"), ("2", "two")] {
            let got = must_vaultctl(&right.url(), Some(&token), &["secret", "get", "app/db", "--version", v]);
            assert_eq!(got, want);
        }
        assert_eq!(versions_of(&right, &token, "app/db"), vec![1, 2], "no version acknowledged under the wrong key");
        assert!(must_fail_vaultctl(&right.url(), Some(&token), &["secret", "get", "new/one"]).contains("not found"));
        assert_eq!(
            must_vaultctl(&right.url(), Some(&token), &["secret", "put", "app/db", "--value", "three"]).trim(),
            "3"
        );
    });
}

#[test]
fn a_cluster_member_with_a_wrong_master_key_seals_nothing_and_loses_nothing() {
    mt().block_on(async {
        let mut c = TestCluster::start(3, |_| {}).await;
        c.ctl(0, &["secret", "put", "app/x", "--value", "v1"]);
        let wrong_key = random_master_key();
        c.nodes[2].stop();
        c.specs[2].set("VAULT_LOCAL_MASTER_KEY", &wrong_key);
        c.nodes[2] = c.specs[2].start();
        wait_log(&c.nodes[2], "is not the cluster's master key").await;
        let log = c.nodes[2].log();
        assert!(log.contains(&key_id_of(&c.master)) && log.contains(&key_id_of(&wrong_key)), "{log}");
        let e = must_fail_vaultctl(&c.url(2), Some(&c.token), &["secret", "put", "app/x", "--value", "v2"]);
        assert!(e.contains("failed precondition") && e.contains(&key_id_of(&wrong_key)), "{e}");
        // The healthy members keep writing.
        c.ctl(0, &["secret", "put", "app/x", "--value", "v2"]);
        c.nodes[2].stop();
        let master = c.master.clone();
        c.specs[2].set("VAULT_LOCAL_MASTER_KEY", &master);
        c.nodes[2] = c.specs[2].start();
        c.nodes[2].wait_ready().await;
        for i in 0..3 {
            for (v, want) in [("1", "v1"), ("2", "v2")] {
                assert_eq!(c.ctl(i, &["secret", "get", "app/x", "--version", v]), want, "node index {i}");
            }
        }
        assert_eq!(versions_of(&c.nodes[0], &c.token, "app/x"), vec![1, 2]);
    });
}

fn kms_status(c: &TestCluster, i: usize) -> serde_json::Value {
    serde_json::from_str(&c.ctl(i, &["--output", "json", "kms", "status"])).expect("kms status json")
}

#[test]
fn local_master_key_rotation_rewraps_every_version_and_the_old_key_can_go() {
    mt().block_on(async {
        let mut c = TestCluster::start(3, |s| {
            s.set("VAULT_KMS_REWRAP_MAX_PER_SEC", "0");
        })
        .await;
        let (k1, k2) = (c.master.clone(), random_master_key());
        let (id1, id2) = (key_id_of(&k1), key_id_of(&k2));
        for n in 0..4 {
            for v in 1..=2 {
                c.ctl(0, &["secret", "put", &format!("rot/{n}"), "--value", &format!("{n}-{v}")]);
            }
        }
        c.ctl(1, &["secret", "delete", "rot/0", "--versions", "1"]);
        assert_eq!(kms_status(&c, 0)["cluster_key_id"], id1);

        tracing::info!("every node gets K2 first in its keyring, one at a time");
        let ring = format!("{k2},{k1}");
        for i in 0..3 {
            c.nodes[i].stop();
            c.specs[i].env.remove("VAULT_LOCAL_MASTER_KEY");
            c.specs[i].set("VAULT_LOCAL_MASTER_KEYS", &ring);
            c.nodes[i] = c.specs[i].start();
            c.nodes[i].wait_ready().await;
            if i == 1 {
                // Node 3 does not hold K2 yet: the rotation is refused, naming it.
                let e = must_fail_vaultctl(&c.url(0), Some(&c.token), &["kms", "rotate"]);
                assert!(e.contains("failed precondition") && e.contains("node(s) 3"), "{e}");
            }
        }
        let out = c.ctl(1, &["kms", "rotate"]);
        assert!(out.contains(&id2) && out.contains(&id1), "{out}");
        // On record before it was made, and with its outcome after.
        let records: Vec<serde_json::Value> =
            serde_json::from_str(&c.ctl(1, &["--output", "json", "audit", "list", "--limit", "20"])).unwrap();
        let rotate: Vec<&str> =
            records.iter().filter(|r| r["action"] == "kms.rotate").filter_map(|r| r["outcome"].as_str()).collect();
        assert_eq!(rotate, vec!["ok", "requested"], "newest first: {records:?}");
        // New versions are sealed under K2 at once.
        c.ctl(2, &["secret", "put", "rot/new", "--value", "fresh"]);

        tracing::info!("the leader's worker re-wraps every older version onto K2");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = kms_status(&c, 0);
            let by_key = s["versions_by_key"].as_object().cloned().unwrap_or_default();
            if by_key.len() == 1 && by_key.contains_key(&id2) && s["pending_versions"] == 0 {
                assert_eq!(by_key[&id2], 9, "8 old versions and the new one");
                assert_eq!(s["cluster_key_id"], id2);
                break;
            }
            assert!(Instant::now() < deadline, "re-wrap did not finish: {s}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }

        tracing::info!("K1 leaves every keyring; all nodes restart");
        for n in c.nodes.iter_mut() {
            n.stop();
        }
        for i in 0..3 {
            c.specs[i].set("VAULT_LOCAL_MASTER_KEYS", &k2);
            c.nodes[i] = c.specs[i].start();
        }
        for n in c.nodes.iter_mut() {
            n.wait_ready().await;
        }
        assert!(kms_status(&c, 2)["missing_key_ids"].as_array().unwrap().is_empty());
        c.ctl(0, &["secret", "undelete", "rot/0", "--versions", "1"]);
        for i in 0..3 {
            for n in 0..4 {
                for v in 1..=2 {
                    let got = c.ctl(i, &["secret", "get", &format!("rot/{n}"), "--version", &v.to_string()]);
                    assert_eq!(got, format!("{n}-{v}"), "node index {i}");
                }
            }
            assert_eq!(c.ctl(i, &["secret", "get", "rot/new"]), "fresh");
            // The audit chain under K1's key was retired on record while the node still held
            // it (the restart with both keys), so it verifies without K1.
            let v: serde_json::Value =
                serde_json::from_str(&c.ctl(i, &["--output", "json", "audit", "verify"])).unwrap();
            assert!(v["ok"] == true && v["unverifiable"].as_u64() > Some(0), "node index {i}: {v}");
        }
    });
}

#[test]
fn silent_connections_do_not_hold_up_the_raft_port() {
    mt().block_on(async {
        let c = TestCluster::start(1, |_| {}).await;
        let addr = c.specs[0].raft_addr;
        // Connections that never start their TLS handshake, from another host than the member
        // (one address may hold only `MAX_PER_ADDRESS` unverified connections).
        let mut silent = Vec::new();
        for _ in 0..32 {
            silent.push(connect_from([127, 0, 0, 2], addr).await);
        }
        let started = Instant::now();
        let mut peer = raft_as(&c.certs(), 1, 1, addr).await;
        assert_eq!(peer.node_state(raftpb::NodeStateRequest::default()).await.unwrap().into_inner().node_id, 1);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a member waited {:?} behind silent connections",
            started.elapsed()
        );
        drop(silent);
    });
}

/// Whether the peer closes `s` within `within`.
async fn closed_soon(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 16];
    matches!(tokio::time::timeout(within, s.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
}

/// A TCP connection to `addr` from the loopback address `from` (any of 127/8 reaches lo).
async fn connect_from(from: [u8; 4], addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.bind((from, 0).into()).expect("bind a loopback source address");
    socket.connect(addr).await.expect("connect")
}

/// How many of `streams` the peer closes within `within` (checked one after another).
async fn closed_within(streams: &mut [tokio::net::TcpStream], within: Duration) -> usize {
    let mut closed = 0;
    for s in streams.iter_mut() {
        if closed_soon(s, within).await {
            closed += 1;
        }
    }
    closed
}

/// Connections that never start their TLS handshake: one address gets at most
/// `MAX_PER_ADDRESS` of them open at once, all addresses together `MAX_CONNECTIONS` less the
/// `MEMBER_SLOTS`; the ones past either cap are closed at once, the others when their
/// handshake times out. Then the listener serves members again.
#[test]
fn the_raft_port_caps_connections_and_closes_silent_handshakes() {
    use vault_raft::transport::{MAX_CONNECTIONS, MAX_PER_ADDRESS, MEMBER_SLOTS};
    mt().block_on(async {
        let c = TestCluster::start(1, |_| {}).await;
        let addr = c.specs[0].raft_addr;
        let mut silent = Vec::new();
        for _ in 0..MAX_PER_ADDRESS + 5 {
            silent.push(connect_from([127, 0, 0, 1], addr).await);
        }
        let mut over = silent.split_off(MAX_PER_ADDRESS);
        assert_eq!(closed_within(&mut over, Duration::from_secs(2)).await, 5, "past the cap of one address");
        let shared = MAX_CONNECTIONS - MEMBER_SLOTS;
        let mut source = 2;
        while silent.len() < shared {
            for _ in 0..MAX_PER_ADDRESS.min(shared - silent.len()) {
                silent.push(connect_from([127, 0, 0, source], addr).await);
            }
            source += 1;
        }
        let mut over = Vec::new();
        for _ in 0..20 {
            over.push(connect_from([127, 0, 0, source], addr).await);
        }
        assert_eq!(closed_within(&mut over, Duration::from_secs(2)).await, 20, "past the {shared} shared slots");
        // The ones within the caps are closed when their handshake times out (10 s).
        let started = Instant::now();
        assert!(closed_soon(&mut silent[0], vault_raft::transport::HANDSHAKE_TIMEOUT + Duration::from_secs(5)).await);
        let waited = started.elapsed();
        assert!(waited > Duration::from_secs(5), "closed by the handshake timeout, not at once: {waited:?}");
        drop(silent);
        // And the listener serves members again.
        let mut member = raft_as(&c.certs(), 1, 1, addr).await;
        assert_eq!(member.node_state(raftpb::NodeStateRequest::default()).await.unwrap().into_inner().node_id, 1);
    });
}

/// A TLS connection to node `target` at `addr` presenting `certs/node-<as_id>`, handshake done.
async fn tls_as(
    certs: &Path,
    as_id: u64,
    target: u64,
    addr: std::net::SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    tls_from(certs, as_id, target, addr, [127, 0, 0, 1]).await.expect("TLS handshake")
}

/// Whether the server ends `s` (end of stream or an error) within `within`, reading and
/// dropping whatever it sends meanwhile (an HTTP/2 server speaks first).
async fn ended_within(s: &mut (impl tokio::io::AsyncRead + Unpin), within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let read_to_end = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_to_end).await.is_ok()
}

/// Issue 28, finding 5: a connection whose certificate (from the cluster CA) names a node that
/// is not a member is closed at the listener's next membership check, so it cannot hold a
/// slot; a member's connection, idle as long, stays open.
#[test]
fn a_connection_whose_certificate_names_no_member_is_closed_at_the_membership_check() {
    use vault_raft::transport::MEMBERSHIP_RECHECK;
    mt().block_on(async {
        let c = TestCluster::start(1, |_| {}).await;
        let addr = c.specs[0].raft_addr;
        let certs = c.certs();
        mint_certs(&certs, &[9]);
        let mut outsider = tls_as(&certs, 9, 1, addr).await;
        let mut member = tls_as(&certs, 1, 1, addr).await;
        let started = Instant::now();
        assert!(
            ended_within(&mut outsider, MEMBERSHIP_RECHECK + Duration::from_secs(5)).await,
            "a non-member's connection is still open after {:?}",
            started.elapsed()
        );
        assert!(!ended_within(&mut member, Duration::from_secs(2)).await, "a member's connection was closed");
    });
}

/// A TLS connection to the Raft listener at `addr` (node `target`) that presents no client
/// certificate: the handshake as far as the client goes, or `None` when the server refused it.
async fn certless_tls(
    certs: &Path,
    target: u64,
    addr: std::net::SocketAddr,
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(certs.join("ca.pem")).expect("read ca.pem") {
        roots.add(c.expect("a CA certificate")).expect("add the CA");
    }
    let mut config = ClientConfig::builder_with_provider(std::sync::Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let name = ServerName::try_from(node_server_name(target)).expect("a DNS name");
    let connect = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp);
    tokio::time::timeout(Duration::from_secs(5), connect).await.ok()?.ok()
}

/// Finding 5 of issue 28: TLS connections without a client certificate, as many as the
/// listener has slots, held open against every other member, do not keep a restarted member
/// out: it rejoins, and writes and linearizable reads through it (which it forwards to the
/// leader over the Raft port) succeed within a bound.
#[test]
fn certificate_less_tls_connections_do_not_keep_a_restarted_member_out() {
    mt().block_on(async {
        let mut c = TestCluster::start(3, |_| {}).await;
        let leader = c.leader_seen_by(0, |_| true).await;
        let member = (leader + 1) % 3;
        c.ctl(leader, &["secret", "put", "before/restart", "--value", "v1"]);
        // The member goes down first, so that the slots its own connections held are taken too.
        c.nodes[member].stop();
        let certs = c.certs();
        let mut held = Vec::new();
        for (i, spec) in c.specs.iter().enumerate().filter(|(i, _)| *i != member) {
            let mut completed = 0;
            for _ in 0..vault_raft::transport::MAX_CONNECTIONS {
                if let Some(s) = certless_tls(&certs, spec.node_id, spec.raft_addr).await {
                    held.push(s);
                    completed += 1;
                }
            }
            tracing::info!(node = i, completed, "certificate-less TLS connections opened (client side)");
        }
        tracing::info!("member {member} restarts while the connections are held");
        c.nodes[member] = c.specs[member].start();
        c.nodes[member].wait_ready().await;
        let started = Instant::now();
        let deadline = started + Duration::from_secs(45);
        loop {
            let put = c.nodes[member].vaultctl(Some(&c.token), &["secret", "put", "after/restart", "--value", "v2"]);
            let got = c.nodes[member].vaultctl(Some(&c.token), &["secret", "get", "before/restart"]);
            if put.status.success() && got.status.success() {
                assert_eq!(String::from_utf8_lossy(&got.stdout), "v1");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the restarted member did not rejoin within {:?}: put: {} get: {}",
                deadline - started,
                String::from_utf8_lossy(&put.stderr).trim(),
                String::from_utf8_lossy(&got.stderr).trim()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(c.ctl(leader, &["secret", "get", "after/restart"]), "v2", "its write replicated");
        drop(held);
    });
}
