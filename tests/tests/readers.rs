//! Reader rules with real processes: while none exists the address allowlist alone decides
//! reads; once one exists, a read needs a rule that matches the client (its address, or the
//! common name of the client certificate it presents) and grants the name. Rules are managed
//! with an admin token, replicated through Raft, named in the audit log, and apply to
//! `BatchGetSecrets` item by item and to `vaultctl run`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};
use tonic::Code;
use vault_node::pb;
use vault_tests::*;

fn mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn field<'a>(r: &'a Value, k: &str) -> &'a str {
    r[k].as_str().unwrap_or("")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

/// `vaultctl` with the admin token against `n` (with `--ca-cert` when it serves TLS); must
/// succeed. Returns stdout.
fn admin(n: &SingleNode, args: &[&str]) -> String {
    let out = n.node.vaultctl(Some(&n.token), args);
    assert!(out.status.success(), "vaultctl {args:?} failed: {}", stderr(&out));
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// `vaultctl` with the admin token against `n`; must fail with one `error:` line, returned.
fn admin_err(n: &SingleNode, args: &[&str]) -> String {
    let out = n.node.vaultctl(Some(&n.token), args);
    assert!(
        !out.status.success(),
        "vaultctl {args:?} unexpectedly succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = stderr(&out);
    assert!(err.starts_with("error: ") && err.lines().count() == 1, "stderr should be one `error:` line: {err:?}");
    err
}

/// A token-less `secret get NAME` through `node`, after `extra` flags (a client certificate):
/// the value, or vaultctl's error line.
fn read(node: &NodeProcess, extra: &[&str], name: &str) -> Result<String, String> {
    let mut args = extra.to_vec();
    args.extend(["secret", "get", name]);
    let out = node.vaultctl(None, &args);
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("utf-8 value"))
    } else {
        Err(stderr(&out))
    }
}

/// Asserts that a read was refused as PERMISSION_DENIED.
fn assert_denied(got: Result<String, String>, what: &str) {
    match got {
        Ok(v) => panic!("{what}: the read succeeded and returned {v:?}"),
        Err(e) => assert!(e.starts_with("error: permission denied"), "{what}: {e}"),
    }
}

/// The rules `reader list --output json` shows, by name.
fn listed_names(out: &str) -> Vec<String> {
    let rules = json(out);
    rules
        .as_array()
        .unwrap_or_else(|| panic!("a JSON array of rules: {out}"))
        .iter()
        .map(|r| field(r, "name").to_string())
        .collect()
}

/// The `secret.get` records of `name` in the audit log of the node `n`.
fn reads_on_record(n: &SingleNode, name: &str) -> Vec<Value> {
    let records = json(&admin(n, &["--output", "json", "audit", "list", "--secret", name]));
    records
        .as_array()
        .expect("a JSON array of records")
        .iter()
        .filter(|r| field(r, "action") == "secret.get")
        .cloned()
        .collect()
}

fn utf8(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

/// Reads follow the address allowlist alone until a rule exists; then `app/x` reads from
/// 127.0.0.1 through a rule granting `app/*` and `other/x` is PERMISSION_DENIED (singly, and
/// item by item in a batch); even a rule for another network alone closes every read to
/// loopback; deleting the last rule, or restoring a backup without rules, leaves no read
/// allowed (rules stay required once in force) until an admin creates a rule again. Only an
/// admin token manages rules; refused rules store nothing; the audit log names the rule that
/// allowed a read.
#[test]
fn once_a_reader_rule_exists_a_read_needs_a_rule_that_grants_the_name() {
    mt().block_on(async {
        let n = SingleNode::start(|_| {}).await;
        let (x, other) = (canary("app-x"), canary("other-x"));
        admin(&n, &["secret", "put", "app/x", "--value", &x]);
        admin(&n, &["secret", "put", "other/x", "--value", &other]);

        // No rule: every allowlisted client reads everything, as before.
        assert_eq!(json(&admin(&n, &["--output", "json", "reader", "list"])), json!([]));
        assert_eq!(read(&n.node, &[], "app/x"), Ok(x.clone()));
        assert_eq!(read(&n.node, &[], "other/x"), Ok(other.clone()));

        // Malformed rules are refused, and store nothing.
        for (args, why) in [
            (vec!["reader", "create", "bad", "--cidr", "127.0.0.1/33", "--grant", "app/*"], "prefix length over 32"),
            (vec!["reader", "create", "bad", "--cidr", "not-an-address", "--grant", "app/*"], "not an address"),
            (vec!["reader", "create", "bad", "--cidr", "127.0.0.1/32", "--grant", "app/*/x"], "'*' inside a pattern"),
            (
                vec!["reader", "create", "bad", "--cidr", "127.0.0.1/32", "--grant", "/app/*"],
                "pattern matching no name",
            ),
        ] {
            let err = admin_err(&n, &args);
            assert!(err.contains("invalid argument"), "{why}: {err}");
        }
        for (args, why) in [
            (vec!["reader", "create", "bad", "--grant", "app/*"], "neither --cidr nor --cert-cn"),
            (vec!["reader", "create", "bad", "--cidr", "127.0.0.1/32"], "no --grant"),
        ] {
            let out = n.node.vaultctl(Some(&n.token), &args);
            assert!(!out.status.success(), "{why}: accepted: {}", String::from_utf8_lossy(&out.stdout));
        }
        // Only an admin token manages rules.
        admin(&n, &["role", "create", "app-writer", "--grant", "create,update,list:app/*"]);
        let writer = admin(&n, &["token", "create", "w1", "--role", "app-writer"]).trim().to_string();
        let mine = ["reader", "create", "mine", "--cidr", "127.0.0.1/32", "--grant", "*"];
        let err = must_fail_vaultctl(&n.url(), Some(&writer), &mine);
        assert!(err.contains("permission denied"), "a non-admin token created a rule: {err}");
        let err = must_fail_vaultctl(&n.url(), None, &mine);
        assert!(err.contains("unauthenticated"), "no token created a rule: {err}");
        assert_eq!(json(&admin(&n, &["--output", "json", "reader", "list"])), json!([]), "nothing was stored");
        assert_eq!(read(&n.node, &[], "other/x"), Ok(other.clone()), "reads stay open");

        // One rule for 127.0.0.1 granting app/*.
        admin(&n, &["reader", "create", "local", "--cidr", "127.0.0.1/32", "--grant", "app/*"]);
        let listed = json(&admin(&n, &["--output", "json", "reader", "list"]));
        let rules = listed.as_array().expect("a JSON array of rules");
        assert_eq!(rules.len(), 1, "{listed}");
        let rule = &rules[0];
        assert_eq!(rule["name"], "local", "{listed}");
        assert_eq!(rule["cidrs"], json!(["127.0.0.1/32"]), "{listed}");
        assert_eq!(rule["cert_cns"], json!([]), "{listed}");
        assert_eq!(rule["grants"], json!(["app/*"]), "{listed}");
        assert!(rule["created_at_ms"].as_u64().is_some_and(|t| t > 0), "{listed}");
        assert_eq!(&json(&admin(&n, &["--output", "json", "reader", "get", "local"])), rule);
        let table = admin(&n, &["reader", "list"]);
        assert!(table.contains("local") && table.contains("127.0.0.1/32"), "{table}");
        let err = admin_err(&n, &["reader", "create", "local", "--cidr", "127.0.0.2/32", "--grant", "*"]);
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(json(&admin(&n, &["--output", "json", "reader", "get", "local"]))["grants"], json!(["app/*"]));

        assert_eq!(read(&n.node, &[], "app/x"), Ok(x.clone()), "app/x through rule local");
        assert_denied(read(&n.node, &[], "other/x"), "other/x, which rule local does not grant");
        let missing = read(&n.node, &[], "app/missing").expect_err("app/missing does not exist");
        assert!(missing.contains("not found"), "a granted name that does not exist: {missing}");

        // A batch answers item by item.
        let mut client = secrets_client(&n.url()).await;
        let requests = ["app/x", "other/x", "app/missing"]
            .iter()
            .map(|name| pb::GetSecretRequest { name: name.to_string(), version: 0 })
            .collect();
        let results = client
            .batch_get_secrets(pb::BatchGetSecretsRequest { requests })
            .await
            .expect("a batch is answered item by item")
            .into_inner()
            .results;
        let names: Vec<&str> = results.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["app/x", "other/x", "app/missing"]);
        use pb::batch_get_result::Result as R;
        match &results[0].result {
            Some(R::Secret(s)) => assert_eq!(s.value, x.as_bytes(), "app/x in the batch"),
            other => panic!("app/x in the batch: {other:?}"),
        }
        match &results[1].result {
            Some(R::Error(e)) => assert_eq!(e.code, Code::PermissionDenied as i32, "other/x in the batch: {e:?}"),
            other => panic!("other/x in the batch must be refused: {other:?}"),
        }
        match &results[2].result {
            Some(R::Error(e)) => assert_eq!(e.code, Code::NotFound as i32, "app/missing in the batch: {e:?}"),
            other => panic!("app/missing in the batch: {other:?}"),
        }

        // The audit log says which rule allowed a read, and why one was refused.
        let reads = reads_on_record(&n, "app/x");
        assert!(
            reads
                .iter()
                .any(|r| field(r, "outcome").starts_with("ok") && field(r, "outcome").contains("reader rule local")),
            "no allowed read of app/x names rule local: {reads:#?}"
        );
        let reads = reads_on_record(&n, "other/x");
        assert!(
            reads.iter().any(|r| {
                let outcome = field(r, "outcome");
                outcome.starts_with("permission denied") && outcome.contains("reader rule")
            }),
            "no refused read of other/x says which reader rule refused it: {reads:#?}"
        );

        // --replace swaps the grants: now only the exact name other/x.
        admin(&n, &["reader", "create", "local", "--cidr", "127.0.0.1/32", "--grant", "other/x", "--replace"]);
        assert_eq!(read(&n.node, &[], "other/x"), Ok(other.clone()), "other/x after --replace");
        assert_denied(read(&n.node, &[], "app/x"), "app/x after --replace");

        // A rule for another network alone still closes reads to every other client.
        admin(&n, &["reader", "create", "far", "--cidr", "10.9.9.7/24", "--grant", "*"]);
        let far = json(&admin(&n, &["--output", "json", "reader", "get", "far"]));
        assert_eq!(far["cidrs"], json!(["10.9.9.0/24"]), "CIDRs are stored with their host bits cleared: {far}");
        let err = must_fail_vaultctl(&n.url(), Some(&writer), &["reader", "delete", "local"]);
        assert!(err.contains("permission denied"), "a non-admin token deleted a rule: {err}");
        let out = n.node.vaultctl(Some(&n.token), &["reader", "delete", "local"]);
        assert!(out.status.success() && stderr(&out).is_empty(), "a rule is left: no warning: {out:?}");
        assert_eq!(listed_names(&admin(&n, &["--output", "json", "reader", "list"])), ["far"]);
        let changes = json(&admin(&n, &["--output", "json", "audit", "list", "--secret", "reader:local"]));
        let done: Vec<&str> = changes
            .as_array()
            .expect("audit records")
            .iter()
            .filter(|r| field(r, "outcome") == "ok")
            .map(|r| field(r, "action"))
            .collect();
        assert!(
            done.contains(&"reader.create") && done.contains(&"reader.delete"),
            "rule changes on record: {changes}"
        );
        assert_denied(read(&n.node, &[], "app/x"), "app/x with only a rule for 10.9.9.0/24");
        assert_denied(read(&n.node, &[], "other/x"), "other/x with only a rule for 10.9.9.0/24");
        let reads = reads_on_record(&n, "app/x");
        assert!(
            reads.iter().any(|r| field(r, "outcome").starts_with("permission denied")),
            "the refusal with no matching rule is on record: {reads:#?}"
        );

        // No rule left: rules stay required, so nothing is readable, and vaultctl says so.
        let backup = n.dir.path().join("no-rules.backup");
        let out = n.node.vaultctl(Some(&n.token), &["reader", "delete", "far"]);
        assert!(out.status.success() && stderr(&out).contains("warning: no reader rule is left"), "{out:?}");
        assert_eq!(json(&admin(&n, &["--output", "json", "reader", "list"])), json!([]));
        assert_denied(read(&n.node, &[], "app/x"), "app/x with no rule left");
        assert_denied(read(&n.node, &[], "other/x"), "other/x with no rule left");
        // Nor does restoring a backup without rules reopen reads.
        admin(&n, &["snapshot", "save", backup.to_str().expect("utf-8 path")]);
        admin(&n, &["snapshot", "restore", backup.to_str().expect("utf-8 path")]);
        assert_denied(read(&n.node, &[], "app/x"), "app/x after restoring a backup without rules");
        // Only a rule opens reads again; one for every address and name leaves the allowlist to decide.
        admin(&n, &["reader", "create", "all", "--cidr", "0.0.0.0/0", "--cidr", "::/0", "--grant", "*"]);
        assert_eq!(read(&n.node, &[], "other/x"), Ok(other.clone()), "other/x through rule all");
        admin(&n, &["reader", "delete", "all"]);
        let err = admin_err(&n, &["reader", "delete", "far"]);
        assert!(err.contains("not found"), "{err}");
        let out = n.node.vaultctl(Some(&n.token), &["reader", "get", "far"]);
        assert!(!out.status.success(), "a deleted rule is still shown: {}", String::from_utf8_lossy(&out.stdout));
    });
}

/// A rule created through one node decides reads on the others at once, and replacing it
/// through another node (a rule granting every name, then deleting the first) opens reads on
/// every node, with no restart: rules travel through Raft and reads are linearizable.
#[test]
fn reader_rule_changes_through_one_node_apply_on_every_node_at_once() {
    mt().block_on(async {
        let c = TestCluster::start(3, |_| {}).await;
        let (x, other) = (canary("app-x"), canary("other-x"));
        c.ctl(0, &["secret", "put", "app/x", "--value", &x]);
        c.ctl(0, &["secret", "put", "other/x", "--value", &other]);
        for i in 0..3 {
            assert_eq!(read(&c.nodes[i], &[], "other/x"), Ok(other.clone()), "node {i} before any rule");
        }

        c.ctl(0, &["reader", "create", "local", "--cidr", "127.0.0.1/32", "--grant", "app/*"]);
        for i in [1, 2, 0] {
            assert_eq!(read(&c.nodes[i], &[], "app/x"), Ok(x.clone()), "node {i}: app/x through rule local");
            assert_denied(read(&c.nodes[i], &[], "other/x"), &format!("node {i}: other/x"));
            let names = listed_names(&c.ctl(i, &["--output", "json", "reader", "list"]));
            assert_eq!(names, ["local"], "node {i} lists the rule");
        }
        let mut client = secrets_client(&c.url(2)).await;
        let requests =
            ["other/x", "app/x"].iter().map(|n| pb::GetSecretRequest { name: n.to_string(), version: 0 }).collect();
        let results = client
            .batch_get_secrets(pb::BatchGetSecretsRequest { requests })
            .await
            .expect("batch")
            .into_inner()
            .results;
        use pb::batch_get_result::Result as R;
        assert!(
            matches!(&results[0].result, Some(R::Error(e)) if e.code == Code::PermissionDenied as i32),
            "node 2, other/x in a batch: {:?}",
            results[0]
        );
        assert!(
            matches!(&results[1].result, Some(R::Secret(s)) if s.value == x.as_bytes()),
            "node 2, app/x in a batch"
        );
        // Each node's audit log names the rule for the reads it served.
        let records = json(&c.ctl(2, &["--output", "json", "audit", "list", "--secret", "app/x"]));
        assert!(
            records.as_array().expect("records").iter().any(|r| field(r, "action") == "secret.get"
                && field(r, "outcome").starts_with("ok")
                && field(r, "outcome").contains("reader rule local")),
            "node 2 audit: {records:#}"
        );

        c.ctl(1, &["reader", "create", "every", "--cidr", "127.0.0.0/8", "--grant", "*"]);
        c.ctl(1, &["reader", "delete", "local"]);
        for i in [2, 0, 1] {
            assert_eq!(read(&c.nodes[i], &[], "other/x"), Ok(other.clone()), "node {i} after the change on node 1");
            assert_eq!(read(&c.nodes[i], &[], "app/x"), Ok(x.clone()), "node {i} after the change on node 1");
            assert_eq!(listed_names(&c.ctl(i, &["--output", "json", "reader", "list"])), ["every"], "node {i}");
        }
        // The last rule gone through node 0: rules stay required on every node, so no read.
        c.ctl(0, &["reader", "delete", "every"]);
        for i in [1, 2, 0] {
            assert_denied(read(&c.nodes[i], &[], "other/x"), &format!("node {i} with no rule left"));
        }
    });
}

/// `--client-cert` and `--client-key` for the certificate of `cn` minted into `dir`.
fn cert_flags(dir: &Path, cn: &str) -> Vec<String> {
    vec![
        "--client-cert".into(),
        utf8(&dir.join(format!("reader-{cn}.pem"))),
        "--client-key".into(),
        utf8(&dir.join(format!("reader-{cn}.key"))),
    ]
}

/// A node serving the API over TLS with the cluster certificate of node 1 (minted into
/// `certs`), verifying client certificates against the reader CA in `readers`.
/// A scratch directory holding node 1's certificates (`certs/`) and the reader CA with
/// `ci-runner`'s reader certificate (`readers/`), and the two paths.
fn node_and_reader_certs() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let work = test_dir();
    let certs = work.path().join("certs");
    mint_certs(&certs, &[1]);
    let readers = work.path().join("readers");
    mint_reader_cert("ci-runner", &readers);
    (work, certs, readers)
}

async fn tls_reader_node(certs: &Path, readers: &Path, tune: impl FnOnce(&mut NodeSpec)) -> SingleNode {
    SingleNode::start(|s| {
        s.set("VAULT_TLS_CERT", &utf8(&certs.join("node-1.pem")));
        s.set("VAULT_TLS_KEY", &utf8(&certs.join("node-1.key")));
        s.set("VAULT_TLS_CLIENT_CA", &utf8(&readers.join("reader-ca.pem")));
        s.api_ca = Some(certs.join("ca.pem"));
        tune(s);
    })
    .await
}

/// On a node that verifies client certificates against a reader CA (`VAULT_TLS_CLIENT_CA`),
/// the certificate of `ci-runner`, whose rule grants `ci/*`, reads `ci/x` from 127.0.0.1,
/// which no rule names; without it, with another common name, or for a name its rule does not
/// grant, the read is PERMISSION_DENIED; a certificate from another CA reads nothing. The
/// certificates come from `vaultctl reader cert`, which makes the CA once and keeps its keys
/// private; the flags also come from the environment; the audit log names the rule.
#[test]
fn a_client_certificate_reads_what_its_rule_grants_from_an_address_no_rule_names() {
    mt().block_on(async {
        let (work, certs, readers) = node_and_reader_certs();
        let reader_ca = std::fs::read(readers.join("reader-ca.pem")).expect("reader-ca.pem written");
        mint_reader_cert("other-cn", &readers);
        assert_eq!(
            std::fs::read(readers.join("reader-ca.pem")).expect("reader-ca.pem"),
            reader_ca,
            "a second certificate is signed by the CA the first one made"
        );
        for f in [
            "reader-ca.key",
            "reader-ci-runner.pem",
            "reader-ci-runner.key",
            "reader-other-cn.pem",
            "reader-other-cn.key",
        ] {
            assert!(readers.join(f).is_file(), "{f} written");
        }
        use std::os::unix::fs::PermissionsExt;
        for key in ["reader-ca.key", "reader-ci-runner.key", "reader-other-cn.key"] {
            let mode = std::fs::metadata(readers.join(key)).expect("stat").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{key} is readable by its owner only");
        }
        let foreign = work.path().join("foreign");
        mint_reader_cert("ci-runner", &foreign);
        assert_ne!(std::fs::read(foreign.join("reader-ca.pem")).expect("foreign CA"), reader_ca, "another CA");

        let n = tls_reader_node(&certs, &readers, |_| {}).await;
        let (ci_x, app_x) = (canary("ci-x"), canary("app-x"));
        admin(&n, &["secret", "put", "ci/x", "--value", &ci_x]);
        admin(&n, &["secret", "put", "app/x", "--value", &app_x]);
        admin(&n, &["reader", "create", "net", "--cidr", "10.9.9.0/24", "--grant", "app/*"]);
        admin(&n, &["reader", "create", "ci", "--cert-cn", "ci-runner", "--grant", "ci/*"]);
        let rule = json(&admin(&n, &["--output", "json", "reader", "get", "ci"]));
        assert_eq!(
            (&rule["cert_cns"], &rule["cidrs"], &rule["grants"]),
            (&json!(["ci-runner"]), &json!([]), &json!(["ci/*"]))
        );

        let ci = cert_flags(&readers, "ci-runner");
        let ci: Vec<&str> = ci.iter().map(String::as_str).collect();
        assert_eq!(read(&n.node, &ci, "ci/x"), Ok(ci_x.clone()), "ci/x with the ci-runner certificate");
        assert_denied(read(&n.node, &[], "ci/x"), "ci/x without a certificate");
        assert_denied(read(&n.node, &ci, "app/x"), "app/x with the ci-runner certificate");
        assert_denied(read(&n.node, &[], "app/x"), "app/x from 127.0.0.1, outside 10.9.9.0/24");
        let other = cert_flags(&readers, "other-cn");
        let other: Vec<&str> = other.iter().map(String::as_str).collect();
        assert_denied(read(&n.node, &other, "ci/x"), "ci/x with a certificate for another common name");
        let stranger = cert_flags(&foreign, "ci-runner");
        let stranger: Vec<&str> = stranger.iter().map(String::as_str).collect();
        let got = read(&n.node, &stranger, "ci/x");
        assert!(got.is_err(), "a ci-runner certificate from another CA read ci/x: {got:?}");
        // A node's cluster certificate is not a reader certificate (another CA).
        let node_cert =
            ["--client-cert", &utf8(&certs.join("node-1.pem")), "--client-key", &utf8(&certs.join("node-1.key"))]
                .map(str::to_string);
        let node_cert: Vec<&str> = node_cert.iter().map(String::as_str).collect();
        admin(&n, &["reader", "create", "node-cn", "--cert-cn", "vault-node-1", "--grant", "ci/*"]);
        let got = read(&n.node, &node_cert, "ci/x");
        assert!(got.is_err(), "a node certificate read ci/x as a reader: {got:?}");
        admin(&n, &["reader", "delete", "node-cn"]);

        // VAULT_CLIENT_CERT and VAULT_CLIENT_KEY stand for the flags.
        let out = Command::new(bin("vaultctl"))
            .env_clear()
            .env("VAULT_ADDR", n.url())
            .env("VAULT_CACERT", certs.join("ca.pem"))
            .env("VAULT_CLIENT_CERT", readers.join("reader-ci-runner.pem"))
            .env("VAULT_CLIENT_KEY", readers.join("reader-ci-runner.key"))
            .args(["secret", "get", "ci/x"])
            .stdin(Stdio::null())
            .output()
            .expect("run vaultctl");
        assert!(out.status.success(), "ci/x with the certificate from the environment: {}", stderr(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), ci_x);

        let reads = reads_on_record(&n, "ci/x");
        assert!(
            reads.iter().any(|r| field(r, "outcome").starts_with("ok")
                && field(r, "outcome").contains("reader rule ci")
                && field(r, "actor") == "cert:ci-runner"
                && field(r, "client_ip") == "127.0.0.1"),
            "no allowed read of ci/x from 127.0.0.1 names rule ci: {reads:#?}"
        );
        let refused = reads.iter().filter(|r| field(r, "outcome").starts_with("permission denied")).count();
        assert!(refused >= 2, "the reads without a certificate and with another one are on record: {reads:#?}");
    });
}

/// `vaultctl run` reads as a reader under the rules: with a rule for 127.0.0.1 granting only
/// `app/*`, the program gets `app/x` (checked through its SHA-256, so no command line holds
/// the value); asked for `other/x`, alone or beside `app/x`, vaultctl fails with PERMISSION_DENIED
/// naming it, and the program never runs.
#[test]
fn vaultctl_run_reads_under_the_reader_rules() {
    mt().block_on(async {
        let n = SingleNode::start(|_| {}).await;
        let (x, other) = (canary("run-app"), canary("run-other"));
        admin(&n, &["secret", "put", "app/x", "--value", &x]);
        admin(&n, &["secret", "put", "other/x", "--value", &other]);
        admin(&n, &["reader", "create", "local", "--cidr", "127.0.0.1/32", "--grant", "app/*"]);
        let sha = |v: &str| {
            use sha2::Digest;
            sha2::Sha256::digest(v.as_bytes()).iter().map(|b| format!("{b:02x}")).collect::<String>()
        };
        let run = |env: &[&str], script: &str| -> Output {
            let mut args = vec!["run"];
            for e in env {
                args.extend(["--env", *e]);
            }
            args.extend(["--", "sh", "-c", script]);
            Command::new(bin("vaultctl"))
                .env_clear()
                .env("VAULT_ADDR", n.url())
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .args(&args)
                .stdin(Stdio::null())
                .output()
                .expect("run vaultctl run")
        };

        let out = run(&["X=app/x"], r#"printf %s "$X" | sha256sum"#);
        assert!(out.status.success(), "run with app/x: {}", stderr(&out));
        let seen = String::from_utf8_lossy(&out.stdout);
        assert!(seen.contains(&sha(&x)), "the program saw another value: {seen}");

        for env in [&["X=other/x"][..], &["X=app/x", "Y=other/x"][..]] {
            let out = run(env, "echo the-program-ran");
            assert!(!out.status.success(), "run {env:?} succeeded");
            let err = stderr(&out);
            assert!(err.contains("permission denied") && err.contains("other/x"), "run {env:?}: {err}");
            let said = String::from_utf8_lossy(&out.stdout);
            assert!(!said.contains("the-program-ran"), "run {env:?}: the program ran without its secrets");
        }
    });
}

/// Behind a trusted proxy the TLS connection is the proxy's, so its certificate's subject is
/// not the client's: a node that trusts 127.0.0.1 as a proxy ignores the `ci-runner`
/// certificate it presents, and the rule naming that subject grants nothing through it.
#[test]
fn a_certificate_presented_by_a_trusted_proxy_grants_nothing() {
    mt().block_on(async {
        let (_work, certs, readers) = node_and_reader_certs();
        let n = tls_reader_node(&certs, &readers, |s| {
            s.set("VAULT_TRUST_PROXY", "true").set("VAULT_TRUSTED_PROXIES", "127.0.0.1");
        })
        .await;
        let ci_x = canary("ci-x");
        admin(&n, &["secret", "put", "ci/x", "--value", &ci_x]);
        admin(&n, &["reader", "create", "ci", "--cert-cn", "ci-runner", "--grant", "ci/*"]);
        let ci = cert_flags(&readers, "ci-runner");
        let ci: Vec<&str> = ci.iter().map(String::as_str).collect();
        assert_denied(read(&n.node, &ci, "ci/x"), "ci/x with the proxy's ci-runner certificate");
        // The same rule for the proxy's own address does grant: the address is what counts.
        admin(&n, &["reader", "create", "proxy-host", "--cidr", "127.0.0.1", "--grant", "ci/*"]);
        assert_eq!(read(&n.node, &ci, "ci/x"), Ok(ci_x), "by address once a rule names it");
    });
}
