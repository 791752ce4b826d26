//! Scheduled rotation with real processes: a policy (period and generator) that the leader
//! carries out on schedule, and its successor after a leader dies; `exec:` hooks that get the
//! old value on stdin and print the new one; a failing hook that leaves the old version
//! current and is retried with backoff until it works; `secret rotate` gated by the `rotate`
//! grant; rotations counted in metrics; and no generated value in any file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::Value;
use vault_tests::*;

fn mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `vault_rotations_total` by outcome (`ok`, `failed`) on each node, from one scrape of each.
async fn rotations_counted(c: &TestCluster) -> Vec<(f64, f64)> {
    let mut per_node = Vec::new();
    for spec in &c.specs {
        let s = scrape(&spec.env["VAULT_METRICS_ADDR"]).await;
        per_node.push((
            total(&s, "vault_rotations_total", &[r#"outcome="ok""#]),
            total(&s, "vault_rotations_total", &[r#"outcome="failed""#]),
        ));
    }
    per_node
}

/// Waits (up to 10 s) until the leader's gauges read `policies` rotation policies, `failing`
/// of them failing (the leader's worker sets them each second).
async fn leader_gauges_reach(c: &TestCluster, policies: f64, failing: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        seen.clear();
        for spec in &c.specs {
            let s = scrape(&spec.env["VAULT_METRICS_ADDR"]).await;
            if sample(&s, "vault_raft_is_leader") == Some(1.0) {
                let gauges = (sample(&s, "vault_rotation_policies"), sample(&s, "vault_rotations_failing"));
                if gauges == (Some(policies), Some(failing)) {
                    return;
                }
                seen.push(gauges);
            }
        }
        assert!(Instant::now() < deadline, "leader gauges never read ({policies}, {failing}): {seen:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Three nodes that retry a failed rotation after 1 s (then 2 s, 4 s...), run hooks from
/// `hooks`, and serve metrics.
async fn cluster(hooks: &Path) -> TestCluster {
    let hooks = hooks.to_str().expect("utf-8 path").to_string();
    TestCluster::start(3, |s| {
        s.set("VAULT_ROTATION_RETRY_SECS", "1").set("VAULT_ROTATION_HOOKS_DIR", &hooks);
        with_metrics(s);
    })
    .await
}

/// `vaultctl` with the admin token through node `i`: stdout, or the error line. Unlike
/// `TestCluster::ctl` it does not panic, for polling while the cluster may be without a leader.
fn try_ctl(c: &TestCluster, i: usize, args: &[&str]) -> Result<String, String> {
    let out = c.nodes[i].vaultctl(Some(&c.token), args);
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("utf-8 stdout"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// `secret versions NAME --output json` through node `i`.
fn versions(c: &TestCluster, i: usize, name: &str) -> Result<Value, String> {
    try_ctl(c, i, &["--output", "json", "secret", "versions", name]).map(|s| json(&s))
}

fn current(v: &Value) -> u64 {
    v["current_version"].as_u64().unwrap_or_else(|| panic!("current_version in {v}"))
}

/// `secret rotation get NAME --output json` through node `i`.
fn policy(c: &TestCluster, i: usize, name: &str) -> Value {
    json(&c.ctl(i, &["--output", "json", "secret", "rotation", "get", name]))
}

/// What node `i` serves to a reader (no token) for `name`: the newest version, or `version`.
fn value_of(c: &TestCluster, i: usize, name: &str, version: Option<u64>) -> String {
    let version = version.map(|v| v.to_string());
    let mut args = vec!["secret", "get", name];
    if let Some(v) = &version {
        args.extend(["--version", v.as_str()]);
    }
    let out = c.nodes[i].vaultctl(None, &args);
    assert!(out.status.success(), "node {i}: {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 value")
}

/// Calls `probe` every 250 ms until it returns `Ok`, for at most `secs`; fails with `what`
/// and the last `Err` (what was seen instead).
async fn poll<T>(secs: u64, what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match probe() {
            Ok(t) => return t,
            Err(seen) => assert!(Instant::now() < deadline, "{what}: not within {secs} s; last seen: {seen}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A scratch directory and a hooks directory in it, 0755 whatever the umask (a group-writable
/// one is refused).
fn hooks_dir() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let work = test_dir();
    let hooks = work.path().join("hooks");
    std::fs::create_dir(&hooks).expect("hooks dir");
    std::fs::set_permissions(&hooks, std::fs::Permissions::from_mode(0o755)).expect("chmod the hooks dir");
    (work, hooks)
}

/// Writes an executable hook `dir/name` atomically (a new file renamed over the old one, so
/// the node never runs a half-written script).
fn install_hook(dir: &Path, name: &str, script: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    let staged = dir.join(format!(".{name}.new"));
    std::fs::write(&staged, script).expect("write the hook");
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755)).expect("chmod the hook");
    std::fs::rename(&staged, &path).expect("install the hook");
    path
}

/// A hook that fails after writing the old value to stderr, which the node must discard: the
/// test then finds the value in no file, the node logs included.
const FAILING_HOOK: &str = "#!/bin/sh\nIFS= read -r old\nprintf 'cannot use %s\\n' \"$old\" >&2\nexit 3\n";

/// A hook that reads the old value on stdin and prints it with `-next` appended, and a
/// trailing newline (which the node strips). Shell builtins only: it needs no PATH. It fails
/// (status 9) if the node handed it its master key or bootstrap token in the environment.
const NEXT_HOOK: &str = "#!/bin/sh
if [ -n \"$VAULT_LOCAL_MASTER_KEY$VAULT_BOOTSTRAP_TOKEN\" ]; then exit 9; fi
IFS= read -r old
printf '%s-next\\n' \"$old\"
";

/// Whether a failure message names exit status 3 (the failing hook's).
fn names_status_3(text: &str) -> bool {
    text.contains("status 3") || text.contains("status: 3")
}

/// Reads versions `seen.len() + 1 ..= upto` of `name` through node `via` and checks that each
/// is a `random:24` value (24 bytes as URL-safe base64 without padding: 32 characters) unlike
/// every value before it; appends them to `seen`, which holds the values of versions 1, 2...
fn collect_generated(c: &TestCluster, via: usize, name: &str, upto: u64, seen: &mut Vec<String>) {
    for version in seen.len() as u64 + 1..=upto {
        let value = value_of(c, via, name, Some(version));
        assert_eq!(value.len(), 32, "version {version}: {value:?}");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&value)
            .unwrap_or_else(|e| panic!("version {version} is not URL-safe base64 without padding ({e}): {value:?}"));
        assert_eq!(bytes.len(), 24, "version {version}: {value:?}");
        assert!(!seen.contains(&value), "version {version} repeats an earlier value: {value:?}");
        seen.push(value);
    }
}

/// A `--every 2s --generator random:24` policy makes a new version about every 2 s: fresh
/// random values, each counted once in the leader's `vault_rotations_total{outcome="ok"}` and
/// nowhere else. When the leader is killed, the new leader goes on rotating; the restarted node
/// serves the same versions; `rotation clear` stops it. No value, initial or generated,
/// reaches any file of any node (data directories hold only ciphertext; logs no value).
#[test]
fn a_policy_rotates_on_schedule_through_a_leader_kill_and_no_value_reaches_a_file() {
    mt().block_on(async {
        let (_work, hooks) = hooks_dir();
        let mut c = cluster(&hooks).await;
        let name = "rot/db";
        let initial = canary("initial");
        c.ctl(0, &["secret", "put", name, "--value", &initial, "--max-versions", "50"]);
        c.ctl(0, &["secret", "rotation", "set", name, "--every", "2s", "--generator", "random:24"]);
        let p = policy(&c, 1, name);
        assert_eq!(p["name"], name, "{p}");
        assert_eq!(p["every_secs"], 2, "{p}");
        assert_eq!(p["generator"], "random:24", "{p}");
        assert_eq!(p["failures"], 0, "{p}");
        assert!(p["next_due_ms"].as_u64().is_some_and(|t| t > 0), "{p}");
        let v = versions(&c, 2, name).expect("versions");
        assert_eq!(v["rotation"]["generator"], "random:24", "`secret versions` shows the policy: {v}");

        let reached = poll(20, "two scheduled rotations", || {
            let v = versions(&c, 0, name)?;
            if current(&v) >= 3 {
                Ok(v)
            } else {
                Err(v.to_string())
            }
        })
        .await;
        let mut seen = vec![initial.clone()];
        collect_generated(&c, 1, name, current(&reached), &mut seen);
        // On schedule, not in a burst: versions at least a second apart.
        let mut created: Vec<(u64, u64)> = reached["versions"]
            .as_array()
            .expect("versions")
            .iter()
            .map(|v| (v["version"].as_u64().expect("version"), v["created_at_ms"].as_u64().expect("created_at_ms")))
            .collect();
        created.sort();
        for pair in created.windows(2) {
            assert!(
                pair[1].1 >= pair[0].1 + 1000,
                "versions {} and {} too close together: {reached}",
                pair[0].0,
                pair[1].0
            );
        }

        // Each rotation is counted once, by the leader alone; none failed.
        let leader = c.leader_seen_by(0, |_| true).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let before = current(&versions(&c, 0, name).expect("versions"));
            let per_node = rotations_counted(&c).await;
            let after = current(&versions(&c, 0, name).expect("versions"));
            let ok: f64 = per_node.iter().map(|n| n.0).sum();
            if before == after && ok == (after - 1) as f64 {
                assert!(per_node.iter().all(|n| n.1 == 0.0), "no rotation failed: {per_node:?}");
                for (i, n) in per_node.iter().enumerate() {
                    assert_eq!(n.0 > 0.0, i == leader, "only the leader (index {leader}) rotates: {per_node:?}");
                }
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{ok} rotations counted for {} made (versions {before}..{after}): {per_node:?}",
                after - 1
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // The leader dies; the new one goes on rotating.
        let killed_id = c.specs[leader].node_id;
        let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
        let before_kill = current(&versions(&c, survivors[0], name).expect("versions"));
        let killed_at = vault_core::time::now_ms();
        c.nodes[leader].kill();
        let new_leader = c.leader_seen_by(survivors[0], |id| id != killed_id).await;
        let after = poll(30, "two rotations after the leader was killed", || {
            let v = versions(&c, survivors[1], name)?;
            if current(&v) >= before_kill + 2 {
                Ok(current(&v))
            } else {
                Err(v.to_string())
            }
        })
        .await;
        collect_generated(&c, survivors[0], name, after, &mut seen);
        let p = policy(&c, new_leader, name);
        assert!(p["last_rotated_ms"].as_u64().is_some_and(|t| t > killed_at), "rotated since the kill: {p}");
        assert_eq!(p["failures"], 0, "{p}");

        // The killed node comes back and serves the same versions.
        c.nodes[leader] = c.specs[leader].start();
        c.nodes[leader].wait_ready().await;
        for version in [2, after] {
            let got = value_of(&c, leader, name, Some(version));
            assert!(got == seen[version as usize - 1], "the restarted node serves another value for version {version}");
        }

        // Cleared: no more versions.
        c.ctl(new_leader, &["secret", "rotation", "clear", name]);
        let v = versions(&c, leader, name).expect("versions");
        assert!(v.get("rotation").is_none_or(Value::is_null), "a cleared policy is still shown: {v}");
        let err = try_ctl(&c, survivors[0], &["--output", "json", "secret", "rotation", "get", name])
            .expect_err("a cleared policy is still returned");
        assert!(err.contains("not found"), "{err}");
        let stopped = current(&v);
        // Two and a half periods of the cleared policy: waiting for something not to happen.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let v = versions(&c, survivors[1], name).expect("versions");
        assert_eq!(current(&v), stopped, "rotated after the policy was cleared: {v}");
        collect_generated(&c, survivors[1], name, stopped, &mut seen);

        for value in &seen {
            let hits = files_containing(c.dir.path(), value.as_bytes());
            assert!(hits.is_empty(), "a secret value reached {hits:?}");
        }
    });
}

/// An `exec:` hook that exits 3 leaves the old version current: `secret rotate` fails as
/// UNAVAILABLE naming the exit status, the failure shows in the policy (and in `secret
/// versions`), and the leader retries on its own (after 1 s, then 2 s). Once the hook works,
/// the next retry rotates: the new value is the old one (which the hook got on stdin) with
/// `-next` and without the hook's trailing newline; the failures are reset and the next
/// rotation is a period away. Hooks outside the hooks directory are not run. Both outcomes are
/// counted in metrics; no value reaches a file.
#[test]
fn a_failing_hook_keeps_the_old_version_and_is_retried_with_backoff_until_it_works() {
    mt().block_on(async {
        let (work, hooks) = hooks_dir();
        let hook = install_hook(&hooks, "next-db-password", FAILING_HOOK);
        let c = cluster(&hooks).await;
        let name = "app/db";
        let old = canary("db-password");
        c.ctl(0, &["secret", "put", name, "--value", &old]);
        c.ctl(0, &["rotation", "hook", "bind", "next-db-password", "--names", name]);
        let generator = format!("exec:{}", hook.to_str().expect("utf-8 path"));
        c.ctl(0, &["secret", "rotation", "set", name, "--every", "1h", "--generator", &generator]);
        let p = policy(&c, 1, name);
        assert_eq!((p["every_secs"].as_u64(), p["generator"].as_str()), (Some(3600), Some(generator.as_str())), "{p}");

        let err = must_fail_vaultctl(&c.url(2), Some(&c.token), &["secret", "rotate", name]);
        assert!(err.contains("unavailable") && names_status_3(&err), "a failed rotation says why: {err}");
        let v = versions(&c, 1, name).expect("versions");
        assert_eq!(current(&v), 1, "a failed rotation makes no version: {v}");
        assert!(v["rotation"]["failures"].as_u64() >= Some(1), "{v}");
        assert!(names_status_3(v["rotation"]["last_error"].as_str().unwrap_or("")), "{v}");
        assert_eq!(value_of(&c, 0, name, None), old, "the old value is still current");

        // Retried on its own.
        let failing = poll(15, "a second failed attempt", || {
            let p = policy(&c, 0, name);
            if p["failures"].as_u64() >= Some(2) {
                Ok(p)
            } else {
                Err(p.to_string())
            }
        })
        .await;
        assert!(names_status_3(failing["last_error"].as_str().unwrap_or("")), "{failing}");
        assert!(failing["last_rotated_ms"].as_u64().is_none_or(|t| t == 0), "never rotated: {failing}");
        leader_gauges_reach(&c, 1.0, 1.0).await;
        let last_failure_ms = failing["last_attempt_ms"].as_u64().expect("last_attempt_ms after attempts");
        assert_eq!(current(&versions(&c, 2, name).expect("versions")), 1, "still one version");
        assert_eq!(value_of(&c, 2, name, None), old, "the old value is still current");

        // The hook is fixed; the next retry goes through.
        install_hook(&hooks, "next-db-password", NEXT_HOOK);
        let next = format!("{old}-next");
        poll(20, "a retry with the fixed hook", || {
            let v = versions(&c, 1, name)?;
            if current(&v) == 2 {
                Ok(())
            } else {
                Err(v.to_string())
            }
        })
        .await;
        assert!(
            value_of(&c, 2, name, None) == next,
            "the new value is the old one from stdin with -next, newline stripped"
        );
        assert!(value_of(&c, 0, name, Some(1)) == old, "version 1 keeps the old value");
        let p = policy(&c, 2, name);
        assert_eq!(p["failures"], 0, "{p}");
        assert!(p["last_error"].as_str().unwrap_or("").is_empty(), "{p}");
        let rotated = p["last_rotated_ms"].as_u64().expect("last_rotated_ms after a rotation");
        assert!(rotated >= last_failure_ms + 1500, "retried after its backoff, not at once: {failing} then {p}");
        let due = p["next_due_ms"].as_u64().expect("next_due_ms");
        assert!(due >= rotated + 3_500_000, "the next rotation is a period away, not a retry: {p}");
        leader_gauges_reach(&c, 1.0, 0.0).await;

        // On demand, through any node: the hook gets the newest value.
        let said = c.ctl(2, &["secret", "rotate", name]);
        assert_eq!(said.trim(), "3", "secret rotate prints the new version");
        assert!(value_of(&c, 1, name, None) == format!("{next}-next"), "rotated from the newest value");

        // A hook outside the hooks directory is not run.
        let outside = install_hook(work.path(), "outside", NEXT_HOOK);
        c.ctl(0, &["secret", "put", "app/out", "--value", "kept"]);
        let outside_gen = format!("exec:{}", outside.to_str().expect("utf-8 path"));
        let set =
            try_ctl(&c, 0, &["secret", "rotation", "set", "app/out", "--every", "1h", "--generator", &outside_gen]);
        if set.is_ok() {
            let err = must_fail_vaultctl(&c.url(1), Some(&c.token), &["secret", "rotate", "app/out"]);
            assert!(err.contains("unavailable"), "{err}");
        }
        assert_eq!(value_of(&c, 1, "app/out", None), "kept", "a hook outside the hooks directory ran");
        assert_eq!(current(&versions(&c, 1, "app/out").expect("versions")), 1);
        // Nor is one inside it that others may change.
        let loose = install_hook(&hooks, "loose", NEXT_HOOK);
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o775)).expect("chmod");
        }
        c.ctl(0, &["rotation", "hook", "bind", "loose", "--names", "app/out"]);
        let loose_gen = format!("exec:{}", loose.to_str().expect("utf-8 path"));
        c.ctl(0, &["secret", "rotation", "set", "app/out", "--every", "1h", "--generator", &loose_gen]);
        let err = must_fail_vaultctl(&c.url(2), Some(&c.token), &["secret", "rotate", "app/out"]);
        assert!(err.contains("written by group or others (mode 0775)"), "the refusal says why: {err}");
        assert_eq!(value_of(&c, 1, "app/out", None), "kept", "a group-writable hook ran");
        let dotted = format!("exec:{}/../outside", hooks.to_str().expect("utf-8 path"));
        let err = must_fail_vaultctl(
            &c.url(0),
            Some(&c.token),
            &["secret", "rotation", "set", "app/out", "--every", "1h", "--generator", &dotted],
        );
        assert!(err.contains("invalid argument"), "{err}");

        // Every node has the leader's attempts on record: the failures and the rotation.
        for i in 0..3 {
            let records = json(&c.ctl(i, &["--output", "json", "audit", "list", "--secret", name]));
            let by_worker: Vec<String> = records
                .as_array()
                .expect("audit records")
                .iter()
                .filter(|r| r["actor"] == "rotation" && r["action"] == "secret.rotate")
                .map(|r| r["outcome"].as_str().unwrap_or("").to_string())
                .collect();
            assert!(by_worker.iter().any(|o| o.starts_with("failed") && names_status_3(o)), "node {i}: {by_worker:?}");
            assert!(by_worker.iter().any(|o| o == "ok: version 2"), "node {i}: {by_worker:?}");
        }

        let counted = rotations_counted(&c).await;
        let (ok, failed): (f64, f64) = counted.iter().fold((0.0, 0.0), |a, n| (a.0 + n.0, a.1 + n.1));
        assert!(ok >= 2.0, "two successful rotations counted: {counted:?}");
        let failures = failing["failures"].as_u64().expect("failures") as f64;
        assert!(failed >= failures, "{failures} failed attempts counted: {counted:?}");

        for value in [&old, &next, &format!("{next}-next")] {
            for dir in [c.dir.path(), work.path()] {
                let hits = files_containing(dir, value.as_bytes());
                assert!(hits.is_empty(), "a secret value reached {hits:?}");
            }
        }
    });
}

/// `secret rotate` and `secret rotation set`/`clear` need the `rotate` action on the name: a
/// token whose role has only create, update and list is PERMISSION_DENIED and nothing changes;
/// one with `rotate:app/*` rotates `app/k` (a `hex:16` value: 32 lowercase hex characters) but
/// not `other/k`. Malformed policies are refused as invalid arguments.
#[test]
fn rotating_needs_the_rotate_grant_and_policies_are_checked() {
    mt().block_on(async {
        let n = SingleNode::start(|_| {}).await;
        n.ctl(&["secret", "put", "app/k", "--value", "first"]);
        n.ctl(&["secret", "put", "other/k", "--value", "first"]);

        let err = must_fail_vaultctl(&n.url(), Some(&n.token), &["secret", "rotation", "get", "app/k"]);
        assert!(err.contains("not found"), "no policy yet: {err}");
        for (args, why) in [
            (["secret", "rotation", "set", "app/k", "--every", "1h", "--generator", "dice:6"], "unknown generator"),
            (["secret", "rotation", "set", "app/k", "--every", "1h", "--generator", "random:0"], "no bytes"),
            (["secret", "rotation", "set", "app/k", "--every", "1h", "--generator", "exec:hook"], "relative hook"),
            (["secret", "rotation", "set", "app/k", "--every", "soon", "--generator", "random:8"], "no duration"),
            (["secret", "rotation", "set", "app/k", "--every", "0s", "--generator", "random:8"], "zero period"),
        ] {
            let err = must_fail_vaultctl(&n.url(), Some(&n.token), &args);
            assert!(err.contains("invalid argument"), "{why}: {err}");
        }
        let err = must_fail_vaultctl(
            &n.url(),
            Some(&n.token),
            &["secret", "rotation", "set", "app/none", "--every", "1h", "--generator", "random:8"],
        );
        assert!(
            err.contains("not found") || err.contains("failed precondition"),
            "a secret that does not exist: {err}"
        );
        let err = must_fail_vaultctl(&n.url(), Some(&n.token), &["secret", "rotation", "get", "app/k"]);
        assert!(err.contains("not found"), "refused policies store nothing: {err}");

        n.ctl(&["secret", "rotation", "set", "app/k", "--every", "30d", "--generator", "hex:16"]);
        n.ctl(&["secret", "rotation", "set", "other/k", "--every", "30d", "--generator", "hex:16"]);
        let p = json(&n.ctl(&["--output", "json", "secret", "rotation", "get", "app/k"]));
        assert_eq!((p["every_secs"].as_u64(), p["generator"].as_str()), (Some(2_592_000), Some("hex:16")), "{p}");
        assert_eq!(p["failures"], 0, "{p}");

        n.ctl(&["role", "create", "app-writer", "--grant", "create,update,list:app/*"]);
        n.ctl(&["role", "create", "app-rotator", "--grant", "rotate,list:app/*"]);
        let writer = n.ctl(&["token", "create", "t1", "--role", "app-writer"]).trim().to_string();
        let rotator = n.ctl(&["token", "create", "t2", "--role", "app-rotator"]).trim().to_string();
        let url = n.url();
        for args in [
            &["secret", "rotate", "app/k"][..],
            &["secret", "rotation", "set", "app/k", "--every", "1h", "--generator", "random:8"][..],
            &["secret", "rotation", "clear", "app/k"][..],
        ] {
            let err = must_fail_vaultctl(&url, Some(&writer), args);
            assert!(err.contains("permission denied"), "{args:?} without the rotate grant: {err}");
        }
        let err = must_fail_vaultctl(&url, None, &["secret", "rotate", "app/k"]);
        assert!(err.contains("unauthenticated"), "{err}");
        let p = json(&n.ctl(&["--output", "json", "secret", "rotation", "get", "app/k"]));
        assert_eq!(p["generator"], "hex:16", "the refused set changed nothing: {p}");
        assert_eq!(n.ctl(&["secret", "get", "app/k"]), "first", "the refused rotate changed nothing");

        let said = must_vaultctl(&url, Some(&rotator), &["secret", "rotate", "app/k"]);
        assert_eq!(said.trim(), "2", "secret rotate prints the new version");
        let value = must_vaultctl(&url, None, &["secret", "get", "app/k"]);
        assert!(
            value.len() == 32 && value.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
            "a hex:16 value is 32 lowercase hex characters: {value:?}"
        );
        let p = json(&n.ctl(&["--output", "json", "secret", "rotation", "get", "app/k"]));
        assert!(p["last_rotated_ms"].as_u64().is_some_and(|t| t > 0), "{p}");
        let err = must_fail_vaultctl(&url, Some(&rotator), &["secret", "rotate", "other/k"]);
        assert!(err.contains("permission denied"), "rotate:app/* does not cover other/k: {err}");
        assert_eq!(n.ctl(&["secret", "get", "other/k"]), "first");
        assert_eq!(n.ctl(&["secret", "rotate", "other/k"]).trim(), "2", "the admin token may rotate anything");

        assert!(files_containing(n.dir.path(), value.as_bytes()).is_empty(), "a generated value reached a file");
    });
}

/// A leader that loses leadership stops its attempt: its running hook (here one that stalls
/// until the test ends, under a hook timeout of two minutes) is killed within seconds of a leadership
/// transfer, not left to finish beside the new leader's; and the old version stays current.
/// A leader killed with SIGKILL takes its running hook with it.
#[test]
fn a_leader_that_loses_leadership_kills_its_running_hook() {
    mt().block_on(async {
        let (work, hooks) = hooks_dir();
        // Each run records its pid (the node's own hook process) and then stalls while
        // `stall.flag` exists; the test removes it at the end, so no hook outlives the test.
        let flag = hooks.join("stall.flag");
        std::fs::write(&flag, "").expect("write the flag");
        let hook = install_hook(
            &hooks,
            "stall",
            "#!/bin/sh\necho $$ >> \"$0.pids\"\nwhile [ -e \"$0.flag\" ]; do sleep 0.2; done\necho late\n",
        );
        let mut c = TestCluster::start(3, |s| {
            s.set("VAULT_ROTATION_HOOKS_DIR", hooks.to_str().expect("utf-8 path"))
                .set("VAULT_ROTATION_HOOK_TIMEOUT_SECS", "120");
        })
        .await;
        c.ctl(0, &["secret", "put", "app/slow", "--value", "kept"]);
        c.ctl(0, &["rotation", "hook", "bind", "stall", "--names", "app/slow"]);
        let generator = format!("exec:{}", hook.to_str().expect("utf-8 path"));
        c.ctl(0, &["secret", "rotation", "set", "app/slow", "--every", "1h", "--generator", &generator]);
        let leader = c.leader_seen_by(0, |_| true).await;
        // `secret rotate` waits for the attempt; it runs beside the test and is killed at the end.
        // Its error line, if it fails (say, the leader changed under load), goes to a file.
        let rotate_err = work.path().join("rotate.err");
        let mut waiting = std::process::Command::new(bin("vaultctl"))
            .args(["--addr", &c.url(leader), "--token", &c.token, "secret", "rotate", "app/slow"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&rotate_err).expect("create rotate.err"))
            .spawn()
            .expect("spawn vaultctl secret rotate");
        let pids = hooks.join("stall.pids");
        let first: u32 = poll(20, "the leader starts the hook", || {
            let text = std::fs::read_to_string(&pids).map_err(|e| {
                let rotate = std::fs::read_to_string(&rotate_err).unwrap_or_default();
                let policy = try_ctl(&c, 0, &["--output", "json", "secret", "rotation", "get", "app/slow"]);
                format!("{e}; secret rotate said {rotate:?}; the policy: {policy:?}")
            })?;
            text.lines().next().and_then(|l| l.trim().parse().ok()).ok_or(text)
        })
        .await;
        let alive = |pid: u32| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, r)| !r.starts_with('Z')))
        };
        let gone = |pid: u32| if alive(pid) { Err(format!("{pid} alive")) } else { Ok(()) };
        assert!(alive(first), "the hook {first} runs");
        let target = c.specs[(leader + 1) % 3].node_id;
        c.ctl(leader, &["cluster", "transfer-leader", &target.to_string()]);
        poll(10, "the former leader's hook is killed", || gone(first)).await;
        let v = json(&c.ctl((leader + 1) % 3, &["--output", "json", "secret", "versions", "app/slow"]));
        assert_eq!(v["current_version"], 1, "no version from a killed hook: {v}");

        // The new leader runs the still-due rotation's hook, and is then killed outright
        // (SIGKILL): it cannot kill its hook itself, and the kernel does.
        let second: u32 = poll(20, "the new leader starts the hook", || {
            let text = std::fs::read_to_string(&pids).map_err(|e| e.to_string())?;
            text.lines().nth(1).and_then(|l| l.trim().parse().ok()).ok_or(text)
        })
        .await;
        assert!(alive(second), "the hook {second} runs");
        let status = std::fs::read_to_string(format!("/proc/{second}/status")).expect("the hook's status");
        let parent: u32 = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no PPid in {status}"));
        let runner = c.nodes.iter().position(|n| n.pid() == Some(parent)).expect("a node started the hook");
        c.nodes[runner].kill();
        poll(10, "a SIGKILLed leader's hook is killed", || gone(second)).await;
        let _ = waiting.kill();
        let _ = waiting.wait();
        std::fs::remove_file(&flag).expect("release the hooks");
    });
}

/// A single node that runs hooks from `hooks` and retries failed rotations after 1 s.
async fn hook_node(hooks: &Path) -> SingleNode {
    let hooks = hooks.to_str().expect("utf-8 path").to_string();
    SingleNode::start(|s| {
        s.set("VAULT_ROTATION_HOOKS_DIR", &hooks).set("VAULT_ROTATION_RETRY_SECS", "1");
    })
    .await
}

/// Finding 6 of issue 28: a hook runs only for the names an admin bound it to. A `rotate`
/// grant on `dev/*` cannot point `dev/x` at a hook bound to `db/*` (nor at one bound to
/// nothing): PERMISSION_DENIED, and nothing is set. Only the admin role may bind, list and
/// unbind. Once the binding is removed, the leader refuses the existing `db/pass` policy at run
/// time: the old version stays current.
#[test]
fn an_exec_hook_runs_only_for_the_names_an_admin_bound_it_to() {
    mt().block_on(async {
        let (_work, hooks) = hooks_dir();
        let hook = install_hook(&hooks, "db-password", NEXT_HOOK);
        let generator = format!("exec:{}", hook.to_str().expect("utf-8 path"));
        let n = hook_node(&hooks).await;
        let url = n.url();
        n.ctl(&["secret", "put", "dev/x", "--value", "dev-first"]);
        n.ctl(&["secret", "put", "db/pass", "--value", "db-first"]);
        n.ctl(&["role", "create", "dev-rotator", "--grant", "rotate,list:dev/*"]);
        let dev = n.ctl(&["token", "create", "dev", "--role", "dev-rotator"]).trim().to_string();
        let set_dev = ["secret", "rotation", "set", "dev/x", "--every", "1h", "--generator", &generator];

        let err = must_fail_vaultctl(&url, Some(&dev), &set_dev);
        assert!(err.contains("permission denied"), "a hook bound to nothing: {err}");
        n.ctl(&["rotation", "hook", "bind", "db-password", "--names", "db/*"]);
        let err = must_fail_vaultctl(&url, Some(&dev), &set_dev);
        assert!(err.contains("permission denied"), "a hook bound to db/* only: {err}");
        let err = must_fail_vaultctl(&url, Some(&n.token), &set_dev);
        assert!(err.contains("permission denied"), "the binding binds the admin too: {err}");
        let err = must_fail_vaultctl(&url, Some(&n.token), &["secret", "rotation", "get", "dev/x"]);
        assert!(err.contains("not found"), "the refused policy was not stored: {err}");
        for args in [
            &["rotation", "hook", "bind", "db-password", "--names", "dev/*"][..],
            &["rotation", "hook", "unbind", "db-password"][..],
            &["rotation", "hook", "list"][..],
        ] {
            let err = must_fail_vaultctl(&url, Some(&dev), args);
            assert!(err.contains("permission denied"), "{args:?} needs the admin role: {err}");
        }
        let listed = n.ctl(&["--output", "json", "rotation", "hook", "list"]);
        assert!(listed.contains("db-password") && listed.contains("db/*"), "{listed}");

        n.ctl(&["secret", "rotation", "set", "db/pass", "--every", "1h", "--generator", &generator]);
        assert_eq!(n.ctl(&["secret", "rotate", "db/pass"]).trim(), "2", "a bound name rotates");
        assert_eq!(n.ctl(&["secret", "get", "db/pass"]), "db-first-next");

        n.ctl(&["rotation", "hook", "unbind", "db-password"]);
        let err = must_fail_vaultctl(&url, Some(&n.token), &["secret", "rotate", "db/pass"]);
        assert!(err.contains("not allowed"), "an unbound hook does not run: {err}");
        assert_eq!(n.ctl(&["secret", "get", "db/pass"]), "db-first-next", "the old version stays current");
        let p = policy_of(&n, "db/pass");
        assert!(p["last_error"].as_str().unwrap_or("").contains("not allowed"), "{p}");
    });
}

/// `secret rotation get NAME --output json` on a single node.
fn policy_of(n: &SingleNode, name: &str) -> Value {
    json(&n.ctl(&["--output", "json", "secret", "rotation", "get", name]))
}

/// Finding 6 of issue 28: a hook path outside the hooks directory is refused before the file
/// system is looked at, with one error whatever is there: `exec:/etc/shadow` (a file that
/// exists) and `exec:/nonexistent` answer the same text, as does an unbound path inside the
/// hooks directory that names nothing.
#[test]
fn refused_hook_paths_answer_one_error_whatever_exists() {
    mt().block_on(async {
        let (_work, hooks) = hooks_dir();
        let n = hook_node(&hooks).await;
        n.ctl(&["secret", "put", "app/k", "--value", "first"]);
        let missing_inside = format!("{}/missing", hooks.to_str().expect("utf-8 path"));
        // The refusal, at whichever step it comes: setting the policy, or running it.
        let refusal = |path: &str| -> String {
            let generator = format!("exec:{path}");
            let set = n.node.vaultctl(
                Some(&n.token),
                &["secret", "rotation", "set", "app/k", "--every", "1h", "--generator", &generator],
            );
            if !set.status.success() {
                return String::from_utf8_lossy(&set.stderr).trim().to_string();
            }
            must_fail_vaultctl(&n.url(), Some(&n.token), &["secret", "rotate", "app/k"])
        };
        let shadow = refusal("/etc/shadow");
        let nothing = refusal("/nonexistent");
        let inside = refusal(&missing_inside);
        assert_eq!(shadow, nothing, "an existing and a missing file are refused alike");
        assert_eq!(shadow, inside, "and so is a path inside the hooks directory that is not bound");
        assert!(shadow.contains("permission denied") && shadow.contains("not allowed"), "{shadow}");
        assert_eq!(n.ctl(&["secret", "get", "app/k"]), "first");
    });
}
