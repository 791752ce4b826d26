//! What each command does to the state machine. Deterministic: the same command on the same
//! state gives the same result on every replica.

use vault_core::model::{
    Action, AuditRecord, MasterKeyState, NewVersionRecord, SecretMeta, VersionState, ADMIN_ROLE, DEFAULT_MAX_VERSIONS,
    MAX_MAX_VERSIONS,
};

use vault_core::token::TokenHash;

use crate::command::{Command, CommandResponse, Rejection};
use crate::db::{
    CF_HOOK_BINDINGS, CF_READERS, CF_RESTORE, CF_ROLES, CF_ROTATION, CF_SECRETS, CF_SM_META, CF_TOKENS,
    CF_TOKEN_HASHES, CF_VERSIONS, SM_CFS,
};
use crate::tables::{
    version_key, KvRead, RestoreProgress, Txn, KEY_BOOTSTRAP_TOKEN_ISSUED, KEY_FEATURE_LEVEL, KEY_MASTER_KEY,
    KEY_READERS_REQUIRED, KEY_READERS_REVISION, KEY_RESTORE, KEY_REWRAP, KEY_ROTATION_SERIAL,
};
use crate::StoreError;

fn reject(r: Rejection) -> Result<CommandResponse, StoreError> {
    Ok(CommandResponse::Rejected(r))
}

pub(crate) fn apply_command(txn: &mut Txn<'_>, cmd: &Command) -> Result<CommandResponse, StoreError> {
    match cmd {
        Command::Bootstrap { admin_role, token } => {
            if txn.role(ADMIN_ROLE)?.is_none() {
                txn.put(CF_ROLES, ADMIN_ROLE.as_bytes(), admin_role)?;
            }
            // The bootstrap token is issued at most once in the life of the cluster: once
            // revoked, restarting with the same environment must not bring it back.
            if let Some(record) = token {
                if !txn.flag(KEY_BOOTSTRAP_TOKEN_ISSUED)? && txn.token(&record.name)?.is_none() {
                    txn.put(CF_TOKENS, record.name.as_bytes(), record)?;
                    txn.put(CF_TOKEN_HASHES, &record.hash.0, &record.name)?;
                    txn.put(CF_SM_META, KEY_BOOTSTRAP_TOKEN_ISSUED, &true)?;
                }
            }
            Ok(CommandResponse::Ok)
        }
        Command::PutSecret { name, version, sealed, expected_version, max_versions, now_ms, auth } => {
            if let Some(hash) = auth {
                let current = txn.secret_meta(name)?.map_or(0, |m| m.current_version);
                let action = if current == 0 { Action::Create } else { Action::Update };
                if let Some(refusal) = authorize(txn, hash, Need::Secret(action, name), *now_ms)? {
                    return reject(refusal);
                }
            }
            write_version(txn, name, *version, sealed, *expected_version, *max_versions, *now_ms)
        }
        Command::DeleteSecret { name } => {
            if txn.secret_meta(name)?.is_none() {
                return reject(Rejection::NotFound(format!("secret {name} does not exist")));
            }
            for v in txn.version_numbers(name)? {
                txn.delete(CF_VERSIONS, &version_key(name, v));
            }
            txn.delete(CF_SECRETS, name.as_bytes());
            txn.delete(CF_ROTATION, name.as_bytes());
            Ok(CommandResponse::Ok)
        }
        Command::DeleteVersions { name, versions, now_ms } => {
            change_versions(txn, name, versions, |state| match state {
                VersionState::Live => Some(VersionState::Deleted { at_ms: *now_ms }),
                _ => None,
            })
        }
        Command::UndeleteVersions { name, versions } => change_versions(txn, name, versions, |state| match state {
            VersionState::Deleted { .. } => Some(VersionState::Live),
            _ => None,
        }),
        Command::DestroyVersions { name, versions, now_ms } => {
            change_versions(txn, name, versions, |state| match state {
                VersionState::Destroyed { .. } => None,
                _ => Some(VersionState::Destroyed { at_ms: *now_ms }),
            })
        }
        Command::CreateToken { record } => {
            if txn.token(&record.name)?.is_some() {
                return reject(Rejection::AlreadyExists(format!("token {} already exists", record.name)));
            }
            if txn.role(&record.role)?.is_none() {
                return reject(Rejection::NotFound(format!("role {} does not exist", record.role)));
            }
            if txn.token_name_by_hash(&record.hash)?.is_some() {
                return reject(Rejection::AlreadyExists("a token with the same value already exists".into()));
            }
            txn.put(CF_TOKENS, record.name.as_bytes(), record)?;
            txn.put(CF_TOKEN_HASHES, &record.hash.0, &record.name)?;
            Ok(CommandResponse::Ok)
        }
        Command::RevokeToken { name } => {
            let Some(record) = txn.token(name)? else {
                return reject(Rejection::NotFound(format!("token {name} does not exist")));
            };
            txn.delete(CF_TOKENS, name.as_bytes());
            txn.delete(CF_TOKEN_HASHES, &record.hash.0);
            Ok(CommandResponse::Ok)
        }
        Command::AdoptRewrapWatermark { watermark_ms } => {
            let mut state = txn.rewrap_state()?;
            if state.watermark_ms.is_some() {
                return Ok(CommandResponse::Applied { changed: false });
            }
            state.watermark_ms = Some(*watermark_ms);
            txn.put(CF_SM_META, KEY_REWRAP, &state)?;
            Ok(CommandResponse::Applied { changed: true })
        }
        Command::AdvanceRewrapWatermark { watermark_ms } => {
            let mut state = txn.rewrap_state()?;
            if state.watermark_ms.is_some_and(|w| w >= *watermark_ms) {
                return Ok(CommandResponse::Applied { changed: false });
            }
            state.watermark_ms = Some(*watermark_ms);
            txn.put(CF_SM_META, KEY_REWRAP, &state)?;
            Ok(CommandResponse::Applied { changed: true })
        }
        Command::RewrapVersion { name, version, from_wrapped, key_id, wrapped_dek, watermark_ms } => {
            let Some(mut record) = txn.version(name, *version)? else {
                return Ok(CommandResponse::Applied { changed: false });
            };
            if record.rewrap_watermark_ms >= *watermark_ms {
                return Ok(CommandResponse::Applied { changed: false });
            }
            let Some(sealed) = record.sealed.as_mut().filter(|s| &s.wrapped_dek == from_wrapped) else {
                return Ok(CommandResponse::Applied { changed: false });
            };
            // Only ever onto the cluster's current master key.
            if txn.master_key()?.is_some_and(|mk| mk.key_id != *key_id) {
                return Ok(CommandResponse::Applied { changed: false });
            }
            sealed.key_id = key_id.clone();
            sealed.wrapped_dek = wrapped_dek.clone();
            record.rewrap_watermark_ms = *watermark_ms;
            txn.put(CF_VERSIONS, &version_key(name, *version), &record)?;
            Ok(CommandResponse::Applied { changed: true })
        }
        Command::PutRole { role, replace } => {
            if role.name == ADMIN_ROLE {
                return reject(Rejection::FailedPrecondition("the built-in admin role cannot be changed".into()));
            }
            if !replace && txn.role(&role.name)?.is_some() {
                return reject(Rejection::AlreadyExists(format!("role {} already exists", role.name)));
            }
            txn.put(CF_ROLES, role.name.as_bytes(), role)?;
            Ok(CommandResponse::Ok)
        }
        Command::DeleteRole { name } => {
            if name == ADMIN_ROLE {
                return reject(Rejection::FailedPrecondition("the built-in admin role cannot be deleted".into()));
            }
            if txn.role(name)?.is_none() {
                return reject(Rejection::NotFound(format!("role {name} does not exist")));
            }
            let users: Vec<String> =
                txn.token_records()?.into_iter().filter(|t| &t.role == name).map(|t| t.name).collect();
            if !users.is_empty() {
                return reject(Rejection::FailedPrecondition(format!(
                    "role {name} is used by {} token(s) ({}); revoke them first",
                    users.len(),
                    users.join(", ")
                )));
            }
            txn.delete(CF_ROLES, name.as_bytes());
            Ok(CommandResponse::Ok)
        }
        Command::SetFeatureLevel { level } => {
            let changed = *level > txn.feature_level()?;
            if changed {
                txn.put(CF_SM_META, KEY_FEATURE_LEVEL, level)?;
                // A cluster upgraded with rules in force keeps requiring them.
                if !txn.scan(CF_READERS)?.is_empty() {
                    require_reader_rules(txn)?;
                    bump_readers_revision(txn)?;
                }
            }
            Ok(CommandResponse::Applied { changed })
        }
        Command::RestoreBegin { id, records } => {
            for key in txn.scan(CF_RESTORE)?.into_keys() {
                txn.delete(CF_RESTORE, &key);
            }
            let progress = RestoreProgress { id: *id, expected: *records, received: 0, next_seq: 0 };
            txn.put(CF_SM_META, KEY_RESTORE, &progress)?;
            Ok(CommandResponse::Ok)
        }
        Command::RestoreChunk { id, seq, records } => {
            let Some(mut progress) = restore_in_progress(txn, *id)? else {
                return reject(Rejection::FailedPrecondition(format!(
                    "restore {id:016x} is not in progress (another restore began, or one committed)"
                )));
            };
            if *seq != progress.next_seq {
                return reject(Rejection::FailedPrecondition(format!(
                    "restore {id:016x}: chunk {seq} arrived, chunk {} was expected",
                    progress.next_seq
                )));
            }
            for r in records {
                if SM_CFS.get(r.family as usize).is_none_or(|f| *f == CF_RESTORE) {
                    return reject(Rejection::FailedPrecondition(format!("restore chunk names family {}", r.family)));
                }
                let mut key = Vec::with_capacity(r.key.len() + 1);
                key.push(r.family);
                key.extend_from_slice(&r.key);
                txn.put_raw(CF_RESTORE, key, r.value.clone());
            }
            progress.next_seq += 1;
            progress.received += records.len() as u64;
            txn.put(CF_SM_META, KEY_RESTORE, &progress)?;
            Ok(CommandResponse::Ok)
        }
        Command::RestoreCommit { id } => {
            let Some(progress) = restore_in_progress(txn, *id)? else {
                return reject(Rejection::FailedPrecondition(format!("restore {id:016x} is not in progress")));
            };
            if progress.received != progress.expected {
                return reject(Rejection::FailedPrecondition(format!(
                    "restore {id:016x} has {} of {} records",
                    progress.received, progress.expected
                )));
            }
            commit_restore(txn)
        }
        Command::PutReader { rule, replace } => {
            if !replace && txn.reader_rule(&rule.name)?.is_some() {
                return reject(Rejection::AlreadyExists(format!("reader {} already exists", rule.name)));
            }
            txn.put(CF_READERS, rule.name.as_bytes(), rule)?;
            require_reader_rules(txn)?;
            bump_readers_revision(txn)?;
            Ok(CommandResponse::Ok)
        }
        Command::DeleteReader { name } => {
            if txn.reader_rule(name)?.is_none() {
                return reject(Rejection::NotFound(format!("reader {name} does not exist")));
            }
            txn.delete(CF_READERS, name.as_bytes());
            require_reader_rules(txn)?;
            bump_readers_revision(txn)?;
            Ok(CommandResponse::Ok)
        }
        Command::SetRotation { name, policy } => {
            if txn.secret_meta(name)?.is_none_or(|m| m.current_version == 0) {
                return reject(Rejection::NotFound(format!("secret {name} does not exist")));
            }
            // Every policy set counts its attempts from a base no earlier policy used, so an
            // attempt a leader made under a replaced (or cleared) policy never lands as one of
            // the new policy's.
            let attempts = next_attempt_base(txn)?;
            txn.put(CF_ROTATION, name.as_bytes(), &vault_core::model::RotationPolicy { attempts, ..policy.clone() })?;
            Ok(CommandResponse::Ok)
        }
        Command::ClearRotation { name } => {
            if txn.rotation(name)?.is_none() {
                return reject(Rejection::NotFound(format!("secret {name} has no rotation policy")));
            }
            txn.delete(CF_ROTATION, name.as_bytes());
            Ok(CommandResponse::Ok)
        }
        Command::RotateNow { name } => {
            let Some(mut policy) = txn.rotation(name)? else {
                return reject(Rejection::FailedPrecondition(format!(
                    "secret {name} has no rotation policy; set one with `vaultctl secret rotation set`"
                )));
            };
            // Due at once by any clock (the proposing node's may run ahead of the leader's).
            policy.next_due_ms = 0;
            txn.put(CF_ROTATION, name.as_bytes(), &policy)?;
            Ok(CommandResponse::RotationQueued { attempts: policy.attempts })
        }
        Command::RotationDone { name, from_version, version, sealed, now_ms, attempts, node_id } => {
            let Some(mut policy) = txn.rotation(name)?.filter(|p| p.attempts == *attempts) else {
                return reject(Rejection::FailedPrecondition(format!(
                    "the rotation policy of {name} changed or another attempt landed first"
                )));
            };
            // Made from the current live version, and nothing came between: no write (which
            // this would overwrite with a value made from an older one), no delete or destroy
            // (which this would undo).
            let current = txn.secret_meta(name)?.map_or(0, |m| m.current_version);
            let live = txn.version(name, *from_version)?.is_some_and(|v| v.state == VersionState::Live);
            if current != *from_version || !live {
                return reject(Rejection::VersionConflict { current });
            }
            let written = write_version(txn, name, *version, sealed, None, None, *now_ms)?;
            if let CommandResponse::Written { version } = written {
                policy.attempts = policy.attempts.saturating_add(1);
                policy.failures = 0;
                policy.last_error = None;
                policy.last_attempt_ms = Some(*now_ms);
                policy.last_rotated_ms = Some(*now_ms);
                policy.next_due_ms = now_ms.saturating_add(policy.every_ms);
                txn.put(CF_ROTATION, name.as_bytes(), &policy)?;
                txn.audit(rotation_audit(*node_id, *now_ms, name, format!("ok: version {version}")));
            }
            Ok(written)
        }
        Command::RotationFailed { name, now_ms, error, retry_at_ms, attempts, node_id } => {
            let Some(mut policy) = txn.rotation(name)?.filter(|p| p.attempts == *attempts) else {
                return Ok(CommandResponse::Applied { changed: false });
            };
            policy.attempts = policy.attempts.saturating_add(1);
            policy.failures = policy.failures.saturating_add(1);
            policy.last_error = Some(vault_core::model::audit_field(error, vault_core::model::MAX_AUDIT_OUTCOME));
            policy.last_attempt_ms = Some(*now_ms);
            policy.next_due_ms = *retry_at_ms;
            txn.put(CF_ROTATION, name.as_bytes(), &policy)?;
            txn.audit(rotation_audit(*node_id, *now_ms, name, format!("failed: {error}; retried later")));
            Ok(CommandResponse::Applied { changed: true })
        }
        Command::BindHook { binding } => {
            txn.put(CF_HOOK_BINDINGS, binding.hook.as_bytes(), binding)?;
            Ok(CommandResponse::Ok)
        }
        Command::UnbindHook { hook } => {
            if txn.hook_binding(hook)?.is_none() {
                return reject(Rejection::NotFound(format!("hook {hook} is not bound")));
            }
            txn.delete(CF_HOOK_BINDINGS, hook.as_bytes());
            Ok(CommandResponse::Ok)
        }
        Command::Batch(cmds) => {
            let mut responses = Vec::with_capacity(cmds.len());
            for c in cmds.iter() {
                responses.push(match c {
                    Command::Batch(_) => {
                        CommandResponse::Rejected(Rejection::FailedPrecondition("batches do not nest".into()))
                    }
                    c => apply_command(txn, c)?,
                });
            }
            Ok(CommandResponse::Batch(responses))
        }
        Command::AsCaller { auth, now_ms, cmd, audit } => {
            let resp = apply_as_caller(txn, auth, *now_ms, cmd)?;
            txn.audit(AuditRecord {
                seq: 0,
                time_ms: *now_ms,
                node_id: audit.node_id,
                actor: audit.actor.clone(),
                client_ip: audit.client_ip.clone(),
                action: audit.action.clone(),
                secret: cmd.audit_subject(),
                outcome: outcome_words(&resp),
            });
            Ok(resp)
        }
        Command::SoftDeleteSecret { name, now_ms } => {
            if txn.secret_meta(name)?.is_none() {
                return reject(Rejection::NotFound(format!("secret {name} does not exist")));
            }
            let all = txn.version_numbers(name)?;
            change_existing_versions(txn, name, &all, |state| match state {
                VersionState::Live => Some(VersionState::Deleted { at_ms: *now_ms }),
                _ => None,
            })
        }
        Command::DestroySecret { name, now_ms } => {
            if txn.secret_meta(name)?.is_none() {
                return reject(Rejection::NotFound(format!("secret {name} does not exist")));
            }
            let all = txn.version_numbers(name)?;
            change_existing_versions(txn, name, &all, |state| match state {
                VersionState::Destroyed { .. } => None,
                _ => Some(VersionState::Destroyed { at_ms: *now_ms }),
            })
        }
        Command::SetMasterKey { key_id, check, now_ms, rotate } => {
            let next = match txn.master_key()? {
                None => MasterKeyState { key_id: key_id.clone(), check: check.clone(), since_ms: 0, previous: vec![] },
                Some(mk) if !rotate || mk.key_id == *key_id => return Ok(CommandResponse::Applied { changed: false }),
                Some(mut mk) => {
                    mk.previous.push(std::mem::replace(&mut mk.key_id, key_id.clone()));
                    mk.check = check.clone();
                    mk.since_ms = *now_ms;
                    mk
                }
            };
            txn.put(CF_SM_META, KEY_MASTER_KEY, &next)?;
            Ok(CommandResponse::Applied { changed: true })
        }
    }
}

/// Writes `sealed` as `version` of `name`: only exactly one past the current version (and,
/// with `expected_version`, only when the current one matches), only under the cluster's master
/// key; prunes versions beyond `max_versions`.
fn write_version(
    txn: &mut Txn<'_>,
    name: &str,
    version: u64,
    sealed: &vault_core::envelope::SealedValue,
    expected_version: Option<u64>,
    max_versions: Option<u32>,
    now_ms: u64,
) -> Result<CommandResponse, StoreError> {
    let meta = txn.secret_meta(name)?;
    let current = meta.as_ref().map_or(0, |m| m.current_version);
    let master = txn.master_key()?;
    if let Some(mk) = master.as_ref().filter(|mk| mk.key_id != sealed.key_id) {
        return reject(Rejection::WrongMasterKey { sealed_with: sealed.key_id.clone(), cluster: mk.key_id.clone() });
    }
    if let Some(expected) = expected_version {
        if expected != current {
            return reject(Rejection::CasMismatch { expected, actual: current });
        }
    }
    if current.checked_add(1) != Some(version) {
        return reject(Rejection::VersionConflict { current });
    }
    let mut meta = meta.unwrap_or(SecretMeta {
        current_version: 0,
        oldest_version: 1,
        max_versions: DEFAULT_MAX_VERSIONS,
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
    });
    if let Some(m) = max_versions {
        meta.max_versions = m;
    }
    // Within bounds whatever the stored meta says (one restored by an older build may not be):
    // at least the version just written is kept, at most MAX_MAX_VERSIONS.
    meta.max_versions = meta.max_versions.clamp(1, MAX_MAX_VERSIONS);
    meta.current_version = version;
    meta.updated_at_ms = now_ms;
    // A new DEK comes from the key's current material, which is at least as new as
    // the cluster watermark, and is wrapped by the key current since `since_ms`.
    let watermark = txn.rewrap_state()?.watermark_ms.unwrap_or(0);
    let record = NewVersionRecord {
        version,
        sealed: Some(sealed),
        created_at_ms: now_ms,
        state: VersionState::Live,
        rewrap_watermark_ms: watermark.max(master.map_or(0, |mk| mk.since_ms)),
    };
    txn.put(CF_VERSIONS, &version_key(name, version), &record)?;
    // Keep at most `max_versions` versions, the newest; older ones are purged for good. Where
    // the numbers to purge are many (bounds far apart), only the stored versions are visited,
    // so no meta makes this loop long.
    let lowest_kept = version - (u64::from(meta.max_versions) - 1).min(version - 1);
    let from = meta.oldest_version.clamp(1, version);
    if lowest_kept > from && lowest_kept - from <= u64::from(MAX_MAX_VERSIONS) {
        for v in from..lowest_kept {
            txn.delete(CF_VERSIONS, &version_key(name, v));
        }
    } else if lowest_kept > from {
        for v in txn.version_numbers(name)?.into_iter().take_while(|v| *v < lowest_kept) {
            txn.delete(CF_VERSIONS, &version_key(name, v));
        }
    }
    meta.oldest_version = from.max(lowest_kept);
    txn.put(CF_SECRETS, name.as_bytes(), &meta)?;
    Ok(CommandResponse::Written { version })
}

/// Authorizes a client command against the replicated state, then applies it.
fn apply_as_caller(
    txn: &mut Txn<'_>,
    auth: &TokenHash,
    now_ms: u64,
    cmd: &Command,
) -> Result<CommandResponse, StoreError> {
    let mut needs = Vec::with_capacity(2);
    match cmd {
        Command::PutSecret { name, max_versions, .. } => {
            let meta = txn.secret_meta(name)?;
            let exists = meta.as_ref().is_some_and(|m| m.current_version > 0);
            needs.push(Need::Secret(if exists { Action::Update } else { Action::Create }, name));
            // Lowering max_versions below what is kept purges versions for good: `destroy`.
            if let (Some(m), Some(meta)) = (max_versions, &meta) {
                let kept_after = meta.current_version.saturating_add(2).saturating_sub(meta.oldest_version);
                if u64::from(*m) < kept_after && *m < meta.max_versions {
                    needs.push(Need::Secret(Action::Destroy, name));
                }
            }
        }
        Command::DeleteSecret { name } | Command::DestroySecret { name, .. } => {
            needs.push(Need::Secret(Action::Destroy, name))
        }
        Command::DeleteVersions { name, .. } | Command::SoftDeleteSecret { name, .. } => {
            needs.push(Need::Secret(Action::Delete, name))
        }
        Command::UndeleteVersions { name, .. } => needs.push(Need::Secret(Action::Update, name)),
        Command::DestroyVersions { name, .. } => needs.push(Need::Secret(Action::Destroy, name)),
        Command::CreateToken { .. }
        | Command::RevokeToken { .. }
        | Command::PutRole { .. }
        | Command::DeleteRole { .. }
        | Command::RestoreBegin { .. }
        | Command::RestoreChunk { .. }
        | Command::RestoreCommit { .. }
        | Command::PutReader { .. }
        | Command::DeleteReader { .. }
        | Command::BindHook { .. }
        | Command::UnbindHook { .. } => needs.push(Need::Admin),
        Command::SetRotation { name, .. } | Command::ClearRotation { name } | Command::RotateNow { name, .. } => {
            needs.push(Need::Secret(Action::Rotate, name))
        }
        other => {
            return reject(Rejection::PermissionDenied(format!(
                "{} is not a client command and cannot be made on a caller's behalf",
                other.kind()
            )))
        }
    }
    for need in needs {
        // A put's refusal does not say whether create or update was missing (that would tell
        // whether the name exists).
        let write = match &need {
            Need::Secret(Action::Create | Action::Update, name) => Some(name.to_string()),
            _ => None,
        };
        if let Some(refusal) = authorize(txn, auth, need, now_ms)? {
            return reject(match (refusal, write) {
                (Rejection::PermissionDenied(_), Some(name)) => {
                    Rejection::PermissionDenied(format!("this token may not write {name}"))
                }
                (r, _) => r,
            });
        }
    }
    apply_command(txn, cmd)
}

fn restore_in_progress(txn: &Txn<'_>, id: u64) -> Result<Option<RestoreProgress>, StoreError> {
    Ok(txn.get_typed::<RestoreProgress>(CF_SM_META, KEY_RESTORE)?.filter(|p| p.id == id))
}

/// Families a restore replaces wholesale. `sm_meta` is not among them: of its keys only those
/// in [`RESTORED_META_KEYS`] come from the backup; the applied index, membership and master key
/// record stay this cluster's.
const RESTORED_FAMILIES: [&str; 8] =
    [CF_SECRETS, CF_VERSIONS, CF_TOKENS, CF_TOKEN_HASHES, CF_ROLES, CF_READERS, CF_ROTATION, CF_HOOK_BINDINGS];
const RESTORED_META_KEYS: [&[u8]; 2] = [KEY_REWRAP, KEY_BOOTSTRAP_TOKEN_ISSUED];

/// Swaps the staged restore in for the live families, in this one write set. Version numbers
/// never go back: a secret whose highest version here is above the backup's keeps that number
/// (its newer versions are gone, their numbers are not reused), and one the backup lacks stays
/// as a name with no versions.
fn commit_restore(txn: &mut Txn<'_>) -> Result<CommandResponse, StoreError> {
    // Rules in force before the restore stay required after it, whatever the backup holds.
    if !txn.scan(CF_READERS)?.is_empty() {
        require_reader_rules(txn)?;
    }
    let mut highest: Vec<(Vec<u8>, SecretMeta)> = Vec::new();
    for (name, bytes) in txn.scan(CF_SECRETS)? {
        highest.push((name, crate::codec::decode(&bytes)?));
    }
    for family in RESTORED_FAMILIES {
        for key in txn.scan(family)?.into_keys() {
            txn.delete(family, &key);
        }
    }
    let mut counts = vec![0u64; SM_CFS.len()];
    for (staged, value) in txn.scan(CF_RESTORE)? {
        txn.delete(CF_RESTORE, &staged);
        let Some((&idx, key)) = staged.split_first() else { continue };
        let Some(&family) = SM_CFS.get(idx as usize) else { continue };
        let wanted = RESTORED_FAMILIES.contains(&family) || (family == CF_SM_META && RESTORED_META_KEYS.contains(&key));
        if wanted {
            txn.put_raw(family, key.to_vec(), value);
            counts[idx as usize] += 1;
        }
    }
    for (name, before) in highest {
        let name = String::from_utf8_lossy(&name).into_owned();
        let kept = match txn.secret_meta(&name)? {
            Some(m) if m.current_version >= before.current_version => continue,
            Some(mut m) => {
                m.current_version = before.current_version;
                m
            }
            None => SecretMeta { oldest_version: before.current_version.saturating_add(1), ..before },
        };
        txn.put(CF_SECRETS, name.as_bytes(), &kept)?;
    }
    txn.delete(CF_SM_META, KEY_RESTORE);
    bump_readers_revision(txn)?;
    // Restored policies count attempts from fresh bases too (see `SetRotation`).
    for (name, bytes) in txn.scan(CF_ROTATION)? {
        let mut policy: vault_core::model::RotationPolicy = crate::codec::decode(&bytes)?;
        policy.attempts = next_attempt_base(txn)?;
        txn.put(CF_ROTATION, &name, &policy)?;
    }
    Ok(CommandResponse::Restored { records: counts })
}

/// From feature level 4, marks reader rules required on this cluster for good (see
/// `tables::KEY_READERS_REQUIRED`). Below it some member may not know the flag, and replicas
/// must decide reads alike.
fn require_reader_rules(txn: &mut Txn<'_>) -> Result<(), StoreError> {
    if txn.feature_level()? >= crate::features::READERS_REQUIRED_LEVEL {
        txn.put(CF_SM_META, KEY_READERS_REQUIRED, &true)?;
    }
    Ok(())
}

/// Marks the reader rules changed, so nodes reload them (see `StateReader::reader_rules`).
fn bump_readers_revision(txn: &mut Txn<'_>) -> Result<(), StoreError> {
    let next = txn.readers_revision()?.wrapping_add(1);
    txn.put(CF_SM_META, KEY_READERS_REVISION, &next)
}

/// A base for a newly set policy's attempt count: the next of a cluster-wide serial, shifted
/// past any count a policy's own attempts could reach. The serial keeps 32 bits: bases repeat only
/// after four billion policies are set, and a policy that old has long been replaced.
fn next_attempt_base(txn: &mut Txn<'_>) -> Result<u64, StoreError> {
    let serial =
        txn.get_typed::<u64>(CF_SM_META, KEY_ROTATION_SERIAL)?.unwrap_or(0).wrapping_add(1) & u64::from(u32::MAX);
    txn.put(CF_SM_META, KEY_ROTATION_SERIAL, &serial)?;
    Ok(serial << 32)
}

/// The record of a leader-run rotation, written on every node with the change.
fn rotation_audit(node_id: u64, now_ms: u64, name: &str, outcome: String) -> AuditRecord {
    AuditRecord {
        seq: 0,
        time_ms: now_ms,
        node_id,
        actor: "rotation".into(),
        client_ip: "-".into(),
        action: "secret.rotate".into(),
        secret: Some(name.to_string()),
        outcome,
    }
}

/// The outcome of a command in the words of the audit log.
fn outcome_words(resp: &CommandResponse) -> String {
    match resp {
        CommandResponse::Rejected(r) => match r {
            Rejection::NotFound(m) => format!("not found: {m}"),
            Rejection::AlreadyExists(m) => format!("already exists: {m}"),
            Rejection::CasMismatch { expected, actual } => {
                format!("failed precondition: check-and-set expected version {expected}, current is {actual}")
            }
            Rejection::VersionConflict { current } => {
                format!("aborted: a concurrent write moved the secret to version {current}; retried")
            }
            Rejection::FailedPrecondition(m) => format!("failed precondition: {m}"),
            Rejection::Unauthenticated(m) => format!("unauthenticated: {m}"),
            Rejection::PermissionDenied(m) => format!("permission denied: {m}"),
            Rejection::WrongMasterKey { sealed_with, cluster } => {
                format!("failed precondition: sealed under {sealed_with}, the cluster's key is {cluster}")
            }
        },
        _ => "ok".into(),
    }
}

/// What a client command needs from its caller's role.
enum Need<'a> {
    Secret(Action, &'a str),
    /// Token, role and cluster administration: the built-in admin role.
    Admin,
}

/// Whether the token with `hash` may do `action` on `name` now, by the replicated state.
fn authorize(txn: &Txn<'_>, hash: &TokenHash, need: Need<'_>, now_ms: u64) -> Result<Option<Rejection>, StoreError> {
    let token = match txn.token_name_by_hash(hash)? {
        Some(token_name) => txn.token(&token_name)?.filter(|t| t.hash.ct_eq(hash)),
        None => None,
    };
    let Some(token) = token else {
        return Ok(Some(Rejection::Unauthenticated("unknown or revoked token".into())));
    };
    if token.is_expired(now_ms) {
        return Ok(Some(Rejection::Unauthenticated(format!("token {} has expired", token.name))));
    }
    match (txn.role(&token.role)?, need) {
        (Some(role), Need::Secret(action, name)) if role.allows(action, name) => Ok(None),
        (Some(role), Need::Admin) if role.is_admin() => Ok(None),
        (Some(role), Need::Secret(action, name)) => Ok(Some(Rejection::PermissionDenied(format!(
            "token {} (role {}) may not {action} {name}",
            token.name, role.name
        )))),
        (Some(role), Need::Admin) => Ok(Some(Rejection::PermissionDenied(format!(
            "token {} (role {}) may not do this: needs the admin role",
            token.name, role.name
        )))),
        (None, _) => Ok(Some(Rejection::PermissionDenied(format!(
            "role {} of token {} no longer exists",
            token.role, token.name
        )))),
    }
}

/// Applies `next` to each of `versions` that still exists (older ones may have been pruned).
fn change_existing_versions(
    txn: &mut Txn<'_>,
    name: &str,
    versions: &[u64],
    next: impl Fn(&VersionState) -> Option<VersionState>,
) -> Result<CommandResponse, StoreError> {
    let mut existing = Vec::with_capacity(versions.len());
    for v in versions {
        if txn.version(name, *v)?.is_some() {
            existing.push(*v);
        }
    }
    change_versions(txn, name, &existing, next)
}

/// Applies `next` to each listed version; all versions must exist or nothing changes.
fn change_versions(
    txn: &mut Txn<'_>,
    name: &str,
    versions: &[u64],
    next: impl Fn(&VersionState) -> Option<VersionState>,
) -> Result<CommandResponse, StoreError> {
    if txn.secret_meta(name)?.is_none() {
        return reject(Rejection::NotFound(format!("secret {name} does not exist")));
    }
    let mut records = Vec::with_capacity(versions.len());
    for v in versions {
        match txn.version(name, *v)? {
            Some(r) => records.push(r),
            None => return reject(Rejection::NotFound(format!("version {v} of {name} does not exist"))),
        }
    }
    let mut changed = Vec::new();
    for mut record in records {
        if let Some(state) = next(&record.state) {
            if matches!(state, VersionState::Destroyed { .. }) {
                record.sealed = None;
            }
            record.state = state;
            txn.put(CF_VERSIONS, &version_key(name, record.version), &record)?;
            changed.push(record.version);
        }
    }
    changed.sort_unstable();
    changed.dedup();
    Ok(CommandResponse::Changed { versions: changed })
}
