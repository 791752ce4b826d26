//! Backups that do not hold what the API could have made: each broken rule is refused by the
//! checker naming it; an edited file fails its MAC; a corrupt meta that reached the state
//! machine anyway (restored by an older build) cannot make a write loop or drop its version.

use tempfile::TempDir;
use vault_core::keys::DataKey;
use vault_core::model::{
    Action, Generator, Grant, ReaderRule, Role, RotationPolicy, SecretMeta, TokenRecord, VersionRecord, VersionState,
};
use vault_core::token::RawToken;
use vault_raft::backup_check::BackupChecker;
use vault_raft::codec::{decode, encode};
use vault_raft::db::{CF_READERS, CF_ROLES, CF_ROTATION, CF_SECRETS, CF_TOKENS, CF_TOKEN_HASHES, CF_VERSIONS, SM_CFS};
use vault_raft::snapshot_file::{read_backup, read_backup_header, verify_backup, FamilyRecord, WrappedMacKey};
use vault_raft::{Command, CommandResponse};

use crate::apply_semantics::Sm;

fn idx(family: &str) -> u8 {
    SM_CFS.iter().position(|f| *f == family).unwrap() as u8
}

/// A state with one of everything: secret `a` (versions 1 and 2) with a rotation policy, role
/// `w` and token `t` holding it, and reader rule `web`.
async fn source() -> Sm {
    let mut sm = Sm::new().await;
    sm.put("a", 1, None, None).await;
    sm.put("a", 2, None, None).await;
    let role = Role::new("w", Grant::parse_many("create:a*").unwrap()).unwrap();
    sm.run(Command::PutRole { role, replace: false }).await;
    let record = TokenRecord {
        name: "t".into(),
        hash: RawToken::generate().hash(),
        role: "w".into(),
        created_at_ms: 1,
        expires_at_ms: None,
    };
    sm.run(Command::CreateToken { record }).await;
    let policy = RotationPolicy::new(60_000, Generator::Random(16), 1).unwrap();
    sm.run(Command::SetRotation { name: "a".into(), policy }).await;
    let rule = ReaderRule::new("web", &["10.0.1.0/24".into()], &[], &["a".into()], 1).unwrap();
    sm.run(Command::PutReader { rule, replace: false }).await;
    sm
}

/// Runs the checker over `records` in file order.
fn check(records: &[FamilyRecord]) -> Result<(), String> {
    let mut sorted = records.to_vec();
    sorted.sort_by(|a, b| (a.family, &a.key).cmp(&(b.family, &b.key)));
    let mut checker = BackupChecker::new();
    for r in &sorted {
        checker.record(r)?;
    }
    checker.finish()
}

fn find<'a>(records: &'a mut [FamilyRecord], family: &str, key: &[u8]) -> &'a mut FamilyRecord {
    let family = idx(family);
    records.iter_mut().find(|r| r.family == family && r.key == key).expect("record present")
}

fn edit<T: serde::Serialize + serde::de::DeserializeOwned>(r: &mut FamilyRecord, change: impl FnOnce(&mut T)) {
    let mut value: T = decode(&r.value).unwrap();
    change(&mut value);
    r.value = encode(&value).unwrap();
}

type Breakage = Box<dyn Fn(&mut Vec<FamilyRecord>)>;

/// Every rule a restore checks, broken one at a time in an otherwise good backup: each is
/// refused, naming the rule.
#[tokio::test]
async fn each_broken_invariant_is_refused_naming_the_rule() {
    let src = source().await;
    let scratch = TempDir::new().unwrap();
    let good = crate::apply_semantics::backup_records(&src, scratch.path());
    check(&good).expect("a backup of a real state passes");

    let cases: Vec<(&str, Breakage)> = vec![
        (
            "the record stored as t is token u",
            Box::new(|rs| edit::<TokenRecord>(find(rs, CF_TOKENS, b"t"), |t| t.name = "u".into())),
        ),
        (
            "whose hash differs",
            Box::new(|rs| edit::<TokenRecord>(find(rs, CF_TOKENS, b"t"), |t| t.hash = RawToken::generate().hash())),
        ),
        (
            "which is not in the backup",
            Box::new(|rs| {
                let raw = RawToken::generate();
                rs.push(FamilyRecord {
                    family: idx(CF_TOKEN_HASHES),
                    key: raw.hash().0.to_vec(),
                    value: encode(&"ghost".to_string()).unwrap(),
                })
            }),
        ),
        (
            "token t has no entry in the token hash index",
            Box::new(|rs| rs.retain(|r| r.family != idx(CF_TOKEN_HASHES))),
        ),
        ("token t has role w, which the backup does not hold", Box::new(|rs| rs.retain(|r| r.key != b"w"))),
        (
            "the role stored as w is named admin",
            Box::new(|rs| edit::<Role>(find(rs, CF_ROLES, b"w"), |r| r.name = "admin".into())),
        ),
        (
            "the admin role is not the built-in one",
            Box::new(|rs| {
                edit::<Role>(find(rs, CF_ROLES, b"admin"), |r| r.grants = vec![Grant::new(Action::List, "x").unwrap()])
            }),
        ),
        (
            "role w: invalid argument: pattern",
            Box::new(|rs| {
                edit::<Role>(find(rs, CF_ROLES, b"w"), |r| {
                    r.grants = vec![Grant { action: Action::All, pattern: "a*b".into() }]
                })
            }),
        ),
        (
            "a role needs at least one grant",
            Box::new(|rs| edit::<Role>(find(rs, CF_ROLES, b"w"), |r| r.grants.clear())),
        ),
        ("the backup holds no admin role", Box::new(|rs| rs.retain(|r| r.key != b"admin"))),
        (
            "max_versions 0 is outside 1..=1000",
            Box::new(|rs| edit::<SecretMeta>(find(rs, CF_SECRETS, b"a"), |m| m.max_versions = 0)),
        ),
        (
            "oldest_version 9 is above current_version 2 + 1",
            Box::new(|rs| edit::<SecretMeta>(find(rs, CF_SECRETS, b"a"), |m| m.oldest_version = 9)),
        ),
        (
            "oldest_version 0: versions are numbered from 1",
            Box::new(|rs| edit::<SecretMeta>(find(rs, CF_SECRETS, b"a"), |m| m.oldest_version = 0)),
        ),
        (
            "leaves no next version number",
            Box::new(|rs| edit::<SecretMeta>(find(rs, CF_SECRETS, b"a"), |m| m.current_version = u64::MAX)),
        ),
        (
            "version a:2 is outside its secret's versions 1 to 1",
            Box::new(|rs| edit::<SecretMeta>(find(rs, CF_SECRETS, b"a"), |m| m.current_version = 1)),
        ),
        (
            "belongs to no secret in the backup",
            Box::new(|rs| {
                rs.retain(|r| !(r.family == idx(CF_SECRETS) || r.family == idx(CF_ROTATION)));
            }),
        ),
        (
            "version a:1 is live but holds no ciphertext",
            Box::new(|rs| {
                let mut key = b"a\0".to_vec();
                key.extend_from_slice(&1u64.to_be_bytes());
                edit::<VersionRecord>(find(rs, CF_VERSIONS, &key), |v| v.sealed = None)
            }),
        ),
        (
            "destroyed but still holds ciphertext",
            Box::new(|rs| {
                let mut key = b"a\0".to_vec();
                key.extend_from_slice(&1u64.to_be_bytes());
                edit::<VersionRecord>(find(rs, CF_VERSIONS, &key), |v| v.state = VersionState::Destroyed { at_ms: 1 })
            }),
        ),
        (
            "must be an absolute path without '..' segments",
            Box::new(|rs| {
                edit::<RotationPolicy>(find(rs, CF_ROTATION, b"a"), |p| {
                    p.generator = Generator::Exec("../../bin/sh".into())
                })
            }),
        ),
        (
            "a period of 10 ms is under the least",
            Box::new(|rs| edit::<RotationPolicy>(find(rs, CF_ROTATION, b"a"), |p| p.every_ms = 10)),
        ),
        (
            "rotation of b: the backup holds no such secret",
            Box::new(|rs| {
                let p = find(rs, CF_ROTATION, b"a").value.clone();
                rs.push(FamilyRecord { family: idx(CF_ROTATION), key: b"b".to_vec(), value: p })
            }),
        ),
        (
            "reader web: its CIDRs are not in the form",
            Box::new(|rs| edit::<ReaderRule>(find(rs, CF_READERS, b"web"), |r| r.cidrs = vec!["10.0.1.7/24".into()])),
        ),
        (
            "records are out of order or repeated",
            Box::new(|rs| {
                let again = find(rs, CF_ROLES, b"w").clone();
                rs.push(again)
            }),
        ),
    ];
    for (says, breakage) in cases {
        let mut records = good.clone();
        breakage(&mut records);
        let err = check(&records).expect_err(says);
        assert!(err.contains(says), "expected {says:?}, got {err:?}");
    }
}

/// A real backup file: its MAC passes under its key and fails under another; one record
/// changed with the MAC recomputed under the right key still meets the checker; a byte
/// changed, or the format relabelled as 1, is refused before any record is read.
#[tokio::test]
async fn an_edited_backup_file_fails_its_mac() {
    let src = source().await;
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("b.backup");
    let key = DataKey::generate();
    let wrapped = WrappedMacKey { key_id: "k".into(), wrapped: vec![1, 2, 3] };
    src.s.reader.write_backup(&path, 1, 7, &key, wrapped.clone()).unwrap();
    let open = || std::fs::File::open(&path).unwrap();
    assert_eq!(read_backup_header(open()).unwrap().mac_key, wrapped);
    verify_backup(open(), &key).expect("the MAC of an untouched file passes");
    let e = verify_backup(open(), &DataKey::generate()).unwrap_err().to_string();
    assert!(e.contains("MAC mismatch"), "{e}");

    let bytes = std::fs::read(&path).unwrap();
    let mut flipped = bytes.clone();
    let at = flipped.len() - 100;
    flipped[at] ^= 1;
    std::fs::write(&path, &flipped).unwrap();
    assert!(verify_backup(open(), &key).unwrap_err().to_string().contains("MAC mismatch"));
    // Read without the MAC checked first, it still ends in a refusal, whatever the byte was.
    assert!(read_backup(open(), &key, 1 << 20, |_| Ok(())).is_err());

    let mut old = bytes.clone();
    old[8..10].copy_from_slice(&1u16.to_be_bytes());
    std::fs::write(&path, &old).unwrap();
    let e = read_backup_header(open()).unwrap_err().to_string();
    assert!(e.contains("format 1") && e.contains("authenticated"), "{e}");

    // A record over the size bound is refused before it is read in full.
    std::fs::write(&path, &bytes).unwrap();
    let e = read_backup(open(), &key, 8, |_| Ok(())).unwrap_err().to_string();
    assert!(e.contains("over the limit"), "{e}");
}

/// A meta no API call could make, installed by a restore that did not check it (an older
/// build): the next write keeps its own version and ends, and deleting the secret ends, instead
/// of wrapping round the version numbers.
#[tokio::test]
async fn a_corrupt_meta_cannot_make_a_write_loop_or_drop_its_version() {
    let mut sm = Sm::new().await;
    let metas = [
        (
            "zero",
            SecretMeta { current_version: 5, oldest_version: 1, max_versions: 0, created_at_ms: 1, updated_at_ms: 1 },
        ),
        (
            "above",
            SecretMeta {
                current_version: 5,
                oldest_version: 100,
                max_versions: 10,
                created_at_ms: 1,
                updated_at_ms: 1,
            },
        ),
        (
            "far",
            SecretMeta {
                current_version: u64::MAX - 2,
                oldest_version: 1,
                max_versions: 10,
                created_at_ms: 1,
                updated_at_ms: 1,
            },
        ),
    ];
    let mut records: Vec<FamilyRecord> = metas
        .iter()
        .map(|(name, m)| FamilyRecord {
            family: idx(CF_SECRETS),
            key: name.as_bytes().to_vec(),
            value: encode(m).unwrap(),
        })
        .collect();
    records.push(FamilyRecord {
        family: idx(CF_ROLES),
        key: b"admin".to_vec(),
        value: encode(&Role::builtin_admin()).unwrap(),
    });
    let total = records.len() as u64;
    sm.run(Command::RestoreBegin { id: 9, records: total }).await;
    sm.run(Command::RestoreChunk { id: 9, seq: 0, records }).await;
    assert!(matches!(sm.run(Command::RestoreCommit { id: 9 }).await, CommandResponse::Restored { .. }));

    assert_eq!(sm.put("zero", 6, None, None).await, CommandResponse::Written { version: 6 });
    assert!(sm.s.reader.version("zero", 6).unwrap().is_some(), "the version just written is kept");
    assert_eq!(sm.s.reader.secret_meta("zero").unwrap().unwrap().oldest_version, 6);

    assert_eq!(sm.put("above", 6, None, None).await, CommandResponse::Written { version: 6 });
    let above = sm.s.reader.secret_meta("above").unwrap().unwrap();
    assert!(sm.s.reader.version("above", 6).unwrap().is_some());
    above.check().expect("the write leaves the meta within bounds");

    assert_eq!(sm.put("far", u64::MAX - 1, None, None).await, CommandResponse::Written { version: u64::MAX - 1 });
    assert!(matches!(
        sm.put("far", u64::MAX, None, None).await,
        CommandResponse::Written { .. } | CommandResponse::Rejected(_)
    ));
    assert!(matches!(
        sm.run(Command::SoftDeleteSecret { name: "far".into(), now_ms: 9 }).await,
        CommandResponse::Changed { .. }
    ));
    assert_eq!(sm.run(Command::DeleteSecret { name: "far".into() }).await, CommandResponse::Ok);
    assert!(sm.s.reader.versions("far").unwrap().is_empty());
}
