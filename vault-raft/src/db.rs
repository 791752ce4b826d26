//! The RocksDB instance: column families and options.

use std::path::Path;

use rocksdb::{BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Options, DB};

use crate::StoreError;

/// Raft log entries, keyed by big-endian index.
pub const CF_LOG: &str = "raft_log";
/// Vote, committed and last purged log ids; pointer to the current snapshot.
pub const CF_RAFT_META: &str = "raft_meta";
/// State machine: last applied log id, membership, cluster-wide flags.
pub const CF_SM_META: &str = "sm_meta";
/// State machine: secret metadata, keyed by name.
pub const CF_SECRETS: &str = "secrets";
/// State machine: secret versions, keyed by `name \0 version(be u64)`.
pub const CF_VERSIONS: &str = "versions";
/// State machine: token records, keyed by token name.
pub const CF_TOKENS: &str = "tokens";
/// State machine: SHA-256 of a token -> token name.
pub const CF_TOKEN_HASHES: &str = "token_hashes";
/// State machine: roles, keyed by name.
pub const CF_ROLES: &str = "roles";
/// Node-local audit log, keyed by big-endian sequence number. Not replicated.
pub const CF_AUDIT: &str = "audit";
/// State machine: a restore being received through Raft (`vaultctl snapshot restore`), keyed by
/// the target family's index in [`SM_CFS`] and its key. Emptied when the restore commits.
pub const CF_RESTORE: &str = "restore_staging";
/// State machine: reader rules, keyed by rule name.
pub const CF_READERS: &str = "readers";
/// State machine: rotation policies, keyed by secret name.
pub const CF_ROTATION: &str = "rotation";
/// State machine: hook bindings (the names each rotation hook may rotate), keyed by the hook's
/// path inside the hooks directory.
pub const CF_HOOK_BINDINGS: &str = "hook_bindings";
/// Node-local history of changes to secrets, for watchers (see `watch_log`), keyed by
/// big-endian (revision, seq). Not replicated, not in snapshots or backups.
pub const CF_WATCH: &str = "watch_events";

/// Present once this node's Raft log has moved out of [`CF_LOG`] into segment files
/// (`storage::raft_log::migrate`). Empty: it is there so that an older build, which opens only
/// the families it knows, fails to open the database (RocksDB refuses an open that leaves an
/// existing family out) instead of starting with no vote and no log.
pub const CF_RAFT_LOG_MOVED: &str = "raft_log_moved";

/// The column families that make up the replicated state (and a snapshot), in a fixed
/// order: a snapshot record names its family by index into this list.
/// New families go last, so older snapshot files still name theirs by the same index.
pub const SM_CFS: [&str; 10] = [
    CF_SM_META,
    CF_SECRETS,
    CF_VERSIONS,
    CF_TOKENS,
    CF_TOKEN_HASHES,
    CF_ROLES,
    CF_RESTORE,
    CF_READERS,
    CF_ROTATION,
    CF_HOOK_BINDINGS,
];

/// Every family a build before feature level 5 opens (and creates); [`CF_RAFT_LOG_MOVED`] is
/// opened besides when it exists.
pub const ALL_CFS: [&str; 14] = [
    CF_LOG,
    CF_RAFT_META,
    CF_SM_META,
    CF_SECRETS,
    CF_VERSIONS,
    CF_TOKENS,
    CF_TOKEN_HASHES,
    CF_ROLES,
    CF_AUDIT,
    CF_RESTORE,
    CF_READERS,
    CF_ROTATION,
    CF_HOOK_BINDINGS,
    CF_WATCH,
];

/// Block cache shared by every column family, for data blocks.
const BLOCK_CACHE_BYTES: usize = 64 << 20;

/// Families read by key, often for keys that are absent (a put's first version, a token hash
/// that matches nothing): bloom filters on SST files answer "absent" without reading a data
/// block. Built when a memtable is flushed, so they cost nothing per write. The log and audit
/// families are only read in order.
const POINT_LOOKUP_CFS: [&str; 7] =
    [CF_SM_META, CF_SECRETS, CF_VERSIONS, CF_TOKENS, CF_TOKEN_HASHES, CF_ROLES, CF_ROTATION];

/// Of those, the families that also get a memtable bloom filter, which costs a hash on every
/// insert and saves a skiplist search on every point lookup of a key the memtable lacks:
/// - `tokens`, `token_hashes`, `roles`, `rotation`: written rarely, looked up on every request
///   (the token, its role) or every apply: the lookups dominate.
/// - `secrets`: one insert per put, against a point lookup per put (twice: the node's own
///   check and the apply's) and per read; most keys read are not in the memtable once the
///   data outgrows it.
/// - `sm_meta`: a few keys, re-written every apply (`last_applied`, the membership) and
///   looked up by every apply (feature level, re-wrap state); kept, as the lookups are more.
///
/// Not `versions`: one insert per put (and per delete or re-wrap of a version), while the
/// read path and the apply step walk a name's versions by iterator, which never uses the
/// bloom; point gets of one version (a read naming its version, a delete) are the rarer
/// case. Its SST bloom stays. (`secrets` is the one to measure both ways in the bench.)
const MEMTABLE_BLOOM_CFS: [&str; 6] = [CF_SM_META, CF_SECRETS, CF_TOKENS, CF_TOKEN_HASHES, CF_ROLES, CF_ROTATION];

pub fn open(path: &Path) -> Result<DB, StoreError> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_compression_type(DBCompressionType::Lz4);
    opts.set_keep_log_file_num(5);
    opts.set_max_total_wal_size(256 << 20);
    let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES)?;
    // The marker is never created here (an older build must still open a directory this
    // build opened on the RocksDB log), only opened where migration made it.
    let moved = DB::list_cf(&opts, path).is_ok_and(|cfs| cfs.iter().any(|c| c == CF_RAFT_LOG_MOVED));
    let names = ALL_CFS.iter().chain(moved.then_some(&CF_RAFT_LOG_MOVED));
    let cfs = names.map(|name| {
        let mut o = Options::default();
        o.set_compression_type(DBCompressionType::Lz4);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&cache);
        // Index and filter blocks stay with their table, in memory (a few bytes per
        // secret), instead of competing with data blocks in the cache: once the data outgrows
        // the cache, random reads evicted them, and every point lookup re-read and
        // re-checksummed a whole filter block from the file (~40% of a node's CPU for reads
        // at 1M secrets).
        table.set_cache_index_and_filter_blocks(false);
        if POINT_LOOKUP_CFS.contains(name) {
            table.set_bloom_filter(10.0, false);
        }
        if MEMTABLE_BLOOM_CFS.contains(name) {
            o.set_memtable_prefix_bloom_ratio(0.05);
            o.set_memtable_whole_key_filtering(true);
        }
        o.set_block_based_table_factory(&table);
        ColumnFamilyDescriptor::new(*name, o)
    });
    Ok(DB::open_cf_descriptors(&opts, path, cfs)?)
}

pub fn cf<'a>(db: &'a DB, name: &'static str) -> Result<&'a ColumnFamily, StoreError> {
    db.cf_handle(name).ok_or(StoreError::MissingCf(name))
}

/// An exclusive upper bound above every key stored in the state machine families (names are
/// ASCII, hashes 32 bytes), for range deletes.
pub const KEY_SPACE_END: [u8; 300] = [0xFF; 300];
