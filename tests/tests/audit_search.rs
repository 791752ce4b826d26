//! Searching a real node's audit log by actor, action, outcome and time (`ListAudit`'s
//! filters, through `vaultctl audit list`): each filter narrows the answer to exactly the
//! records it names, and the limit counts matching records, so a search finds old matches
//! behind many newer records of others.

use tonic::Code;
use vault_node::pb;
use vault_node::pb::admin_client::AdminClient;
use vault_tests::*;

fn token_for(n: &SingleNode, name: &str, role: &str) -> String {
    let json = n.ctl(&["--output", "json", "token", "create", name, "--role", role]);
    serde_json::from_str::<serde_json::Value>(&json).expect("json")["token"].as_str().expect("token").to_string()
}

/// `vaultctl --output json audit list ARGS` with the admin token (`--limit 10000` unless
/// ARGS set one).
fn search(n: &SingleNode, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["--output", "json", "audit", "list"];
    if !args.contains(&"--limit") {
        all.extend(["--limit", "10000"]);
    }
    all.extend_from_slice(args);
    serde_json::from_str(&n.ctl(&all)).expect("audit list json")
}

fn field<'a>(r: &'a serde_json::Value, k: &str) -> &'a str {
    r[k].as_str().unwrap_or("")
}

/// (action, secret, outcome) of each record, newest first.
fn summary(records: &[serde_json::Value]) -> Vec<(String, String, String)> {
    records.iter().map(|r| (field(r, "action").into(), field(r, "secret").into(), field(r, "outcome").into())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_filter_narrows_the_log_to_the_records_it_names() {
    let n = SingleNode::start(|_| {}).await;
    n.ctl(&["role", "create", "app-writer", "--grant", "create,update:app/*"]);
    let writer = token_for(&n, "writer", "app-writer");

    // The writer's records: one change that commits, one refusal.
    must_vaultctl(&n.url(), Some(&writer), &["secret", "put", "app/one", "--value", "v"]);
    let refused = n.node.vaultctl(Some(&writer), &["secret", "put", "other/x", "--value", "v"]);
    assert!(!refused.status.success(), "the writer may not write other/*");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mid = vault_core::time::now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    // Then many newer records of another actor, and a read (actor: the client's address).
    for i in 0..30 {
        n.ctl(&["secret", "put", &format!("app/later-{i}"), "--value", "v"]);
    }
    must_vaultctl(&n.url(), None, &["secret", "get", "app/one"]);

    let by_writer = search(&n, &["--actor", "writer"]);
    assert_eq!(
        summary(&by_writer),
        [
            ("secret.put".into(), "other/x".into(), by_writer[0]["outcome"].as_str().unwrap_or("").into()),
            ("secret.put".into(), "app/one".into(), "ok".into()),
        ],
        "{by_writer:?}"
    );
    assert!(field(&by_writer[0], "outcome").starts_with("permission denied: "), "{by_writer:?}");

    // The limit counts matches: the writer's records sit behind 30+ newer ones.
    let newest_of_writer = search(&n, &["--actor", "writer", "--limit", "1"]);
    assert_eq!(summary(&newest_of_writer), summary(&by_writer[..1]));

    let refusals = search(&n, &["--outcome", "permission denied"]);
    assert_eq!(summary(&refusals), summary(&by_writer[..1]), "{refusals:?}");
    let whole_outcome = field(&by_writer[0], "outcome").to_string();
    assert_eq!(summary(&search(&n, &["--outcome", &whole_outcome])), summary(&by_writer[..1]));
    assert!(search(&n, &["--outcome", "permission"]).is_empty(), "an outcome matches whole or by its status");

    let oks = search(&n, &["--outcome", "ok"]);
    assert!(oks.len() >= 32, "{}", oks.len());
    assert!(oks.iter().all(|r| field(r, "outcome") == "ok"), "{oks:?}");

    let reads = search(&n, &["--action", "secret.get"]);
    assert_eq!(summary(&reads), [("secret.get".into(), "app/one".into(), "ok".into())], "{reads:?}");
    assert_eq!(field(&reads[0], "actor"), "127.0.0.1");
    assert_eq!(summary(&search(&n, &["--actor", "127.0.0.1"])), summary(&reads));

    let puts = search(&n, &["--action", "secret.put"]);
    assert_eq!(puts.len(), 32, "{puts:?}");
    assert!(puts.iter().all(|r| field(r, "action") == "secret.put"));
    let writer_ok = search(&n, &["--actor", "writer", "--outcome", "ok"]);
    assert_eq!(summary(&writer_ok), summary(&by_writer[1..]));

    // Up to a time: everything then, nothing after, whatever the limit.
    let before = search(&n, &["--until", &mid.to_string()]);
    assert!(before.iter().all(|r| r["time_ms"].as_u64().is_some_and(|t| t <= mid)), "{before:?}");
    assert!(before.iter().any(|r| field(r, "secret") == "app/one" && field(r, "action") == "secret.put"));
    assert!(!before.iter().any(|r| field(r, "secret").starts_with("app/later-")), "{before:?}");
    let before_puts = search(&n, &["--until", &mid.to_string(), "--action", "secret.put", "--limit", "5"]);
    assert_eq!(summary(&before_puts), summary(&by_writer), "{before_puts:?}");
    let window = search(&n, &["--since", &mid.to_string(), "--until", &vault_core::time::now_ms().to_string()]);
    assert!(window.iter().all(|r| r["time_ms"].as_u64().is_some_and(|t| t >= mid)));
    assert_eq!(window.iter().filter(|r| field(r, "secret").starts_with("app/later-")).count(), 30);

    // A filter set to nothing is a mistake, said so; so is one the caller may not search with.
    let mut admin = AdminClient::new(n.node.channel().await.expect("connect"));
    let empty = pb::ListAuditRequest { actor: Some(String::new()), ..Default::default() };
    let e = admin.list_audit(authed(empty, &n.token)).await.expect_err("an empty actor is refused");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = admin.list_audit(authed(pb::ListAuditRequest::default(), &writer)).await.expect_err("admin only");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
}
