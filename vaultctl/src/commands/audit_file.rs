//! `vaultctl audit verify --file`: checks shipped audit records off the node, with the audit
//! key, by the node's own chain code (`vault_raft::audit_file_verify`).

use std::io::Read;
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use serde_json::json;
use tonic::Code;
use vault_core::keys::{AuditMacKey, MasterKey};

use crate::failure::Failure;
use crate::output::{outln, print_json};

/// A key file as `VAULT_AUDIT_KEY_FILE` holds it: base64 of 32 bytes.
fn read_key(path: &PathBuf) -> anyhow::Result<AuditMacKey> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read audit key file {}", path.display()))?;
    MasterKey::from_base64(text.trim())
        .and_then(|k| AuditMacKey::from_slice(k.expose()))
        .map_err(|e| anyhow!("audit key file {}: {e}", path.display()))
}

/// Checks `files`, read one after the other as one stream (a rotated file, then its
/// successor), with `key_files`.
pub fn verify(files: &[PathBuf], key_files: &[PathBuf], json: bool) -> Result<(), Failure> {
    if key_files.is_empty() {
        return Err(anyhow!("--file needs the audit key: --audit-key-file FILE (as VAULT_AUDIT_KEY_FILE)").into());
    }
    let keys = key_files.iter().map(read_key).collect::<anyhow::Result<Vec<_>>>()?;
    let mut input: Box<dyn Read> = Box::new(std::io::empty());
    for f in files {
        let file = std::fs::File::open(f).with_context(|| format!("open {}", f.display()))?;
        // A file that does not end its last line must not run into the next file's first.
        input = Box::new(input.chain(&b"\n"[..]).chain(file));
    }
    let input = std::io::BufReader::new(input);
    let report = vault_raft::audit_file_verify::verify_lines(input, &keys)
        .map_err(|e| anyhow!("read the shipped records: {e}"))?;
    // Unchained lines (no MAC) prove nothing: anyone can write them. A file that holds any, or
    // a node with no chained record at all, is not intact.
    let unproven = report.nodes.iter().find(|(_, n)| n.legacy > 0 || n.checked == 0).map(|(id, n)| {
        format!("node {id}: {} lines carry no MAC (written before shipping carried the chain, or forged)", n.legacy)
    });
    let ok = report.problem.is_none() && unproven.is_none() && !report.nodes.is_empty();
    if json {
        let nodes: Vec<_> = report
            .nodes
            .iter()
            .map(|(id, n)| {
                json!({"node_id": id, "first_seq": n.first_seq, "last_seq": n.last_seq, "checked": n.checked,
                       "legacy": n.legacy, "duplicates": n.duplicates, "last_mac": n.last_mac})
            })
            .collect();
        print_json(json!({"ok": ok, "problem": report.problem, "lines": report.lines, "nodes": nodes}));
    } else {
        for (id, n) in &report.nodes {
            outln!(
                "node {id}: records {} to {}: {} checked, {} from before chaining, {} repeated lines dropped; last: {}:{}",
                n.first_seq,
                n.last_seq,
                n.checked,
                n.legacy,
                n.duplicates,
                n.last_seq,
                n.last_mac
            );
        }
        if ok {
            outln!("shipped audit records intact");
        }
    }
    match (report.problem.as_ref().or(unproven.as_ref()), report.nodes.is_empty()) {
        (Some(p), _) => Err(Failure::status(Code::DataLoss, format!("shipped audit records broken: {p}"))),
        (None, true) => Err(Failure::status(Code::DataLoss, "no audit records in the files given")),
        (None, false) => Ok(()),
    }
}
