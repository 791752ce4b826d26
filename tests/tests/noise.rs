//! What a node's log says while a peer is away: one line when calls to it start failing and
//! a summary now and then, not a line per retry.

use std::time::{Duration, Instant};

use vault_tests::*;

fn mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// The leader's log lines at WARN or ERROR written after byte `from`.
fn loud_lines(node: &NodeProcess, from: usize) -> Vec<String> {
    let log = node.log();
    log.get(from..)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" ERROR ") || l.contains(" WARN "))
        .map(str::to_owned)
        .collect()
}

/// A follower killed for five seconds, with writes and reads going on, costs the leader's log
/// a few lines (replication retries are summarised per peer), not one or more per retry; the
/// follower comes back and catches up. Then the leader is killed for five seconds: each of
/// the others logs a few lines too.
#[test]
fn a_follower_or_the_leader_away_for_five_seconds_costs_each_node_a_few_log_lines() {
    mt().block_on(async {
        let mut c = TestCluster::start(3, |_| {}).await;
        let leader = c.leader_seen_by(0, |_| true).await;
        let follower = (leader + 1) % 3;
        c.ctl(leader, &["secret", "put", "app/before", "--value", "v"]);
        let from = c.nodes[leader].log().len();

        c.nodes[follower].kill();
        // Writes, and linearizable reads (each confirms the leadership with the followers).
        let mut reader = secrets_client(&c.url(leader)).await;
        let until = Instant::now() + Duration::from_secs(5);
        let mut writes = 0;
        while Instant::now() < until {
            c.ctl(leader, &["secret", "put", &format!("app/during-{writes}"), "--value", "v"]);
            writes += 1;
            for _ in 0..10 {
                let get = vault_node::pb::GetSecretRequest { name: "app/before".into(), version: 0 };
                reader.get_secret(get).await.expect("a read with a quorum");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        c.nodes[follower] = c.specs[follower].start();
        c.nodes[follower].wait_ready().await;
        let last = format!("app/during-{}", writes - 1);
        assert_eq!(c.ctl(follower, &["secret", "get", &last]), "v", "the follower caught up");
        tokio::time::sleep(Duration::from_secs(1)).await;

        let loud = loud_lines(&c.nodes[leader], from);
        eprintln!("{} loud lines on the leader while a follower was away:\n{}", loud.len(), loud.join("\n"));
        let errors = loud.iter().filter(|l| l.contains(" ERROR ")).count();
        assert_eq!(errors, 0, "a follower away is not an error of the leader's:\n{}", loud.join("\n"));
        assert!(loud.len() <= 6, "{} warnings for one follower away 5 s:\n{}", loud.len(), loud.join("\n"));

        // The leader away for five seconds: the others elect one of them, which replicates
        // to the old leader while it is away; each says a few lines, not one per retry.
        let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
        let from: Vec<usize> = others.iter().map(|&i| c.nodes[i].log().len()).collect();
        c.nodes[leader].kill();
        let until = Instant::now() + Duration::from_secs(5);
        let mut reader = secrets_client(&c.url(others[0])).await;
        while Instant::now() < until {
            // Refused while there is no leader; that is not what this test is about.
            let get = vault_node::pb::GetSecretRequest { name: "app/before".into(), version: 0 };
            let _ = tokio::time::timeout(Duration::from_secs(1), reader.get_secret(get)).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c.nodes[leader] = c.specs[leader].start();
        c.nodes[leader].wait_ready().await;
        for (k, &i) in others.iter().enumerate() {
            let loud = loud_lines(&c.nodes[i], from[k]);
            eprintln!("{} loud lines on node {i} while the leader was away:\n{}", loud.len(), loud.join("\n"));
            assert!(loud.len() <= 10, "{} lines on node {i} for a leader away 5 s:\n{}", loud.len(), loud.join("\n"));
        }
    });
}
