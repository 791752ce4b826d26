//! The Python and Node clients (`clients/python`, `clients/node`) against a real 3-node
//! cluster: runs their own suites (pytest, `node --test`), which start the cluster with
//! `vault-testcluster`, and fails with their output when they fail.
//!
//! `make test` installs what they need first (`make clients`: the client package in the
//! project venv, `npm ci` in `clients/node`, which also generates its code).

use std::path::Path;
use std::process::Command;

use vault_tests::{bin, repo_root, venv_python};

/// Runs `cmd` in `dir` with the test cluster's binary in `VAULT_TESTCLUSTER`; panics with
/// its output unless it succeeds.
fn run_suite(what: &str, mut cmd: Command, dir: &Path) {
    let out = cmd
        .current_dir(dir)
        .env("VAULT_TESTCLUSTER", bin("vault-testcluster"))
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN")
        .output()
        .unwrap_or_else(|e| panic!("run the {what} suite: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the {what} suite failed ({}):\n{text}", out.status);
    println!("{text}");
}

#[test]
fn python_client_against_a_cluster() {
    let py = venv_python();
    assert!(py.exists(), "{} not found: `make clients` (part of `make test`) creates it", py.display());
    let dir = repo_root().join("clients/python");
    let mut cmd = Command::new(py);
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"]);
    run_suite("Python client", cmd, &dir);
}

#[test]
fn node_client_against_a_cluster() {
    let dir = repo_root().join("clients/node");
    assert!(
        dir.join("node_modules").is_dir() && dir.join("gen").is_dir(),
        "clients/node is not built: `make clients` (part of `make test`) runs `npm ci` there"
    );
    let mut cmd = Command::new("node");
    cmd.args(["--test", "--test-concurrency=1", "test/"]);
    run_suite("Node client", cmd, &dir);
}
