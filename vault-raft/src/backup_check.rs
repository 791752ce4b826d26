//! What a backup must hold before a restore installs it: every record decodes as what its
//! table holds and passes the checks the API makes when the same thing is created through it,
//! and the tables agree with each other. A backup's MAC proves it came from a holder of the
//! cluster's master key unaltered; these checks keep a node from installing state that no
//! sequence of API calls could have made (a token indexed under another token's hash, a role
//! stored under one name but named `admin` inside, a secret whose version bounds would send
//! the prune loop round the number space), whatever wrote the file.
//!
//! One pass in file order (a backup lists families in [`SM_CFS`] order and keys in order
//! within each, as RocksDB iterates them), keeping only what later families are checked
//! against: each secret's version bounds, each token's hash and role, the role names. Values
//! (ciphertext) are never held.

use std::collections::{BTreeMap, BTreeSet};

use vault_core::model::{
    validate_label, Grant, HookBinding, ReaderRule, RewrapState, Role, RotationPolicy, SecretMeta, TokenRecord,
    VersionRecord, VersionState, ADMIN_ROLE, MIN_ROTATION_PERIOD_MS,
};
use vault_core::SecretName;

use crate::codec::decode;
use crate::db::{
    CF_HOOK_BINDINGS, CF_READERS, CF_ROLES, CF_ROTATION, CF_SECRETS, CF_SM_META, CF_TOKENS, CF_TOKEN_HASHES,
    CF_VERSIONS, SM_CFS,
};
use crate::snapshot_file::FamilyRecord;
use crate::tables::parse_version_key;
use crate::StoreError;

/// What one backup record holds, decoded and checked.
#[derive(Debug)]
pub enum BackupItem {
    /// A version, with its secret's name.
    Version(String, VersionRecord),
    Other,
    /// A state machine metadata key a restore does not take (applied index, membership...).
    Ignored,
}

/// Checks a backup's records one by one ([`BackupChecker::record`]), then the rules that need
/// the whole file ([`BackupChecker::finish`]). Every `Err` names the rule broken.
#[derive(Default)]
pub struct BackupChecker {
    /// The previous record's family and key: records come in strictly increasing order, so no
    /// key appears twice (a second copy would replace the checked first one when installed).
    last: Option<(u8, Vec<u8>)>,
    /// Each secret's `(oldest_version, current_version)`.
    secrets: BTreeMap<String, (u64, u64)>,
    /// Each token's hash and role, and whether the hash index has pointed back to it.
    tokens: BTreeMap<String, ([u8; 32], String, bool)>,
    roles: BTreeSet<String>,
}

impl BackupChecker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks one record, in file order.
    pub fn record(&mut self, record: &FamilyRecord) -> Result<BackupItem, String> {
        let family = SM_CFS.get(record.family as usize).copied().unwrap_or("unknown");
        if let Some((family_before, key_before)) = &self.last {
            if (*family_before, key_before.as_slice()) >= (record.family, record.key.as_slice()) {
                return Err(format!("{family}: records are out of order or repeated"));
            }
        }
        self.last = Some((record.family, record.key.clone()));
        let text =
            |k: &[u8]| std::str::from_utf8(k).map(str::to_string).map_err(|_| format!("{family}: a key is not UTF-8"));
        let bad = |e: StoreError| format!("{family} record is unreadable: {e}");
        match family {
            CF_SECRETS => {
                let name = text(&record.key)?;
                SecretName::parse(&name).map_err(|e| format!("secret {name:?}: {e}"))?;
                let meta: SecretMeta = decode(&record.value).map_err(bad)?;
                meta.check().map_err(|e| format!("secret {name}: {e}"))?;
                self.secrets.insert(name, (meta.oldest_version, meta.current_version));
                Ok(BackupItem::Other)
            }
            CF_VERSIONS => {
                let (name, version) =
                    parse_version_key(&record.key).ok_or_else(|| "versions: a key is malformed".to_string())?;
                SecretName::parse(name).map_err(|e| format!("version of {name:?}: {e}"))?;
                let v: VersionRecord = decode(&record.value).map_err(bad)?;
                if v.version != version {
                    return Err(format!("versions: {name}:{version} holds version {}", v.version));
                }
                let Some(&(oldest, current)) = self.secrets.get(name) else {
                    return Err(format!("version {name}:{version} belongs to no secret in the backup"));
                };
                if !(oldest..=current).contains(&version) {
                    return Err(format!(
                        "version {name}:{version} is outside its secret's versions {oldest} to {current}"
                    ));
                }
                match (&v.state, &v.sealed) {
                    (VersionState::Destroyed { .. }, Some(_)) => {
                        return Err(format!("version {name}:{version} is destroyed but still holds ciphertext"))
                    }
                    (VersionState::Live | VersionState::Deleted { .. }, None) => {
                        return Err(format!("version {name}:{version} is {} but holds no ciphertext", v.state.label()))
                    }
                    _ => {}
                }
                Ok(BackupItem::Version(name.to_string(), v))
            }
            CF_TOKENS => {
                let name = text(&record.key)?;
                validate_label("token", &name).map_err(|e| format!("token {name:?}: {e}"))?;
                let t: TokenRecord = decode(&record.value).map_err(bad)?;
                if t.name != name {
                    return Err(format!("tokens: the record stored as {name} is token {}", t.name));
                }
                self.tokens.insert(name, (t.hash.0, t.role, false));
                Ok(BackupItem::Other)
            }
            CF_TOKEN_HASHES => {
                let hash: [u8; 32] =
                    record.key.as_slice().try_into().map_err(|_| "token hashes: a key is not 32 bytes".to_string())?;
                let name: String = decode(&record.value).map_err(bad)?;
                match self.tokens.get_mut(&name) {
                    Some((h, _, indexed)) if *h == hash => *indexed = true,
                    Some(_) => {
                        return Err(format!("token hashes: an entry points to token {name}, whose hash differs"))
                    }
                    None => {
                        return Err(format!(
                            "token hashes: an entry points to token {name}, which is not in the backup"
                        ))
                    }
                }
                Ok(BackupItem::Other)
            }
            CF_ROLES => {
                let name = text(&record.key)?;
                let role: Role = decode(&record.value).map_err(bad)?;
                if role.name != name {
                    return Err(format!("roles: the role stored as {name} is named {}", role.name));
                }
                if name == ADMIN_ROLE {
                    if role != Role::builtin_admin() {
                        return Err("roles: the admin role is not the built-in one".into());
                    }
                } else {
                    // As `role create` checks it.
                    let mut grants = Vec::with_capacity(role.grants.len());
                    for g in &role.grants {
                        grants.push(Grant::new(g.action, &g.pattern).map_err(|e| format!("role {name}: {e}"))?);
                    }
                    Role::new(&name, grants).map_err(|e| format!("role {name:?}: {e}"))?;
                }
                self.roles.insert(name);
                Ok(BackupItem::Other)
            }
            CF_READERS => {
                let name = text(&record.key)?;
                let r: ReaderRule = decode(&record.value).map_err(bad)?;
                // Checked as a client's rule would be, so a restore installs nothing a node could
                // not enforce.
                let rebuilt = ReaderRule::new(&r.name, &r.cidrs, &r.cert_cns, &r.grants, r.created_at_ms)
                    .map_err(|e| format!("reader {name:?}: {e}"))?;
                if r.name != name {
                    return Err(format!("readers: {name} holds rule {}", r.name));
                }
                if rebuilt != r {
                    return Err(format!("reader {name}: its CIDRs are not in the form `reader create` stores"));
                }
                Ok(BackupItem::Other)
            }
            CF_ROTATION => {
                let name = text(&record.key)?;
                SecretName::parse(&name).map_err(|e| format!("rotation of {name:?}: {e}"))?;
                let p: RotationPolicy = decode(&record.value).map_err(bad)?;
                // As `secret rotation set` checks it: the generator as parsed from its text (an
                // `exec:` hook an absolute path without `..`), and the period.
                let generator = p
                    .generator
                    .to_string()
                    .parse::<vault_core::model::Generator>()
                    .map_err(|e| format!("rotation of {name}: {e}"))?;
                if generator != p.generator {
                    return Err(format!("rotation of {name}: the generator does not read back as itself"));
                }
                if p.every_ms < MIN_ROTATION_PERIOD_MS {
                    return Err(format!(
                        "rotation of {name}: a period of {} ms is under the least, {MIN_ROTATION_PERIOD_MS} ms",
                        p.every_ms
                    ));
                }
                match self.secrets.get(&name) {
                    Some(&(_, current)) if current > 0 => {}
                    _ => return Err(format!("rotation of {name}: the backup holds no such secret")),
                }
                Ok(BackupItem::Other)
            }
            CF_HOOK_BINDINGS => {
                let hook = text(&record.key)?;
                let b: HookBinding = decode(&record.value).map_err(bad)?;
                // As `rotation hook bind` checks it, and stored in the form it stores.
                let rebuilt = HookBinding::new(&b.hook, &b.names, b.created_at_ms)
                    .map_err(|e| format!("hook binding {hook:?}: {e}"))?;
                if b.hook != hook {
                    return Err(format!("hook bindings: {hook} holds the binding of {}", b.hook));
                }
                if rebuilt != b {
                    return Err(format!("hook binding {hook}: not in the form `rotation hook bind` stores"));
                }
                Ok(BackupItem::Other)
            }
            CF_SM_META => match record.key.as_slice() {
                crate::tables::KEY_REWRAP => {
                    decode::<RewrapState>(&record.value).map(|_| BackupItem::Other).map_err(bad)
                }
                crate::tables::KEY_BOOTSTRAP_TOKEN_ISSUED => {
                    decode::<bool>(&record.value).map(|_| BackupItem::Other).map_err(bad)
                }
                _ => Ok(BackupItem::Ignored),
            },
            other => Err(format!("a backup holds no {other} records")),
        }
    }

    /// The rules that need every record seen: each token indexed by its hash and holding a
    /// role the backup has, and the built-in admin role present.
    pub fn finish(self) -> Result<(), String> {
        for (name, (_, role, indexed)) in &self.tokens {
            if !indexed {
                return Err(format!("token {name} has no entry in the token hash index"));
            }
            if !self.roles.contains(role) {
                return Err(format!("token {name} has role {role}, which the backup does not hold"));
            }
        }
        if !self.roles.contains(ADMIN_ROLE) {
            return Err("the backup holds no admin role".into());
        }
        Ok(())
    }
}

/// Checks a single record as the first of a file: for tests of one table's rules.
pub fn check_backup_record(record: &FamilyRecord) -> Result<BackupItem, String> {
    BackupChecker::new().record(record)
}
