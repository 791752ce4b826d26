//! Typed access to the state machine tables, shared by the apply path (through a write
//! overlay) and the read path (straight from RocksDB).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use rocksdb::{WriteBatch, DB};
use serde::de::DeserializeOwned;
use vault_core::model::{
    AuditRecord, HookBinding, MasterKeyState, ReaderRule, RewrapState, Role, RotationPolicy, SecretMeta, TokenRecord,
    VersionRecord,
};
use vault_core::token::TokenHash;

use crate::codec::{decode, encode};
use crate::db::{
    cf, CF_HOOK_BINDINGS, CF_READERS, CF_ROLES, CF_ROTATION, CF_SECRETS, CF_SM_META, CF_TOKENS, CF_TOKEN_HASHES,
    CF_VERSIONS,
};
use crate::StoreError;

pub(crate) const KEY_LAST_APPLIED: &[u8] = b"last_applied";
pub(crate) const KEY_MEMBERSHIP: &[u8] = b"membership";
pub(crate) const KEY_BOOTSTRAP_TOKEN_ISSUED: &[u8] = b"bootstrap_token_issued";
pub(crate) const KEY_REWRAP: &[u8] = b"rewrap";
pub(crate) const KEY_MASTER_KEY: &[u8] = b"master_key";
/// The cluster's feature level (u32; absent: `features::BASE_LEVEL`).
pub(crate) const KEY_FEATURE_LEVEL: &[u8] = b"feature_level";
/// Bumped by every change to the reader rules (u64; absent: 0), so readers can cache them.
pub(crate) const KEY_READERS_REVISION: &[u8] = b"readers_revision";
/// Set (true) once reader rules are in force on this cluster, from feature level 4: from then on
/// a read needs a rule even when none is left. Never cleared, and a restore keeps this
/// cluster's (see `apply::commit_restore`), so neither deleting the last rule nor restoring a
/// backup without rules reopens reads to the address allowlist alone.
pub(crate) const KEY_READERS_REQUIRED: &[u8] = b"readers_required";
/// Serial of rotation policies set (u64), from which each takes its attempt-count base.
pub(crate) const KEY_ROTATION_SERIAL: &[u8] = b"rotation_serial";
/// A restore being received: [`RestoreProgress`].
pub(crate) const KEY_RESTORE: &[u8] = b"restore";

/// Keys of the state machine's meta family whose change makes the read path's caches stale
/// (see `Txn::changes_cached_state`). A restore commit removes [`KEY_RESTORE`].
const CACHED_META_KEYS: [&[u8]; 4] = [KEY_MASTER_KEY, KEY_READERS_REVISION, KEY_READERS_REQUIRED, KEY_RESTORE];

/// How far the restore being received has come.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct RestoreProgress {
    pub id: u64,
    pub expected: u64,
    pub received: u64,
    pub next_seq: u64,
}

/// Splits a versions-family key back into name and version.
pub(crate) fn parse_version_key(key: &[u8]) -> Option<(&str, u64)> {
    let split = key.len().checked_sub(9)?;
    if key[split] != 0 {
        return None;
    }
    let name = std::str::from_utf8(&key[..split]).ok()?;
    let version = u64::from_be_bytes(key[split + 1..].try_into().ok()?);
    Some((name, version))
}

pub(crate) fn version_key(name: &str, version: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(name.len() + 9);
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// Raw reads of one column family by key.
pub(crate) trait KvRead {
    fn get_raw(&self, cf: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    fn get_typed<T: DeserializeOwned>(&self, cf: &'static str, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.get_raw(cf, key)?.map(|b| decode(&b)).transpose()
    }

    fn secret_meta(&self, name: &str) -> Result<Option<SecretMeta>, StoreError> {
        self.get_typed(CF_SECRETS, name.as_bytes())
    }

    fn version(&self, name: &str, version: u64) -> Result<Option<VersionRecord>, StoreError> {
        self.get_typed(CF_VERSIONS, &version_key(name, version))
    }

    fn token(&self, name: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.get_typed(CF_TOKENS, name.as_bytes())
    }

    fn token_name_by_hash(&self, hash: &TokenHash) -> Result<Option<String>, StoreError> {
        self.get_typed(CF_TOKEN_HASHES, &hash.0)
    }

    fn role(&self, name: &str) -> Result<Option<Role>, StoreError> {
        self.get_typed(CF_ROLES, name.as_bytes())
    }

    fn reader_rule(&self, name: &str) -> Result<Option<ReaderRule>, StoreError> {
        self.get_typed(CF_READERS, name.as_bytes())
    }

    fn rotation(&self, name: &str) -> Result<Option<RotationPolicy>, StoreError> {
        self.get_typed(CF_ROTATION, name.as_bytes())
    }

    fn hook_binding(&self, hook: &str) -> Result<Option<HookBinding>, StoreError> {
        self.get_typed(CF_HOOK_BINDINGS, hook.as_bytes())
    }

    fn readers_revision(&self) -> Result<u64, StoreError> {
        Ok(self.get_typed::<u64>(CF_SM_META, KEY_READERS_REVISION)?.unwrap_or(0))
    }

    fn rewrap_state(&self) -> Result<RewrapState, StoreError> {
        Ok(self.get_typed(CF_SM_META, KEY_REWRAP)?.unwrap_or_default())
    }

    fn master_key(&self) -> Result<Option<MasterKeyState>, StoreError> {
        self.get_typed(CF_SM_META, KEY_MASTER_KEY)
    }

    fn feature_level(&self) -> Result<u32, StoreError> {
        Ok(self.get_typed::<u32>(CF_SM_META, KEY_FEATURE_LEVEL)?.unwrap_or(crate::features::BASE_LEVEL))
    }

    fn flag(&self, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.get_typed::<bool>(CF_SM_META, key)?.unwrap_or(false))
    }
}

impl KvRead for DB {
    fn get_raw(&self, cf_name: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.get_cf(cf(self, cf_name)?, key)?)
    }

    /// Decodes from RocksDB's pinned block, without copying the value out first.
    fn get_typed<T: DeserializeOwned>(&self, cf_name: &'static str, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.get_pinned_cf(cf(self, cf_name)?, key)?.map(|b| decode(&b)).transpose()
    }
}

type CfKey = (&'static str, Vec<u8>);

/// A write set over the database: reads see earlier writes of the same set, and the whole set
/// becomes one atomic `WriteBatch`. Reads that reach the database are remembered for the life
/// of the set (nothing else writes the state machine tables meanwhile), so the token, role and
/// re-wrap lookups that every put in a batch makes hit RocksDB once.
pub(crate) struct Txn<'a> {
    db: &'a DB,
    overlay: BTreeMap<CfKey, Option<Vec<u8>>>,
    read_cache: RefCell<HashMap<CfKey, Option<Vec<u8>>>>,
    /// Audit records of the applied client writes, written with the batch.
    audits: Vec<AuditRecord>,
}

impl<'a> Txn<'a> {
    pub fn new(db: &'a DB) -> Self {
        Txn { db, overlay: BTreeMap::new(), read_cache: RefCell::new(HashMap::new()), audits: Vec::new() }
    }

    /// Records a change; the record is written in the same batch as the change.
    pub fn audit(&mut self, record: AuditRecord) {
        self.audits.push(record);
    }

    pub fn put<T: serde::Serialize>(&mut self, cf: &'static str, key: &[u8], value: &T) -> Result<(), StoreError> {
        self.overlay.insert((cf, key.to_vec()), Some(encode(value)?));
        Ok(())
    }

    pub fn delete(&mut self, cf: &'static str, key: &[u8]) {
        self.overlay.insert((cf, key.to_vec()), None);
    }

    /// Stores bytes already encoded (copied from a backup).
    pub fn put_raw(&mut self, cf: &'static str, key: Vec<u8>, value: Vec<u8>) {
        self.overlay.insert((cf, key), Some(value));
    }

    /// Every key and value of `cf` as this write set sees it, in key order.
    pub fn scan(&self, cf_name: &'static str) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, StoreError> {
        let mut out = BTreeMap::new();
        for item in self.db.iterator_cf(cf(self.db, cf_name)?, rocksdb::IteratorMode::Start) {
            let (k, v) = item?;
            out.insert(k.to_vec(), v.to_vec());
        }
        for ((_, k), v) in self.overlay.range((cf_name, Vec::new())..).take_while(|((c, _), _)| *c == cf_name) {
            match v {
                Some(v) => out.insert(k.clone(), v.clone()),
                None => out.remove(k),
            };
        }
        Ok(out)
    }

    /// The numbers of `name`'s stored versions after this write set, ascending: a walk over the
    /// records there are, never over a range of numbers a meta claims (which could be huge).
    pub fn version_numbers(&self, name: &str) -> Result<Vec<u64>, StoreError> {
        let prefix = version_key(name, 0);
        let prefix = &prefix[..prefix.len() - 8];
        let mut found = std::collections::BTreeSet::new();
        let from = rocksdb::IteratorMode::From(prefix, rocksdb::Direction::Forward);
        for item in self.db.iterator_cf(cf(self.db, CF_VERSIONS)?, from) {
            let (k, _) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            if let Some((_, v)) = parse_version_key(&k) {
                found.insert(v);
            }
        }
        let start = (CF_VERSIONS, prefix.to_vec());
        for ((_, k), v) in
            self.overlay.range(start..).take_while(|((c, k), _)| *c == CF_VERSIONS && k.starts_with(prefix))
        {
            if let Some((_, n)) = parse_version_key(k) {
                match v {
                    Some(_) => found.insert(n),
                    None => found.remove(&n),
                };
            }
        }
        Ok(found.into_iter().collect())
    }

    /// Token names present after this write set, for checks that scan the (small) token table.
    pub fn token_records(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let mut names: BTreeMap<Vec<u8>, ()> = BTreeMap::new();
        for item in self.db.iterator_cf(cf(self.db, CF_TOKENS)?, rocksdb::IteratorMode::Start) {
            let (k, _) = item?;
            names.insert(k.to_vec(), ());
        }
        for ((c, k), _) in self.overlay.iter() {
            if *c == CF_TOKENS {
                names.insert(k.clone(), ());
            }
        }
        let mut out = Vec::new();
        for k in names.keys() {
            if let Some(t) = self.get_typed::<TokenRecord>(CF_TOKENS, k)? {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// Whether this write set changes state the read path caches (see `applied`): the cluster's
    /// master key or the reader rules, or the live families wholesale (a restore).
    pub fn changes_cached_state(&self) -> bool {
        let readers = self.overlay.range((CF_READERS, Vec::new())..).next().is_some_and(|((c, _), _)| *c == CF_READERS);
        readers || CACHED_META_KEYS.iter().any(|k| self.overlay.contains_key(&(CF_SM_META, k.to_vec())))
    }

    /// The write set as one batch, and the audit records to write with it.
    pub fn into_batch(self) -> Result<(WriteBatch, Vec<AuditRecord>), StoreError> {
        let mut batch = WriteBatch::default();
        for ((cf_name, key), value) in self.overlay {
            let handle = cf(self.db, cf_name)?;
            match value {
                Some(v) => batch.put_cf(handle, key, v),
                None => batch.delete_cf(handle, key),
            }
        }
        Ok((batch, self.audits))
    }
}

impl Txn<'_> {
    /// `f` of the value of `key` as this write set sees it: its own write, else what it read
    /// before, else RocksDB (remembered). The value is lent, never copied.
    fn with_value<R>(
        &self,
        cf_name: &'static str,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R, StoreError> {
        let k = (cf_name, key.to_vec());
        if let Some(v) = self.overlay.get(&k) {
            return Ok(f(v.as_deref()));
        }
        if let Some(v) = self.read_cache.borrow().get(&k) {
            return Ok(f(v.as_deref()));
        }
        let v = self.db.get_raw(cf_name, key)?;
        let r = f(v.as_deref());
        self.read_cache.borrow_mut().insert(k, v);
        Ok(r)
    }
}

impl KvRead for Txn<'_> {
    fn get_raw(&self, cf_name: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.with_value(cf_name, key, |v| v.map(<[u8]>::to_vec))
    }

    fn get_typed<T: DeserializeOwned>(&self, cf_name: &'static str, key: &[u8]) -> Result<Option<T>, StoreError> {
        self.with_value(cf_name, key, |v| v.map(decode).transpose())?
    }
}
