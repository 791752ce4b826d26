//! Certificates for tests, minted by the real `vaultctl` (so the tests also cover its minting).

use std::path::Path;
use std::process::{Command, Stdio};

use crate::bin;

/// Mints certificates for `ids` into `dir` with the real `vaultctl cluster certs`.
pub fn mint_certs(dir: &Path, ids: &[u64]) {
    let list: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    let out = Command::new(bin("vaultctl"))
        .args(["cluster", "certs", "--out"])
        .arg(dir)
        .args(["--nodes", &list.join(","), "--san", "127.0.0.1"])
        .output()
        .expect("run vaultctl cluster certs");
    assert!(out.status.success(), "cluster certs: {}", String::from_utf8_lossy(&out.stderr));
}

/// A reader client certificate for `cn` (and the reader CA, once) minted into `out` by the real
/// `vaultctl reader cert`: `reader-<cn>.pem`, `reader-<cn>.key`, `reader-ca.pem`.
pub fn mint_reader_cert(cn: &str, out: &Path) {
    let done = Command::new(bin("vaultctl"))
        .env_clear()
        .args(["reader", "cert", cn, "--out"])
        .arg(out)
        .args(["--days", "2"])
        .stdin(Stdio::null())
        .output()
        .expect("run vaultctl reader cert");
    assert!(done.status.success(), "reader cert {cn}: {}", String::from_utf8_lossy(&done.stderr));
}
