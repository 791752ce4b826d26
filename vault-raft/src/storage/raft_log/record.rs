//! One record of a segment file, and the segment header.
//!
//! A record is `crc u32 | len u32 | kind u8 | body` (little-endian). The checksum is CRC-32C
//! over `len‖kind‖body`, seeded with the CRC-32C of the segment's sequence number: a record
//! left over from another segment (a reused page, a file copied over) never validates in the
//! wrong file, even when its bytes are intact.
//!
//! CRC-32C (Castagnoli) rather than the IEEE polynomial because it is what RocksDB, etcd's
//! WAL and ext4 metadata use for the same job, and x86-64 (SSE4.2) and aarch64 compute it in
//! hardware; the `crc32c` crate picks the instruction at run time and falls back to tables.
//!
//! [`parse`] tells a torn record (the bytes end inside it) from a corrupt one (it is all
//! there and does not check out) and from the end of the data (no bytes, or a zeroed header,
//! as the unwritten part of a file reads). What recovery makes of each depends on whether the
//! segment is the newest one; see `recover.rs`.

use std::fmt;

/// Bytes before a record's body: crc, length, kind.
pub const HEADER_LEN: usize = 9;
/// A record body larger than this is corrupt (an entry is far smaller: proposals are bounded).
pub const MAX_BODY: usize = 64 << 20;

/// Bytes of a segment header.
pub const SEGMENT_HEADER_LEN: usize = 32;
const MAGIC: &[u8; 8] = b"VLTRLOG\0";
/// The segment format this build writes and reads.
pub const SEGMENT_FORMAT: u16 = 1;

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// `index u64 · term u64 · leader node u64 ·` then the entry in the versioned codec.
    Entry = 1,
    /// The vote, in the versioned codec.
    Vote = 2,
    /// `index u64`: the log ends before it.
    Truncate = 3,
    /// The last purged log id, in the versioned codec.
    Purge = 4,
    /// The log's state when the segment was created (first record of every segment).
    Checkpoint = 5,
}

impl Kind {
    fn from_u8(k: u8) -> Option<Kind> {
        Some(match k {
            1 => Kind::Entry,
            2 => Kind::Vote,
            3 => Kind::Truncate,
            4 => Kind::Purge,
            5 => Kind::Checkpoint,
            _ => return None,
        })
    }
}

/// The checksum seed of segment `seq`.
fn seed(seq: u64) -> u32 {
    crc32c::crc32c(&seq.to_le_bytes())
}

/// Appends one record to `out`; `body` writes the body after the header. Returns the
/// record's length (header included).
pub fn encode_into<E>(
    out: &mut Vec<u8>,
    seq: u64,
    kind: Kind,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<usize, E> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    out[start + 8] = kind as u8;
    body(out)?;
    let body_len = out.len() - start - HEADER_LEN;
    // Bodies come from bounded proposals; a larger one is a bug, and recovery would reject it.
    assert!(body_len <= MAX_BODY, "raft log record body of {body_len} bytes");
    out[start + 4..start + 8].copy_from_slice(&(body_len as u32).to_le_bytes());
    let crc = crc32c::crc32c_append(seed(seq), &out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    Ok(out.len() - start)
}

/// What the bytes at a record's position are.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A whole record whose checksum holds; `len` counts its header.
    Record { kind: Kind, body: &'a [u8], len: usize },
    /// No more records: nothing left, or a zeroed header (never written).
    End,
    /// The bytes end inside the record.
    Torn,
    /// The record is all there and is not valid.
    Corrupt(Bad),
    /// A valid record of a kind this build does not know: written by a newer build.
    UnknownKind(u8),
}

/// Why a record is corrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bad {
    Length(u32),
    Checksum,
}

impl fmt::Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bad::Length(n) => write!(f, "record length {n} is over the limit of {MAX_BODY}"),
            Bad::Checksum => f.write_str("record checksum does not match"),
        }
    }
}

/// Reads the record at the start of `buf`, in segment `seq`.
pub fn parse(buf: &[u8], seq: u64) -> Parsed<'_> {
    let head = &buf[..buf.len().min(HEADER_LEN)];
    if head.iter().all(|b| *b == 0) {
        // Nothing, or zeros where the header would be: the unwritten end of the file. A
        // header cut short inside zeros reads the same (its first bytes were never written).
        return Parsed::End;
    }
    if head.len() < HEADER_LEN {
        return Parsed::Torn;
    }
    let crc = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let len = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len as usize > MAX_BODY {
        return Parsed::Corrupt(Bad::Length(len));
    }
    let total = HEADER_LEN + len as usize;
    if buf.len() < total {
        return Parsed::Torn;
    }
    if crc32c::crc32c_append(seed(seq), &buf[4..total]) != crc {
        return Parsed::Corrupt(Bad::Checksum);
    }
    match Kind::from_u8(buf[8]) {
        Some(kind) => Parsed::Record { kind, body: &buf[HEADER_LEN..total], len: total },
        None => Parsed::UnknownKind(buf[8]),
    }
}

/// The header at the start of every segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub seq: u64,
    /// The node that wrote it: a directory copied from another node is refused.
    pub node_id: u64,
}

/// Why a segment header is not usable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadHeader {
    /// Too short, wrong magic or wrong checksum.
    Invalid,
    /// A format this build does not read.
    NewerFormat(u16),
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[..8].copy_from_slice(MAGIC);
        b[8..10].copy_from_slice(&SEGMENT_FORMAT.to_le_bytes());
        // Bytes 10..12: flags, none defined.
        b[12..20].copy_from_slice(&self.seq.to_le_bytes());
        b[20..28].copy_from_slice(&self.node_id.to_le_bytes());
        let crc = crc32c::crc32c(&b[..28]);
        b[28..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(buf: &[u8]) -> Result<SegmentHeader, BadHeader> {
        let Some(b) = buf.get(..SEGMENT_HEADER_LEN) else { return Err(BadHeader::Invalid) };
        let crc = u32::from_le_bytes([b[28], b[29], b[30], b[31]]);
        if &b[..8] != MAGIC || crc32c::crc32c(&b[..28]) != crc {
            return Err(BadHeader::Invalid);
        }
        let format = u16::from_le_bytes([b[8], b[9]]);
        if format != SEGMENT_FORMAT {
            return Err(BadHeader::NewerFormat(format));
        }
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        Ok(SegmentHeader { seq: u64_at(12), node_id: u64_at(20) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, kind: Kind, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let n = encode_into::<()>(&mut out, seq, kind, |o| {
            o.extend_from_slice(body);
            Ok(())
        })
        .unwrap();
        assert_eq!(n, out.len());
        out
    }

    #[test]
    fn every_kind_round_trips_and_records_follow_each_other() {
        let kinds = [Kind::Entry, Kind::Vote, Kind::Truncate, Kind::Purge, Kind::Checkpoint];
        let mut buf = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            buf.extend(record(7, *kind, &vec![i as u8 + 1; i * 100]));
        }
        let mut at = 0;
        for (i, kind) in kinds.iter().enumerate() {
            match parse(&buf[at..], 7) {
                Parsed::Record { kind: k, body, len } => {
                    assert_eq!((k, body), (*kind, &vec![i as u8 + 1; i * 100][..]));
                    at += len;
                }
                other => panic!("record {i}: {other:?}"),
            }
        }
        assert_eq!(parse(&buf[at..], 7), Parsed::End);
    }

    #[test]
    fn a_record_from_another_segment_does_not_validate() {
        let r = record(41, Kind::Entry, b"the same bytes");
        assert!(matches!(parse(&r, 41), Parsed::Record { .. }));
        assert_eq!(parse(&r, 42), Parsed::Corrupt(Bad::Checksum));
        assert_eq!(parse(&r, 41 | 1 << 40), Parsed::Corrupt(Bad::Checksum), "the seed covers all 64 bits");
    }

    #[test]
    fn a_record_cut_at_any_byte_is_torn_or_the_end() {
        let r = record(3, Kind::Entry, &[0xAB; 40]);
        assert_eq!(parse(&r[..0], 3), Parsed::End);
        for cut in 1..r.len() {
            let got = parse(&r[..cut], 3);
            // A header cut short is torn unless what there is of it is zeros (then: the end).
            let zeros = r[..cut.min(HEADER_LEN)].iter().all(|b| *b == 0);
            assert_eq!(got, if zeros { Parsed::End } else { Parsed::Torn }, "cut at {cut}");
        }
        // The unwritten rest of a file reads as zeros: cut, then zeros, is never a record.
        for cut in 1..r.len() {
            let mut b = r[..cut].to_vec();
            b.resize(r.len() + 16, 0);
            let got = parse(&b, 3);
            assert!(!matches!(got, Parsed::Record { .. }), "cut at {cut} then zeros: {got:?}");
        }
    }

    #[test]
    fn any_flipped_bit_is_corrupt() {
        let r = record(9, Kind::Vote, b"vote body");
        for bit in 0..r.len() * 8 {
            let mut b = r.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            let got = parse(&b, 9);
            assert!(
                matches!(got, Parsed::Corrupt(_) | Parsed::Torn),
                "bit {bit}: {got:?} (a longer length reads as torn, a shorter one fails the crc)"
            );
        }
    }

    #[test]
    fn zeros_are_the_end_and_an_oversized_length_is_corrupt() {
        assert_eq!(parse(&[0; 64], 1), Parsed::End);
        assert_eq!(parse(&[], 1), Parsed::End);
        let mut b = record(1, Kind::Entry, b"x");
        b[4..8].copy_from_slice(&(MAX_BODY as u32 + 1).to_le_bytes());
        assert_eq!(parse(&b, 1), Parsed::Corrupt(Bad::Length(MAX_BODY as u32 + 1)));
    }

    #[test]
    fn an_unknown_kind_with_a_valid_checksum_is_reported_as_newer() {
        let mut b = record(5, Kind::Entry, b"x");
        b[8] = 200;
        let crc = crc32c::crc32c_append(seed(5), &b[4..]);
        b[..4].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(parse(&b, 5), Parsed::UnknownKind(200));
    }

    #[test]
    fn segment_header_round_trips_and_rejects_damage_and_newer_formats() {
        let h = SegmentHeader { seq: 12, node_id: 3 };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        assert_eq!(SegmentHeader::decode(&b[..31]), Err(BadHeader::Invalid));
        for i in 0..SEGMENT_HEADER_LEN {
            let mut d = b;
            d[i] ^= 0x10;
            assert_eq!(SegmentHeader::decode(&d), Err(BadHeader::Invalid), "byte {i}");
        }
        let mut newer = b;
        newer[8..10].copy_from_slice(&2u16.to_le_bytes());
        let crc = crc32c::crc32c(&newer[..28]);
        newer[28..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(SegmentHeader::decode(&newer), Err(BadHeader::NewerFormat(2)));
    }
}
