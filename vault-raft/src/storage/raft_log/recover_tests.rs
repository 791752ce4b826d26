//! Recovery from segment files built by hand: the tail rule of the newest segment, fail-stop
//! everywhere else.

use std::fs::OpenOptions;
use std::path::Path;

use openraft::{CommittedLeaderId, EntryPayload};

use super::index::Checkpoint;
use super::recover::recover;
use super::segment::{file_name, Segment};
use super::{checkpoint_record, entry_record};
use crate::typ::{Entry, LogId};

fn entry(index: u64) -> Entry {
    Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Blank }
}

/// Writes segment `seq` holding entries `range` after a checkpoint naming `range.start` as
/// the next index; returns each record's (offset, length).
fn write_segment(dir: &Path, seq: u64, range: std::ops::Range<u64>) -> Vec<(u64, usize)> {
    let cp = Checkpoint { vote: None, last_purged: None, next_index: range.start };
    let mut seg = Segment::create(dir, seq, 1, &checkpoint_record(seq, &cp).unwrap()).unwrap();
    let mut at = Vec::new();
    for i in range {
        let mut buf = Vec::new();
        let len = entry_record(&mut buf, seq, &entry(i)).unwrap();
        at.push((seg.append(&buf).unwrap(), len));
    }
    seg.sync_data().unwrap();
    at
}

fn set_len(path: &Path, len: u64) {
    OpenOptions::new().write(true).open(path).unwrap().set_len(len).unwrap();
}

fn copy_dir(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for item in std::fs::read_dir(from).unwrap() {
        let item = item.unwrap();
        std::fs::copy(item.path(), to.path().join(item.file_name())).unwrap();
    }
    to
}

fn last_index(dir: &Path) -> Option<u64> {
    recover(dir, 1).unwrap().index.last_log_id().map(|id| id.index)
}

#[test]
fn a_torn_tail_of_the_newest_segment_is_cut_at_every_offset_and_the_rest_is_kept() {
    let base = tempfile::tempdir().unwrap();
    write_segment(base.path(), 1, 0..3);
    let at = write_segment(base.path(), 2, 3..6);
    assert_eq!(last_index(base.path()), Some(5));
    let (off, len) = *at.last().unwrap();
    let last = std::fs::read(base.path().join(file_name(2))).unwrap()[off as usize..].to_vec();
    for cut in 0..len as u64 {
        for zeros in [false, true] {
            // Cut, then zeros where the lost bytes were zeros already, is the whole record.
            let whole = zeros && last[cut as usize..].iter().all(|b| *b == 0);
            let (want_last, want_len) = if whole { (5, off + len as u64) } else { (4, off) };
            let dir = copy_dir(base.path());
            let path = dir.path().join(file_name(2));
            set_len(&path, off + cut);
            if zeros {
                // Unsynced appends can leave the file longer than what reached it.
                set_len(&path, off + len as u64 + 100);
            }
            let rec = recover(dir.path(), 1).unwrap_or_else(|e| panic!("cut at {cut} (zeros {zeros}): {e}"));
            assert_eq!(rec.index.last_log_id().map(|id| id.index), Some(want_last), "cut at {cut} (zeros {zeros})");
            assert_eq!(rec.active.end(), want_len, "cut at {cut}: the file ends after the last whole record");
            drop(rec);
            assert_eq!(std::fs::metadata(&path).unwrap().len(), want_len);
            assert_eq!(last_index(dir.path()), Some(want_last), "reopened after the cut");
        }
    }
}

#[test]
fn damage_in_an_older_segment_is_an_error_naming_the_file_and_offset() {
    let base = tempfile::tempdir().unwrap();
    let at = write_segment(base.path(), 1, 0..3);
    write_segment(base.path(), 2, 3..6);
    let (off, len) = at[1];
    for bit in [0, 37, (len as u64 * 8) - 1] {
        let dir = copy_dir(base.path());
        let path = dir.path().join(file_name(1));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[(off + bit / 8) as usize] ^= 1 << (bit % 8);
        std::fs::write(&path, bytes).unwrap();
        let err = recover(dir.path(), 1).err().expect("a flipped bit in a sealed segment fails").to_string();
        assert!(err.contains(&file_name(1)) && err.contains(&format!("offset {off}")), "bit {bit}: {err}");
    }
    // A sealed segment cut short is corruption too: it was synced whole before the next began.
    let dir = copy_dir(base.path());
    set_len(&dir.path().join(file_name(1)), at[2].0 + 3);
    let err = recover(dir.path(), 1).err().expect("a cut sealed segment fails").to_string();
    assert!(err.contains(&format!("offset {}", at[2].0)) && err.contains("cut short"), "{err}");
}

#[test]
fn a_record_from_another_segment_does_not_validate() {
    let base = tempfile::tempdir().unwrap();
    write_segment(base.path(), 1, 0..3);
    write_segment(base.path(), 2, 3..6);
    // Entry 6, well formed, but sealed for segment 1, at the end of segment 2: not taken.
    let mut foreign = Vec::new();
    entry_record(&mut foreign, 1, &entry(6)).unwrap();
    let path = base.path().join(file_name(2));
    let end = std::fs::metadata(&path).unwrap().len();
    let mut seg2 = OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut seg2, &foreign).unwrap();
    drop(seg2);
    assert_eq!(last_index(base.path()), Some(5));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), end, "cut as a bad tail");
    // The same record inside the sealed segment 1 is corruption there.
    let mut seg1 = OpenOptions::new().append(true).open(base.path().join(file_name(1))).unwrap();
    let mut wrong = Vec::new();
    entry_record(&mut wrong, 2, &entry(3)).unwrap();
    std::io::Write::write_all(&mut seg1, &wrong).unwrap();
    let err = recover(base.path(), 1).err().expect("foreign record in a sealed segment").to_string();
    assert!(err.contains("checksum"), "{err}");
}

#[test]
fn stray_tmp_files_are_removed_and_a_bad_newest_header_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_segment(dir.path(), 1, 0..3);
    let tmp = dir.path().join(format!("{}.tmp", file_name(3)));
    std::fs::write(&tmp, b"half a segment").unwrap();
    let rec = recover(dir.path(), 1).unwrap();
    assert_eq!(rec.index.last_log_id().map(|id| id.index), Some(2));
    assert!(!tmp.exists());
    drop(rec);
    // A segment is renamed into place only once its header is synced: a bad header on the
    // newest one is damage to a file that may hold synced entries and the vote, not a torn
    // creation, so it is refused rather than removed.
    std::fs::write(dir.path().join(file_name(2)), b"VLTRLOG\0\x01").unwrap();
    let err = recover(dir.path(), 1).err().expect("bad newest header").to_string();
    assert!(err.contains("segment header is not valid") && err.contains(&file_name(2)), "{err}");
    assert!(dir.path().join(file_name(2)).exists(), "nothing removed");
}

#[test]
fn a_torn_header_in_an_older_segment_and_a_newer_format_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    write_segment(dir.path(), 1, 0..3);
    write_segment(dir.path(), 2, 3..4);
    let path = dir.path().join(file_name(1));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[3] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let err = recover(dir.path(), 1).err().unwrap().to_string();
    assert!(err.contains("segment header is not valid") && err.contains(&file_name(1)), "{err}");
    bytes[3] ^= 1;
    bytes[8] = 2; // format 2, with a valid header checksum
    let crc = crc32c::crc32c(&bytes[..28]);
    bytes[28..32].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = recover(dir.path(), 1).err().unwrap().to_string();
    assert!(err.contains("newer build") && err.contains("segment format 2"), "{err}");
}

#[test]
fn an_empty_directory_gets_its_first_segment() {
    let dir = tempfile::tempdir().unwrap();
    let rec = recover(&dir.path().join("raft-log"), 1).unwrap();
    assert_eq!((rec.active.seq(), rec.index.last_log_id()), (1, None));
    assert!(dir.path().join("raft-log").join(file_name(1)).exists());
}
