//! `Secrets/WatchSecrets` security properties against real 3-node clusters: the per-address
//! bound; a cut client's slot freed at once; a watch ended by a rule change is audited; events
//! a deleted rule allowed are not replayed; a narrowed rule stops the events it no longer
//! covers.

use std::time::Duration;

use tonic::transport::Channel;
use tonic::Code;

use vault_tests::watch::*;
use vault_tests::*;

fn mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// Event names read until one named `last` arrives.
async fn names_until(w: &mut Watch, last: &str) -> Vec<String> {
    let mut names = Vec::new();
    while !names.iter().any(|n| n == last) {
        names.extend(must_next(w).await.events.into_iter().map(|e| e.name));
    }
    names
}

#[test]
fn one_address_cannot_take_more_than_its_share_of_watches() {
    mt().block_on(async {
        let c = TestCluster::start(3, |s| {
            s.set("VAULT_WATCH_MAX_PER_ADDR", "2");
        })
        .await;
        let url = c.url(0);
        // Each on its own connection: the per-connection bound is not what stops the third.
        let _a = watch(&url, req(&[], &["x/"], 0)).await.expect("first");
        let _b = watch(&url, req(&[], &["x/"], 0)).await.expect("second");
        let err = watch(&url, req(&[], &["x/"], 0)).await.expect_err("a third from one address");
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        assert!(err.message().contains("VAULT_WATCH_MAX_PER_ADDR"), "{}", err.message());
    });
}

#[test]
fn a_cut_client_frees_its_slot_without_being_read_again() {
    mt().block_on(async {
        let c = TestCluster::start(3, |s| {
            s.set("VAULT_WATCH_MAX", "2");
        })
        .await;
        let mut idle = Vec::new();
        for _ in 0..2 {
            // A small HTTP/2 window: what the client does not read stays on the server.
            let slow = Channel::from_shared(c.url(1))
                .expect("url")
                .initial_stream_window_size(Some(4096))
                .initial_connection_window_size(Some(65_535))
                .connect()
                .await
                .expect("connect");
            let mut w = watch_on(slow, req(&[], &["s/"], 0)).await.expect("watch");
            must_next(&mut w).await;
            idle.push(w);
        }
        let err = watch(&c.url(1), req(&[], &["s/"], 0)).await.expect_err("the node is full");
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        let long = "n".repeat(120);
        let mut tasks = Vec::new();
        for t in 0..8 {
            let (url, token, long) = (c.url(0), c.token.clone(), long.clone());
            tasks.push(tokio::spawn(async move {
                let mut client = secrets_client(&url).await;
                for i in 0..40 {
                    put(&mut client, &token, &format!("s/{t}/{i}/{long}")).await;
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer");
        }
        // Past the grace for a full buffer: both are cut, and neither stream is read again.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        let mut fresh = loop {
            match watch(&c.url(1), req(&[], &["s/"], 0)).await {
                Ok(w) => break w,
                Err(e) if e.code() == Code::ResourceExhausted && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(e) => panic!("the cut watchers still hold their slots: {e:?}"),
            }
        };
        must_next(&mut fresh).await;
        drop(idle);
    });
}

#[test]
fn rules_bound_replay_and_live_events_and_a_watch_they_end_is_audited() {
    mt().block_on(async {
        let c = TestCluster::start(3, |_| {}).await;
        c.ctl(0, &["reader", "create", "app", "--cidr", "127.0.0.1/32", "--grant", "app/*"]);
        c.ctl(0, &["reader", "create", "ops", "--cidr", "127.0.0.1/32", "--grant", "ops/*"]);
        let url = c.url(1);
        let mut everything = watch(&url, req(&[], &[""], 0)).await.expect("watch all");
        let mut app = watch(&url, req(&[], &["app/"], 0)).await.expect("watch app/");
        let start = must_next(&mut everything).await.revision;
        must_next(&mut app).await;
        let mut client = secrets_client(&c.url(0)).await;
        put(&mut client, &c.token, "app/a").await;
        put(&mut client, &c.token, "app/keep").await;
        put(&mut client, &c.token, "ops/a").await;
        assert_eq!(names_until(&mut everything, "ops/a").await, ["app/a", "app/keep", "ops/a"]);

        // Narrowed, not deleted: app/ names other than app/keep stop.
        c.ctl(0, &["reader", "create", "app", "--cidr", "127.0.0.1/32", "--grant", "app/keep", "--replace"]);
        put(&mut client, &c.token, "app/b").await;
        put(&mut client, &c.token, "app/keep").await;
        put(&mut client, &c.token, "ops/b").await;
        assert_eq!(names_until(&mut everything, "ops/b").await, ["app/keep", "ops/b"], "app/b is no longer shown");

        // Deleted: a resume from before the events replays none the rule allowed then.
        c.ctl(0, &["reader", "delete", "app"]);
        let mut resumed = watch(&url, req(&[], &[""], start)).await.expect("resume");
        assert_eq!(names_until(&mut resumed, "ops/b").await, ["ops/a", "ops/b"], "nothing under app/ replayed");

        // The app/ watch is no longer allowed: it ends, and that is on record.
        let ended = loop {
            match next(&mut app).await {
                Ok(Some(_)) => {}
                other => break other,
            }
        };
        assert_eq!(ended.expect_err("the app/ watch ends").code(), Code::PermissionDenied);
        let records = watch_records(&c, 1);
        let outcomes: Vec<&str> =
            records.iter().filter(|r| r["secret"] == "app/*").filter_map(|r| r["outcome"].as_str()).collect();
        assert!(outcomes.iter().any(|o| o.starts_with("ok")), "{records:?}");
        assert!(outcomes.iter().any(|o| o.contains("denied")), "the end is audited: {records:?}");
    });
}

/// "Events carry no values": neither message a watch sends, nor any message inside them,
/// has a `bytes` field, so a value cannot travel in one without this test changing.
#[test]
fn watch_messages_have_no_bytes_field() {
    use prost::Message;
    use prost_types::field_descriptor_proto::Type;
    let set = prost_types::FileDescriptorSet::decode(vault_node::pb::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let messages: Vec<(String, &prost_types::DescriptorProto)> = set
        .file
        .iter()
        .flat_map(|f| f.message_type.iter().map(move |m| (format!(".{}.{}", f.package(), m.name()), m)))
        .collect();
    let mut todo = vec![".vault.v1.WatchSecretsResponse".to_string(), ".vault.v1.WatchEvent".to_string()];
    let mut seen = Vec::new();
    while let Some(name) = todo.pop() {
        if seen.contains(&name) {
            continue;
        }
        let (_, m) = messages.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("{name} is not in the proto"));
        for f in &m.field {
            assert_ne!(f.r#type(), Type::Bytes, "{name}.{} is a bytes field", f.name());
            if f.r#type() == Type::Message {
                todo.push(f.type_name().to_string());
            }
        }
        seen.push(name);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[test]
fn watch_opens_count_against_the_per_address_rate_limit() {
    mt().block_on(async {
        let c = TestCluster::start(3, |s| {
            s.set("VAULT_RATE_PER_ADDR", "5");
        })
        .await;
        let ch = api_channel(&c.url(0), None).await.expect("connect");
        let mut open = Vec::new();
        let refused = loop {
            match watch_on(ch.clone(), req(&[], &["x/"], 0)).await {
                Ok(w) => open.push(w),
                Err(e) => break e,
            }
            assert!(open.len() < 40, "40 watches opened at once under 5 requests per second");
        };
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert!(refused.message().contains("request rate limit"), "{}", refused.message());
    });
}

/// L4: a client no rule permits is refused before anything about the node's history (its
/// applied index in "ahead of this cluster (N)") is said.
#[test]
fn a_refused_client_learns_nothing_of_the_history() {
    mt().block_on(async {
        let c = TestCluster::start(3, |_| {}).await;
        c.ctl(0, &["reader", "create", "ops", "--cidr", "10.9.9.9/32", "--grant", "ops/*"]);
        let err = watch(&c.url(1), req(&[], &["ops/"], u64::MAX)).await.expect_err("refused");
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        assert!(!err.message().contains("cluster"), "{}", err.message());
    });
}
