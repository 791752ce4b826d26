//! Rebuilding the log from its segment files at start.
//!
//! Stray `.tmp` files (a segment whose creation did not finish) are deleted. Segments are
//! replayed in seq order, record by record, into the [`Index`]. Where a record is not whole
//! and valid, what happens depends on the segment:
//! - **the newest**: it may end in bytes written after the last sync, torn or reordered by
//!   writeback. Nothing there was acknowledged, so the file is cut at the first bad record
//!   (and synced), with a warning and the `vault_raft_log_tail_truncated_bytes` counter.
//! - **any older one**: it was synced whole before the next was created, so damage there is
//!   corruption: recovery fails, naming the file and the offset. The operator wipes the node
//!   and re-adds it.
//!
//! The newest segment is synced once replayed, as the RocksDB log flushed its WAL at open: the
//! syncer starts from the end of the log, so everything in it must be on disk.
//!
//! A valid record of an unknown kind, or a segment of a newer format, was written by a newer
//! build: recovery fails rather than guess.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use super::index::{Checkpoint, Index, Loc};
use super::record::{parse, Kind, Parsed};
use super::segment::{self, Segment};
use super::{checkpoint_record, RaftLogError, ENTRY_PREFIX};
use crate::codec::decode;
use crate::typ::{LogId, Vote};

/// The log as found on disk.
pub struct Recovered {
    pub index: Index,
    /// Read handles of every segment, by seq (the active one included).
    pub files: BTreeMap<u64, Arc<File>>,
    /// The newest segment, where appends go.
    pub active: Segment,
}

/// Opens the log in `dir` (created if missing) for node `node_id`.
pub fn recover(dir: &Path, node_id: u64) -> Result<Recovered, RaftLogError> {
    std::fs::create_dir_all(dir).map_err(|e| RaftLogError::io("create", dir, e))?;
    let mut seqs = Vec::new();
    let listing = std::fs::read_dir(dir).map_err(|e| RaftLogError::io("list", dir, e))?;
    for item in listing {
        let item = item.map_err(|e| RaftLogError::io("list", dir, e))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = segment::parse_name(name) {
            seqs.push(seq);
        } else if name.strip_suffix(".tmp").and_then(segment::parse_name).is_some() {
            let path = item.path();
            std::fs::remove_file(&path).map_err(|e| RaftLogError::io("remove", &path, e))?;
        }
    }
    seqs.sort_unstable();

    let mut index = Index::default();
    let mut files = BTreeMap::new();
    let mut active = None;
    for (i, &seq) in seqs.iter().enumerate() {
        let newest = i + 1 == seqs.len();
        let path = dir.join(segment::file_name(seq));
        // Segments are renamed into place only once their header is synced: a bad header,
        // on the newest as on any other, is damage, never a torn creation.
        let (mut seg, bytes) = Segment::open(&path, seq, node_id)?;
        index.add_segment(seq);
        let end = replay(&mut index, &path, seq, &bytes, newest)?;
        if end < bytes.len() as u64 {
            let cut = bytes.len() as u64 - end;
            tracing::warn!(path = %path.display(), offset = end, bytes = cut, "cutting a torn raft log tail");
            metrics::counter!("vault_raft_log_tail_truncated_bytes").increment(cut);
            seg.truncate_to(end)?;
        }
        if newest {
            // What an earlier run wrote may still be only in the page cache (a process crash
            // keeps it): made durable now, so the syncer can start from the end of the log.
            seg.sync_data()?;
        }
        files.insert(seq, seg.reader());
        active = Some(seg);
    }
    if let (Some(p), Some(first)) = (index.last_purged(), index.first_index()) {
        if first > p.index + 1 {
            return Err(RaftLogError::corrupt(dir, 0, format!("entries {}..{first} are missing", p.index + 1)));
        }
    }
    let active = match active {
        Some(seg) => seg,
        None => {
            let seq = seqs.last().map_or(1, |s| s + 1);
            let first = checkpoint_record(seq, &index.checkpoint())?;
            let seg = Segment::create(dir, seq, node_id, &first)?;
            index.add_segment(seq);
            files.insert(seq, seg.reader());
            seg
        }
    };
    Ok(Recovered { index, files, active })
}

/// Replays the records of one segment; returns where the valid records end.
fn replay(index: &mut Index, path: &Path, seq: u64, bytes: &[u8], newest: bool) -> Result<u64, RaftLogError> {
    let mut at = Segment::data_start() as usize;
    loop {
        let bad = match parse(&bytes[at..], seq) {
            Parsed::Record { kind, body, len } => {
                apply(index, kind, body, At { seg: seq, off: at as u64, len: len as u32 })
                    .map_err(|reason| RaftLogError::corrupt(path, at as u64, reason))?;
                at += len;
                continue;
            }
            Parsed::End if at == bytes.len() => return Ok(at as u64),
            Parsed::End => "zeros where a record should be".to_string(),
            Parsed::Torn => "a record is cut short".to_string(),
            Parsed::Corrupt(why) => why.to_string(),
            Parsed::UnknownKind(k) => {
                return Err(RaftLogError::Newer { path: path.to_path_buf(), what: format!("record kind {k}") })
            }
        };
        if newest {
            return Ok(at as u64);
        }
        return Err(RaftLogError::corrupt(path, at as u64, bad));
    }
}

/// Where a record is, before its log id is known.
struct At {
    seg: u64,
    off: u64,
    len: u32,
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(a)
}

fn apply(index: &mut Index, kind: Kind, body: &[u8], at: At) -> Result<(), String> {
    let codec = |e: crate::StoreError| e.to_string();
    match kind {
        Kind::Entry => {
            if body.len() < ENTRY_PREFIX {
                return Err("entry record too short".into());
            }
            let log_id =
                LogId::new(openraft::CommittedLeaderId::new(u64_at(body, 8), u64_at(body, 16)), u64_at(body, 0));
            index.push(Loc { log_id, seg: at.seg, off: at.off, len: at.len });
            Ok(())
        }
        Kind::Vote => {
            index.set_vote(decode::<Vote>(body).map_err(codec)?);
            Ok(())
        }
        Kind::Truncate => {
            let b: [u8; 8] = body.try_into().map_err(|_| "truncate record is not 8 bytes".to_string())?;
            index.truncate(u64::from_le_bytes(b));
            Ok(())
        }
        Kind::Purge => {
            index.purge(decode::<LogId>(body).map_err(codec)?);
            Ok(())
        }
        Kind::Checkpoint => {
            index.apply_checkpoint(&decode::<Checkpoint>(body).map_err(codec)?);
            Ok(())
        }
    }
}
