//! The examples the README shows: each snippet there is cut from a file that a test runs, and
//! the examples not run elsewhere run here (the Rust client example, `vaultctl run`'s script).
//! The Python and Node examples run in `clients_polyglot`, the agent's in `agent`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use vault_tests::*;

fn mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Files the README may quote, each with the test that runs it.
const RUN_BY_TESTS: &[(&str, &str)] = &[
    ("vaultctl/examples/agent/agent.toml", "agent::the_example_agent_config_keeps_a_rendered_file_current_over_tls"),
    ("vaultctl/examples/run-app.sh", "examples::the_run_script_starts_a_program_with_its_secret"),
    ("vault-client/examples/follow.rs", "examples::the_rust_example_follows_a_rotation_and_a_node_loss"),
    ("clients/python/examples/service.py", "clients_polyglot (pytest: the example service)"),
    ("clients/node/examples/service.js", "clients_polyglot (node --test: the example service)"),
];

/// Each `<!-- snippet: PATH -->` in README.md is followed by a fenced block whose lines appear,
/// in order and consecutively, in PATH (indentation aside), and PATH is a file a test runs;
/// every such file is quoted.
#[test]
fn readme_snippets_are_cut_from_files_the_tests_run() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let lines: Vec<&str> = readme.lines().collect();
    let mut quoted = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(path) = line.trim().strip_prefix("<!-- snippet: ").and_then(|r| r.strip_suffix(" -->")) else {
            continue;
        };
        assert!(
            RUN_BY_TESTS.iter().any(|(p, _)| *p == path),
            "README quotes {path}, which no test runs (RUN_BY_TESTS)"
        );
        assert!(lines.get(i + 1).is_some_and(|l| l.starts_with("```")), "a fenced block follows the marker of {path}");
        let block: Vec<&str> = lines[i + 2..].iter().take_while(|l| !l.starts_with("```")).map(|l| l.trim()).collect();
        assert!(!block.is_empty(), "the snippet of {path} is empty");
        let source = std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        let source: Vec<&str> = source.lines().map(str::trim).collect();
        assert!(
            source.windows(block.len()).any(|w| w == block.as_slice()),
            "README's snippet of {path} is not in that file (any more):\n{}",
            block.join("\n")
        );
        quoted.push(path);
    }
    for (path, _) in RUN_BY_TESTS {
        assert!(quoted.contains(path), "README quotes nothing of {path}");
    }
}

/// Lines the child prints on stdout, read on a thread.
fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for a line containing `want`; panics with what came instead.
fn expect_line(rx: &mpsc::Receiver<String>, want: &str, secs: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(want) => return,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("no line with {want:?} within {secs} s; saw {seen:?}");
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `vault-client/examples/follow.rs` given all three addresses: it prints the version it
/// uses, then the new one after a rotation, and again after a put made while the node it
/// watched through is gone (SIGKILL).
#[test]
fn the_rust_example_follows_a_rotation_and_a_node_loss() {
    mt().block_on(async {
        let mut c = TestCluster::start(3, |_| {}).await;
        c.ctl(0, &["secret", "put", "app/db", "--value", &canary("db")]);
        let addrs: Vec<String> = (0..3).map(|i| c.url(i)).collect();
        let mut child = Killed(
            Command::new(bin("examples/follow"))
                .env_clear()
                .env("VAULT_ADDR", addrs.join(","))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start the example"),
        );
        let rx = stdout_lines(&mut child.0);
        expect_line(&rx, "using app/db version 1", 20);
        c.ctl(0, &["secret", "rotation", "set", "app/db", "--every", "1h", "--generator", "random:16"]);
        c.ctl(0, &["secret", "rotate", "app/db"]);
        expect_line(&rx, "using app/db version 2", 10);
        // The example reads and watches through the first address: kill that node.
        c.nodes[0].kill();
        let via = c.leader_seen_by(1, |_| true).await;
        c.ctl(via, &["secret", "put", "app/db", "--value", &canary("db3")]);
        expect_line(&rx, "using app/db version 3", 30);
    });
}

/// `vaultctl/examples/run-app.sh` starts the program it is given with `DB_PASSWORD` set to
/// `app/db`'s value, read with no token.
#[test]
fn the_run_script_starts_a_program_with_its_secret() {
    mt().block_on(async {
        let n = SingleNode::start(|_| {}).await;
        let value = canary("db-password");
        n.ctl(&["secret", "put", "app/db", "--value", &value]);
        let vaultctl_dir = bin("vaultctl").parent().expect("bin dir").to_path_buf();
        let out = Command::new("/bin/sh")
            .arg(repo().join("vaultctl/examples/run-app.sh"))
            .args(["/bin/sh", "-c", "printf %s \"$DB_PASSWORD\""])
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", vaultctl_dir.display()))
            .env("VAULT_ADDR", n.url())
            .stdin(Stdio::null())
            .output()
            .expect("run the script");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), value);
    });
}
