//! What a running node keeps where others could read it, with real processes.

use vault_tests::*;

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_given_in_the_environment_leave_it_once_read() {
    let dir = test_dir();
    let (token, key, cli_token) = (random_token(), random_master_key(), random_token());
    let mut spec = NodeSpec::single(dir.path(), &token, &key);
    spec.set("VAULT_TOKEN", &cli_token);
    spec.set("VAULT_AUDIT_KEY", &random_master_key());
    let audit_key = spec.env["VAULT_AUDIT_KEY"].clone();
    let mut node = spec.start();
    node.wait_ready().await;

    let pid = node.pid().expect("running");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("read the node's environment");
    assert!(contains(&environ, b"VAULT_DATA_DIR="), "the environment was read: {}", environ.len());
    for (what, value) in
        [("master key", &key), ("bootstrap token", &token), ("VAULT_TOKEN", &cli_token), ("audit key", &audit_key)]
    {
        assert!(!contains(&environ, value.as_bytes()), "the {what} is still in /proc/{pid}/environ");
    }

    // The node read them before they left: the bootstrap token works, and so does sealing.
    let out = node.vaultctl(Some(&token), &["secret", "put", "env/check", "--value", "v1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
