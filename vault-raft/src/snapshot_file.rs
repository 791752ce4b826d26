//! Snapshot and backup files: versioned, checksummed streams of the state machine's
//! key/values.
//!
//! ```text
//! magic (8 bytes) | format u16 | header_len u32 | header (codec) |
//! { family u8 | key_len u32 | key | value_len u32 | value }* |
//! 0xFF | record_count u64 | sha256 of everything before it (32 bytes)
//! ```
//! A Raft snapshot has magic `VLTSNAP\0` and openraft's snapshot metadata as its header; a
//! backup (`vaultctl snapshot save`) has magic `VLTBKUP\0` and a [`BackupHeader`]. The family
//! byte indexes [`SM_CFS`]. Values are copied as stored (already versioned by `codec`), so the
//! file holds exactly what the state machine holds: ciphertext, wrapped keys and token hashes,
//! never plaintext.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use rocksdb::{IteratorMode, DB};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vault_core::model::MasterKeyState;

use crate::codec::{decode, encode};
use crate::db::{cf, CF_RESTORE, SM_CFS};
use crate::typ::SnapshotMeta;
use crate::StoreError;

const SNAPSHOT_MAGIC: &[u8; 8] = b"VLTSNAP\0";
pub const SNAPSHOT_FORMAT: u16 = 1;
const BACKUP_MAGIC: &[u8; 8] = b"VLTBKUP\0";
pub const BACKUP_FORMAT: u16 = 1;
const END: u8 = 0xFF;

/// What a backup says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    pub created_ms: u64,
    /// The node that wrote it, and the last log index its state includes.
    pub node_id: u64,
    pub applied_index: u64,
    /// The source cluster's master key record: which key its data keys are wrapped by.
    pub master_key: Option<MasterKeyState>,
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

struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
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
    hash: Sha256,
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

fn get_chunk<R: Read>(r: &mut R) -> Result<Vec<u8>, StoreError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > 64 << 20 {
        return Err(StoreError::Corrupt(format!("snapshot record of {len} bytes")));
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
    write_file(db, path, SNAPSHOT_MAGIC, SNAPSHOT_FORMAT, true, meta_of)
}

/// Writes a backup of a consistent view of the state machine into `path` (the restore staging
/// area left out) and syncs it; returns its header and how many records it holds.
pub fn write_backup(
    db: &DB,
    path: &Path,
    header_of: impl FnOnce(&rocksdb::Snapshot<'_>) -> Result<BackupHeader, StoreError>,
) -> Result<BackupHeader, StoreError> {
    write_file(db, path, BACKUP_MAGIC, BACKUP_FORMAT, false, header_of)
}

fn write_file<H: Serialize>(
    db: &DB,
    path: &Path,
    magic: &[u8; 8],
    format: u16,
    with_staging: bool,
    header_of: impl FnOnce(&rocksdb::Snapshot<'_>) -> Result<H, StoreError>,
) -> Result<H, StoreError> {
    let view = db.snapshot();
    let header = header_of(&view)?;
    let file = File::create(path)?;
    let mut w = HashingWriter { inner: BufWriter::with_capacity(1 << 20, file), hash: Sha256::new() };
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
    let digest = w.hash.finalize_reset();
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
    read_file(reader, SNAPSHOT_MAGIC, SNAPSHOT_FORMAT, "snapshot", |_| true, visit)
}

/// Reads a backup, handing each record to `visit` (family index, key, value), and checks the
/// trailer: a truncated, altered or foreign file is `Corrupt` (after some records may have
/// been visited: check a file once before acting on it). `accept` sees the header before any
/// record.
pub fn read_backup<R: Read>(
    reader: R,
    accept: impl FnOnce(&BackupHeader) -> bool,
    mut visit: impl FnMut(FamilyRecord) -> Result<(), StoreError>,
) -> Result<BackupHeader, StoreError> {
    read_file(reader, BACKUP_MAGIC, BACKUP_FORMAT, "backup", accept, |family, key, value| {
        let idx = SM_CFS.iter().position(|f| *f == family).unwrap_or(usize::MAX);
        if family == CF_RESTORE || idx > u8::MAX as usize {
            return Err(StoreError::Corrupt(format!("backup holds records of the {family} family")));
        }
        visit(FamilyRecord { family: idx as u8, key, value })
    })
}

fn read_file<R: Read, H: DeserializeOwned>(
    reader: R,
    magic: &[u8; 8],
    format: u16,
    what: &str,
    accept: impl FnOnce(&H) -> bool,
    mut visit: impl FnMut(&'static str, Vec<u8>, Vec<u8>) -> Result<(), StoreError>,
) -> Result<H, StoreError> {
    let mut r = HashingReader { inner: BufReader::with_capacity(1 << 20, reader), hash: Sha256::new() };
    let truncated = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => StoreError::Corrupt(format!("{what} file is truncated")),
        _ => StoreError::Io(e),
    };
    let mut head = Vec::with_capacity(8);
    (&mut r).take(8).read_to_end(&mut head)?;
    if head != magic {
        return Err(StoreError::Corrupt(format!("not a vault {what} file")));
    }
    let mut found = [0u8; 2];
    r.read_exact(&mut found).map_err(truncated)?;
    let found = u16::from_be_bytes(found);
    if found != format {
        return Err(StoreError::Corrupt(format!("{what} format {found}; this build reads format {format}")));
    }
    let header: H = decode(&get_chunk(&mut r).map_err(|e| as_truncated(e, what))?)?;
    if !accept(&header) {
        return Err(StoreError::Corrupt(format!("{what} header refused")));
    }
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
        let k = get_chunk(&mut r).map_err(|e| as_truncated(e, what))?;
        let v = get_chunk(&mut r).map_err(|e| as_truncated(e, what))?;
        visit(family, k, v)?;
        count += 1;
    }
    let mut stated = [0u8; 8];
    r.read_exact(&mut stated).map_err(truncated)?;
    let digest = r.hash.finalize_reset();
    let mut trailer = [0u8; 32];
    r.inner.read_exact(&mut trailer).map_err(truncated)?;
    if u64::from_be_bytes(stated) != count || digest.as_slice() != trailer {
        return Err(StoreError::Corrupt(format!("{what} checksum mismatch: the file was altered or damaged")));
    }
    let mut extra = [0u8; 1];
    if r.inner.read(&mut extra)? != 0 {
        return Err(StoreError::Corrupt(format!("{what} file has data after its checksum")));
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
