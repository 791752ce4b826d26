//! Read-only queries over the state machine, for the API. Callers make reads linearizable
//! (through Raft) before asking; this type only reads what this node has applied.

use std::sync::{Arc, RwLock};

use rocksdb::{Direction, IteratorMode, DB};
use std::collections::BTreeMap;

use vault_core::model::{
    HookBinding, MasterKeyState, NameRange, ReaderRule, ReaderRules, RewrapState, Role, RotationPolicy, SecretMeta,
    TokenRecord, VersionRecord, VersionState,
};
use vault_core::token::TokenHash;

use crate::applied::Applied;
use crate::codec::decode;
use crate::db::{cf, CF_HOOK_BINDINGS, CF_READERS, CF_ROLES, CF_ROTATION, CF_SECRETS, CF_TOKENS, CF_VERSIONS};
use crate::tables::{parse_version_key, version_key, KvRead, KEY_LAST_APPLIED, KEY_MEMBERSHIP};
use crate::typ::{LogId, StoredMembership};
use crate::StoreError;

/// A version whose DEK awaits re-wrapping.
#[derive(Clone, Debug)]
pub struct PendingRewrap {
    pub name: String,
    pub version: u64,
    pub key_id: String,
    pub wrapped: Vec<u8>,
}

/// What [`StateReader::due_rotations`] found.
#[derive(Debug, Default)]
pub struct DueRotations {
    pub due: Vec<(String, RotationPolicy)>,
    pub total: u64,
    pub failing: u64,
}

/// Names with their metadata, and whether more follow.
pub type SecretPage = (Vec<(String, SecretMeta)>, bool);

/// Names with their rotation policies, and whether more follow.
pub type RotationPage = (Vec<(String, RotationPolicy)>, bool);

/// A value read from the state machine, and the generation (see `applied`) it was read at.
type Cached<T> = Arc<RwLock<Option<(u64, T)>>>;

#[derive(Clone)]
pub struct StateReader {
    db: Arc<DB>,
    /// The applied index and the generation of cached state, from the state machine.
    applied: Applied,
    /// The reader rules last loaded: served while the generation they were read at holds.
    rules: Cached<Arc<ReaderRules>>,
    /// The cluster's master key state last read (every put checks it), likewise.
    master_key: Cached<Option<MasterKeyState>>,
    /// The segment log's in-memory state; `None` when the log is in this database.
    log: Option<crate::storage::raft_log::LogView>,
}

/// `cache`'s value if it was read at `generation`.
fn cached<T: Clone>(cache: &Cached<T>, generation: u64) -> Option<T> {
    match cache.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
        Some((at, v)) if *at == generation => Some(v.clone()),
        _ => None,
    }
}

/// Keeps `value`, read at `generation`, unless the generation moved while it was read (then
/// the value may predate the change that moved it).
fn keep<T>(cache: &Cached<T>, applied: &Applied, generation: u64, value: T) {
    let mut slot = cache.write().unwrap_or_else(|p| p.into_inner());
    if applied.generation() == generation {
        *slot = Some((generation, value));
    }
}

impl StateReader {
    /// A reader of `db`, whose caches follow `applied` (the state machine's: see
    /// `StateMachineStore::reader`).
    pub fn new(db: Arc<DB>, applied: Applied) -> Self {
        StateReader { db, applied, rules: Arc::default(), master_key: Arc::default(), log: None }
    }

    /// Reads the last log id from the segment log's memory instead of the database.
    pub fn with_log_view(mut self, log: Option<crate::storage::raft_log::LogView>) -> Self {
        self.log = log;
        self
    }

    /// Whether [`Self::last_log_id`] is a memory read (no need for the blocking pool).
    pub fn log_in_memory(&self) -> bool {
        self.log.is_some()
    }

    /// What this node has applied (see `applied`).
    pub fn applied(&self) -> &Applied {
        &self.applied
    }

    /// Every reader rule, in name order, as this node has applied them. Kept in memory and
    /// reloaded when the state machine's generation moves (a change to the rules, a restore,
    /// a snapshot install): no database read while it holds.
    pub fn reader_rules(&self) -> Result<Arc<ReaderRules>, StoreError> {
        let generation = self.applied.generation();
        if let Some(rules) = cached(&self.rules, generation) {
            return Ok(rules);
        }
        // The flag and the rules from one consistent view. A snapshot being installed writes
        // its families in several batches, so what is read meanwhile may be partial: it is
        // used for this call but not kept.
        let view = self.db.snapshot();
        let meta = cf(&self.db, crate::db::CF_SM_META)?;
        let installing = view.get_cf(meta, crate::state_machine::KEY_INSTALLING)?.is_some();
        let required: bool =
            view.get_cf(meta, crate::tables::KEY_READERS_REQUIRED)?.map(|b| decode(&b)).transpose()?.unwrap_or(false);
        let mut list = Vec::new();
        for item in view.iterator_cf(cf(&self.db, CF_READERS)?, IteratorMode::Start) {
            let (_, v) = item?;
            list.push(decode::<ReaderRule>(&v)?);
        }
        let rules = Arc::new(ReaderRules::new(list).required(required));
        if !installing {
            keep(&self.rules, &self.applied, generation, rules.clone());
        }
        Ok(rules)
    }

    pub fn reader_rule(&self, name: &str) -> Result<Option<ReaderRule>, StoreError> {
        self.db.reader_rule(name)
    }

    pub fn rotation(&self, name: &str) -> Result<Option<RotationPolicy>, StoreError> {
        self.db.rotation(name)
    }

    /// The binding of `hook` (its path inside the hooks directory), if an admin made one.
    pub fn hook_binding(&self, hook: &str) -> Result<Option<HookBinding>, StoreError> {
        self.db.hook_binding(hook)
    }

    /// Every hook binding, in hook order.
    pub fn hook_bindings(&self) -> Result<Vec<HookBinding>, StoreError> {
        self.scan(CF_HOOK_BINDINGS)
    }

    /// Rotation policies due at `now_ms`, soonest first, at most `limit`; and how many policies
    /// there are, and how many are failing.
    pub fn due_rotations(&self, now_ms: u64, limit: usize) -> Result<DueRotations, StoreError> {
        let mut due = Vec::new();
        let (mut total, mut failing) = (0u64, 0u64);
        for item in self.db.iterator_cf(cf(&self.db, CF_ROTATION)?, IteratorMode::Start) {
            let (k, v) = item?;
            let policy: RotationPolicy = decode(&v)?;
            total += 1;
            if policy.failures > 0 {
                failing += 1;
            }
            if policy.next_due_ms <= now_ms {
                let name = String::from_utf8(k.to_vec())
                    .map_err(|_| StoreError::Corrupt("rotation key is not UTF-8".into()))?;
                due.push((name, policy));
            }
        }
        due.sort_by_key(|(_, p)| p.next_due_ms);
        due.truncate(limit);
        Ok(DueRotations { due, total, failing })
    }

    /// The last entry id in this node's Raft log, for pre-votes: from the segment log's
    /// memory, or from the database for the RocksDB log.
    pub fn last_log_id(&self) -> Result<Option<crate::typ::LogId>, StoreError> {
        match &self.log {
            Some(view) => Ok(view.last_log_id()),
            None => crate::log_store::last_log_id(&self.db),
        }
    }

    /// The cluster's feature level as this node has applied it (see `features`).
    pub fn feature_level(&self) -> Result<u32, StoreError> {
        self.db.feature_level()
    }

    pub fn last_applied(&self) -> Result<Option<LogId>, StoreError> {
        Ok(self.db.get_typed::<Option<LogId>>(crate::db::CF_SM_META, KEY_LAST_APPLIED)?.flatten())
    }

    pub fn secret_meta(&self, name: &str) -> Result<Option<SecretMeta>, StoreError> {
        self.db.secret_meta(name)
    }

    pub fn version(&self, name: &str, version: u64) -> Result<Option<VersionRecord>, StoreError> {
        self.db.version(name, version)
    }

    /// The newest live version, if any.
    pub fn latest_live(&self, name: &str) -> Result<Option<VersionRecord>, StoreError> {
        Ok(self.versions(name)?.into_iter().rev().find(|r| r.state == VersionState::Live))
    }

    /// Every stored version of `name`, oldest first. Read by key prefix, so the cost is the
    /// versions stored (at most `max_versions`), whatever range the secret's meta claims: a
    /// restore leaves numbers behind that no version holds.
    pub fn versions(&self, name: &str) -> Result<Vec<VersionRecord>, StoreError> {
        if self.secret_meta(name)?.is_none() {
            return Ok(Vec::new());
        }
        let prefix = crate::tables::version_key(name, 0);
        let prefix = &prefix[..prefix.len() - 8];
        let mut out = Vec::new();
        let from = IteratorMode::From(prefix, Direction::Forward);
        for item in self.db.iterator_cf(cf(&self.db, CF_VERSIONS)?, from) {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push(decode::<VersionRecord>(&v)?);
        }
        Ok(out)
    }

    /// Secrets in `ranges` (disjoint, in name order, as [`Role::ranges`] makes them) whose
    /// name sorts after `start_after`, in name order, at most `limit`. The flag says whether
    /// the ranges hold more. Only names inside the ranges are read, plus at most one past the
    /// end of each: what a caller gets back never depends on names outside them.
    ///
    /// [`Role::ranges`]: vault_core::model::Role::ranges
    pub fn list_secrets(
        &self,
        ranges: &[NameRange],
        start_after: &str,
        limit: usize,
    ) -> Result<SecretPage, StoreError> {
        self.list_names(CF_SECRETS, ranges, start_after, limit)
    }

    /// Rotation policies of the names in `ranges` after `start_after`, read exactly as
    /// [`Self::list_secrets`] reads secrets.
    pub fn list_rotations(
        &self,
        ranges: &[NameRange],
        start_after: &str,
        limit: usize,
    ) -> Result<RotationPage, StoreError> {
        self.list_names(CF_ROTATION, ranges, start_after, limit)
    }

    /// The bounded scan behind the listings, over a column family keyed by secret name.
    fn list_names<T: serde::de::DeserializeOwned>(
        &self,
        family: &'static str,
        ranges: &[NameRange],
        start_after: &str,
        limit: usize,
    ) -> Result<(Vec<(String, T)>, bool), StoreError> {
        let mut out = Vec::new();
        for range in ranges {
            let from = range.start().max(start_after);
            let it =
                self.db.iterator_cf(cf(&self.db, family)?, IteratorMode::From(from.as_bytes(), Direction::Forward));
            for item in it {
                let (k, v) = item?;
                let name = std::str::from_utf8(&k)
                    .map_err(|_| StoreError::Corrupt(format!("a key of {family} is not UTF-8")))?;
                if !range.contains(name) {
                    break;
                }
                if name == start_after {
                    continue;
                }
                if out.len() == limit {
                    return Ok((out, true));
                }
                out.push((name.to_string(), decode(&v)?));
            }
        }
        Ok((out, false))
    }

    pub fn token_by_hash(&self, hash: &TokenHash) -> Result<Option<TokenRecord>, StoreError> {
        let Some(name) = self.db.token_name_by_hash(hash)? else { return Ok(None) };
        Ok(self.db.token(&name)?.filter(|t| t.hash.ct_eq(hash)))
    }

    pub fn token(&self, name: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.db.token(name)
    }

    pub fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.scan(CF_TOKENS)
    }

    pub fn role(&self, name: &str) -> Result<Option<Role>, StoreError> {
        self.db.role(name)
    }

    pub fn readers(&self) -> Result<Vec<ReaderRule>, StoreError> {
        self.scan(CF_READERS)
    }

    pub fn roles(&self) -> Result<Vec<Role>, StoreError> {
        self.scan(CF_ROLES)
    }

    pub fn rewrap_state(&self) -> Result<RewrapState, StoreError> {
        self.db.rewrap_state()
    }

    /// The cluster's master key, once recorded. Every put asks: kept in memory while the
    /// state machine's generation holds (a rotation, restore or snapshot install moves it).
    pub fn master_key(&self) -> Result<Option<MasterKeyState>, StoreError> {
        let generation = self.applied.generation();
        if let Some(mk) = cached(&self.master_key, generation) {
            return Ok(mk);
        }
        let mk = self.db.master_key()?;
        keep(&self.master_key, &self.applied, generation, mk.clone());
        Ok(mk)
    }

    /// The membership of the last applied membership entry (committed), if any.
    pub fn applied_membership(&self) -> Result<Option<StoredMembership>, StoreError> {
        self.db.get_typed(crate::db::CF_SM_META, KEY_MEMBERSHIP)
    }

    /// Whether the token with `hash` exists, is unexpired at `now_ms` and holds the admin role.
    /// `Err` says why not, for the caller.
    pub fn check_admin(&self, hash: &TokenHash, now_ms: u64) -> Result<Result<(), String>, StoreError> {
        let Some(token) = self.token_by_hash(hash)? else { return Ok(Err("unknown or revoked token".into())) };
        if token.is_expired(now_ms) {
            return Ok(Err(format!("token {} has expired", token.name)));
        }
        Ok(match self.role(&token.role)? {
            Some(r) if r.is_admin() => Ok(()),
            _ => Err(format!("token {} (role {}) needs the admin role", token.name, token.role)),
        })
    }

    /// How many versions hold a DEK wrapped by each master key id.
    pub fn versions_by_key(&self) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut out = BTreeMap::new();
        for item in self.db.iterator_cf(cf(&self.db, CF_VERSIONS)?, IteratorMode::Start) {
            let (_, v) = item?;
            let r: VersionRecord = decode(&v)?;
            if let Some(s) = r.sealed {
                *out.entry(s.key_id).or_insert(0) += 1;
            }
        }
        Ok(out)
    }

    /// Versions that still hold a wrapped DEK: (all of them, those below `target_ms`).
    pub fn rewrap_counts(&self, target_ms: Option<u64>) -> Result<(u64, u64), StoreError> {
        let (mut total, mut pending) = (0, 0);
        for item in self.db.iterator_cf(cf(&self.db, CF_VERSIONS)?, IteratorMode::Start) {
            let (_, v) = item?;
            let r: VersionRecord = decode(&v)?;
            if r.sealed.is_some() {
                total += 1;
                if target_ms.is_some_and(|t| r.rewrap_watermark_ms < t) {
                    pending += 1;
                }
            }
        }
        Ok((total, pending))
    }

    /// Up to `limit` versions holding a wrapped DEK below `target_ms`, in key order after
    /// `after` (a cursor from the previous call).
    pub fn pending_rewrap(
        &self,
        after: Option<&(String, u64)>,
        target_ms: u64,
        limit: usize,
    ) -> Result<Vec<PendingRewrap>, StoreError> {
        let start = after.map(|(n, v)| version_key(n, *v)).unwrap_or_default();
        let it = self.db.iterator_cf(cf(&self.db, CF_VERSIONS)?, IteratorMode::From(&start, Direction::Forward));
        let mut out = Vec::new();
        for item in it {
            let (k, v) = item?;
            if after.is_some() && k.as_ref() == start.as_slice() {
                continue;
            }
            let (name, version) =
                parse_version_key(&k).ok_or_else(|| StoreError::Corrupt("malformed version key".into()))?;
            let r: VersionRecord = decode(&v)?;
            if let Some(sealed) = r.sealed {
                if r.rewrap_watermark_ms < target_ms {
                    out.push(PendingRewrap {
                        name: name.to_string(),
                        version,
                        key_id: sealed.key_id,
                        wrapped: sealed.wrapped_dek,
                    });
                    if out.len() >= limit {
                        break;
                    }
                }
            }
        }
        Ok(out)
    }

    fn scan<T: serde::de::DeserializeOwned>(&self, family: &'static str) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf(&self.db, family)?, IteratorMode::Start) {
            let (_, v) = item?;
            out.push(decode(&v)?);
        }
        Ok(out)
    }
}

impl StateReader {
    /// Writes a backup of this node's applied state (a consistent view) to `path`; see
    /// [`crate::snapshot_file::write_backup`].
    pub fn write_backup(
        &self,
        path: &std::path::Path,
        node_id: u64,
        created_ms: u64,
        mac: &vault_core::keys::DataKey,
        mac_key: crate::snapshot_file::WrappedMacKey,
    ) -> Result<crate::snapshot_file::BackupHeader, StoreError> {
        let sm_meta = cf(&self.db, crate::db::CF_SM_META)?;
        crate::snapshot_file::write_backup(&self.db, path, mac, |view| {
            let applied: Option<LogId> =
                view.get_cf(sm_meta, KEY_LAST_APPLIED)?.map(|b| decode(&b)).transpose()?.flatten();
            let master_key: Option<MasterKeyState> =
                view.get_cf(sm_meta, crate::tables::KEY_MASTER_KEY)?.map(|b| decode(&b)).transpose()?;
            Ok(crate::snapshot_file::BackupHeader {
                created_ms,
                node_id,
                applied_index: applied.map_or(0, |l| l.index),
                master_key,
                mac_key,
            })
        })
    }
}
