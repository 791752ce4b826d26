//! One segment file: `<dir>/seg-{seq:020}.log`, a header then records, appended only.
//!
//! A segment is created complete or not at all: header and first record go to a `.tmp` file,
//! which is synced, renamed into place, and the directory synced; a crash leaves either no
//! segment or a whole one (recovery deletes stray `.tmp` files). After that the file only grows
//! by [`Segment::append`] (positioned writes, unsynced: the syncer or the caller syncs) and only
//! shrinks by [`Segment::truncate_to`] (recovery cutting a torn tail). Reads are positioned too,
//! on a shared handle, so they need no lock and keep working after the file is unlinked.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::record::{SegmentHeader, SEGMENT_HEADER_LEN};
use super::RaftLogError;

/// The file name of segment `seq`.
pub fn file_name(seq: u64) -> String {
    format!("seg-{seq:020}.log")
}

/// The sequence number in a segment file name, if it is one.
pub fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.len() != 20 {
        return None;
    }
    digits.parse().ok()
}

/// Syncs a directory, so a rename or unlink in it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), RaftLogError> {
    let d = File::open(dir).map_err(|e| RaftLogError::io("open directory", dir, e))?;
    if let Err(e) = d.sync_all() {
        fail_stop("sync directory", dir, &e);
    }
    Ok(())
}

/// A sync of the log failed: what it covered is of unknown durability, and Linux reports a
/// failed writeback to one sync only, so a later sync of the same file (by the syncer, say)
/// could succeed and vouch for pages that were lost. The process stops instead, with one
/// line naming the file; a restart recovers from what is on disk.
pub(crate) fn fail_stop(what: &str, path: &Path, e: &io::Error) -> ! {
    tracing::error!(path = %path.display(), error = %e, "{what} of the raft log failed; stopping, as its durability is unknown");
    eprintln!("vault: {what} of {} failed ({e}); stopping, as the raft log's durability is unknown", path.display());
    std::process::abort()
}

pub struct Segment {
    path: PathBuf,
    seq: u64,
    file: Arc<File>,
    /// Bytes in the file: where the next record goes.
    len: u64,
}

impl Segment {
    /// Creates segment `seq` in `dir` holding the header and `first` (the first record).
    pub fn create(dir: &Path, seq: u64, node_id: u64, first: &[u8]) -> Result<Segment, RaftLogError> {
        let path = dir.join(file_name(seq));
        let tmp = dir.join(format!("{}.tmp", file_name(seq)));
        let io = |what: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |e| RaftLogError::io(what, &p, e)
        };
        if path.exists() {
            // A reused seq would overwrite records; seqs only grow.
            let e = io::Error::new(io::ErrorKind::AlreadyExists, "segment exists");
            return Err(RaftLogError::io("create", &path, e));
        }
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&tmp).map_err(io("create", &tmp))?;
        let mut bytes = SegmentHeader { seq, node_id }.encode().to_vec();
        bytes.extend_from_slice(first);
        file.write_all_at(&bytes, 0).map_err(io("write", &tmp))?;
        if let Err(e) = file.sync_all() {
            fail_stop("sync", &tmp, &e);
        }
        std::fs::rename(&tmp, &path).map_err(io("rename", &tmp))?;
        sync_dir(dir)?;
        Ok(Segment { path, seq, file: Arc::new(file), len: bytes.len() as u64 })
    }

    /// Opens an existing segment and reads it whole (for recovery); checks its header.
    pub fn open(path: &Path, seq: u64, node_id: u64) -> Result<(Segment, Vec<u8>), RaftLogError> {
        let io = |what: &'static str| move |e| RaftLogError::io(what, path, e);
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(io("open"))?;
        let bytes = std::fs::read(path).map_err(io("read"))?;
        let header = SegmentHeader::decode(&bytes).map_err(|bad| RaftLogError::header(path, bad))?;
        if header.seq != seq {
            return Err(RaftLogError::corrupt(path, 0, format!("header names segment {}", header.seq)));
        }
        if header.node_id != node_id {
            return Err(RaftLogError::corrupt(
                path,
                0,
                format!("written by node {}, this is node {node_id}: a data directory copied?", header.node_id),
            ));
        }
        let seg = Segment { path: path.to_path_buf(), seq, file: Arc::new(file), len: bytes.len() as u64 };
        Ok((seg, bytes))
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn end(&self) -> u64 {
        self.len
    }

    /// Where the records start.
    pub fn data_start() -> u64 {
        SEGMENT_HEADER_LEN as u64
    }

    /// A handle for reads, valid after the segment is unlinked or closed.
    pub fn reader(&self) -> Arc<File> {
        self.file.clone()
    }

    /// Writes `bytes` (whole records) at the end, unsynced. Returns the offset they start at.
    pub fn append(&mut self, bytes: &[u8]) -> Result<u64, RaftLogError> {
        let at = self.len;
        if let Err(e) = self.file.write_all_at(bytes, at) {
            // A short write may have left part of a record: cut it, so the next append does not
            // follow garbage. If even that fails, recovery cuts it as a torn tail.
            let _ = self.file.set_len(at);
            return Err(RaftLogError::io("write", &self.path, e));
        }
        self.len += bytes.len() as u64;
        Ok(at)
    }

    /// Makes everything written so far durable; a failure stops the process ([`fail_stop`]).
    pub fn sync_data(&self) -> Result<(), RaftLogError> {
        if let Err(e) = self.file.sync_data() {
            fail_stop("sync", &self.path, &e);
        }
        Ok(())
    }

    /// Cuts the file to `len` bytes and syncs it.
    pub fn truncate_to(&mut self, len: u64) -> Result<(), RaftLogError> {
        self.file.set_len(len).map_err(|e| RaftLogError::io("truncate", &self.path, e))?;
        self.len = len;
        self.sync_data()
    }
}

/// Reads `len` bytes at `off` of a segment file.
pub fn read_at(file: &File, off: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, off)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::super::record::{encode_into, parse, Kind, Parsed};
    use super::*;

    fn rec(seq: u64, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_into::<()>(&mut out, seq, Kind::Vote, |o| {
            o.extend_from_slice(body);
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn names_round_trip_and_others_are_ignored() {
        assert_eq!(parse_name(&file_name(7)), Some(7));
        assert_eq!(parse_name(&file_name(u64::MAX)), Some(u64::MAX));
        for other in ["seg-7.log", "seg-00000000000000000007.log.tmp", "LOCK", "seg-0000000000000000000x.log"] {
            assert_eq!(parse_name(other), None, "{other}");
        }
    }

    #[test]
    fn append_read_truncate_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), 4, 9, &rec(4, b"first")).unwrap();
        assert!(!dir.path().join(format!("{}.tmp", file_name(4))).exists());
        let a = rec(4, b"second");
        let b = rec(4, b"third");
        let at_a = seg.append(&a).unwrap();
        let at_b = seg.append(&b).unwrap();
        assert_eq!(at_b, at_a + a.len() as u64);
        seg.sync_data().unwrap();
        let got = read_at(&seg.reader(), at_b, b.len()).unwrap();
        assert!(matches!(parse(&got, 4), Parsed::Record { body: b"third", .. }));

        seg.truncate_to(at_b).unwrap();
        let reader = seg.reader();
        drop(seg);
        let (seg, bytes) = Segment::open(&dir.path().join(file_name(4)), 4, 9).unwrap();
        assert_eq!(seg.end(), at_b);
        assert_eq!(bytes.len() as u64, at_b);
        assert!(read_at(&reader, at_b, 1).is_err(), "the cut bytes are gone");
        let err = Segment::open(&dir.path().join(file_name(4)), 4, 8).err().unwrap();
        assert!(err.to_string().contains("written by node 9"), "{err}");
    }

    #[test]
    fn creating_an_existing_segment_fails() {
        let dir = tempfile::tempdir().unwrap();
        Segment::create(dir.path(), 1, 1, &[]).unwrap();
        // A reused seq must never overwrite a segment.
        let err = Segment::create(dir.path(), 1, 1, &[]).err().unwrap();
        assert!(err.to_string().contains("segment exists"), "{err}");
    }
}
