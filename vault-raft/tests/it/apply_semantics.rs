//! Command semantics as applied by the state machine: versions, check-and-set, retention,
//! lifecycle, tokens and roles.

use crate::test_keys;
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use tempfile::TempDir;
use vault_core::envelope::SealedValue;
use vault_core::model::{Grant, Role, TokenRecord, VersionState};
use vault_core::token::RawToken;
use vault_raft::{Command, CommandResponse, Rejection, Storage, TypeConfig};

/// A put of `name:version` whose ciphertext is the version number (so tests can tell versions apart).
fn put_cmd(
    name: &str,
    version: u64,
    cas: Option<u64>,
    now_ms: u64,
    auth: Option<vault_core::token::TokenHash>,
) -> Command {
    Command::PutSecret {
        name: name.into(),
        version,
        sealed: SealedValue {
            key_id: "k".into(),
            wrapped_dek: vec![1],
            nonce: vec![0; 24],
            ciphertext: vec![version as u8],
        },
        expected_version: cas,
        max_versions: None,
        now_ms,
        auth,
    }
}

pub(crate) struct Sm {
    _dir: TempDir,
    pub(crate) s: Storage,
    index: u64,
}

impl Sm {
    pub(crate) async fn new() -> Sm {
        let dir = TempDir::new().unwrap();
        let s = Storage::open(dir.path(), 1, test_keys()).await.unwrap();
        let mut sm = Sm { _dir: dir, s, index: 0 };
        sm.run(Command::Bootstrap { admin_role: Role::builtin_admin(), token: None }).await;
        sm
    }

    pub(crate) async fn run(&mut self, cmd: Command) -> CommandResponse {
        self.index += 1;
        let e = Entry::<TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), self.index),
            payload: EntryPayload::Normal(cmd),
        };
        self.s.state_machine.apply(vec![e]).await.unwrap().remove(0)
    }

    /// Role `w` with `grants` and token `t` holding it; returns the raw token.
    async fn writer_token(&mut self, grants: &str, expires_at_ms: Option<u64>) -> RawToken {
        let role = Role::new("w", Grant::parse_many(grants).unwrap()).unwrap();
        self.run(Command::PutRole { role, replace: false }).await;
        let raw = RawToken::generate();
        let record =
            TokenRecord { name: "t".into(), hash: raw.hash(), role: "w".into(), created_at_ms: 1, expires_at_ms };
        self.run(Command::CreateToken { record }).await;
        raw
    }

    pub(crate) async fn put(
        &mut self,
        name: &str,
        version: u64,
        cas: Option<u64>,
        max: Option<u32>,
    ) -> CommandResponse {
        let mut cmd = put_cmd(name, version, cas, 5, None);
        if let Command::PutSecret { max_versions, .. } = &mut cmd {
            *max_versions = max;
        }
        self.run(cmd).await
    }
}

#[tokio::test]
async fn versions_grow_and_cas_is_enforced() {
    let mut sm = Sm::new().await;
    assert_eq!(sm.put("a", 1, Some(0), None).await, CommandResponse::Written { version: 1 });
    assert_eq!(sm.put("a", 2, None, None).await, CommandResponse::Written { version: 2 });
    assert_eq!(
        sm.put("a", 3, Some(1), None).await,
        CommandResponse::Rejected(Rejection::CasMismatch { expected: 1, actual: 2 })
    );
    assert_eq!(sm.put("a", 2, None, None).await, CommandResponse::Rejected(Rejection::VersionConflict { current: 2 }));
    assert_eq!(
        sm.put("a", 1, Some(0), None).await,
        CommandResponse::Rejected(Rejection::CasMismatch { expected: 0, actual: 2 })
    );
    assert_eq!(sm.s.reader.latest_live("a").unwrap().unwrap().version, 2);
}

#[tokio::test]
async fn retention_purges_the_oldest_versions() {
    let mut sm = Sm::new().await;
    for v in 1..=5 {
        sm.put("r", v, None, Some(3)).await;
    }
    let versions: Vec<u64> = sm.s.reader.versions("r").unwrap().iter().map(|r| r.version).collect();
    assert_eq!(versions, vec![3, 4, 5]);
    assert!(sm.s.reader.version("r", 1).unwrap().is_none());
}

#[tokio::test]
async fn delete_undelete_destroy_and_delete_secret() {
    let mut sm = Sm::new().await;
    for v in 1..=3 {
        sm.put("s", v, None, None).await;
    }
    let r = sm.run(Command::DeleteVersions { name: "s".into(), versions: vec![3], now_ms: 9 }).await;
    assert_eq!(r, CommandResponse::Changed { versions: vec![3] });
    assert_eq!(sm.s.reader.latest_live("s").unwrap().unwrap().version, 2);
    // A missing version makes the whole command a no-op.
    let r = sm.run(Command::DeleteVersions { name: "s".into(), versions: vec![2, 9], now_ms: 9 }).await;
    assert!(matches!(r, CommandResponse::Rejected(Rejection::NotFound(_))));
    assert_eq!(sm.s.reader.latest_live("s").unwrap().unwrap().version, 2);

    sm.run(Command::UndeleteVersions { name: "s".into(), versions: vec![3] }).await;
    assert_eq!(sm.s.reader.latest_live("s").unwrap().unwrap().version, 3);

    sm.run(Command::DestroyVersions { name: "s".into(), versions: vec![1], now_ms: 9 }).await;
    let v1 = sm.s.reader.version("s", 1).unwrap().unwrap();
    assert!(matches!(v1.state, VersionState::Destroyed { .. }));
    assert!(v1.sealed.is_none(), "destroy purges ciphertext and wrapped DEK");
    // Destroyed cannot be undeleted.
    let r = sm.run(Command::UndeleteVersions { name: "s".into(), versions: vec![1] }).await;
    assert_eq!(r, CommandResponse::Changed { versions: vec![] });

    sm.run(Command::DeleteSecret { name: "s".into() }).await;
    assert!(sm.s.reader.secret_meta("s").unwrap().is_none());
    assert!(sm.s.reader.versions("s").unwrap().is_empty());
    assert_eq!(sm.put("s", 1, Some(0), None).await, CommandResponse::Written { version: 1 });
}

#[tokio::test]
async fn tokens_and_roles() {
    let mut sm = Sm::new().await;
    let raw = RawToken::generate();
    let rec = TokenRecord {
        name: "ci".into(),
        hash: raw.hash(),
        role: "writer".into(),
        created_at_ms: 1,
        expires_at_ms: None,
    };
    let r = sm.run(Command::CreateToken { record: rec.clone() }).await;
    assert!(matches!(r, CommandResponse::Rejected(Rejection::NotFound(_))), "role must exist");

    let role = Role::new("writer", Grant::parse_many("create,update:app/*").unwrap()).unwrap();
    assert_eq!(sm.run(Command::PutRole { role: role.clone(), replace: false }).await, CommandResponse::Ok);
    assert!(matches!(
        sm.run(Command::PutRole { role, replace: false }).await,
        CommandResponse::Rejected(Rejection::AlreadyExists(_))
    ));
    assert_eq!(sm.run(Command::CreateToken { record: rec.clone() }).await, CommandResponse::Ok);
    assert_eq!(sm.s.reader.token_by_hash(&raw.hash()).unwrap().unwrap().name, "ci");

    let r = sm.run(Command::DeleteRole { name: "writer".into() }).await;
    assert!(matches!(r, CommandResponse::Rejected(Rejection::FailedPrecondition(ref m)) if m.contains("ci")), "{r:?}");
    let r = sm.run(Command::DeleteRole { name: "admin".into() }).await;
    assert!(matches!(r, CommandResponse::Rejected(Rejection::FailedPrecondition(_))));
    let r = sm.run(Command::PutRole { role: Role::builtin_admin(), replace: true }).await;
    assert!(matches!(r, CommandResponse::Rejected(Rejection::FailedPrecondition(_))));

    assert_eq!(sm.run(Command::RevokeToken { name: "ci".into() }).await, CommandResponse::Ok);
    assert!(sm.s.reader.token_by_hash(&raw.hash()).unwrap().is_none());
    assert_eq!(sm.run(Command::DeleteRole { name: "writer".into() }).await, CommandResponse::Ok);
}

#[tokio::test]
async fn bootstrap_token_is_issued_once_ever() {
    let mut sm = Sm::new().await;
    let raw = RawToken::generate();
    let rec = TokenRecord {
        name: "bootstrap-admin".into(),
        hash: raw.hash(),
        role: "admin".into(),
        created_at_ms: 1,
        expires_at_ms: None,
    };
    sm.run(Command::Bootstrap { admin_role: Role::builtin_admin(), token: Some(rec.clone()) }).await;
    assert!(sm.s.reader.token_by_hash(&raw.hash()).unwrap().is_some());
    sm.run(Command::RevokeToken { name: "bootstrap-admin".into() }).await;
    sm.run(Command::Bootstrap { admin_role: Role::builtin_admin(), token: Some(rec) }).await;
    assert!(sm.s.reader.token_by_hash(&raw.hash()).unwrap().is_none(), "revoked bootstrap token must stay revoked");
}

#[tokio::test]
async fn a_batch_sees_its_own_writes() {
    let mut sm = Sm::new().await;
    let mk = |i: u64, v: u64| Entry::<TypeConfig> {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
        payload: EntryPayload::Normal(put_cmd("b", v, None, 1, None)),
    };
    let out = sm.s.state_machine.apply(vec![mk(10, 1), mk(11, 2), mk(12, 2)]).await.unwrap();
    assert_eq!(out[0], CommandResponse::Written { version: 1 });
    assert_eq!(out[1], CommandResponse::Written { version: 2 });
    assert_eq!(out[2], CommandResponse::Rejected(Rejection::VersionConflict { current: 2 }));
}

#[tokio::test]
async fn puts_are_authorized_again_when_applied() {
    let mut sm = Sm::new().await;
    let raw = sm.writer_token("create:new/*", Some(100)).await;
    let put = |name: &str, version: u64, now_ms: u64, auth| put_cmd(name, version, None, now_ms, auth);
    assert_eq!(sm.run(put("new/a", 1, 50, Some(raw.hash()))).await, CommandResponse::Written { version: 1 });
    // The role grants create, not update: a second version is refused at apply.
    let r = sm.run(put("new/a", 2, 50, Some(raw.hash()))).await;
    assert!(
        matches!(r, CommandResponse::Rejected(Rejection::PermissionDenied(ref m)) if m.contains("may not update")),
        "{r:?}"
    );
    let r = sm.run(put("other/a", 1, 50, Some(raw.hash()))).await;
    assert!(matches!(r, CommandResponse::Rejected(Rejection::PermissionDenied(_))), "{r:?}");
    // Expired by the proposer's clock.
    let r = sm.run(put("new/b", 1, 100, Some(raw.hash()))).await;
    assert!(
        matches!(r, CommandResponse::Rejected(Rejection::Unauthenticated(ref m)) if m.contains("expired")),
        "{r:?}"
    );
    // Revoked between proposal and apply: refused, nothing written.
    sm.run(Command::RevokeToken { name: "t".into() }).await;
    let r = sm.run(put("new/c", 1, 50, Some(raw.hash()))).await;
    assert!(matches!(r, CommandResponse::Rejected(Rejection::Unauthenticated(_))), "{r:?}");
    assert!(sm.s.reader.secret_meta("new/c").unwrap().is_none());
    assert!(sm.s.reader.secret_meta("new/b").unwrap().is_none());
}

/// A batch entry answers each command on its own, in order; a refusal leaves the others (and
/// the state) as if it had been a separate entry. A token revoked earlier in the same batch is
/// refused later in it, even though its lookups were made (and remembered) before.
#[tokio::test]
async fn batch_commands_apply_in_order_each_with_its_own_response() {
    let mut sm = Sm::new().await;
    let raw = sm.writer_token("create,update:b/*", None).await;
    let put = |name: &str, version: u64, cas: Option<u64>| put_cmd(name, version, cas, 5, Some(raw.hash()));
    let out = sm
        .run(Command::Batch(
            vec![
                put("b/x", 1, None),
                put("b/y", 1, None),
                put("b/x", 1, None),    // version 1 was taken just before: conflict
                put("b/x", 2, Some(7)), // wrong check-and-set
                put("b/x", 2, Some(1)),
                Command::Batch(vec![put("b/z", 1, None)].into()),
                Command::RevokeToken { name: "t".into() },
                put("b/y", 2, None),
            ]
            .into(),
        ))
        .await;
    let CommandResponse::Batch(r) = out else { panic!("expected a batch response, got {out:?}") };
    assert_eq!(r.len(), 8);
    assert_eq!(r[0], CommandResponse::Written { version: 1 });
    assert_eq!(r[1], CommandResponse::Written { version: 1 });
    assert_eq!(r[2], CommandResponse::Rejected(Rejection::VersionConflict { current: 1 }));
    assert_eq!(r[3], CommandResponse::Rejected(Rejection::CasMismatch { expected: 7, actual: 1 }));
    assert_eq!(r[4], CommandResponse::Written { version: 2 });
    assert!(matches!(r[5], CommandResponse::Rejected(Rejection::FailedPrecondition(_))), "{:?}", r[5]);
    assert_eq!(r[6], CommandResponse::Ok);
    assert!(matches!(r[7], CommandResponse::Rejected(Rejection::Unauthenticated(_))), "{:?}", r[7]);
    assert_eq!(sm.s.reader.secret_meta("b/x").unwrap().unwrap().current_version, 2);
    assert_eq!(sm.s.reader.secret_meta("b/y").unwrap().unwrap().current_version, 1);
    assert!(sm.s.reader.secret_meta("b/z").unwrap().is_none(), "a nested batch applies nothing");
    let v2 = sm.s.reader.version("b/x", 2).unwrap().unwrap();
    assert_eq!(v2.sealed.unwrap().ciphertext, vec![2]);
}

/// The records of a backup of `sm` that a restore installs.
pub(crate) fn backup_records(sm: &Sm, dir: &std::path::Path) -> Vec<vault_raft::snapshot_file::FamilyRecord> {
    use vault_raft::backup_check::{BackupChecker, BackupItem};
    let path = dir.join("b.backup");
    let key = vault_core::keys::DataKey::generate();
    let wrapped = vault_raft::snapshot_file::WrappedMacKey { key_id: "k".into(), wrapped: vec![1] };
    sm.s.reader.write_backup(&path, 1, 7, &key, wrapped).unwrap();
    let mut out = Vec::new();
    let mut checker = BackupChecker::new();
    vault_raft::snapshot_file::read_backup(std::fs::File::open(&path).unwrap(), &key, 1 << 20, |r| {
        if !matches!(checker.record(&r).unwrap(), BackupItem::Ignored) {
            out.push(r);
        }
        Ok(())
    })
    .unwrap();
    checker.finish().unwrap();
    out
}

#[tokio::test]
async fn a_restore_replaces_the_state_atomically_and_version_numbers_never_go_back() {
    let mut src = Sm::new().await;
    src.put("a", 1, None, None).await;
    src.put("a", 2, None, None).await;
    src.put("b", 1, None, None).await;
    let scratch = TempDir::new().unwrap();
    let records = backup_records(&src, scratch.path());
    let (first, second) = records.split_at(records.len() / 2);

    let mut dst = Sm::new().await;
    for v in 1..=5 {
        dst.put("a", v, None, None).await;
    }
    for v in 1..=3 {
        dst.put("c", v, None, None).await;
    }
    dst.writer_token("create,update:*", None).await;

    // Chunks out of order, a commit before every record arrived, and a superseded restore are
    // all refused, and the live state is untouched by any of them.
    let total = records.len() as u64;
    dst.run(Command::RestoreBegin { id: 1, records: total }).await;
    let r = dst.run(Command::RestoreChunk { id: 1, seq: 1, records: second.to_vec() }).await;
    assert!(matches!(r, CommandResponse::Rejected(Rejection::FailedPrecondition(_))), "{r:?}");
    dst.run(Command::RestoreChunk { id: 1, seq: 0, records: first.to_vec() }).await;
    let r = dst.run(Command::RestoreCommit { id: 1 }).await;
    assert!(matches!(r, CommandResponse::Rejected(Rejection::FailedPrecondition(_))), "{r:?}");
    dst.run(Command::RestoreBegin { id: 2, records: total }).await;
    let r = dst.run(Command::RestoreChunk { id: 1, seq: 1, records: second.to_vec() }).await;
    assert!(matches!(r, CommandResponse::Rejected(Rejection::FailedPrecondition(_))), "{r:?}");
    assert_eq!(dst.s.reader.secret_meta("c").unwrap().unwrap().current_version, 3);
    assert!(dst.s.reader.role("w").unwrap().is_some(), "roles untouched until the commit");

    // The whole restore in one entry, followed by a put that must see the restored state.
    let batch = vec![
        Command::RestoreChunk { id: 2, seq: 0, records: first.to_vec() },
        Command::RestoreChunk { id: 2, seq: 1, records: second.to_vec() },
        Command::RestoreCommit { id: 2 },
        put_cmd("b", 2, Some(1), 9, None),
    ];
    let CommandResponse::Batch(answers) = dst.run(Command::Batch(batch.into())).await else { panic!("a batch") };
    assert!(matches!(&answers[2], CommandResponse::Restored { records } if records[1] == 2), "{answers:?}");
    assert_eq!(answers[3], CommandResponse::Written { version: 2 }, "the put after the commit sees b:1");

    let reader = &dst.s.reader;
    let a = reader.secret_meta("a").unwrap().unwrap();
    assert_eq!(a.current_version, 5, "a keeps its highest number: 3 to 5 are never issued again");
    let versions: Vec<u64> = reader.versions("a").unwrap().iter().map(|v| v.version).collect();
    assert_eq!(versions, vec![1, 2], "a holds the backup's versions");
    let c = reader.secret_meta("c").unwrap().unwrap();
    assert_eq!((c.current_version, reader.versions("c").unwrap().len()), (3, 0), "c: no versions, number kept");
    assert!(reader.latest_live("c").unwrap().is_none());
    assert_eq!(reader.versions("b").unwrap().len(), 2);
    assert!(reader.role("w").unwrap().is_none(), "roles are the backup's");
    let r = dst.run(Command::RestoreCommit { id: 2 }).await;
    assert!(matches!(r, CommandResponse::Rejected(Rejection::FailedPrecondition(_))), "a restore commits once");
    let r = dst.put("a", 6, None, None).await;
    assert_eq!(r, CommandResponse::Written { version: 6 });
}

/// A restore installs only records that read back as what their table holds: a bad secret
/// name, an undecodable value, or a version stored under another version's key is refused.
#[test]
fn backup_records_are_checked_for_what_their_table_holds() {
    use vault_raft::backup_check::check_backup_record;
    use vault_raft::db::{CF_SECRETS, CF_VERSIONS, SM_CFS};
    use vault_raft::snapshot_file::FamilyRecord;
    let idx = |f: &str| SM_CFS.iter().position(|x| *x == f).unwrap() as u8;
    let meta = vault_raft::codec::encode(&vault_core::model::SecretMeta {
        current_version: 1,
        oldest_version: 1,
        max_versions: 10,
        created_at_ms: 1,
        updated_at_ms: 1,
    })
    .unwrap();
    let good = FamilyRecord { family: idx(CF_SECRETS), key: b"app/ok".to_vec(), value: meta.clone() };
    assert!(check_backup_record(&good).is_ok());
    let bad_name = FamilyRecord { family: idx(CF_SECRETS), key: b"../etc".to_vec(), value: meta };
    assert!(check_backup_record(&bad_name).is_err());
    let garbage = FamilyRecord { family: idx(CF_SECRETS), key: b"app/ok".to_vec(), value: vec![0xff; 3] };
    assert!(check_backup_record(&garbage).is_err());
    let mut key = b"app/ok\0".to_vec();
    key.extend_from_slice(&7u64.to_be_bytes());
    let not_a_version = FamilyRecord { family: idx(CF_VERSIONS), key, value: vec![1, 2, 3] };
    assert!(check_backup_record(&not_a_version).is_err());
    let staging = FamilyRecord { family: idx("restore_staging"), key: b"x".to_vec(), value: vec![] };
    assert!(check_backup_record(&staging).is_err());
}

fn sealed(version: u64) -> SealedValue {
    SealedValue { key_id: "k".into(), wrapped_dek: vec![1], nonce: vec![0; 24], ciphertext: vec![version as u8] }
}

fn policy(every_ms: u64) -> vault_core::model::RotationPolicy {
    vault_core::model::RotationPolicy::new(every_ms, vault_core::model::Generator::Random(16), 100).unwrap()
}

fn done(name: &str, version: u64, attempts: u64, now_ms: u64) -> Command {
    Command::RotationDone {
        name: name.into(),
        from_version: version - 1,
        version,
        sealed: sealed(version),
        now_ms,
        attempts,
        node_id: 1,
    }
}

/// A rotation lands only as the attempt the leader saw: a second leader's result for the same
/// attempt, or one made before the policy was cleared, changes nothing. A failure keeps the
/// version, counts, and sets the retry; a success resets the count and moves the due time by
/// the period.
#[tokio::test]
async fn rotations_land_once_per_attempt_and_failures_keep_the_old_version() {
    let mut sm = Sm::new().await;
    let r = sm.run(Command::SetRotation { name: "db/p".into(), policy: policy(60_000) }).await;
    assert!(matches!(r, CommandResponse::Rejected(Rejection::NotFound(_))), "the secret must exist: {r:?}");
    sm.put("db/p", 1, None, None).await;
    sm.run(Command::SetRotation { name: "db/p".into(), policy: policy(60_000) }).await;
    let base = sm.s.reader.rotation("db/p").unwrap().unwrap().attempts;
    assert!(base > 0, "attempts count from a fresh base");

    let failed = |attempts: u64| Command::RotationFailed {
        name: "db/p".into(),
        now_ms: 1_000,
        error: "hook exited with status 3".into(),
        retry_at_ms: 2_000,
        attempts,
        node_id: 1,
    };
    assert_eq!(sm.run(failed(base)).await, CommandResponse::Applied { changed: true });
    assert_eq!(sm.run(failed(base)).await, CommandResponse::Applied { changed: false }, "the same attempt twice");
    let p = sm.s.reader.rotation("db/p").unwrap().unwrap();
    assert_eq!((p.failures, p.attempts, p.next_due_ms), (1, base + 1, 2_000));
    assert_eq!(p.last_error.as_deref(), Some("hook exited with status 3"));
    assert_eq!(sm.s.reader.secret_meta("db/p").unwrap().unwrap().current_version, 1, "no version on failure");

    let r = sm.run(done("db/p", 2, base, 3_000)).await;
    assert!(matches!(r, CommandResponse::Rejected(Rejection::FailedPrecondition(_))), "a stale attempt: {r:?}");
    assert_eq!(sm.run(done("db/p", 2, base + 1, 3_000)).await, CommandResponse::Written { version: 2 });
    let r = sm.run(done("db/p", 3, base + 1, 3_001)).await;
    assert!(matches!(r, CommandResponse::Rejected(Rejection::FailedPrecondition(_))), "another leader, same attempt");
    let p = sm.s.reader.rotation("db/p").unwrap().unwrap();
    assert_eq!((p.failures, p.attempts, p.next_due_ms, p.last_error), (0, base + 2, 63_000, None));
    assert_eq!(sm.s.reader.latest_live("db/p").unwrap().unwrap().version, 2);

    // A write that came between: the rotation (made from version 2) would overwrite it with a
    // value made from an older one, so it is refused and changes nothing.
    sm.put("db/p", 3, None, None).await;
    let r = sm.run(done("db/p", 3, base + 2, 4_000)).await;
    assert_eq!(r, CommandResponse::Rejected(Rejection::VersionConflict { current: 3 }));
    let stale = Command::RotationDone {
        name: "db/p".into(),
        from_version: 2,
        version: 4,
        sealed: sealed(4),
        now_ms: 4_000,
        attempts: base + 2,
        node_id: 1,
    };
    assert_eq!(sm.run(stale).await, CommandResponse::Rejected(Rejection::VersionConflict { current: 3 }));
    assert_eq!(sm.s.reader.rotation("db/p").unwrap().unwrap().attempts, base + 2);
    // A delete that came between is not undone.
    sm.run(Command::DeleteVersions { name: "db/p".into(), versions: vec![3], now_ms: 4_500 }).await;
    assert_eq!(
        sm.run(done("db/p", 4, base + 2, 5_000)).await,
        CommandResponse::Rejected(Rejection::VersionConflict { current: 3 })
    );
    assert_eq!(sm.s.reader.latest_live("db/p").unwrap().unwrap().version, 2, "nothing brought back");
    sm.run(Command::UndeleteVersions { name: "db/p".into(), versions: vec![3] }).await;

    // A replaced policy's attempts never match the old one's (nor do a cleared and re-set one's).
    sm.run(Command::SetRotation { name: "db/p".into(), policy: policy(60_000) }).await;
    let r = sm.run(done("db/p", 4, base + 2, 5_000)).await;
    assert!(matches!(r, CommandResponse::Rejected(Rejection::FailedPrecondition(_))), "{r:?}");
    sm.run(Command::ClearRotation { name: "db/p".into() }).await;
    sm.run(Command::SetRotation { name: "db/p".into(), policy: policy(60_000) }).await;
    let again = sm.s.reader.rotation("db/p").unwrap().unwrap().attempts;
    assert!(again > base + 2, "a fresh base after clear and set: {again} vs {base}");

    // Made due now by any clock, and gone with its secret.
    let r = sm.run(Command::RotateNow { name: "db/p".into() }).await;
    assert_eq!(r, CommandResponse::RotationQueued { attempts: again });
    assert_eq!(sm.s.reader.rotation("db/p").unwrap().unwrap().next_due_ms, 0);
    assert_eq!(sm.s.reader.due_rotations(1, 10).unwrap().due.len(), 1);
    sm.run(Command::DeleteSecret { name: "db/p".into() }).await;
    assert!(sm.s.reader.rotation("db/p").unwrap().is_none(), "deleting the secret drops its policy");
    let r = sm.run(Command::RotateNow { name: "db/p".into() }).await;
    assert!(matches!(r, CommandResponse::Rejected(Rejection::FailedPrecondition(_))), "{r:?}");
}

/// Rotation policies and reader rules are managed on a caller's behalf only with the right
/// grants: `rotate` on the name for policies, the admin role for rules and hook bindings.
#[tokio::test]
async fn rotation_needs_rotate_and_reader_rules_and_hook_bindings_need_admin() {
    let mut sm = Sm::new().await;
    sm.put("app/x", 1, None, None).await;
    let raw = sm.writer_token("create,update,list:app/*", None).await;
    let as_caller = |cmd: Command| Command::AsCaller {
        auth: raw.hash(),
        now_ms: 10,
        cmd: Box::new(cmd),
        audit: vault_core::model::AuditContext {
            node_id: 1,
            actor: "t".into(),
            client_ip: "127.0.0.1".into(),
            action: "x".into(),
        },
    };
    let rule = vault_core::model::ReaderRule::new("r", &["10.0.0.1".into()], &[], &["app/*".into()], 1).unwrap();
    for cmd in [
        Command::SetRotation { name: "app/x".into(), policy: policy(60_000) },
        Command::RotateNow { name: "app/x".into() },
        Command::PutReader { rule, replace: false },
        Command::BindHook { binding: vault_core::model::HookBinding::new("h", &["app/*".into()], 1).unwrap() },
        Command::UnbindHook { hook: "h".into() },
    ] {
        let r = sm.run(as_caller(cmd)).await;
        assert!(matches!(r, CommandResponse::Rejected(Rejection::PermissionDenied(_))), "{r:?}");
    }
    for forged in [
        done("app/x", 2, 0, 10),
        Command::RotationFailed {
            name: "app/x".into(),
            now_ms: 10,
            error: "x".into(),
            retry_at_ms: 10,
            attempts: 0,
            node_id: 1,
        },
    ] {
        assert!(!forged.is_caller_write(), "a leader may not propose {forged:?} for a caller");
        let r = sm.run(as_caller(forged)).await;
        assert!(matches!(r, CommandResponse::Rejected(Rejection::PermissionDenied(_))), "{r:?}");
    }
    assert!(sm.s.reader.rotation("app/x").unwrap().is_none());
    assert!(sm.s.reader.reader_rules().unwrap().is_empty());
    assert!(sm.s.reader.hook_bindings().unwrap().is_empty(), "only the admin role binds hooks");
}

/// Nodes keep the reader rules in memory; every change (create, replace, delete, a restore)
/// moves their replicated revision, so the next read sees it.
#[tokio::test]
async fn reader_rule_changes_are_seen_by_the_next_read_and_travel_in_backups() {
    let mut src = Sm::new().await;
    let rule = |grant: &str| {
        vault_core::model::ReaderRule::new("web", &["10.0.1.0/24".into()], &[], &[grant.to_string()], 1).unwrap()
    };
    assert!(src.s.reader.reader_rules().unwrap().is_empty());
    src.run(Command::PutReader { rule: rule("app/*"), replace: false }).await;
    assert_eq!(src.s.reader.reader_rules().unwrap().iter().next().unwrap().grants, vec!["app/*"]);
    let r = src.run(Command::PutReader { rule: rule("db/*"), replace: false }).await;
    assert!(matches!(r, CommandResponse::Rejected(Rejection::AlreadyExists(_))), "{r:?}");
    src.run(Command::PutReader { rule: rule("db/*"), replace: true }).await;
    assert_eq!(
        src.s.reader.reader_rules().unwrap().iter().next().unwrap().grants,
        vec!["db/*"],
        "a replaced rule is seen at once"
    );
    src.put("db/x", 1, None, None).await;
    src.run(Command::SetRotation { name: "db/x".into(), policy: policy(60_000) }).await;

    let scratch = TempDir::new().unwrap();
    let records = backup_records(&src, scratch.path());
    let mut dst = Sm::new().await;
    let other = vault_core::model::ReaderRule::new("old", &["::1".into()], &[], &["*".into()], 1).unwrap();
    dst.run(Command::PutReader { rule: other, replace: false }).await;
    assert_eq!(dst.s.reader.reader_rules().unwrap().len(), 1);
    dst.run(Command::RestoreBegin { id: 1, records: records.len() as u64 }).await;
    dst.run(Command::RestoreChunk { id: 1, seq: 0, records }).await;
    assert!(matches!(dst.run(Command::RestoreCommit { id: 1 }).await, CommandResponse::Restored { .. }));
    let rules = dst.s.reader.reader_rules().unwrap();
    assert_eq!(rules.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), vec!["web"], "the backup's rules");
    assert!(dst.s.reader.rotation("db/x").unwrap().is_some(), "and its rotation policies");

    src.run(Command::DeleteReader { name: "web".into() }).await;
    assert!(src.s.reader.reader_rules().unwrap().is_empty(), "a deleted rule is gone at once");
    let r = src.run(Command::DeleteReader { name: "web".into() }).await;
    assert!(matches!(r, CommandResponse::Rejected(Rejection::NotFound(_))), "{r:?}");
}

/// Backup records of the new families are checked like a client's input before a restore.
#[test]
fn reader_and_rotation_backup_records_are_checked() {
    use vault_raft::backup_check::{check_backup_record, BackupChecker};
    use vault_raft::db::{CF_READERS, CF_ROTATION, CF_SECRETS, SM_CFS};
    use vault_raft::snapshot_file::FamilyRecord;
    let idx = |f: &str| SM_CFS.iter().position(|x| *x == f).unwrap() as u8;
    let enc = |v: &vault_core::model::ReaderRule| vault_raft::codec::encode(v).unwrap();
    let good = vault_core::model::ReaderRule::new("web", &["10.0.0.0/8".into()], &[], &["app/*".into()], 1).unwrap();
    let rec = |key: &str, value: Vec<u8>| FamilyRecord { family: idx(CF_READERS), key: key.as_bytes().to_vec(), value };
    assert!(check_backup_record(&rec("web", enc(&good))).is_ok());
    assert!(check_backup_record(&rec("other", enc(&good))).is_err(), "stored under another name");
    let mut bad = good.clone();
    bad.cidrs = vec!["10.0.0.0/99".into()];
    assert!(check_backup_record(&rec("web", enc(&bad))).is_err(), "a rule no node could enforce");
    let p = vault_raft::codec::encode(&policy(60_000)).unwrap();
    let rot =
        |key: &str, value: Vec<u8>| FamilyRecord { family: idx(CF_ROTATION), key: key.as_bytes().to_vec(), value };
    let meta = vault_core::model::SecretMeta {
        current_version: 1,
        oldest_version: 1,
        max_versions: 10,
        created_at_ms: 1,
        updated_at_ms: 1,
    };
    let secret = FamilyRecord {
        family: idx(CF_SECRETS),
        key: b"db/x".to_vec(),
        value: vault_raft::codec::encode(&meta).unwrap(),
    };
    let after_secret = |r: &FamilyRecord| {
        let mut checker = BackupChecker::new();
        checker.record(&secret).unwrap();
        checker.record(r)
    };
    assert!(after_secret(&rot("db/x", p.clone())).is_ok());
    assert!(check_backup_record(&rot("db/x", p.clone())).is_err(), "a policy for a secret the backup lacks");
    assert!(after_secret(&rot("../x", p)).is_err());
    assert!(after_secret(&rot("db/x", vec![9, 9])).is_err());
}
