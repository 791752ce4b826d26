//! Checking shipped records off the node (`vaultctl audit verify --file`): the JSON lines of
//! [`crate::audit_shipped`], from a file, a socket's capture or syslog's MSG, checked with the
//! node's audit key by the same MAC code the node uses ([`crate::audit_chain`]).
//!
//! Per chain (`chain_node_id`: the node whose log holds the record), in the order of the lines:
//! - every record's MAC over its `prev_mac` and fields, under the key its `key_id` names;
//! - every record follows the one before it: the next `seq`, and a `prev_mac` equal to that
//!   record's MAC. A removed line shows as missing records, a reordered one as out of order,
//!   an edited one as altered;
//! - a line repeated whole (the same `seq` and MAC) is dropped as a duplicate: a shipper sends
//!   again what it may not have delivered, after a crash or a broken connection;
//! - a record that says the chain was broken (`audit.chain_broken`) fails, as on the node.
//!
//! The file may start at any record (rotated files, a receiver started late): what it proves
//! is that it holds, without edits or gaps, what the node wrote from its first record to its
//! last. Whether records after the last one were cut needs a head kept elsewhere (the node's
//! `verify`, or `--extends`).

use sha2::Digest as _;
use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;

use vault_core::keys::AuditMacKey;

use crate::audit_chain::{record_mac, ACTION_CHAIN_BROKEN};
use crate::audit_shipped::{from_hex32, ShippedRecord};
use crate::StoreError;

/// What the lines of one node hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeRun {
    pub first_seq: u64,
    pub last_seq: u64,
    /// Records whose MAC was checked.
    pub checked: u64,
    /// Records from before chaining (allowed only before the node's first chained one).
    pub legacy: u64,
    /// Lines dropped as repeats of a record already seen.
    pub duplicates: u64,
    /// The last record's MAC, in hex (compare it with the node's head).
    pub last_mac: String,
}

/// What the lines hold, per node id, and the first problem found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileReport {
    pub lines: u64,
    pub nodes: BTreeMap<u64, NodeRun>,
    pub problem: Option<String>,
}

impl FileReport {
    fn problem(&mut self, p: String) {
        if self.problem.is_none() {
            self.problem = Some(p);
        }
    }
}

#[derive(Default)]
struct NodeState {
    run: NodeRun,
    last: Option<(u64, Option<[u8; 32]>)>,
    chained_seen: bool,
    /// SHA-256 of every record's line as first seen: a repeat must be that same line, byte for
    /// byte (a line with the same MAC but another actor is a rewrite, not a repeat).
    seen: HashMap<u64, [u8; 32]>,
}

/// Checks the lines of `input` with `keys` (any of the node's audit keys; each is matched to
/// the records by its id). Blank lines are skipped. A read error ends the check with it.
pub fn verify_lines(input: impl BufRead, keys: &[AuditMacKey]) -> Result<FileReport, StoreError> {
    let keys: HashMap<String, &AuditMacKey> = keys.iter().map(|k| (k.id(), k)).collect();
    let mut report = FileReport::default();
    let mut nodes: BTreeMap<u64, NodeState> = BTreeMap::new();
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        report.lines += 1;
        let r: ShippedRecord = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                report.problem(format!("line {n} is not a shipped audit record: {e}"));
                continue;
            }
        };
        if r.v == 0 {
            report.problem(format!(
                "line {n} has no format version: written by a build before shipping carried the chain (no MAC)"
            ));
            continue;
        }
        let (node, seq) = (r.chain_node_id, r.record.seq);
        let st = nodes.entry(node).or_default();
        let mac = r.mac.as_deref().map(from_hex32);
        let mac = match mac {
            Some(None) => {
                report.problem(format!("record {seq} of node {node} (line {n}) has a malformed MAC"));
                continue;
            }
            Some(Some(m)) => Some(m),
            None => None,
        };
        let digest: [u8; 32] = sha2::Sha256::digest(line.trim_end().as_bytes()).into();
        if let Some(seen) = st.seen.get(&seq) {
            if *seen == digest && mac.is_some() {
                st.run.duplicates += 1;
            } else {
                report.problem(format!(
                    "record {seq} of node {node} appears again at line {n} with other contents (altered or replayed)"
                ));
            }
            continue;
        }
        match st.last {
            None => st.run.first_seq = seq,
            Some((last, _)) if seq <= last => {
                report.problem(format!(
                    "record {seq} of node {node} at line {n} comes after record {last}: out of order (reordered or inserted)"
                ));
                continue;
            }
            Some((last, _)) if seq > last + 1 => {
                let what = if seq == last + 2 {
                    format!("record {} is missing", last + 1)
                } else {
                    format!("records {} to {} are missing", last + 1, seq - 1)
                };
                report.problem(format!("node {node}: {what} (the lines jump from {last} to {seq} at line {n})"));
            }
            Some(_) => {}
        }
        st.seen.insert(seq, digest);
        let before = st.last;
        st.last = Some((seq, mac));
        st.run.last_seq = seq;
        let Some(mac) = mac else {
            if st.chained_seen {
                report.problem(format!("record {seq} of node {node} (line {n}) is not chained (altered or inserted)"));
            } else {
                st.run.legacy += 1;
            }
            continue;
        };
        st.chained_seen = true;
        st.run.last_mac = crate::audit_shipped::to_hex(&mac);
        let Some(prev) = r.prev_mac.as_deref().and_then(from_hex32) else {
            report.problem(format!("record {seq} of node {node} (line {n}) has no valid prev_mac"));
            continue;
        };
        if let Some((last, Some(last_mac))) = before {
            if last + 1 == seq && last_mac != prev {
                report.problem(format!(
                    "record {seq} of node {node} (line {n}) does not follow the record before it: a record was removed, replaced or reordered"
                ));
            }
        }
        let key_id = r.key_id.clone().unwrap_or_default();
        let Some(key) = keys.get(&key_id) else {
            report.problem(format!(
                "record {seq} of node {node} (line {n}) is under key {key_id}, which was not given (--audit-key-file)"
            ));
            continue;
        };
        st.run.checked += 1;
        if record_mac(key, &prev, &r.record)? != mac {
            report.problem(format!("record {seq} of node {node} (line {n}) was altered"));
        } else if r.record.action == ACTION_CHAIN_BROKEN {
            report.problem(format!("record {seq} of node {node} says the chain was broken: {}", r.record.outcome));
        }
    }
    report.nodes = nodes.into_iter().map(|(id, st)| (id, st.run)).collect();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit_fixtures::{open_db, record};
    use crate::audit_log::{AuditKeys, AuditLog};

    fn shipped(n: u64) -> (Vec<String>, AuditMacKey, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let key = AuditMacKey::from_slice(&[9; 32]).unwrap();
        let same = AuditMacKey::from_slice(&[9; 32]).unwrap();
        let log = AuditLog::open(open_db(dir.path()), 1, AuditKeys::new(vec![(key.id(), same)]).unwrap()).unwrap();
        log.check_at_start().unwrap();
        for i in 0..n {
            log.append(record(i, 1_000 + i)).unwrap();
        }
        let lines = log.shipped_after(0, 1_000).unwrap().iter().map(|r| r.to_line().unwrap()).collect();
        (lines, key, dir)
    }

    fn check(lines: &[String], key: &AuditMacKey) -> FileReport {
        verify_lines(lines.join("\n").as_bytes(), std::slice::from_ref(key)).unwrap()
    }

    #[test]
    fn shipped_lines_verify_and_an_edit_a_removal_or_a_reorder_is_named() {
        let (lines, key, _dir) = shipped(6);
        let ok = check(&lines, &key);
        assert_eq!(ok.problem, None, "{ok:?}");
        let run = &ok.nodes[&1];
        assert_eq!((run.first_seq, run.last_seq, run.checked), (1, 6, 6), "{ok:?}");

        let mut edited = lines.clone();
        edited[3] = edited[3].replace("actor-3", "actor-X");
        assert_ne!(edited[3], lines[3]);
        let p = check(&edited, &key).problem.unwrap();
        assert!(p.contains("record 4 of node 1 (line 4) was altered"), "{p}");

        let mut removed = lines.clone();
        removed.remove(3);
        let p = check(&removed, &key).problem.unwrap();
        assert!(p.contains("record 4 is missing"), "{p}");

        let mut reordered = lines.clone();
        reordered.swap(3, 4);
        let p = check(&reordered, &key).problem.unwrap();
        assert!(p.contains("missing") || p.contains("out of order"), "{p}");

        // The start of a rotated file, or a repeat after a reconnect, is fine.
        let mut tail = lines[2..].to_vec();
        tail.splice(2..2, lines[2..4].iter().cloned());
        let r = check(&tail, &key);
        assert_eq!((r.problem.clone(), r.nodes[&1].duplicates), (None, 2), "{r:?}");

        // A repeat with the record's MAC but another actor is a rewrite, not a repeat.
        let mut replayed = lines.clone();
        replayed.insert(5, lines[3].replace("actor-3", "actor-X"));
        let p = check(&replayed, &key).problem.unwrap();
        assert!(p.contains("record 4 of node 1 appears again at line 6 with other contents"), "{p}");

        let other = AuditMacKey::from_slice(&[8; 32]).unwrap();
        let p = check(&lines, &other).problem.unwrap();
        assert!(p.contains("which was not given"), "{p}");
    }
}
