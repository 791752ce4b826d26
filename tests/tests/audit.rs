//! The audit log as operators rely on it, with real processes: no change without its record
//! (even when clients cancel), refusals that cannot flood it (names stored cut short), a hash
//! chain that shows edits, deletions, re-labelled keys, a removed or moved head or anchor, and
//! (against a head exported earlier) a rollback of the whole directory, a hard size cap that
//! leaves the chain verifiable, refused and allowed reads under one name, and `destroy` needed
//! to purge.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tonic::Code;
use vault_node::pb;
use vault_tests::*;

async fn start_with(tune: impl FnOnce(&mut NodeSpec)) -> SingleNode {
    SingleNode::start(tune).await
}

/// Every record the node lists (up to 10,000), newest first.
trait Records {
    fn records(&self) -> Vec<serde_json::Value>;
}

impl Records for SingleNode {
    fn records(&self) -> Vec<serde_json::Value> {
        let json = self.ctl(&["--output", "json", "audit", "list", "--limit", "10000"]);
        serde_json::from_str(&json).expect("audit list json")
    }
}

fn field<'a>(r: &'a serde_json::Value, k: &str) -> &'a str {
    r[k].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_storm_leaves_no_change_unaudited() {
    let n = start_with(|_| {}).await;
    let ch = n.node.channel().await.unwrap();
    let names: Vec<String> = (0..20).map(|i| format!("storm/{i}")).collect();
    let (mut cancelled, mut completed) = (0, 0);
    // Waves of a few concurrent calls, so some finish within their deadline and some do not.
    for wave in 0..60u64 {
        let mut tasks = Vec::new();
        for k in 0..8u64 {
            let i = ((wave * 8 + k) % names.len() as u64) as usize;
            let (ch, token, name) = (ch.clone(), n.token.clone(), names[i].clone());
            // 1-5 ms deadlines, as header (the server cancels the handler) and here.
            let deadline = Duration::from_millis(1 + (wave + k) % 5);
            let delete = (wave + k).is_multiple_of(5);
            tasks.push(tokio::spawn(async move {
                let mut c = pb::secrets_client::SecretsClient::new(ch);
                let done = if delete {
                    let mut r = authed(pb::DeleteSecretRequest { name, destroy: false }, &token);
                    r.set_timeout(deadline);
                    tokio::time::timeout(deadline, c.delete_secret(r)).await.map(|r| r.map(|_| ()))
                } else {
                    let mut r =
                        authed(pb::PutSecretRequest { name, value: b"v".to_vec(), ..Default::default() }, &token);
                    r.set_timeout(deadline);
                    tokio::time::timeout(deadline, c.put_secret(r)).await.map(|r| r.map(|_| ()))
                };
                matches!(done, Ok(Ok(())))
            }));
        }
        for t in tasks {
            if t.await.unwrap() {
                completed += 1;
            } else {
                cancelled += 1;
            }
        }
    }
    assert!(cancelled > 0, "the storm must cut some calls short");
    // Let proposed commands that outlived their callers commit.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let records = n.records();
    let ok = |action: &str, name: &str| {
        records
            .iter()
            .filter(|r| field(r, "action") == action && field(r, "secret") == name && field(r, "outcome") == "ok")
            .count()
    };
    let mut versions_seen = 0;
    for name in &names {
        let out = n.node.vaultctl(Some(&n.token), &["--output", "json", "secret", "versions", name]);
        if !out.status.success() {
            continue; // never written
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let versions = v["versions"].as_array().cloned().unwrap_or_default();
        let highest = v["current_version"].as_u64().unwrap_or(0) as usize;
        versions_seen += highest;
        // Every committed put made exactly one version, and has its record.
        assert_eq!(ok("secret.put", name), highest, "{name}: puts on record vs versions");
        if versions.iter().any(|x| x["state"] == "deleted") {
            assert!(ok("secret.delete", name) > 0, "{name} has soft-deleted versions but no delete on record");
        }
    }
    assert!(versions_seen > 0, "some puts committed");
    eprintln!("{cancelled} calls cut short, {completed} completed; {versions_seen} versions, each on record");
}

/// Concurrent reads share audit writes; each still answers only with its record written. Every
/// read of a name that does not exist (each name read once) is on record by name, every read
/// of a stored one is counted, the chain verifies, and it still does after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reads_each_leave_their_record_in_an_intact_chain() {
    let mut n = start_with(|_| {}).await;
    for i in 0..4 {
        n.ctl(&["secret", "put", &format!("cr/{i}"), "--value", "v"]);
    }
    let ch = n.node.channel().await.expect("connect");
    let (clients, gets) = (64usize, 8usize);
    let tasks: Vec<_> = (0..clients)
        .map(|t| {
            let (ch, token) = (ch.clone(), n.token.clone());
            tokio::spawn(async move {
                let mut c = pb::secrets_client::SecretsClient::new(ch);
                for j in 0..gets {
                    let name = if j % 2 == 0 { format!("cr/{}", j % 4) } else { format!("cr/missing-{t}-{j}") };
                    let r = c.get_secret(authed(pb::GetSecretRequest { name, version: 0 }, &token)).await;
                    assert!(r.is_ok() || r.unwrap_err().code() == Code::NotFound);
                }
                let items = [format!("cr/{}", t % 4), format!("cr/missing-{t}-batch")];
                let requests =
                    items.iter().map(|name| pb::GetSecretRequest { name: name.clone(), version: 0 }).collect();
                let r = c.batch_get_secrets(authed(pb::BatchGetSecretsRequest { requests }, &token)).await;
                assert_eq!(r.expect("batch").into_inner().results.len(), 2);
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("reader");
    }
    let reads: Vec<serde_json::Value> =
        n.records().into_iter().filter(|r| field(r, "action") == "secret.get").collect();
    let by_name = |pred: &dyn Fn(&str) -> bool| reads.iter().filter(|r| pred(field(r, "secret"))).count();
    assert_eq!(by_name(&|s| !s.contains("missing")), clients * (gets / 2 + 1), "reads of stored names");
    for t in 0..clients {
        for j in (1..gets).step_by(2).map(|j| j.to_string()).chain(["batch".to_string()]) {
            let name = format!("cr/missing-{t}-{j}");
            let found: Vec<_> = reads.iter().filter(|r| field(r, "secret") == name).collect();
            assert_eq!(found.len(), 1, "{name}: {found:?}");
            assert!(field(found[0], "outcome").starts_with("not found"), "{found:?}");
        }
    }
    let ok = n.ctl(&["audit", "verify"]);
    assert!(ok.contains("audit chain intact"), "{ok}");
    n.node.stop();
    n.node = n.spec.start();
    n.node.wait_ready().await;
    assert_eq!(n.ctl(&["secret", "get", "cr/0"]), "v");
    let ok = n.ctl(&["audit", "verify"]);
    assert!(ok.contains("audit chain intact"), "after a restart: {ok}");
    let after = n.records().into_iter().filter(|r| field(r, "action") == "secret.get").count();
    assert_eq!(after, reads.len() + 1, "the records before the restart, and the read after it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_reads_is_limited_summarised_and_pushes_nothing_out() {
    let mut n = start_with(|s| {
        // Loopback may manage but not read.
        s.set("VAULT_ALLOWED_IPS", "10.20.0.0/16");
        s.set("VAULT_REFUSALS_PER_SEC", "5");
        s.set("VAULT_REFUSALS_BURST", "20");
    })
    .await;
    for i in 0..5 {
        n.ctl(&["secret", "put", &format!("genuine/{i}"), "--value", "v"]);
    }
    let before = n.records().len();
    let ch = n.node.channel().await.unwrap();
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let started = Instant::now();
    for chunk in 0..20 {
        let mut tasks = Vec::new();
        for i in 0..100 {
            let ch = ch.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = pb::secrets_client::SecretsClient::new(ch);
                let name = format!("genuine/{}", (chunk * 100 + i) % 5);
                c.get_secret(pb::GetSecretRequest { name, version: 0 }).await.unwrap_err().code()
            }));
        }
        for t in tasks {
            *codes.entry(format!("{:?}", t.await.unwrap())).or_default() += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert!(codes.get("ResourceExhausted").copied().unwrap_or(0) > 0, "{codes:?}");
    assert_eq!(codes.values().sum::<usize>(), 2000);
    assert!(codes.keys().all(|c| c == "ResourceExhausted" || c == "PermissionDenied"), "{codes:?}");
    let records = n.records();
    let refusals = records.iter().filter(|r| field(r, "outcome").starts_with("permission denied")).count();
    let allowed = 20.0 + 5.0 * elapsed + 5.0;
    assert!(
        (refusals as f64) <= allowed,
        "{refusals} refusals on record in {elapsed:.1}s; at most {allowed:.0} expected"
    );
    assert_eq!(refusals, codes["PermissionDenied"], "every refusal answered as such is on record");
    for i in 0..5 {
        let name = format!("genuine/{i}");
        assert!(records.iter().any(|r| field(r, "action") == "secret.put" && field(r, "secret") == name), "{name}");
    }
    assert!(records.len() < before + refusals + 50, "bounded: {} records", records.len());

    // The rest are summarised: at the end of their window, or (here) at shutdown.
    n.restart().await;
    let summaries: Vec<_> =
        n.records().into_iter().filter(|r| field(r, "outcome").contains("more refusal(s) from 127.0.0.1")).collect();
    let summarised: u64 = summaries
        .iter()
        .map(|r| field(r, "outcome").split_whitespace().next().unwrap_or("0").parse::<u64>().unwrap_or(0))
        .sum();
    assert_eq!(summarised as usize, codes["ResourceExhausted"], "{summaries:?}");
    assert!(summaries.iter().all(|r| field(r, "action") == "secret.get"));
}

/// Opens the stopped node's RocksDB and changes record `seq` of its audit family.
fn edit_audit(data_dir: &std::path::Path, seq: u64, edit: impl FnOnce(Vec<u8>) -> Option<Vec<u8>>) {
    let db = vault_raft::db::open(&data_dir.join("db")).expect("open the node's rocksdb");
    let family = vault_raft::db::cf(&db, vault_raft::db::CF_AUDIT).unwrap();
    let old = db.get_cf(family, seq.to_be_bytes()).unwrap().expect("the record exists");
    match edit(old) {
        Some(new) => db.put_cf(family, seq.to_be_bytes(), new).unwrap(),
        None => db.delete_cf(family, seq.to_be_bytes()).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_names_an_edited_or_deleted_record_and_passes_an_untouched_log() {
    for tamper in ["edit", "delete"] {
        let mut n = start_with(|_| {}).await;
        for i in 0..6 {
            n.ctl(&["secret", "put", &format!("t/{i}"), "--value", "v"]);
        }
        let ok = n.ctl(&["audit", "verify"]);
        assert!(ok.contains("audit chain intact"), "{ok}");
        n.node.stop();
        edit_audit(&n.spec.data_dir(), 4, |v| match tamper {
            "edit" => {
                // The same length, another secret name: only the MAC can tell.
                let pos = v.windows(2).position(|w| w == b"t/").expect("the record names a secret");
                let mut edited = v.clone();
                edited[pos] = b'x';
                Some(edited)
            }
            _ => None,
        });
        n.node = n.spec.start();
        n.node.wait_ready().await;
        let out = n.node.vaultctl(Some(&n.token), &["audit", "verify"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{tamper}: verify must fail");
        let want = if tamper == "edit" { "record 4 was altered" } else { "record 4 is missing" };
        assert!(err.contains(want), "{tamper}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_allowed_reads_of_a_secret_are_listed_under_one_action() {
    let n = start_with(|s| {
        s.set("VAULT_TRUST_PROXY", "true");
        s.set("VAULT_TRUSTED_PROXIES", "127.0.0.1");
        s.set("VAULT_ALLOWED_IPS", "10.0.0.1");
    })
    .await;
    n.ctl(&["secret", "put", "app/read-me", "--value", "v"]);
    let read_from = |addr: &'static str| {
        let url = n.node.url();
        async move {
            let mut c = secrets_client(&url).await;
            let mut req = tonic::Request::new(pb::GetSecretRequest { name: "app/read-me".into(), version: 0 });
            req.metadata_mut().insert("x-forwarded-for", addr.parse().unwrap());
            c.get_secret(req).await.map(|_| ())
        }
    };
    read_from("10.0.0.1").await.expect("allowlisted");
    assert_eq!(read_from("10.0.0.2").await.unwrap_err().code(), Code::PermissionDenied);
    let json = n.ctl(&["--output", "json", "audit", "list", "--secret", "app/read-me"]);
    let records: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let reads: Vec<_> = records.iter().filter(|r| field(r, "client_ip").starts_with("10.0.0.")).collect();
    assert_eq!(reads.len(), 2, "{json}");
    assert!(reads.iter().all(|r| field(r, "action") == "secret.get"), "{json}");
    assert!(reads
        .iter()
        .any(|r| field(r, "client_ip") == "10.0.0.2" && field(r, "outcome").starts_with("permission denied")));
    assert!(reads.iter().any(|r| field(r, "client_ip") == "10.0.0.1" && field(r, "outcome") == "ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_alone_cannot_purge_versions_destroy_can() {
    let n = start_with(|_| {}).await;
    n.ctl(&["role", "create", "deleter", "--grant", "create,update,delete,list:app/*"]);
    n.ctl(&["role", "create", "destroyer", "--grant", "destroy,list:app/*"]);
    let token_of = |name: &str, role: &str| {
        let json = n.ctl(&["--output", "json", "token", "create", name, "--role", role]);
        serde_json::from_str::<serde_json::Value>(&json).unwrap()["token"].as_str().unwrap().to_string()
    };
    let (deleter, destroyer) = (token_of("d1", "deleter"), token_of("d2", "destroyer"));
    let url = n.node.url();
    for v in 1..=3 {
        must_vaultctl(&url, Some(&deleter), &["secret", "put", "app/x", "--value", &format!("v{v}")]);
    }
    // `delete` soft-deletes: nothing is lost.
    must_vaultctl(&url, Some(&deleter), &["secret", "delete", "app/x"]);
    must_vaultctl(&url, Some(&deleter), &["secret", "undelete", "app/x", "--versions", "1,2,3"]);
    for (args, what) in [
        (vec!["secret", "destroy", "app/x", "--all"], "destroy all"),
        (vec!["secret", "destroy", "app/x", "--versions", "1"], "destroy a version"),
        (vec!["secret", "put", "app/x", "--value", "v4", "--max-versions", "1"], "max-versions purging older versions"),
    ] {
        let e = must_fail_vaultctl(&url, Some(&deleter), &args);
        assert!(e.contains("permission denied"), "{what}: {e}");
    }
    for v in ["1", "2", "3"] {
        assert_eq!(n.ctl(&["secret", "get", "app/x", "--version", v]), format!("v{v}"), "nothing purged");
    }
    must_vaultctl(&url, Some(&destroyer), &["secret", "destroy", "app/x", "--all"]);
    let e = n.node.vaultctl(Some(&n.token), &["secret", "get", "app/x", "--version", "3"]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("destroyed"));
    // Version numbers never repeat after a purge.
    assert_eq!(must_vaultctl(&url, Some(&deleter), &["secret", "put", "app/x", "--value", "again"]).trim(), "4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_exported_as_json_lines_and_listed_with_escapes_and_since() {
    let mut sink = std::path::PathBuf::new();
    let n = start_with(|s| {
        sink = s.dir.join("audit.jsonl");
        s.set("VAULT_AUDIT_FILE", sink.to_str().unwrap());
    })
    .await;
    n.ctl(&["secret", "put", "app/exported", "--value", "v"]);
    // A name with a terminal escape sequence: refused as invalid, and recorded escaped.
    let hostile = "app/\u{1b}[31mred";
    let mut c = secrets_client(&n.node.url()).await;
    let e = c.get_secret(pb::GetSecretRequest { name: hostile.into(), version: 0 }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let table = n.ctl(&["audit", "list"]);
    assert!(!table.contains('\u{1b}'), "no raw escape reaches the terminal: {table:?}");
    assert!(table.contains("app/\\u{1b}[31mred"), "{table}");

    // Records are shipped to the file by a background shipper, just after they are written.
    let read_sink = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&sink)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !read_sink().iter().any(|r| field(r, "secret") == "app/\\u{1b}[31mred") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines = read_sink();
    assert!(
        lines.iter().any(|r| field(r, "action") == "secret.put" && field(r, "secret") == "app/exported"),
        "{lines:?}"
    );
    assert!(lines.iter().any(|r| field(r, "secret") == "app/\\u{1b}[31mred"));
    // The file holds what the node's log holds (the listings above are recorded too).
    let listed = n.records();
    let newest_in_file = lines.iter().filter_map(|r| r["seq"].as_u64()).max().unwrap();
    assert!(listed.iter().any(|r| r["seq"].as_u64() == Some(newest_in_file)));

    let far_future = (vault_core::time::now_ms() + 3_600_000).to_string();
    let none: Vec<serde_json::Value> =
        serde_json::from_str(&n.ctl(&["--output", "json", "audit", "list", "--since", &far_future])).unwrap();
    assert!(none.is_empty(), "{none:?}");
    let recent: Vec<serde_json::Value> =
        serde_json::from_str(&n.ctl(&["--output", "json", "audit", "list", "--since", "10m"])).unwrap();
    assert!(recent.iter().any(|r| field(r, "secret") == "app/exported"));
}

/// Opens the stopped node's RocksDB and hands `edit` its audit family and its Raft metadata
/// family (where the chain's head is kept).
fn edit_audit_db(data_dir: &std::path::Path, edit: impl FnOnce(&rocksdb::DB, AuditFamilies<'_>)) {
    let db = vault_raft::db::open(&data_dir.join("db")).expect("open the node's rocksdb");
    let families = AuditFamilies {
        records: vault_raft::db::cf(&db, vault_raft::db::CF_AUDIT).unwrap(),
        meta: vault_raft::db::cf(&db, vault_raft::db::CF_RAFT_META).unwrap(),
    };
    edit(&db, families);
}

struct AuditFamilies<'a> {
    records: &'a rocksdb::ColumnFamily,
    meta: &'a rocksdb::ColumnFamily,
}

/// Where the chain's head is kept: the first name by builds before the anchor was bound into
/// it, the second since.
const HEAD_KEYS: [&[u8]; 2] = [b"audit_head", b"audit_head_v2"];

/// `bytes` with the first key id (`derived-from:local:...`) re-labelled as one no node holds,
/// at the same length.
fn relabel_key_id(bytes: &[u8]) -> Vec<u8> {
    let at = bytes.windows(13).position(|w| w == b"derived-from:").expect("the value names its key");
    let mut out = bytes.to_vec();
    out[at + 13] = b'X';
    out
}

/// A node with six chained changes on record, stopped.
async fn stopped_node_with_records() -> SingleNode {
    let mut n = start_with(|_| {}).await;
    for i in 0..6 {
        n.ctl(&["secret", "put", &format!("t/{i}"), "--value", "v"]);
    }
    let ok = n.ctl(&["audit", "verify"]);
    assert!(ok.contains("audit chain intact"), "{ok}");
    n.node.stop();
    n
}

/// Starts the node again and returns what `audit verify` says on stderr (it must fail).
async fn verify_fails(n: &mut SingleNode, what: &str) -> String {
    n.node = n.spec.start();
    n.node.wait_ready().await;
    let out = n.node.vaultctl(Some(&n.token), &["audit", "verify"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    eprintln!("{what}: {err}");
    assert!(!out.status.success(), "{what}: verify must fail; it said {}", String::from_utf8_lossy(&out.stdout));
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_fails_on_a_record_relabelled_with_an_unknown_key() {
    let mut n = stopped_node_with_records().await;
    edit_audit(&n.spec.data_dir(), 3, |v| Some(relabel_key_id(&v)));
    let err = verify_fails(&mut n, "relabelled record").await;
    assert!(err.contains("record 3") && err.contains("does not hold"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_fails_on_a_head_under_an_unknown_key_even_after_new_records() {
    let mut n = stopped_node_with_records().await;
    // Cut the newest record and point the head, re-labelled, at the one before: no key needed
    // to make the head's link, and its tag is under a key the node would skip.
    edit_audit_db(&n.spec.data_dir(), |db, f| {
        let last = db.iterator_cf(f.records, rocksdb::IteratorMode::End).next().unwrap().unwrap();
        let last_seq = u64::from_be_bytes(last.0.as_ref().try_into().unwrap());
        let prev = db.get_cf(f.records, (last_seq - 1).to_be_bytes()).unwrap().unwrap();
        db.delete_cf(f.records, last_seq.to_be_bytes()).unwrap();
        for key in HEAD_KEYS {
            let Some(head) = db.get_cf(f.meta, key).unwrap() else { continue };
            let mut head = relabel_key_id(&head);
            // [format][seq varint][mac 32]...: point the link at record last - 1 (one varint
            // byte below 128).
            assert!(last_seq < 128 && head[1] as u64 == last_seq, "{head:?}");
            head[1] = (last_seq - 1) as u8;
            head[2..34].copy_from_slice(&prev[prev.len() - 32..]);
            db.put_cf(f.meta, key, head).unwrap();
        }
    });
    let err = verify_fails(&mut n, "relabelled head").await;
    assert!(err.contains("head"), "{err}");
    // New records after the start do not launder it.
    n.ctl(&["secret", "put", "t/after", "--value", "v"]);
    let out = n.node.vaultctl(Some(&n.token), &["audit", "verify"]);
    assert!(!out.status.success(), "still broken after new records");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_fails_when_the_oldest_records_are_cut_behind_an_untagged_anchor() {
    let mut n = stopped_node_with_records().await;
    // What retention leaves (records 1..=3 gone, the anchor at record 3), made by hand.
    edit_audit_db(&n.spec.data_dir(), |db, f| {
        let third = db.get_cf(f.records, 3u64.to_be_bytes()).unwrap().unwrap();
        let mut anchor = vec![1u8, 3];
        anchor.extend_from_slice(&third[third.len() - 32..]);
        for seq in 1..=3u64 {
            db.delete_cf(f.records, seq.to_be_bytes()).unwrap();
        }
        db.put_cf(f.meta, b"audit_anchor", anchor).unwrap();
    });
    let err = verify_fails(&mut n, "untagged anchor").await;
    assert!(err.contains("anchor") || err.contains("records 1 to 3 are missing"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_fails_when_the_head_is_deleted_with_records_present() {
    let mut n = stopped_node_with_records().await;
    edit_audit_db(&n.spec.data_dir(), |db, f| {
        for key in HEAD_KEYS {
            db.delete_cf(f.meta, key).unwrap();
        }
    });
    let err = verify_fails(&mut n, "head deleted").await;
    assert!(err.contains("head") && err.contains("missing"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_name_is_stored_truncated() {
    let n = start_with(|s| {
        s.set("VAULT_ALLOWED_IPS", "10.20.0.0/16");
    })
    .await;
    // A valid name of 255 bytes, read from an address that may not read.
    let name = format!("app/{}", "n".repeat(251));
    let mut c = secrets_client(&n.node.url()).await;
    let e = c.get_secret(pb::GetSecretRequest { name: name.clone(), version: 0 }).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let refused: Vec<_> =
        n.records().into_iter().filter(|r| field(r, "outcome").starts_with("permission denied")).collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    let stored = field(&refused[0], "secret");
    assert!(stored.starts_with("app/nnn") && stored.len() <= 64, "{} bytes: {stored}", stored.len());
    assert!(field(&refused[0], "outcome").len() <= 160, "{:?}", refused[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_head_catches_a_rollback_of_the_whole_data_directory() {
    let mut n = start_with(|_| {}).await;
    let head = |n: &SingleNode| -> String {
        let json: serde_json::Value = serde_json::from_str(&n.ctl(&["--output", "json", "audit", "verify"])).unwrap();
        assert_eq!(json["ok"], true, "{json}");
        json["head"].as_str().expect("verify prints the head").to_string()
    };
    n.ctl(&["secret", "put", "r/1", "--value", "v"]);
    // The directory as it is now, kept aside (what a rollback would restore).
    n.node.stop();
    let saved = n.spec.dir.join("data-saved");
    let cp = std::process::Command::new("cp").arg("-a").arg(n.spec.data_dir()).arg(&saved).status().unwrap();
    assert!(cp.success());
    n.node = n.spec.start();
    n.node.wait_ready().await;
    let early = head(&n);
    n.ctl(&["secret", "put", "r/2", "--value", "v"]);
    let later = head(&n);
    assert_ne!(early, later);
    let ok = n.ctl(&["audit", "verify", "--extends", &early]);
    assert!(ok.contains("audit chain intact") && ok.contains("head: "), "{ok}");

    // Roll the whole directory back: the chain alone is intact, the exported head says otherwise.
    n.node.stop();
    std::fs::remove_dir_all(n.spec.data_dir()).unwrap();
    std::fs::rename(&saved, n.spec.data_dir()).unwrap();
    n.node = n.spec.start();
    n.node.wait_ready().await;
    assert!(n.ctl(&["audit", "verify"]).contains("audit chain intact"));
    let e = must_fail_vaultctl(&n.node.url(), Some(&n.token), &["audit", "verify", "--extends", &later]);
    assert!(e.contains("does not extend the exported head"), "{e}");
    let e = must_fail_vaultctl(&n.node.url(), Some(&n.token), &["audit", "verify", "--extends", "12:zz"]);
    assert!(e.contains("invalid argument"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_hard_cap_young_records_go_with_a_warning_and_a_metric_and_the_chain_verifies() {
    let mut metrics = String::new();
    let mut n = start_with(|s| {
        s.set("VAULT_ALLOWED_IPS", "127.0.0.1");
        s.set("VAULT_AUDIT_MAX_MB", "1");
        s.set("VAULT_AUDIT_HARD_MAX_MB", "1");
        metrics = with_metrics(s);
    })
    .await;
    // Names that do not compress (the log's files are compressed), read over and over: well
    // over 1 MB of read records, all younger than the 30-day floor.
    let names: Vec<String> = (0..40u32)
        .map(|i| {
            use sha2::Digest;
            let h = sha2::Sha256::digest(i.to_be_bytes());
            let hex: String = h.iter().chain(h.iter().rev()).map(|b| format!("{b:02x}")).collect();
            format!("cap/{}{hex}", &hex[..60])
        })
        .collect();
    for name in &names {
        n.ctl(&["secret", "put", name, "--value", "v"]);
    }
    let ch = n.node.channel().await.unwrap();
    for round in 0..80 {
        let mut tasks = Vec::new();
        for i in 0..250 {
            let mut c = pb::secrets_client::SecretsClient::new(ch.clone());
            let name = names[(round + i) % names.len()].clone();
            tasks.push(tokio::spawn(async move {
                c.get_secret(pb::GetSecretRequest { name, version: 0 }).await.map(|_| ())
            }));
        }
        for t in tasks {
            t.await.unwrap().expect("allowed read");
        }
    }
    // Retention runs at start (and every minute).
    n.restart().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !n.node.log().contains("audit log past VAULT_AUDIT_HARD_MAX_MB") {
        assert!(Instant::now() < deadline, "no warning:\n{}", n.node.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let removed = sample(&scrape(&metrics).await, "vault_audit_removed_over_hard_cap_total").unwrap_or(0.0);
    assert!(removed > 0.0, "the metric counts what the hard cap removed");
    let v: serde_json::Value = serde_json::from_str(&n.ctl(&["--output", "json", "audit", "verify"])).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["first_seq"].as_u64() > Some(1), "the oldest records are gone: {v}");
}
