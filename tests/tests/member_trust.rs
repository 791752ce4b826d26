//! What a cluster member can make the leader do, with real processes. A member holds every
//! token's hash (the replicated token table), its own node certificate, and the requests clients
//! send it; none of that lets it act as a caller whose token it was never handed.

use std::time::Duration;

use tonic::Code;
use vault_core::model::{AuditContext, BOOTSTRAP_TOKEN_NAME};
use vault_core::token::{RawToken, TokenHash};
use vault_raft::transport::{AdminOp, CallerWrite, ForwardError, ForwardRequest, ForwardResponse};
use vault_raft::{Command, CommandResponse};
use vault_tests::raft_peer::{append_as, forward_as, hash_of, raft_as, raft_as_from, tls_from, token_record, vote_as};
use vault_tests::*;

fn mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn records(c: &TestCluster, i: usize) -> Vec<serde_json::Value> {
    serde_json::from_str(&c.ctl(i, &["--output", "json", "audit", "list", "--limit", "10000"])).expect("audit json")
}

#[test]
fn a_member_cannot_act_as_a_caller_whose_token_it_was_not_given() {
    mt().block_on(async {
        let c = TestCluster::start(3, |_| {}).await;
        let leader = c.leader_seen_by(0, |_| true).await;
        let leader_id = c.specs[leader].node_id;
        let member_idx = (leader + 1) % 3;
        let member = c.specs[member_idx].node_id;
        let mut as_member = raft_as(&c.certs(), member, leader_id, c.specs[leader].raft_addr).await;

        let created =
            c.ctl(leader, &["--output", "json", "token", "create", "brief", "--role", "admin", "--ttl", "1s"]);
        let brief: serde_json::Value = serde_json::from_str(&created).expect("token json");
        let brief = brief["token"].as_str().expect("raw token").to_string();
        tokio::time::sleep(Duration::from_millis(1_500)).await;

        tracing::info!("forwards naming their caller by a token hash, which every member stores");
        let now = vault_core::time::now_ms();
        let by_hash = |auth: TokenHash, now_ms: u64, actor: &str, name: &str| {
            ForwardRequest::Write(Command::AsCaller {
                auth,
                now_ms,
                cmd: Box::new(Command::CreateToken { record: token_record(name) }),
                audit: AuditContext {
                    node_id: member,
                    actor: actor.into(),
                    client_ip: "192.0.2.1".into(),
                    action: "token.create".into(),
                },
            })
        };
        let refusals = [
            (by_hash(hash_of(&c.token), now, BOOTSTRAP_TOKEN_NAME, "by-admin-hash"), "a real admin's hash"),
            (by_hash(hash_of(&brief), now - 1_400, "brief", "by-expired-hash"), "an expired token's hash, back-dated"),
            (by_hash(hash_of(&c.token), now, "alice", "by-forged-actor"), "a forged actor"),
            (
                ForwardRequest::AdminByHash { auth: hash_of(&c.token), op: AdminOp::TransferLeader { to: member } },
                "a cluster change by an admin's hash",
            ),
            (
                ForwardRequest::CallerAdmin { token: RawToken::generate(), op: AdminOp::TransferLeader { to: member } },
                "a cluster change with a token nobody holds",
            ),
        ];
        let refused = refusals.len() + 2; // and the two raw tokens below
        for (req, what) in refusals {
            match forward_as(&mut as_member, member, req).await {
                Err(s) if s.code() == Code::PermissionDenied => {}
                other => panic!("{what}: expected PERMISSION_DENIED, got {other:?}"),
            }
        }

        tracing::info!("with a raw token, the leader hashes it, takes its own time and names the actor");
        let caller_write = |token: RawToken, name: &str| {
            ForwardRequest::CallerWrite(CallerWrite {
                token,
                cmd: Command::CreateToken { record: token_record(name) },
                client_ip: "192.0.2.7".into(),
                action: "token.create".into(),
            })
        };
        // Tokens the leader does not hold, or that expired by its clock, are refused before
        // anything is proposed: a member cannot fill the log with writes no one asked for.
        let expired = RawToken::parse_strict(&brief).expect("valid");
        match forward_as(&mut as_member, member, caller_write(expired, "by-expired-token")).await {
            Err(s) if s.code() == Code::PermissionDenied => assert!(s.message().contains("expired"), "{s:?}"),
            other => panic!("an expired token is refused at the leader's time: {other:?}"),
        }
        match forward_as(&mut as_member, member, caller_write(RawToken::generate(), "by-unknown-token")).await {
            Err(s) if s.code() == Code::Unavailable => assert!(s.message().contains("no such token"), "{s:?}"),
            other => panic!("a token nobody holds is refused before it is proposed: {other:?}"),
        }
        // The audit action is the serving node's word, recorded as is: it may not name one of
        // the chain's own records (a forged `audit.chain_broken`), nor be anything but `noun.verb`.
        for action in ["audit.chain_broken", "audit.key_retired", "token.create!", "Token.create", "token"] {
            let forged = ForwardRequest::CallerWrite(CallerWrite {
                token: RawToken::parse_strict(&c.token).expect("valid"),
                cmd: Command::CreateToken { record: token_record("by-forged-action") },
                client_ip: "192.0.2.7".into(),
                action: action.into(),
            });
            match forward_as(&mut as_member, member, forged).await {
                Ok(Err(ForwardError::Rejected(m))) => assert!(m.contains("audit action"), "{action}: {m}"),
                other => panic!("a write whose audit action is {action:?} is rejected: {other:?}"),
            }
        }
        let admin = RawToken::parse_strict(&c.token).expect("valid");
        match forward_as(&mut as_member, member, caller_write(admin, "via-member")).await {
            Ok(Ok(ForwardResponse::Written(r))) => assert!(!matches!(r, CommandResponse::Rejected(_)), "{r:?}"),
            other => panic!("a write with the caller's own token is applied: {other:?}"),
        }

        let upgrade = ForwardRequest::CallerAdmin {
            token: RawToken::parse_strict(&c.token).expect("valid"),
            op: AdminOp::RaiseFeatureLevel,
        };
        match forward_as(&mut as_member, member, upgrade).await {
            Ok(Ok(_)) => {}
            other => panic!("a cluster change with an admin's own token runs: {other:?}"),
        }

        let tokens = c.ctl(leader, &["token", "list"]);
        assert!(tokens.contains("via-member"), "{tokens}");
        for name in [
            "by-admin-hash",
            "by-expired-hash",
            "by-forged-actor",
            "by-expired-token",
            "by-unknown-token",
            "by-forged-action",
        ] {
            assert!(!tokens.contains(name), "{name} must not exist:\n{tokens}");
        }
        let status = c.status(leader).await.expect("status");
        assert_eq!(status.leader_id, Some(leader_id), "no refused cluster change moved the leadership");

        tracing::info!("the leader's audit log names each refusal and the actor it derived");
        let log = records(&c, leader);
        let peer_refusals: Vec<_> =
            log.iter().filter(|r| r["action"] == "raft.forward" && r["actor"] == format!("node:{member}")).collect();
        assert_eq!(peer_refusals.len(), refused, "one record per refused forward: {peer_refusals:#?}");
        let denied =
            |r: &&&serde_json::Value| r["outcome"].as_str().is_some_and(|o| o.starts_with("permission denied"));
        assert_eq!(peer_refusals.iter().filter(denied).count(), refused - 1, "{peer_refusals:#?}");
        assert!(
            peer_refusals.iter().any(|r| r["secret"] == "caller_write:create_token"
                && r["outcome"].as_str().is_some_and(|o| o.starts_with("unavailable"))),
            "{peer_refusals:#?}"
        );
        let of = |subject: &str| {
            log.iter().find(|r| r["secret"] == subject).unwrap_or_else(|| panic!("no record of {subject}: {log:#?}"))
        };
        let via = of("token:via-member");
        assert_eq!(via["actor"], BOOTSTRAP_TOKEN_NAME, "{via}");
        assert_eq!(via["node_id"], member, "the node whose certificate forwarded it: {via}");
        assert_eq!(via["outcome"], "ok", "{via}");
        // The cluster change a member forwarded is on the leader's record too, under the actor the
        // leader's own token record names.
        let changes: Vec<_> = log.iter().filter(|r| r["action"] == "cluster.upgrade").collect();
        let outcomes: Vec<&str> = changes.iter().filter_map(|r| r["outcome"].as_str()).collect();
        assert!(changes.iter().all(|r| r["actor"] == BOOTSTRAP_TOKEN_NAME), "{changes:#?}");
        let by = format!("(forwarded by node {member} from 127.0.0.1)");
        assert_eq!(outcomes, [format!("ok {by}"), format!("requested {by}")], "newest first: {changes:#?}");
        assert!(
            !log.iter().any(|r| r["secret"] == "token:by-expired-token" || r["secret"] == "token:by-unknown-token"),
            "nothing proposed for them: {log:#?}"
        );
    });
}

/// Only a voter can be elected, so only a voter's votes, appends and snapshots are taken: a
/// learner (or whoever holds its key) cannot make itself leader by sending them in a higher
/// term, and so cannot commit what it likes (a token of its own, say) on every node.
#[test]
fn a_learner_cannot_make_itself_leader() {
    mt().block_on(async {
        let c = TestCluster::start(3, |_| {}).await;
        let leader = c.leader_seen_by(0, |_| true).await;
        let leader_id = c.specs[leader].node_id;
        let mut spec4 = c.node_spec(4);
        spec4.set("VAULT_JOIN", "true");
        let _node4 = spec4.start();
        c.ctl(0, &["cluster", "add", "4", &spec4.raft_addr.to_string(), &spec4.api_addr.to_string()]);
        let term = c.status(leader).await.expect("status").term;

        for i in 0..3 {
            let target = c.specs[i].node_id;
            let mut as4 = raft_as(&c.certs(), 4, target, c.specs[i].raft_addr).await;
            for (r, what) in [
                (vote_as(&mut as4, 4, term + 100).await, "a learner's vote"),
                (append_as(&mut as4, 4, term + 100).await, "a learner's append as leader"),
            ] {
                match r {
                    Err(s) if s.code() == Code::PermissionDenied => {
                        assert!(s.message().contains("not a voter"), "{what} to node {target}: {}", s.message())
                    }
                    other => panic!("{what} to node {target}: expected PERMISSION_DENIED, got {other:?}"),
                }
            }
        }
        for i in 0..3 {
            let s = c.status(i).await.expect("status");
            assert_eq!((s.term, s.leader_id), (term, Some(leader_id)), "node index {i}: no new term, same leader");
        }
    });
}

/// A node started to join (`VAULT_JOIN`, no `VAULT_PEERS`) has no membership to check callers
/// against. It takes votes, appends and snapshots only from the voters the leader that adds it
/// announces (`cluster add` does, before adding it), so another CA-signed node cannot make
/// itself the joining node's leader first.
#[test]
fn a_joining_node_takes_raft_traffic_only_from_the_voters_that_add_it() {
    mt().block_on(async {
        let c = TestCluster::start(3, |_| {}).await;
        let leader = c.leader_seen_by(0, |_| true).await;
        let certs = c.certs();
        mint_certs(&certs, &[9]);
        let mut spec4 = c.node_spec(4);
        spec4.set("VAULT_JOIN", "true");
        let node4 = spec4.start();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(spec4.raft_addr).await.is_err() {
            assert!(std::time::Instant::now() < deadline, "node 4's Raft port never opened");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        tracing::info!("before any leader announced itself, no one leads the joining node");
        for (as_id, who) in
            [(9, "a CA-signed node that is no member"), (c.specs[leader].node_id, "the leader, before `cluster add`")]
        {
            let mut to4 = raft_as(&certs, as_id, 4, spec4.raft_addr).await;
            for (r, what) in
                [(vote_as(&mut to4, as_id, 50).await, "vote"), (append_as(&mut to4, as_id, 50).await, "append")]
            {
                match r {
                    Err(s) if s.code() == Code::PermissionDenied => {}
                    other => panic!("{who}'s {what}: expected PERMISSION_DENIED, got {other:?}"),
                }
            }
        }

        tracing::info!("the leader adds it, announcing its voters; the node follows that leader");
        c.ctl(0, &["secret", "put", "join/x", "--value", "before-join"]);
        c.ctl(0, &["cluster", "add", "4", &spec4.raft_addr.to_string(), &spec4.api_addr.to_string()]);
        let got = must_vaultctl(&node4.url(), None, &["secret", "get", "join/x"]);
        assert_eq!(got, "before-join", "node 4 caught up from the cluster that added it");
        let mut nine = raft_as(&certs, 9, 4, spec4.raft_addr).await;
        match vote_as(&mut nine, 9, 1_000).await {
            Err(s) if s.code() == Code::PermissionDenied => {}
            other => panic!("a non-member's vote once node 4 joined: {other:?}"),
        }
    });
}

/// Each forwarded request a member is refused is written to the refusing node's audit log, up
/// to a budget a minute per member (`raft.forward`, actor `node:<id>`); past it the refusals
/// are still answered, only counted, so a hostile member cannot fill every node's log.
#[test]
fn a_members_refused_forwards_are_recorded_one_by_one_only_within_its_budget() {
    const BUDGET: usize = 30; // `PER_MEMBER_PER_MINUTE` in vault-raft/src/transport/peer_audit.rs
    const SENT: usize = BUDGET + 15;
    mt().block_on(async {
        let c = TestCluster::start(1, |_| {}).await;
        let id = c.specs[0].node_id;
        let mut as_member = raft_as(&c.certs(), id, id, c.specs[0].raft_addr).await;
        // The budget is per minute of the node's clock (this machine's): send the burst well
        // inside one minute.
        let in_minute = vault_core::time::now_ms() % 60_000;
        if in_minute > 45_000 {
            tokio::time::sleep(Duration::from_millis(60_000 - in_minute + 200)).await;
        }
        let minute = vault_core::time::now_ms() / 60_000;
        for i in 0..SENT {
            let req = ForwardRequest::AdminByHash { auth: hash_of(&c.token), op: AdminOp::TransferLeader { to: id } };
            match forward_as(&mut as_member, id, req).await {
                Err(s) if s.code() == Code::PermissionDenied => {}
                other => panic!("refused forward {i}: expected PERMISSION_DENIED, got {other:?}"),
            }
        }
        assert_eq!(vault_core::time::now_ms() / 60_000, minute, "the burst stayed inside one minute");

        let log = records(&c, 0);
        let recorded: Vec<_> =
            log.iter().filter(|r| r["action"] == "raft.forward" && r["actor"] == format!("node:{id}")).collect();
        assert_eq!(recorded.len(), BUDGET, "{SENT} refused, one record each only within the budget: {recorded:#?}");
        assert!(
            recorded.iter().all(|r| r["outcome"].as_str().is_some_and(|o| o.starts_with("permission denied"))),
            "{recorded:#?}"
        );
    });
}

/// A put through node index `i` until it succeeds (within 45 s).
async fn put_through(c: &TestCluster, i: usize, name: &str, value: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    loop {
        let out = c.nodes[i].vaultctl(Some(&c.token), &["secret", "put", name, "--value", value]);
        if out.status.success() {
            return;
        }
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert!(std::time::Instant::now() < deadline, "put {name} through node index {i}: {err}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Once its handshake shows a current member, a member's Raft connection moves to a slot of its
/// own (one of `MEMBER_SLOTS`) and stops counting against its address and the shared slots. So
/// one address holds more member connections than it may hold unverified ones, and connections
/// presenting a cluster-CA certificate that names no member, from as many addresses as it
/// takes, hold the shared slots and no more, while the member connections (a restarted
/// follower's among them) keep serving and the cluster commits through that follower.
///
/// Not shown, because it does not hold: a member's *new* connection needs a free shared slot
/// for its handshake, so while the shared slots are full it is closed like any other (see
/// "Limits" in SECURITY.md).
#[test]
fn member_connections_hold_slots_that_connections_naming_no_member_cannot_take() {
    use vault_raft::transport::pb::NodeStateRequest;
    use vault_raft::transport::{MAX_CONNECTIONS, MAX_PER_ADDRESS, MEMBERSHIP_RECHECK, MEMBER_SLOTS};
    mt().block_on(async {
        let mut c = TestCluster::start(3, |_| {}).await;
        let leader = c.leader_seen_by(0, |_| true).await;
        let (leader_id, raft) = (c.specs[leader].node_id, c.specs[leader].raft_addr);
        let follower = (leader + 1) % 3;
        let follower_id = c.specs[follower].node_id;
        let certs = c.certs();
        mint_certs(&certs, &[9]);

        tracing::info!("a follower restarts and writes through it reach the leader again");
        c.nodes[follower].stop();
        c.nodes[follower] = c.specs[follower].start();
        c.nodes[follower].wait_ready().await;
        put_through(&c, follower, "slots/before", "v1").await;

        tracing::info!("more member connections from one address than it may hold unverified");
        let mut members = Vec::new();
        for i in 0..MAX_PER_ADDRESS + 8 {
            match raft_as_from(&certs, follower_id, leader_id, raft, Some([127, 0, 0, 2].into())).await {
                Ok(m) => members.push(m),
                Err(e) => panic!("member connection {i} from 127.0.0.2 (cap {MAX_PER_ADDRESS} unverified): {e:?}"),
            }
        }

        tracing::info!("connections naming no member take the shared slots, from as many addresses as it takes");
        let shared = MAX_CONNECTIONS - MEMBER_SLOTS;
        let address = |i: usize| [127, 0, 0, 2 + u8::try_from(i / MAX_PER_ADDRESS).expect("few addresses")];
        let filled_at = std::time::Instant::now();
        let held =
            futures::future::join_all((0..shared).map(|i| tls_from(&certs, 9, leader_id, raft, address(i)))).await;
        let took = filled_at.elapsed();
        let opened = held.iter().filter(|s| s.is_some()).count();
        assert_eq!(opened, shared, "127.0.0.2 still had its own {MAX_PER_ADDRESS} after the member connections");
        let refused = |what: &'static str| {
            let certs = certs.clone();
            async move {
                let extra = tls_from(&certs, 9, leader_id, raft, address(shared)).await;
                assert!(
                    extra.is_none(),
                    "{what}: a connection naming no member took a slot past the {shared} shared ones"
                );
            }
        };
        refused("once filled").await;

        tracing::info!(?took, "while they are held, member connections serve and writes commit through the follower");
        for (i, m) in members.iter_mut().enumerate() {
            let state = m.node_state(NodeStateRequest::default()).await;
            assert_eq!(state.map(|r| r.into_inner().node_id).ok(), Some(leader_id), "member connection {i}");
        }
        let out = c.nodes[follower].vaultctl(Some(&c.token), &["secret", "put", "slots/during", "--value", "v2"]);
        assert!(out.status.success(), "a write through the follower: {}", String::from_utf8_lossy(&out.stderr));
        let out = c.nodes[follower].vaultctl(Some(&c.token), &["secret", "get", "slots/before"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "v1", "{}", String::from_utf8_lossy(&out.stderr));
        refused("after the writes").await;
        // Connections naming no member are closed at the membership check; until then the
        // shared slots were full for all of the above.
        let held_for = filled_at.elapsed();
        assert!(
            held_for < MEMBERSHIP_RECHECK,
            "too slow to check while the slots were held: {held_for:?} (fill {took:?})"
        );
        assert_eq!(c.ctl(leader, &["secret", "get", "slots/during"]), "v2", "the write committed");
        drop(held);
    });
}
