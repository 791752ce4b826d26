//! Snapshot and backup files: versioned, sealed streams of the state machine's key/values.
//!
//! ```text
//! magic (8 bytes) | format u16 | header_len u32 | header (codec) |
//! { family u8 | key_len u32 | key | value_len u32 | value }* |
//! 0xFF | record_count u64 | trailer over everything before it (32 bytes)
//! ```
//! A Raft snapshot has magic `VLTSNAP\0`, openraft's snapshot metadata as its header and a
//! SHA-256 trailer (it only travels between members over the authenticated Raft transport, and
//! the checksum catches damage). A backup (`vaultctl snapshot save`) has magic `VLTBKUP\0`, a
//! [`BackupHeader`], and, from format 2, an HMAC-SHA256 trailer under a random per-backup key
//! that the key manager wrapped under the cluster's master key for this purpose only
//! ([`vault_core::kms::KeyPurpose::BackupMac`]); the header carries it wrapped. A checksum is
//! no protection against someone who edits the file and recomputes it: only a MAC under a key
//! an editor cannot unwrap is. Format 1 backups (SHA-256 only) are refused, never trusted. The
//! family byte indexes [`SM_CFS`]. Values are copied as stored (already versioned by `codec`), so the
//! file holds exactly what the state machine holds: ciphertext, wrapped keys and token hashes,
//! never plaintext.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use hmac::{Hmac, Mac};
use rocksdb::{IteratorMode, DB};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use vault_core::keys::DataKey;
use vault_core::model::MasterKeyState;

use crate::codec::{decode, encode};
use crate::db::{cf, CF_RESTORE, SM_CFS};
use crate::typ::SnapshotMeta;
use crate::StoreError;

const SNAPSHOT_MAGIC: &[u8; 8] = b"VLTSNAP\0";
pub const SNAPSHOT_FORMAT: u16 = 1;
const BACKUP_MAGIC: &[u8; 8] = b"VLTBKUP\0";
/// 2: HMAC-SHA256 trailer under the key in [`BackupHeader::mac_key`]. 1 (SHA-256 trailer,
/// unauthenticated) is refused.
pub const BACKUP_FORMAT: u16 = 2;
const END: u8 = 0xFF;
/// Length of the trailer: a SHA-256 digest or an HMAC-SHA256 tag.
const TRAILER_LEN: usize = 32;
/// Largest header a reader takes.
const MAX_HEADER_BYTES: usize = 1 << 20;
/// Largest key or value of a snapshot record a reader takes.
const MAX_SNAPSHOT_RECORD: usize = 64 << 20;

/// What a backup says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    pub created_ms: u64,
    /// The node that wrote it, and the last log index its state includes.
    pub node_id: u64,
    pub applied_index: u64,
    /// The source cluster's master key record: which key its data keys are wrapped by.
    pub master_key: Option<MasterKeyState>,
    /// The key of the file's MAC, wrapped by the key manager.
    pub mac_key: WrappedMacKey,
}

/// A backup's MAC key as the key manager wrapped it: under master key `key_id`, for
/// [`vault_core::kms::KeyPurpose::BackupMac`] only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedMacKey {
    pub key_id: String,
    #[serde(with = "vault_core::byte_buf")]
    pub wrapped: Vec<u8>,
}

/// One key/value of a state machine family, as a backup carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyRecord {
    /// Index into [`SM_CFS`].
    pub family: u8,
    #[serde(with = "vault_core::byte_buf")]
    pub key: Vec<u8>,
    #[serde(with = "vault_core::byte_buf")]
    pub value: Vec<u8>,
}

impl FamilyRecord {
    pub fn size(&self) -> usize {
        self.key.len() + self.value.len() + 16
    }
}

/// What computes a file's trailer.
enum Seal {
    Sha256(Sha256),
    Mac(Hmac<Sha256>),
}

impl Seal {
    fn mac(key: &DataKey) -> Result<Self, StoreError> {
        let mac =
            <Hmac<Sha256> as Mac>::new_from_slice(key.expose()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Seal::Mac(mac))
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Seal::Sha256(h) => h.update(bytes),
            Seal::Mac(m) => m.update(bytes),
        }
    }

    fn finish(self) -> [u8; TRAILER_LEN] {
        match self {
            Seal::Sha256(h) => h.finalize().into(),
            Seal::Mac(m) => m.finalize().into_bytes().into(),
        }
    }

    /// Whether `trailer` is this seal's, in constant time.
    fn matches(self, trailer: &[u8; TRAILER_LEN]) -> bool {
        bool::from(self.finish().ct_eq(trailer))
    }
}

struct HashingWriter<W: Write> {
    inner: W,
    hash: Seal,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct HashingReader<R: Read> {
    inner: R,
    hash: Seal,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

fn put_chunk<W: Write>(w: &mut W, bytes: &[u8]) -> Result<(), StoreError> {
    let len = u32::try_from(bytes.len()).map_err(|_| StoreError::Corrupt("snapshot value over 4 GiB".into()))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(bytes)?;
    Ok(())
}

/// Reads one length-prefixed chunk of at most `max` bytes (before allocating for it).
fn get_chunk<R: Read>(r: &mut R, max: usize, what: &str) -> Result<Vec<u8>, StoreError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(StoreError::Corrupt(format!("{what} of {len} bytes is over the limit of {max}")));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

/// Streams a consistent view of the state machine into `path` and syncs it. `meta_of` builds
/// the snapshot metadata from the view itself (last applied id, membership).
pub(crate) fn write_snapshot(
    db: &DB,
    path: &Path,
    meta_of: impl FnOnce(&rocksdb::Snapshot<'_>) -> Result<SnapshotMeta, StoreError>,
) -> Result<SnapshotMeta, StoreError> {
    write_file(db, path, SNAPSHOT_MAGIC, SNAPSHOT_FORMAT, Seal::Sha256(Sha256::new()), true, meta_of)
}

/// Writes a backup of a consistent view of the state machine into `path` (the restore staging
/// area left out), sealed with an HMAC under `mac` (the key `header_of` names wrapped), and
/// syncs it; returns its header.
pub fn write_backup(
    db: &DB,
    path: &Path,
    mac: &DataKey,
    header_of: impl FnOnce(&rocksdb::Snapshot<'_>) -> Result<BackupHeader, StoreError>,
) -> Result<BackupHeader, StoreError> {
    write_file(db, path, BACKUP_MAGIC, BACKUP_FORMAT, Seal::mac(mac)?, false, header_of)
}

fn write_file<H: Serialize>(
    db: &DB,
    path: &Path,
    magic: &[u8; 8],
    format: u16,
    seal: Seal,
    with_staging: bool,
    header_of: impl FnOnce(&rocksdb::Snapshot<'_>) -> Result<H, StoreError>,
) -> Result<H, StoreError> {
    let view = db.snapshot();
    let header = header_of(&view)?;
    let file = File::create(path)?;
    let mut w = HashingWriter { inner: BufWriter::with_capacity(1 << 20, file), hash: seal };
    w.write_all(magic)?;
    w.write_all(&format.to_be_bytes())?;
    put_chunk(&mut w, &encode(&header)?)?;
    let mut count: u64 = 0;
    for (idx, name) in SM_CFS.iter().enumerate() {
        if *name == CF_RESTORE && !with_staging {
            continue;
        }
        for item in view.iterator_cf(cf(db, name)?, IteratorMode::Start) {
            let (k, v) = item?;
            w.write_all(&[idx as u8])?;
            put_chunk(&mut w, &k)?;
            put_chunk(&mut w, &v)?;
            count += 1;
        }
    }
    w.write_all(&[END])?;
    w.write_all(&count.to_be_bytes())?;
    let digest = w.hash.finish();
    let mut inner = w.inner;
    inner.write_all(&digest)?;
    inner.flush()?;
    let file = inner.into_inner().map_err(|e| StoreError::Io(e.into_error()))?;
    file.sync_all()?;
    Ok(header)
}

/// Reads a snapshot stream, handing each record to `visit` as `(family, key, value)`, and
/// checks the trailer. Callers that must not act on a bad file run it once with a no-op
/// visitor first.
pub(crate) fn read_snapshot<R: Read>(
    reader: R,
    visit: impl FnMut(&'static str, Vec<u8>, Vec<u8>) -> Result<(), StoreError>,
) -> Result<SnapshotMeta, StoreError> {
    let seal = Seal::Sha256(Sha256::new());
    read_file(reader, SNAPSHOT_MAGIC, SNAPSHOT_FORMAT, "snapshot", seal, MAX_SNAPSHOT_RECORD, visit)
}

/// Reads only a backup's magic, format and header: what a reader needs to unwrap its MAC key.
/// Nothing in the header is trusted until the MAC is checked ([`verify_backup`]).
pub fn read_backup_header<R: Read>(reader: R) -> Result<BackupHeader, StoreError> {
    let mut r = reader;
    read_prefix(&mut r, BACKUP_MAGIC, BACKUP_FORMAT, "backup")
}

/// Checks a backup's MAC over its raw bytes under `mac`, before anything in it is parsed
/// beyond the header: an altered, truncated or foreign file is `Corrupt`.
pub fn verify_backup<R: Read>(reader: R, mac: &DataKey) -> Result<(), StoreError> {
    let mut r = BufReader::with_capacity(1 << 20, reader);
    let mut seal = Seal::mac(mac)?;
    // Everything but the last TRAILER_LEN bytes goes into the MAC; those are held back.
    let mut held: Vec<u8> = Vec::with_capacity(2 * TRAILER_LEN);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        held.extend_from_slice(&buf[..n]);
        if held.len() > TRAILER_LEN {
            let pass = held.len() - TRAILER_LEN;
            seal.update(&held[..pass]);
            held.drain(..pass);
        }
    }
    let trailer: [u8; TRAILER_LEN] =
        held.as_slice().try_into().map_err(|_| StoreError::Corrupt("backup file is truncated".into()))?;
    if !seal.matches(&trailer) {
        return Err(StoreError::Corrupt(
            "backup MAC mismatch: the file is truncated, or was altered or damaged after it was written".into(),
        ));
    }
    Ok(())
}

/// Reads a backup, handing each record to `visit` (family index, key, value), and checks the
/// MAC under `mac`: a truncated, altered or foreign file is `Corrupt` (after some records may
/// have been visited: check a file with [`verify_backup`] before acting on it). A record whose
/// key and value together exceed `max_record` bytes is `Corrupt` before it is read.
pub fn read_backup<R: Read>(
    reader: R,
    mac: &DataKey,
    max_record: usize,
    mut visit: impl FnMut(FamilyRecord) -> Result<(), StoreError>,
) -> Result<BackupHeader, StoreError> {
    read_file(reader, BACKUP_MAGIC, BACKUP_FORMAT, "backup", Seal::mac(mac)?, max_record, |family, key, value| {
        let idx = SM_CFS.iter().position(|f| *f == family).unwrap_or(usize::MAX);
        if family == CF_RESTORE || idx > u8::MAX as usize {
            return Err(StoreError::Corrupt(format!("backup holds records of the {family} family")));
        }
        if key.len() + value.len() > max_record {
            return Err(StoreError::Corrupt(format!(
                "a {family} record of {} bytes is over the limit of {max_record}",
                key.len() + value.len()
            )));
        }
        visit(FamilyRecord { family: idx as u8, key, value })
    })
}

/// Reads magic, format and header.
fn read_prefix<R: Read, H: DeserializeOwned>(
    r: &mut R,
    magic: &[u8; 8],
    format: u16,
    what: &str,
) -> Result<H, StoreError> {
    let truncated = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => StoreError::Corrupt(format!("{what} file is truncated")),
        _ => StoreError::Io(e),
    };
    let mut head = Vec::with_capacity(8);
    r.take(8).read_to_end(&mut head)?;
    if head != magic {
        return Err(StoreError::Corrupt(format!("not a vault {what} file")));
    }
    let mut found = [0u8; 2];
    r.read_exact(&mut found).map_err(truncated)?;
    let found = u16::from_be_bytes(found);
    if magic == BACKUP_MAGIC && found == 1 {
        return Err(StoreError::Corrupt(
            "backup format 1 carries only a checksum, which anyone who edits the file can recompute; \
             this build restores only authenticated backups (format 2): take a new one with `vaultctl snapshot save`"
                .into(),
        ));
    }
    if found != format {
        return Err(StoreError::Corrupt(format!("{what} format {found}; this build reads format {format}")));
    }
    decode(&get_chunk(r, MAX_HEADER_BYTES, "header").map_err(|e| as_truncated(e, what))?)
}

fn read_file<R: Read, H: DeserializeOwned>(
    reader: R,
    magic: &[u8; 8],
    format: u16,
    what: &str,
    seal: Seal,
    max_record: usize,
    mut visit: impl FnMut(&'static str, Vec<u8>, Vec<u8>) -> Result<(), StoreError>,
) -> Result<H, StoreError> {
    let sealed_by = if matches!(seal, Seal::Mac(_)) { "MAC" } else { "checksum" };
    let mut r = HashingReader { inner: BufReader::with_capacity(1 << 20, reader), hash: seal };
    let truncated = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => StoreError::Corrupt(format!("{what} file is truncated")),
        _ => StoreError::Io(e),
    };
    let header: H = read_prefix(&mut r, magic, format, what)?;
    let mut count: u64 = 0;
    loop {
        let mut tag = [0u8; 1];
        r.read_exact(&mut tag).map_err(truncated)?;
        if tag[0] == END {
            break;
        }
        let family = *SM_CFS
            .get(tag[0] as usize)
            .ok_or_else(|| StoreError::Corrupt(format!("{what} names unknown family {}", tag[0])))?;
        let k = get_chunk(&mut r, max_record, "a record key").map_err(|e| as_truncated(e, what))?;
        let v = get_chunk(&mut r, max_record.saturating_sub(k.len()), "a record").map_err(|e| as_truncated(e, what))?;
        visit(family, k, v)?;
        count += 1;
    }
    let mut stated = [0u8; 8];
    r.read_exact(&mut stated).map_err(truncated)?;
    let mut trailer = [0u8; TRAILER_LEN];
    r.inner.read_exact(&mut trailer).map_err(truncated)?;
    if u64::from_be_bytes(stated) != count || !r.hash.matches(&trailer) {
        return Err(StoreError::Corrupt(format!("{what} {sealed_by} mismatch: the file was altered or damaged")));
    }
    let mut extra = [0u8; 1];
    if r.inner.read(&mut extra)? != 0 {
        return Err(StoreError::Corrupt(format!("{what} file has data after its {sealed_by}")));
    }
    Ok(header)
}

fn as_truncated(e: StoreError, what: &str) -> StoreError {
    match e {
        StoreError::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            StoreError::Corrupt(format!("{what} file is truncated"))
        }
        other => other,
    }
}
