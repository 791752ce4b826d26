//! `Secrets/WatchSecrets` against real 3-node clusters: every kind of change arrives in commit
//! order once the serving node applied it; a watch resumes on another node from its last
//! revision with exactly what it missed; compacted and bad revisions, bad input, refused
//! names and prefixes get their statuses (refusals audited); a reader rule deleted mid-stream
//! stops the events it covered; the per-connection and per-node bounds hold; a client that
//! never reads is cut and loses nothing on resume; the metrics move.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic::Code;
use vault_node::pb;

use vault_tests::watch::*;
use vault_tests::*;

fn mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// (name, version, kind) of an event.
fn key(e: &pb::WatchEvent) -> (String, u64, i32) {
    (e.name.clone(), e.version, e.kind)
}

/// Reads messages until `done` says the events so far are enough; checks every message on
/// the way: revisions never go back, every event carries its message's revision.
async fn collect(w: &mut Watch, after: u64, done: impl Fn(&[pb::WatchEvent]) -> bool) -> (Vec<pb::WatchEvent>, u64) {
    let mut events: Vec<pb::WatchEvent> = Vec::new();
    let mut last = after;
    while !done(&events) {
        let m = must_next(w).await;
        assert!(m.revision >= last, "revision went back: {} after {last}", m.revision);
        for e in &m.events {
            assert_eq!(e.revision, m.revision, "an event outside its message's revision");
            assert!(e.revision > after, "an event at or before the resume point {after}: {e:?}");
        }
        if !m.events.is_empty() {
            assert!(m.revision > last || last == after, "two messages for revision {}", m.revision);
        }
        last = m.revision;
        events.extend(m.events);
    }
    (events, last)
}

fn kind(k: pb::ChangeKind) -> i32 {
    k as i32
}

#[test]
fn every_kind_of_change_arrives_in_commit_order_once_the_node_applied_it() {
    mt().block_on(async {
        let c = TestCluster::start(3, |_| {}).await;
        let mut w = watch(&c.url(2), req(&["other/x"], &["app/"], 0)).await.expect("watch");
        let start = must_next(&mut w).await;
        assert!(start.events.is_empty(), "the first message is progress: {start:?}");
        let mut client = secrets_client(&c.url(0)).await;
        let name = "app/kinds";
        put(&mut client, &c.token, name).await;
        put(&mut client, &c.token, name).await;
        put(&mut client, &c.token, "skip/x").await;
        c.ctl(1, &["secret", "delete", name, "--versions", "1"]);
        c.ctl(0, &["secret", "undelete", name, "--versions", "1"]);
        c.ctl(0, &["secret", "destroy", name, "--versions", "1"]);
        c.ctl(0, &["secret", "rotation", "set", name, "--every", "1h", "--generator", "random:16"]);
        c.ctl(0, &["secret", "rotate", name]);
        put(&mut client, &c.token, "other/x").await;
        c.ctl(0, &["secret", "delete", name]);
        c.ctl(0, &["secret", "destroy", name, "--all"]);
        let want = vec![
            (name.to_string(), 1, kind(pb::ChangeKind::Put)),
            (name.to_string(), 2, kind(pb::ChangeKind::Put)),
            (name.to_string(), 1, kind(pb::ChangeKind::Delete)),
            (name.to_string(), 1, kind(pb::ChangeKind::Undelete)),
            (name.to_string(), 1, kind(pb::ChangeKind::Destroy)),
            (name.to_string(), 3, kind(pb::ChangeKind::Rotation)),
            ("other/x".to_string(), 1, kind(pb::ChangeKind::Put)),
            (name.to_string(), 2, kind(pb::ChangeKind::Delete)),
            (name.to_string(), 3, kind(pb::ChangeKind::Delete)),
            (name.to_string(), 2, kind(pb::ChangeKind::Destroy)),
            (name.to_string(), 3, kind(pb::ChangeKind::Destroy)),
        ];
        let mut got = Vec::new();
        let mut revisions = Vec::new();
        while got.len() < want.len() {
            let m = must_next(&mut w).await;
            if m.events.is_empty() {
                continue;
            }
            // Sent only once the serving node applied it.
            let applied = c.status(2).await.expect("status").last_applied_index.unwrap_or(0);
            assert!(applied >= m.revision, "event at {} sent before node 3 applied it ({applied})", m.revision);
            for e in &m.events {
                assert_eq!(e.revision, m.revision);
                revisions.push(e.revision);
                got.push(key(e));
            }
        }
        assert_eq!(got, want, "every change to a watched name, in commit order, and nothing else");
        assert!(revisions.windows(2).all(|p| p[0] <= p[1]), "revisions in commit order: {revisions:?}");
        // The same history replays from any node, from a revision.
        let mut again = watch(&c.url(1), req(&["other/x"], &["app/"], start.revision)).await.expect("replay");
        let (replayed, _) = collect(&mut again, start.revision, |e| e.len() >= want.len()).await;
        assert_eq!(replayed.iter().map(key).collect::<Vec<_>>(), want);
        assert_eq!(
            replayed.iter().map(|e| e.revision).collect::<Vec<_>>(),
            revisions,
            "the same revisions on every node"
        );
    });
}

#[test]
fn a_watch_resumes_on_another_node_with_exactly_the_changes_it_missed() {
    mt().block_on(async {
        let c = TestCluster::start(3, |_| {}).await;
        let mut w = watch(&c.url(0), req(&[], &["r/"], 0)).await.expect("watch");
        let start = must_next(&mut w).await.revision;
        let (url, token) = (c.url(1), c.token.clone());
        let writer = tokio::spawn(async move {
            let mut client = secrets_client(&url).await;
            let mut written = Vec::new();
            for i in 0..100 {
                let name = format!("r/{}", i % 7);
                let v = put(&mut client, &token, &name).await;
                written.push((name, v));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            written
        });
        // Some events, then the client goes away while writes go on.
        let (first, last) = collect(&mut w, start, |e| e.len() >= 10).await;
        drop(w);
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Resumed on another node from the last revision received, while the writes go on
        // (the replay meets live events at the seam).
        assert!(!writer.is_finished(), "the writes go on while the watch resumes");
        let mut resumed = watch(&c.url(2), req(&[], &["r/"], last)).await.expect("resume");
        let written = writer.await.expect("writer");
        let (rest, _) = collect(&mut resumed, last, |e| first.len() + e.len() >= written.len()).await;
        let seen: Vec<(String, u64)> = first.iter().chain(&rest).map(|e| (e.name.clone(), e.version)).collect();
        let unique: BTreeSet<_> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "an event was sent twice");
        assert_eq!(unique, written.into_iter().collect::<BTreeSet<_>>(), "every write seen, no other");
        // Nothing more: the next message is progress only.
        let idle = must_next(&mut resumed).await;
        assert!(idle.events.is_empty(), "{idle:?}");
    });
}

#[test]
fn bad_input_is_invalid_argument_and_a_compacted_revision_is_out_of_range() {
    mt().block_on(async {
        let c = TestCluster::start(3, |s| {
            s.set("VAULT_WATCH_HISTORY", "5");
        })
        .await;
        let url = c.url(1);
        let many: Vec<String> = (0..101).map(|i| format!("n/{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let bad = [
            (req(&many, &[], 0), "at most 100"),
            (req(&["a"; 60], &["b/"; 41], 0), "at most 100"),
            (req(&[], &[], 0), "at least one"),
            (req(&["/bad"], &[], 0), "name \"/bad\""),
            (req(&[], &["a//"], 0), "prefix \"a//\""),
            (req(&["a"], &[], 1 << 40), "is ahead of this cluster"),
        ];
        for (r, words) in bad {
            let err = watch(&url, r.clone()).await.expect_err("refused");
            assert_eq!(err.code(), Code::InvalidArgument, "{r:?}: {err:?}");
            assert!(err.message().contains(words), "{r:?}: {}", err.message());
        }
        let mut client = secrets_client(&c.url(0)).await;
        let mut w = watch(&url, req(&[], &["c/"], 0)).await.expect("watch");
        let start = must_next(&mut w).await.revision;
        for i in 0..20 {
            put(&mut client, &c.token, &format!("c/{i}")).await;
        }
        let (_, last) = collect(&mut w, start, |e| e.len() >= 20).await;
        for i in 0..3 {
            let err = watch(&c.url(i), req(&[], &["c/"], start)).await.expect_err("compacted");
            assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
            assert!(err.message().contains("was compacted; oldest kept is"), "{}", err.message());
        }
        // What is kept replays.
        let mut recent = watch(&url, req(&[], &["c/"], last - 2)).await.expect("recent");
        let (events, _) = collect(&mut recent, last - 2, |e| e.iter().any(|e| e.revision == last)).await;
        assert_eq!(events.iter().map(|e| e.revision).collect::<Vec<_>>(), vec![last - 1, last]);
    });
}

#[test]
fn refused_watches_are_permission_denied_and_audited_and_a_deleted_rule_stops_its_events() {
    mt().block_on(async {
        // Node 3 does not allow this client's address to read at all.
        let c = TestCluster::start(3, |s| {
            if s.node_id == 3 {
                s.set("VAULT_ALLOWED_IPS", "10.1.2.3");
            }
        })
        .await;
        let err = watch(&c.url(2), req(&["app/x"], &[], 0)).await.expect_err("not allowlisted");
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        c.ctl(0, &["reader", "create", "app", "--cidr", "127.0.0.1/32", "--grant", "app/*"]);
        c.ctl(0, &["reader", "create", "ops", "--cidr", "127.0.0.1/32", "--grant", "ops/*"]);
        let url = c.url(1);
        for r in [req(&["db/x"], &[], 0), req(&[], &["db/"], 0), req(&["app/x"], &["db"], 0)] {
            let err = watch(&url, r.clone()).await.expect_err("refused");
            assert_eq!(err.code(), Code::PermissionDenied, "{r:?}: {err:?}");
        }
        // Refusals and the allowed watch are on record, with the names asked for.
        let mut everything = watch(&url, req(&[], &[""], 0)).await.expect("some name under \"\" is granted");
        let mut app = watch(&url, req(&[], &["app/"], 0)).await.expect("app/ is granted");
        let start = must_next(&mut everything).await.revision;
        must_next(&mut app).await;
        let records = watch_records(&c, 1);
        let outcome = |subject: &str| -> Vec<String> {
            records
                .iter()
                .filter(|r| r["secret"].as_str() == Some(subject))
                .map(|r| r["outcome"].as_str().unwrap_or("").to_string())
                .collect()
        };
        assert!(outcome("db/x").iter().any(|o| o.contains("permission denied")), "{records:?}");
        assert!(outcome("db/*").iter().any(|o| o.contains("permission denied")), "{records:?}");
        assert!(outcome("*").iter().any(|o| o.contains("ok (reader rule")), "{records:?}");
        let refused_elsewhere = watch_records(&c, 2);
        assert!(
            refused_elsewhere
                .iter()
                .any(|r| r["secret"] == "app/x" && r["outcome"].as_str().is_some_and(|o| o.contains("denied"))),
            "{refused_elsewhere:?}"
        );
        // Events of both rules' names, then the app rule goes: the whole-store watch goes on
        // without app/ events; the app/ watch is no longer allowed at all.
        let mut client = secrets_client(&c.url(0)).await;
        put(&mut client, &c.token, "app/a").await;
        put(&mut client, &c.token, "ops/a").await;
        put(&mut client, &c.token, "zzz/a").await;
        let (seen, _) = collect(&mut everything, start, |e| e.len() >= 2).await;
        assert_eq!(seen.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), vec!["app/a", "ops/a"]);
        c.ctl(0, &["reader", "delete", "app"]);
        put(&mut client, &c.token, "app/b").await;
        put(&mut client, &c.token, "ops/b").await;
        let (after, _) = collect(&mut everything, start, |e| e.iter().any(|e| e.name == "ops/b")).await;
        assert_eq!(
            after.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            vec!["ops/b"],
            "app/b is no longer shown"
        );
        let ended = loop {
            match next(&mut app).await {
                Ok(Some(m)) => assert!(m.events.iter().all(|e| e.name == "app/a"), "{m:?}"),
                other => break other,
            }
        };
        let status = ended.expect_err("the app/ watch ends");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    });
}

#[test]
fn watches_are_bounded_per_connection_and_per_node_and_end_cleanly_at_shutdown() {
    mt().block_on(async {
        let mut c = TestCluster::start(3, |s| {
            s.set("VAULT_WATCH_MAX_PER_CONNECTION", "2");
            s.set("VAULT_WATCH_MAX", "3");
            with_metrics(s);
        })
        .await;
        let metrics = c.specs[0].env["VAULT_METRICS_ADDR"].clone();
        let url = c.url(0);
        let one = api_channel(&url, None).await.expect("connect");
        let mut a = watch_on(one.clone(), req(&["x"], &[], 0)).await.expect("first");
        let _b = watch_on(one.clone(), req(&["x"], &[], 0)).await.expect("second");
        let err = watch_on(one.clone(), req(&["x"], &[], 0)).await.expect_err("a third on one connection");
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        assert!(err.message().contains("VAULT_WATCH_MAX_PER_CONNECTION"), "{}", err.message());
        let _c = watch(&url, req(&["x"], &[], 0)).await.expect("on another connection");
        let err = watch(&url, req(&["x"], &[], 0)).await.expect_err("a fourth on the node");
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        assert!(err.message().contains("VAULT_WATCH_MAX"), "{}", err.message());
        assert_eq!(sample(&scrape(&metrics).await, "vault_watchers"), Some(3.0));
        must_next(&mut a).await;
        drop(a);
        // The slot comes back once the server sees the stream gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut d = loop {
            match watch_on(one.clone(), req(&["x"], &[], 0)).await {
                Ok(w) => break w,
                Err(e) if Instant::now() < deadline && e.code() == Code::ResourceExhausted => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("{e:?}"),
            }
        };
        must_next(&mut d).await;
        // Shutdown ends the stream cleanly (after a last progress message), not with an error.
        let node = &mut c.nodes[0];
        let stopping = tokio::task::spawn_blocking({
            let pid = node.pid().expect("pid");
            move || std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status()
        });
        let end = loop {
            match next(&mut d).await {
                Ok(Some(m)) => assert!(m.events.is_empty()),
                other => break other,
            }
        };
        assert!(matches!(end, Ok(None)), "the stream ends cleanly at shutdown: {end:?}");
        stopping.await.expect("join").expect("kill");
        assert!(node.terminate().is_some_and(|s| s.success()), "the node exits cleanly with watches open");
    });
}

#[test]
fn a_client_that_never_reads_is_cut_and_loses_nothing_on_resume() {
    mt().block_on(async {
        let c = TestCluster::start(3, |s| {
            with_metrics(s);
        })
        .await;
        let metrics = c.specs[1].env["VAULT_METRICS_ADDR"].clone();
        // A small HTTP/2 window: what the client does not read stays on the server.
        let slow = Channel::from_shared(c.url(1))
            .expect("url")
            .initial_stream_window_size(Some(4096))
            .initial_connection_window_size(Some(65_535))
            .connect()
            .await
            .expect("connect");
        let mut w = watch_on(slow, req(&[], &["s/"], 0)).await.expect("watch");
        let start = must_next(&mut w).await.revision;
        // Writes the client does not read, concurrently, with long names.
        let long = "n".repeat(120);
        let mut tasks = Vec::new();
        for t in 0..8 {
            let (url, token, long) = (c.url(0), c.token.clone(), long.clone());
            tasks.push(tokio::spawn(async move {
                let mut client = secrets_client(&url).await;
                let mut written = Vec::new();
                for i in 0..40 {
                    let name = format!("s/{t}/{i}/{long}");
                    written.push((name.clone(), put(&mut client, &token, &name).await));
                }
                written
            }));
        }
        let mut written = BTreeSet::new();
        for t in tasks {
            written.extend(t.await.expect("writer"));
        }
        // Past the grace for a full buffer.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let mut seen = Vec::new();
        let mut last = start;
        let cut = loop {
            match next(&mut w).await {
                Ok(Some(m)) => {
                    last = m.revision;
                    seen.extend(m.events.iter().map(|e| (e.name.clone(), e.version)));
                }
                Ok(None) => panic!("the stream ended without being cut"),
                Err(s) => break s,
            }
        };
        assert_eq!(cut.code(), Code::ResourceExhausted, "{cut:?}");
        assert_eq!(cut.message(), format!("watch fell behind; resume from revision {last}"));
        assert!(seen.len() < written.len(), "cut before everything was sent");
        let mut resumed = watch(&c.url(2), req(&[], &["s/"], last)).await.expect("resume");
        let (rest, _) = collect(&mut resumed, last, |e| seen.len() + e.len() >= written.len()).await;
        seen.extend(rest.iter().map(|e| (e.name.clone(), e.version)));
        let unique: BTreeSet<_> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "an event was sent twice");
        assert_eq!(unique, written, "nothing lost");
        let m = scrape(&metrics).await;
        assert!(total(&m, "vault_watch_cut_total", &["reason=\"slow_consumer\""]) >= 1.0, "{m}");
        assert!(total(&m, "vault_watch_events_sent_total", &[]) >= 1.0, "{m}");
    });
}
