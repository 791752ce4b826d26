//! What an operator runs against real nodes: the metrics listener (`/metrics`, `/healthz`,
//! `/readyz`), and backup and restore.

use std::time::{Duration, Instant};

use vault_tests::*;

fn mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn with_metrics(spec: &mut NodeSpec) -> String {
    let addr = format!("127.0.0.1:{}", free_port());
    spec.set("VAULT_METRICS_ADDR", &addr);
    addr
}

async fn scrape(addr: &str) -> String {
    let (code, body) = http_get(addr, "/metrics").await.expect("the metrics listener answers");
    assert_eq!(code, 200, "{body}");
    body
}

/// Sum of every sample of metric `name` whose labels contain all of `labels`.
fn total(scrape: &str, name: &str, labels: &[&str]) -> f64 {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let bare = series.split('{').next()?;
            (bare == name && labels.iter().all(|want| series.contains(want))).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[test]
fn metrics_move_under_a_write_load_and_never_name_a_secret() {
    mt().block_on(async {
        let mut metrics_addr = String::new();
        let n = SingleNode::start(|s| metrics_addr = with_metrics(s)).await;
        let before = scrape(&metrics_addr).await;
        let applied_before = sample(&before, "vault_raft_applied_index").expect("applied index exported");
        let puts_before =
            total(&before, "vault_grpc_requests_total", &[r#"rpc="/vault.v1.Secrets/PutSecret""#, r#"code="OK""#]);

        // A write load from four writers, with a scrape in the middle of it.
        let marker = canary("metric-label");
        let url = n.url();
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let (url, token, marker) = (url.clone(), n.token.clone(), marker.clone());
                tokio::spawn(async move {
                    let mut c = secrets_client(&url).await;
                    for i in 0..25 {
                        let req = vault_node::pb::PutSecretRequest {
                            name: format!("ops/{marker}-{w}"),
                            value: format!("value-{i}").into_bytes(),
                            ..Default::default()
                        };
                        c.put_secret(authed(req, &token)).await.expect("put");
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let during = scrape(&metrics_addr).await;
        for w in writers {
            w.await.expect("writer");
        }
        // A read, a refused read and a refused management call add labelled outcomes.
        let got = vault_tests::secrets_client(&url)
            .await
            .get_secret(vault_node::pb::GetSecretRequest { name: format!("ops/{marker}-0"), version: 0 })
            .await
            .expect("read");
        assert_eq!(got.into_inner().value, b"value-24");
        let refused = n.node.vaultctl(Some("not-a-token"), &["secret", "list"]);
        assert!(!refused.status.success());

        let after = scrape(&metrics_addr).await;
        let puts_after =
            total(&after, "vault_grpc_requests_total", &[r#"rpc="/vault.v1.Secrets/PutSecret""#, r#"code="OK""#]);
        assert_eq!(puts_after - puts_before, 100.0, "every put counted once, with its status:\n{after}");
        let puts_during =
            total(&during, "vault_grpc_requests_total", &[r#"rpc="/vault.v1.Secrets/PutSecret""#, r#"code="OK""#]);
        assert!(puts_during <= puts_after, "counters only rise");
        assert!(
            total(
                &after,
                "vault_grpc_requests_total",
                &[r#"rpc="/vault.v1.Secrets/ListSecrets""#, r#"code="UNAUTHENTICATED""#]
            ) >= 1.0,
            "a refusal is counted under its code:\n{after}"
        );
        assert!(
            total(&after, "vault_grpc_request_duration_seconds_count", &[r#"rpc="/vault.v1.Secrets/GetSecret""#])
                >= 1.0
        );
        let applied_after = sample(&after, "vault_raft_applied_index").expect("applied index");
        // Concurrent puts share entries, but each writer's 25 puts follow one another.
        assert!(
            applied_after >= applied_before + 25.0,
            "Raft applied index moved: {applied_before} -> {applied_after}"
        );
        let commit = sample(&after, "vault_raft_commit_index").expect("commit index exported");
        assert!(commit >= applied_after, "commit {commit} >= applied {applied_after}");
        assert_eq!(sample(&after, "vault_raft_is_leader"), Some(1.0));
        assert!(sample(&after, "vault_raft_term").is_some_and(|t| t >= 1.0));
        assert!(total(&after, "vault_kms_request_duration_seconds_count", &[r#"op="generate_data_key""#]) >= 100.0);
        assert!(
            total(&after, "vault_dek_cache_misses_total", &[]) + total(&after, "vault_dek_cache_hits_total", &[])
                >= 1.0
        );
        assert_eq!(sample(&after, "vault_ready"), Some(1.0));
        for text in [&before, &during, &after] {
            assert!(!text.contains(&marker), "a secret name reached a metric:\n{text}");
            assert!(!text.contains(&n.token), "a token reached a metric");
        }

        let (code, body) = http_get(&metrics_addr, "/healthz").await.expect("healthz");
        assert_eq!((code, body.trim()), (200, "ok"));
        let (code, _) = http_get(&metrics_addr, "/nope").await.expect("404");
        assert_eq!(code, 404);
    });
}

/// Readiness: 503 on a node whose peers are stopped (no quorum, no leader to catch up with),
/// 200 once they are back; the gRPC health service says the same.
#[test]
fn readyz_follows_quorum_and_matches_grpc_health() {
    mt().block_on(async {
        let mut c = TestCluster::start(3, |s| {
            with_metrics(s);
        })
        .await;
        let metrics: Vec<String> = c.specs.iter().map(|s| s.env["VAULT_METRICS_ADDR"].clone()).collect();
        let ready = |i: usize| {
            let addr = metrics[i].clone();
            async move { http_get(&addr, "/readyz").await.map(|(code, body)| (code, body)) }
        };
        for i in 0..3 {
            let deadline = Instant::now() + Duration::from_secs(20);
            while ready(i).await.map(|r| r.0) != Some(200) {
                assert!(Instant::now() < deadline, "node {i} never became ready: {:?}", ready(i).await);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        // Stop both peers of node 0 (SIGTERM, then start them again from their data).
        c.nodes[1].stop();
        c.nodes[2].stop();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = ready(0).await;
            if r.as_ref().map(|r| r.0) == Some(503) {
                let body = r.map(|r| r.1).unwrap_or_default();
                assert!(body.starts_with("not ready: "), "503 says why: {body}");
                break;
            }
            assert!(Instant::now() < deadline, "node 0 stayed ready without its peers: {r:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(!serving(&c.url(0), None).await, "gRPC health agrees: NOT_SERVING");
        let (code, _) = http_get(&metrics[0], "/healthz").await.expect("healthz");
        assert_eq!(code, 200, "alive, though not ready");

        c.nodes[1] = c.specs[1].start();
        c.nodes[2] = c.specs[2].start();
        let deadline = Instant::now() + Duration::from_secs(30);
        while ready(0).await.map(|r| r.0) != Some(200) {
            assert!(Instant::now() < deadline, "node 0 not ready after its peers returned: {:?}", ready(0).await);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(serving(&c.url(0), None).await, "gRPC health agrees: SERVING");

        // Shutdown: a client watching gRPC health sees NOT_SERVING, and while that open stream
        // holds the API server in its grace period, /healthz and /readyz answer 503.
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::health_client::HealthClient;
        let mut watch = HealthClient::new(c.nodes[0].channel().await.expect("channel"))
            .watch(tonic_health::pb::HealthCheckRequest { service: "vault.v1.Secrets".into() })
            .await
            .expect("watch")
            .into_inner();
        let first = watch.message().await.expect("watch answer").expect("a status");
        assert_eq!(first.status, ServingStatus::Serving as i32);
        c.nodes[0].signal("TERM");
        let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .expect("health changes at shutdown")
            .expect("watch answer")
            .expect("a status");
        assert_eq!(next.status, ServingStatus::NotServing as i32);
        assert_eq!(http_get(&metrics[0], "/healthz").await.map(|r| r.0), Some(503));
        let (code, body) = http_get(&metrics[0], "/readyz").await.expect("readyz during shutdown");
        assert_eq!((code, body.trim()), (503, "not ready: shutting down"));
    });
}
