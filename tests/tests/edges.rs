//! The edges a hostile or buggy client finds first, with real processes.

use tonic::Code;
use vault_node::pb;
use vault_tests::*;

fn mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// 64 unconditional puts to one name at once, through `urls` in turn: every one succeeds and
/// they get versions 1..=64.
async fn concurrent_puts_all_land(urls: &[String], token: &str) {
    let mut tasks = Vec::new();
    for i in 0..64usize {
        let (url, token) = (urls[i % urls.len()].clone(), token.to_string());
        tasks.push(tokio::spawn(async move {
            let mut c = secrets_client(&url).await;
            let req = authed(
                pb::PutSecretRequest { name: "hot/one".into(), value: format!("v{i}").into_bytes(), ..Default::default() },
                &token,
            );
            c.put_secret(req).await.map(|r| r.into_inner().version)
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(v) => versions.push(v),
            Err(s) => panic!("an unconditional put failed: {s}"),
        }
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=64).collect::<Vec<u64>>());
    // Check-and-set still conflicts, clearly.
    let mut c = secrets_client(&urls[0]).await;
    let req = authed(
        pb::PutSecretRequest { name: "hot/one".into(), value: b"x".to_vec(), expected_version: Some(3), ..Default::default() },
        token,
    );
    assert_eq!(c.put_secret(req).await.unwrap_err().code(), Code::FailedPrecondition);
}

#[test]
fn concurrent_unconditional_puts_to_one_name_all_succeed_on_one_node() {
    mt().block_on(async {
        let dir = test_dir();
        let token = random_token();
        let spec = NodeSpec::single(dir.path(), &token, &random_master_key());
        let mut node = spec.start();
        node.wait_ready().await;
        concurrent_puts_all_land(&[node.url()], &token).await;
    });
}

#[test]
fn concurrent_unconditional_puts_to_one_name_through_every_node_all_succeed() {
    mt().block_on(async {
        let c = TestCluster::start(3, |_| {}).await;
        let urls: Vec<String> = (0..3).map(|i| c.url(i)).collect();
        concurrent_puts_all_land(&urls, &c.token).await;
    });
}
