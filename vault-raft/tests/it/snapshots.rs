//! Snapshots build from one store and install into another, through real files.

use crate::test_keys;
use openraft::storage::{RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership, StoredMembership};
use std::collections::{BTreeMap, BTreeSet};
use tempfile::TempDir;
use tokio::io::AsyncReadExt;
use vault_core::envelope::SealedValue;
use vault_raft::{Command, CommandResponse, NodeInfo, Storage, TypeConfig};

fn put(index: u64, name: &str, version: u64, ciphertext: &[u8]) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Command::PutSecret {
            name: name.into(),
            version,
            sealed: SealedValue {
                key_id: "local:test".into(),
                wrapped_dek: vec![1; 48],
                nonce: vec![2; 24],
                ciphertext: ciphertext.to_vec(),
            },
            expected_version: None,
            max_versions: None,
            now_ms: 1000 + index,
            auth: None,
        }),
    }
}

fn membership(index: u64) -> Entry<TypeConfig> {
    let nodes = BTreeMap::from([(1u64, NodeInfo { raft_addr: "r1".into(), api_addr: "a1".into() })]);
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1u64])], nodes)),
    }
}

#[tokio::test]
async fn snapshot_moves_state_between_stores_and_survives_reopen() {
    let dir_a = TempDir::new().unwrap();
    let dir_b = TempDir::new().unwrap();
    let mut a = Storage::open(dir_a.path(), 1, test_keys()).await.unwrap();
    let resp = a
        .state_machine
        .apply(vec![
            membership(1),
            put(2, "app/db", 1, b"ct-one"),
            put(3, "app/db", 2, b"ct-two"),
            put(4, "x", 1, b"ct-x"),
        ])
        .await
        .unwrap();
    assert_eq!(resp[1], CommandResponse::Written { version: 1 });
    assert_eq!(resp[2], CommandResponse::Written { version: 2 });

    let snap = a.state_machine.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_eq!(snap.meta.last_log_id.unwrap().index, 4);

    // The file is the versioned format and holds the ciphertext as stored.
    let mut bytes = Vec::new();
    let mut f = a.state_machine.get_current_snapshot().await.unwrap().unwrap().snapshot;
    f.read_to_end(&mut bytes).await.unwrap();
    assert!(bytes.starts_with(b"VLTSNAP\0"));

    {
        let mut b = Storage::open(dir_b.path(), 2, test_keys()).await.unwrap();
        let incoming = a.state_machine.get_current_snapshot().await.unwrap().unwrap();
        b.state_machine.install_snapshot(&incoming.meta, incoming.snapshot).await.unwrap();
        let (applied, m) = b.state_machine.applied_state().await.unwrap();
        assert_eq!(applied.unwrap().index, 4);
        assert_eq!(m, StoredMembership::new(Some(LogId::new(CommittedLeaderId::new(1, 1), 1)), m.membership().clone()));
        let latest = b.reader.latest_live("app/db").unwrap().unwrap();
        assert_eq!(latest.version, 2);
        assert_eq!(latest.sealed.unwrap().ciphertext, b"ct-two");
        // b serves the installed snapshot to others.
        assert!(b.state_machine.get_current_snapshot().await.unwrap().is_some());
        drop(b);
    }
    // Reopen b from disk: the installed state and applied id persist.
    let mut b = Storage::open(dir_b.path(), 2, test_keys()).await.unwrap();
    assert_eq!(b.state_machine.applied_state().await.unwrap().0.unwrap().index, 4);
    assert_eq!(b.reader.latest_live("x").unwrap().unwrap().sealed.unwrap().ciphertext, b"ct-x");
    let _ = b.log_store.get_log_state().await.unwrap();
}

#[tokio::test]
async fn corrupted_snapshot_is_refused_and_state_is_untouched() {
    let dir_a = TempDir::new().unwrap();
    let dir_b = TempDir::new().unwrap();
    let mut a = Storage::open(dir_a.path(), 1, test_keys()).await.unwrap();
    a.state_machine.apply(vec![membership(1), put(2, "k", 1, b"aaaa")]).await.unwrap();
    let snap = a.state_machine.get_snapshot_builder().await.build_snapshot().await.unwrap();

    let mut b = Storage::open(dir_b.path(), 2, test_keys()).await.unwrap();
    b.state_machine.apply(vec![membership(1), put(2, "mine", 1, b"keep")]).await.unwrap();

    let mut bytes = Vec::new();
    let mut f = snap.snapshot;
    f.read_to_end(&mut bytes).await.unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    let mut recv = b.state_machine.begin_receiving_snapshot().await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut *recv, &bytes).await.unwrap();
    assert!(b.state_machine.install_snapshot(&snap.meta, recv).await.is_err());
    assert!(b.reader.latest_live("mine").unwrap().is_some(), "state untouched");
    assert!(b.reader.latest_live("k").unwrap().is_none());
}
