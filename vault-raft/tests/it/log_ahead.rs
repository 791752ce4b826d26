//! A crash between the log write and the state-machine write (issue 30 design, "crash between
//! the log write and the state-machine write"): the log holds entries synced that the state
//! machine never applied, or applied only in WAL writes that a power loss took. Restarted, the
//! node applies them again from its log: every version is there, `last_applied` reaches the
//! log's end, and the audit chain verifies.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, Membership};
use tempfile::TempDir;
use vault_core::envelope::SealedValue;
use vault_core::model::{AuditContext, Role, TokenRecord};
use vault_core::token::RawToken;
use vault_raft::transport::{GrpcNetwork, PeerClients, TransportSecurity};
use vault_raft::typ::{Entry, LogId, Raft};
use vault_raft::{AuditSetup, Command, NodeInfo, Storage};

const LAST: u64 = 100;

/// A client's put, as the leader proposes it: authorized and audited on every node.
fn put(name: &str, token: &RawToken) -> Command {
    let sealed = SealedValue { key_id: "k".into(), wrapped_dek: vec![1], nonce: vec![0; 24], ciphertext: vec![7] };
    let cmd = Command::PutSecret {
        name: name.into(),
        version: 1,
        sealed,
        expected_version: None,
        max_versions: None,
        now_ms: 5,
        auth: None,
    };
    let audit = AuditContext { node_id: 1, actor: "t".into(), client_ip: "127.0.0.1".into(), action: "put".into() };
    Command::AsCaller { auth: token.hash(), now_ms: 5, cmd: Box::new(cmd), audit }
}

/// 0: the membership {1}; 1: bootstrap (with an admin token); then one put per entry up to
/// `LAST`.
fn entries() -> Vec<Entry> {
    let token = RawToken::generate();
    let admin = Role::builtin_admin();
    let record = TokenRecord {
        name: "t".into(),
        hash: token.hash(),
        role: admin.name.clone(),
        created_at_ms: 1,
        expires_at_ms: None,
    };
    let me = NodeInfo { raft_addr: "127.0.0.1:1".into(), api_addr: "127.0.0.1:2".into() };
    (0..=LAST)
        .map(|i| {
            let payload = match i {
                0 => EntryPayload::Membership(Membership::new(vec![[1].into()], BTreeMap::from([(1, me.clone())]))),
                1 => {
                    EntryPayload::Normal(Command::Bootstrap { admin_role: admin.clone(), token: Some(record.clone()) })
                }
                _ => EntryPayload::Normal(put(&format!("s/{i}"), &token)),
            };
            Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), i), payload }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_synced_but_not_applied_are_applied_after_a_restart() {
    let keys = vault_raft::AuditKeys::new(vec![("t".into(), vault_core::keys::AuditMacKey::generate())]).unwrap();
    let crashed = TempDir::new().unwrap();
    let restarted = TempDir::new().unwrap();
    {
        let mut s = Storage::open(crashed.path(), 1, AuditSetup::new(keys.clone())).await.unwrap();
        let all = entries();
        s.log_store.save_vote(&openraft::Vote::new_committed(1, 1)).await.unwrap();
        s.log_store.blocking_append(all.clone()).await.unwrap();
        // Applied to 20, and that much is durable; applies to 50 are lost with the WAL
        // (a power loss); 51..=100 were never applied (a crash in between).
        s.state_machine.apply(all[..=20].to_vec()).await.unwrap();
        s.checkpoint_db(&restarted.path().join("db")).unwrap();
        s.state_machine.apply(all[21..=50].to_vec()).await.unwrap();
        s.synced.wait_synced(LAST).await.unwrap();
    }
    // The restarted node: the database as of the checkpoint, the whole (synced) log.
    let from = crashed.path().join("raft-log");
    std::fs::create_dir(restarted.path().join("raft-log")).unwrap();
    for f in std::fs::read_dir(&from).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), restarted.path().join("raft-log").join(f.file_name())).unwrap();
    }

    let mut s = Storage::open(restarted.path(), 1, AuditSetup::new(keys)).await.unwrap();
    assert_eq!(s.state_machine.applied_state().await.unwrap().0.map(|l| l.index), Some(20));
    assert_eq!(s.reader.last_log_id().unwrap().map(|l| l.index), Some(LAST));
    let config = Arc::new(openraft::Config::default().validate().unwrap());
    let peers = PeerClients::new(1, TransportSecurity::load(None, None).unwrap());
    let network = GrpcNetwork::new(peers, s.synced.clone());
    let raft = Raft::new(1, config, network, s.log_store.clone(), s.state_machine).await.unwrap();
    // Leader alone (its committed vote survived), the node commits its log and applies it.
    let metrics = raft
        .wait(Some(Duration::from_secs(30)))
        .metrics(|m| m.last_applied.is_some_and(|l| l.index >= LAST), "applied to the log's end")
        .await
        .unwrap_or_else(|e| panic!("not applied: {e}"));
    let log_end = s.log_store.get_log_state().await.unwrap().last_log_id;
    assert_eq!(metrics.last_applied, log_end, "last_applied is the log's end");
    for i in 2..=LAST {
        let v = s.reader.version(&format!("s/{i}"), 1).unwrap();
        assert!(v.is_some(), "version 1 of s/{i} is there");
    }
    let report = s.audit.verify().unwrap();
    assert_eq!(report.problem, None, "the audit chain verifies");
    assert!(report.checked >= LAST - 1, "a record per applied put: {}", report.checked);
    raft.shutdown().await.unwrap();
}
