//! Backups as someone who can edit the file sees them: an edit, with the checksum recomputed as
//! the old format had it, is refused before anything is staged, and the cluster is as it was.

use sha2::{Digest, Sha256};
use vault_core::model::{Grant, Role, TokenRecord, ADMIN_ROLE};
use vault_core::token::RawToken;
use vault_tests::moto::Moto;
use vault_tests::*;

fn mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// Family indexes of the backup format (`vault_raft::db::SM_CFS`).
const SECRETS: u8 = 1;
const TOKENS: u8 = 3;
const TOKEN_HASHES: u8 = 4;
const ROLES: u8 = 5;

/// A backup file taken apart along its framing: everything before the records (magic, format,
/// header), and the records.
struct Parsed {
    prefix: Vec<u8>,
    records: Vec<(u8, Vec<u8>, Vec<u8>)>,
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    head
}

fn take_chunk(bytes: &mut &[u8]) -> Vec<u8> {
    let len = u32::from_be_bytes(take(bytes, 4).try_into().expect("4 bytes")) as usize;
    take(bytes, len).to_vec()
}

fn parse(file: &[u8]) -> Parsed {
    let mut rest = file;
    take(&mut rest, 10);
    take_chunk(&mut rest);
    let prefix = file[..file.len() - rest.len()].to_vec();
    let mut records = Vec::new();
    loop {
        let family = take(&mut rest, 1)[0];
        if family == 0xFF {
            break;
        }
        let key = take_chunk(&mut rest);
        let value = take_chunk(&mut rest);
        records.push((family, key, value));
    }
    Parsed { prefix, records }
}

/// The file again, with the records in order and the trailer recomputed as format 1 did: a
/// SHA-256 of everything before it. `format` replaces the format number.
fn reseal(parsed: &Parsed, format: Option<u16>) -> Vec<u8> {
    let mut out = parsed.prefix.clone();
    if let Some(f) = format {
        out[8..10].copy_from_slice(&f.to_be_bytes());
    }
    let mut records = parsed.records.clone();
    records.sort();
    for (family, key, value) in &records {
        out.push(*family);
        out.extend_from_slice(&(key.len() as u32).to_be_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
    }
    out.push(0xFF);
    out.extend_from_slice(&(records.len() as u64).to_be_bytes());
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// The file again with a valid MAC: what someone holding the master key (or a faulty build)
/// could write. `master` is the node's local master key.
async fn reseal_with_mac(parsed: &Parsed, master: &str) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    use vault_core::kms::{KeyManager, KeyPurpose};
    let header: vault_raft::snapshot_file::BackupHeader =
        vault_raft::codec::decode(&parsed.prefix[14..]).expect("a format-2 header");
    let kms = vault_core::local_kms::LocalKms::new(vault_core::keys::MasterKey::from_base64(master).unwrap());
    let key = kms
        .decrypt_purpose_key(&header.mac_key.key_id, &header.mac_key.wrapped, KeyPurpose::BackupMac)
        .await
        .expect("the master key unwraps the MAC key");
    let mut out = reseal(parsed, None);
    out.truncate(out.len() - 32);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose()).unwrap();
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    out
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    vault_raft::codec::encode(value).expect("encode")
}

/// What an admin sees of the cluster: tokens, roles, secrets and one value.
fn observed(n: &SingleNode) -> (String, String, String, String) {
    (
        n.ctl(&["--output", "json", "token", "list"]),
        n.ctl(&["--output", "json", "role", "list"]),
        n.ctl(&["--output", "json", "secret", "list"]),
        n.ctl(&["secret", "get", "app/db"]),
    )
}

/// Someone who can write the backup file but holds no master key adds an admin token (with its
/// hash index entry), or stores the built-in admin role under another role's key, or relabels
/// the file as the old unauthenticated format, and recomputes the SHA-256 trailer each time.
/// Every such file is refused with `INVALID_ARGUMENT` before anything is staged: tokens, roles,
/// secrets and values are as before, and the injected token opens nothing. The file untouched
/// still restores.
#[test]
fn an_edited_backup_with_a_recomputed_checksum_changes_nothing() {
    mt().block_on(async {
        let n = SingleNode::start(|_| {}).await;
        let value = canary("backup-edit");
        n.ctl(&["secret", "put", "app/db", "--value", &value]);
        n.ctl(&["role", "create", "ops", "--grant", "list:app/*"]);
        n.ctl(&["token", "create", "ci", "--role", "ops"]);
        let work = test_dir();
        let backup = work.path().join("vault.backup");
        n.ctl(&["snapshot", "save", backup.to_str().expect("utf-8 path")]);
        let original = std::fs::read(&backup).expect("backup written");
        let parsed = parse(&original);
        assert_eq!(reseal(&parsed, None).len(), original.len(), "the framing is read as written");

        // 1. An admin token of the editor's own, with the index entry that finds it.
        let raw = RawToken::generate();
        let mallory = TokenRecord {
            name: "mallory".into(),
            hash: raw.hash(),
            role: ADMIN_ROLE.into(),
            created_at_ms: 1,
            expires_at_ms: None,
        };
        let mut with_token = Parsed { prefix: parsed.prefix.clone(), records: parsed.records.clone() };
        with_token.records.push((TOKENS, b"mallory".to_vec(), encode(&mallory)));
        with_token.records.push((TOKEN_HASHES, raw.hash().0.to_vec(), encode(&"mallory".to_string())));
        // 2. Role `ops` (held by token ci) rewritten to be named `admin` inside.
        let mut relabelled = Parsed { prefix: parsed.prefix.clone(), records: parsed.records.clone() };
        let ops = relabelled.records.iter_mut().find(|(f, k, _)| *f == ROLES && k == b"ops").expect("role ops");
        let admin =
            Role { name: ADMIN_ROLE.into(), grants: vec![Grant::new(vault_core::model::Action::All, "*").unwrap()] };
        ops.2 = encode(&admin);

        let before = observed(&n);
        let cases = [
            ("an injected admin token", reseal(&with_token, None)),
            ("a role stored as ops named admin", reseal(&relabelled, None)),
            ("the file relabelled as format 1", reseal(&parsed, Some(1))),
        ];
        for (what, bytes) in cases {
            let path = work.path().join("edited.backup");
            std::fs::write(&path, &bytes).expect("write");
            let err = must_fail_vaultctl(&n.url(), Some(&n.token), &["snapshot", "restore", path.to_str().unwrap()]);
            assert!(err.contains("invalid argument") && err.contains("nothing was changed"), "{what}: {err}");
            assert_eq!(observed(&n), before, "{what}: the cluster changed");
            let denied = must_fail_vaultctl(&n.url(), Some(raw.expose()), &["secret", "list"]);
            assert!(denied.contains("unauthenticated"), "{what}: {denied}");
        }
        let err = {
            let path = work.path().join("edited.backup");
            std::fs::write(&path, reseal(&parsed, Some(1))).expect("write");
            must_fail_vaultctl(&n.url(), Some(&n.token), &["snapshot", "restore", path.to_str().unwrap()])
        };
        assert!(err.contains("format 1") && err.contains("snapshot save"), "says why and what to do: {err}");

        let said = n.ctl(&["snapshot", "restore", backup.to_str().unwrap()]);
        assert!(said.contains("restored 1 secrets"), "{said}");
        assert_eq!(n.ctl(&["secret", "get", "app/db"]), value);
    });
}

/// Uploads are bounded: a file over `VAULT_RESTORE_MAX_MB` is refused while it arrives, and
/// nothing changes.
#[test]
fn a_restore_larger_than_the_upload_limit_is_refused() {
    mt().block_on(async {
        let n = SingleNode::start(|s| {
            s.set("VAULT_RESTORE_MAX_MB", "1");
        })
        .await;
        n.ctl(&["secret", "put", "app/db", "--value", "kept"]);
        let work = test_dir();
        let big = work.path().join("big.backup");
        std::fs::write(&big, vec![0x5a; 3 << 20]).expect("write");
        let err = must_fail_vaultctl(&n.url(), Some(&n.token), &["snapshot", "restore", big.to_str().unwrap()]);
        assert!(err.contains("invalid argument") && err.contains("VAULT_RESTORE_MAX_MB"), "{err}");
        assert_eq!(n.ctl(&["secret", "get", "app/db"]), "kept");
    });
}

/// A backup is sealed under the cluster's master key of the day. After `kms rotate` an older
/// backup still restores while its key is in the keyring; once that key has left the keyring
/// it is refused (`FAILED_PRECONDITION`, naming the key) and nothing changes, while a backup
/// taken after the rotation restores.
#[test]
fn a_backup_from_before_a_key_rotation_restores_while_its_key_is_in_the_keyring() {
    mt().block_on(async {
        let mut n = SingleNode::start(|s| {
            s.set("VAULT_KMS_REWRAP_MAX_PER_SEC", "0");
        })
        .await;
        let k1 = n.spec.env.get("VAULT_LOCAL_MASTER_KEY").expect("a local key").clone();
        let k2 = random_master_key();
        let id1 = vault_core::local_kms::local_key_id(&vault_core::keys::MasterKey::from_base64(&k1).unwrap());
        n.ctl(&["secret", "put", "app/db", "--value", "one"]);
        let work = test_dir();
        let (before, after) = (work.path().join("k1.backup"), work.path().join("k2.backup"));
        n.ctl(&["snapshot", "save", before.to_str().unwrap()]);

        n.node.stop();
        n.spec.env.remove("VAULT_LOCAL_MASTER_KEY");
        n.spec.set("VAULT_LOCAL_MASTER_KEYS", &format!("{k2},{k1}"));
        n.node = n.spec.start();
        n.node.wait_ready().await;
        n.ctl(&["kms", "rotate"]);
        n.ctl(&["secret", "put", "app/db", "--value", "two"]);
        // The re-wrap worker moves version 1 onto K2, so the next backup needs K2 alone.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let s: serde_json::Value = serde_json::from_str(&n.ctl(&["--output", "json", "kms", "status"])).unwrap();
            let by_key = s["versions_by_key"].as_object().cloned().unwrap_or_default();
            if by_key.len() == 1 && !by_key.contains_key(&id1) && s["pending_versions"] == 0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "re-wrap did not finish: {s}");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        n.ctl(&["snapshot", "save", after.to_str().unwrap()]);

        let said = n.ctl(&["snapshot", "restore", before.to_str().unwrap()]);
        assert!(said.contains("restored 1 secrets"), "{said}");
        assert_eq!(n.ctl(&["secret", "get", "app/db", "--version", "1"]), "one");
        n.ctl(&["snapshot", "restore", after.to_str().unwrap()]);

        n.node.stop();
        n.spec.set("VAULT_LOCAL_MASTER_KEYS", &k2);
        n.node = n.spec.start();
        n.node.wait_ready().await;
        let err = must_fail_vaultctl(&n.url(), Some(&n.token), &["snapshot", "restore", before.to_str().unwrap()]);
        assert!(err.contains("failed precondition") && err.contains(&id1) && err.contains("does not hold"), "{err}");
        assert_eq!(n.ctl(&["secret", "get", "app/db"]), "two", "nothing changed");
        n.ctl(&["snapshot", "restore", after.to_str().unwrap()]);
        assert_eq!(n.ctl(&["secret", "get", "app/db"]), "two");
    });
}

/// In AWS mode the backup's MAC key comes from KMS (GenerateDataKey with a purpose context)
/// and is unwrapped by KMS on restore: a backup round-trips, an edited one is refused, and one
/// made under another CMK is refused naming it.
#[test]
fn aws_mode_backups_are_sealed_by_a_kms_key_and_edits_are_refused() {
    mt().block_on(async {
        let moto = Moto::start();
        let (_, arn) = moto.create_key("alias/vault-backups").await;
        let (_, other_arn) = moto.create_key("alias/vault-other").await;
        let n = SingleNode::start(|s| moto.configure(s, "alias/vault-backups")).await;
        n.ctl(&["secret", "put", "app/db", "--value", "sealed-by-kms"]);
        let work = test_dir();
        let backup = work.path().join("aws.backup");
        n.ctl(&["snapshot", "save", backup.to_str().unwrap()]);
        let bytes = std::fs::read(&backup).unwrap();
        assert!(bytes.windows(arn.len()).any(|w| w == arn.as_bytes()), "the header names the CMK");

        n.ctl(&["secret", "put", "app/db", "--value", "later"]);
        let said = n.ctl(&["snapshot", "restore", backup.to_str().unwrap()]);
        assert!(said.contains("restored 1 secrets"), "{said}");
        assert_eq!(n.ctl(&["secret", "get", "app/db"]), "sealed-by-kms");

        let mut parsed = parse(&bytes);
        let role = Role { name: ADMIN_ROLE.into(), grants: vec![] };
        parsed.records.push((ROLES, b"zz".to_vec(), encode(&role)));
        let edited = work.path().join("edited.backup");
        std::fs::write(&edited, reseal(&parsed, None)).unwrap();
        let err = must_fail_vaultctl(&n.url(), Some(&n.token), &["snapshot", "restore", edited.to_str().unwrap()]);
        assert!(err.contains("invalid argument") && err.contains("MAC"), "{err}");

        let stranger = SingleNode::start(|s| moto.configure(s, "alias/vault-other")).await;
        let foreign = work.path().join("foreign.backup");
        stranger.ctl(&["snapshot", "save", foreign.to_str().unwrap()]);
        let err = must_fail_vaultctl(&n.url(), Some(&n.token), &["snapshot", "restore", foreign.to_str().unwrap()]);
        assert!(err.contains("failed precondition") && err.contains(&other_arn), "{err}");
        assert_eq!(n.ctl(&["secret", "get", "app/db"]), "sealed-by-kms", "nothing changed");
    });
}

/// Even a backup whose MAC is good (written by someone holding the master key, or by a faulty
/// build) installs nothing that breaks a rule: a role stored as `ops` but named `admin` inside,
/// or a secret whose `max_versions` is 0, is refused naming the rule, and the cluster is as it
/// was. The same file with its MAC recomputed but nothing changed restores.
#[test]
fn a_backup_with_a_good_mac_but_a_broken_invariant_changes_nothing() {
    mt().block_on(async {
        let n = SingleNode::start(|_| {}).await;
        let master = n.spec.env.get("VAULT_LOCAL_MASTER_KEY").expect("a local key").clone();
        n.ctl(&["secret", "put", "app/db", "--value", "kept"]);
        n.ctl(&["role", "create", "ops", "--grant", "list:app/*"]);
        n.ctl(&["token", "create", "ci", "--role", "ops"]);
        let work = test_dir();
        let backup = work.path().join("vault.backup");
        n.ctl(&["snapshot", "save", backup.to_str().unwrap()]);
        let parsed = parse(&std::fs::read(&backup).unwrap());

        let mut relabelled = Parsed { prefix: parsed.prefix.clone(), records: parsed.records.clone() };
        let ops = relabelled.records.iter_mut().find(|(f, k, _)| *f == ROLES && k == b"ops").expect("role ops");
        ops.2 = encode(&Role::builtin_admin());
        let mut no_versions_kept = Parsed { prefix: parsed.prefix.clone(), records: parsed.records.clone() };
        let meta = no_versions_kept.records.iter_mut().find(|(f, k, _)| *f == SECRETS && k == b"app/db").expect("meta");
        let mut m: vault_core::model::SecretMeta = vault_raft::codec::decode(&meta.2).unwrap();
        m.max_versions = 0;
        meta.2 = encode(&m);

        let before = observed(&n);
        let cases = [
            (relabelled, "the role stored as ops is named admin"),
            (no_versions_kept, "max_versions 0 is outside 1..=1000"),
        ];
        for (edited, rule) in cases {
            let path = work.path().join("edited.backup");
            std::fs::write(&path, reseal_with_mac(&edited, &master).await).unwrap();
            let err = must_fail_vaultctl(&n.url(), Some(&n.token), &["snapshot", "restore", path.to_str().unwrap()]);
            assert!(err.contains("invalid argument") && err.contains(rule), "{rule}: {err}");
            assert_eq!(observed(&n), before, "{rule}: the cluster changed");
        }
        let path = work.path().join("remac.backup");
        std::fs::write(&path, reseal_with_mac(&parsed, &master).await).unwrap();
        let said = n.ctl(&["snapshot", "restore", path.to_str().unwrap()]);
        assert!(said.contains("restored 1 secrets"), "{said}");
    });
}
