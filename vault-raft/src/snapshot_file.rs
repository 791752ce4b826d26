//! The snapshot file: a versioned, checksummed stream of the state machine's key/values.
//!
//! ```text
//! magic "VLTSNAP\0" | format u16 | meta_len u32 | meta (codec) |
//! { family u8 | key_len u32 | key | value_len u32 | value }* |
//! 0xFF | record_count u64 | sha256 of everything before it (32 bytes)
//! ```
//! Values are copied as stored (already versioned by `codec`), so the file holds exactly what
//! the state machine holds: ciphertext, wrapped keys and token hashes, never plaintext.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use rocksdb::{IteratorMode, DB};
use sha2::{Digest, Sha256};

use crate::codec::{decode, encode};
use crate::db::{cf, SM_CFS};
use crate::typ::SnapshotMeta;
use crate::StoreError;

const MAGIC: &[u8; 8] = b"VLTSNAP\0";
pub const SNAPSHOT_FORMAT: u16 = 1;
const END: u8 = 0xFF;

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
    let view = db.snapshot();
    let meta = meta_of(&view)?;
    let file = File::create(path)?;
    let mut w = HashingWriter { inner: BufWriter::with_capacity(1 << 20, file), hash: Sha256::new() };
    w.write_all(MAGIC)?;
    w.write_all(&SNAPSHOT_FORMAT.to_be_bytes())?;
    put_chunk(&mut w, &encode(&meta)?)?;
    let mut count: u64 = 0;
    for (idx, name) in SM_CFS.iter().enumerate() {
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
    Ok(meta)
}

/// Reads a snapshot stream, handing each record to `visit` as `(family, key, value)`, and
/// checks the trailer. Callers that must not act on a bad file run it once with a no-op
/// visitor first.
pub(crate) fn read_snapshot<R: Read>(
    reader: R,
    mut visit: impl FnMut(&'static str, Vec<u8>, Vec<u8>) -> Result<(), StoreError>,
) -> Result<SnapshotMeta, StoreError> {
    let mut r = HashingReader { inner: BufReader::with_capacity(1 << 20, reader), hash: Sha256::new() };
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(StoreError::Corrupt("not a vault snapshot".into()));
    }
    let mut format = [0u8; 2];
    r.read_exact(&mut format)?;
    let format = u16::from_be_bytes(format);
    if format != SNAPSHOT_FORMAT {
        return Err(StoreError::Corrupt(format!(
            "snapshot format {format}; this build reads format {SNAPSHOT_FORMAT}"
        )));
    }
    let meta: SnapshotMeta = decode(&get_chunk(&mut r)?)?;
    let mut count: u64 = 0;
    loop {
        let mut tag = [0u8; 1];
        r.read_exact(&mut tag)?;
        if tag[0] == END {
            break;
        }
        let family = *SM_CFS
            .get(tag[0] as usize)
            .ok_or_else(|| StoreError::Corrupt(format!("snapshot names unknown family {}", tag[0])))?;
        let k = get_chunk(&mut r)?;
        let v = get_chunk(&mut r)?;
        visit(family, k, v)?;
        count += 1;
    }
    let mut stated = [0u8; 8];
    r.read_exact(&mut stated)?;
    let digest = r.hash.finalize_reset();
    let mut trailer = [0u8; 32];
    r.inner.read_exact(&mut trailer)?;
    if u64::from_be_bytes(stated) != count || digest.as_slice() != trailer {
        return Err(StoreError::Corrupt("snapshot checksum mismatch".into()));
    }
    Ok(meta)
}
