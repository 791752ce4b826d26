//! The Raft log moving out of RocksDB into segment files on a real node: a node run at
//! `VAULT_MAX_FEATURE_LEVEL=4` keeps the RocksDB log; restarted at this build's level, it moves
//! the log at start, and every acknowledged write reads back.

use vault_tests::*;

fn put(n: &SingleNode, i: usize) {
    n.ctl(&["secret", "put", &format!("log/{i}"), "--value", &format!("value-{i}")]);
}

fn check(n: &SingleNode, upto: usize) {
    for i in 0..upto {
        assert_eq!(n.ctl(&["secret", "get", &format!("log/{i}")]), format!("value-{i}"), "secret {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_held_at_level_4_moves_its_log_when_raised_and_keeps_every_write() {
    let mut n = SingleNode::start(|s| {
        s.set("VAULT_MAX_FEATURE_LEVEL", "4");
    })
    .await;
    for i in 0..40 {
        put(&n, i);
    }
    let log_dir = n.spec.data_dir().join("raft-log");
    assert!(!log_dir.exists(), "held at level 4: the log stays in RocksDB");
    // Killed, not stopped: what was acknowledged is all the move has to go on.
    n.node.kill();
    n.spec.env.remove("VAULT_MAX_FEATURE_LEVEL");
    n.node = n.spec.start();
    n.node.wait_ready().await;
    assert!(log_dir.is_dir(), "raised: the log moved to segment files");
    check(&n, 40);
    for i in 40..60 {
        put(&n, i);
    }
    n.node.kill();
    n.node = n.spec.start();
    n.node.wait_ready().await;
    check(&n, 60);
}
