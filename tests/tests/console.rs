//! The operator console (`VAULT_UI_ADDR`) in a real browser: Debian's Chromium, headless,
//! driven by Playwright for Python (`tests/console/console_check.py`), against the console of
//! a follower in a real 3-node cluster, so its writes are forwarded to the leader.
//!
//! The script logs in, browses, reveals a value and finds its audit record, is refused a stale
//! check-and-set, forged POSTs, a token without grants and a read no reader rule grants, sees
//! sessions end after the idle time, at logout and when their token is revoked, hits the login
//! rate limit, and checks every page's HTML and headers. It prints one line per check; this test fails with that output unless every check passed.
//!
//! `make test` installs the browser and Playwright first (`make console`:
//! `scripts/install-console.sh`). Without them this test fails, saying so, unless
//! `VAULT_CONSOLE_TESTS=skip` is set, when it prints SKIP (for a machine without apt).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use vault_tests::*;

fn mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn chromium() -> PathBuf {
    std::env::var_os("VAULT_CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// What is missing to drive the browser, if anything.
fn missing_tools(py: &Path) -> Option<String> {
    if !chromium().exists() {
        return Some(format!("{} (Debian package chromium)", chromium().display()));
    }
    let ok = std::process::Command::new(py)
        .args(["-c", "import playwright.sync_api"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    (!ok).then(|| format!("Playwright for Python in {}", py.display()))
}

/// The Python to run the script with; `None` (after printing SKIP) only when the tools are
/// missing and `VAULT_CONSOLE_TESTS=skip` allows it.
fn browser_python(test: &str) -> Option<PathBuf> {
    let py = venv_python();
    let Some(missing) = missing_tools(&py) else { return Some(py) };
    if std::env::var("VAULT_CONSOLE_TESTS").as_deref() == Ok("skip") {
        println!("SKIP {test}: {missing} is missing (VAULT_CONSOLE_TESTS=skip)");
        return None;
    }
    panic!("{missing} is missing: `make console` (part of `make test`) installs it; VAULT_CONSOLE_TESTS=skip skips this test");
}

/// Runs the browser script against the console at `url`; returns its output. Tokens and the
/// value go in its environment, never its arguments.
async fn run_script(py: &Path, url: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let script = repo_root().join("tests/console/console_check.py");
    let mut cmd = tokio::process::Command::new(py);
    cmd.arg(&script)
        .args(["--url", url])
        .args(args)
        .env_remove("VAULT_ADDR")
        .env_remove("VAULT_TOKEN")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a hung run is ended with its browser.
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd.spawn().expect("run the browser script");
    let group = child.id().and_then(|id| i32::try_from(id).ok());
    let out = match tokio::time::timeout(Duration::from_secs(240), child.wait_with_output()).await {
        Ok(out) => out.expect("wait for the browser script"),
        Err(_) => {
            if let Some(g) = group {
                // SAFETY: kill(2) on the process group this test created; no memory involved.
                unsafe { libc::kill(-g, libc::SIGKILL) };
            }
            panic!("the browser script did not finish within 4 minutes");
        }
    };
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// What the script is given: the limited token, and `other/x`'s value.
struct Seeded {
    limited: String,
    ungranted_value: String,
}

/// Seeds what the script looks at: `app/db` with two versions (the second holds `value`),
/// neighbours and a sub-prefix, a rotation policy elsewhere, a reader rule that lets loopback
/// read `app/*` only (so `other/x` is a read no rule grants), and a token whose role grants
/// nothing under `app/`.
fn seed(c: &TestCluster, via: usize, value: &str) -> Seeded {
    let ungranted_value = canary("ungranted");
    c.ctl(via, &["secret", "put", "app/db", "--value", &canary("old")]);
    c.ctl(via, &["secret", "put", "app/db", "--value", value]);
    c.ctl(via, &["secret", "put", "app/api-key", "--value", &canary("api")]);
    c.ctl(via, &["secret", "put", "app/web/tls", "--value", &canary("tls")]);
    c.ctl(via, &["secret", "put", "other/x", "--value", &ungranted_value]);
    c.ctl(via, &["secret", "rotation", "set", "app/api-key", "--every", "24h", "--generator", "random:16"]);
    c.ctl(via, &["reader", "create", "loopback", "--cidr", "127.0.0.1/32", "--cidr", "::1/128", "--grant", "app/*"]);
    c.ctl(via, &["role", "create", "outsider", "--grant", "list:other/*"]);
    let limited = c.ctl(via, &["token", "create", "outsider-1", "--role", "outsider"]).trim().to_string();
    Seeded { limited, ungranted_value }
}

/// Live versions of `name` as the leader's API lists them.
fn versions(c: &TestCluster, via: usize, name: &str) -> usize {
    let json = c.ctl(via, &["--output", "json", "secret", "versions", name]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("versions JSON {e}: {json}"));
    let list = v.as_array().or_else(|| v["versions"].as_array()).unwrap_or_else(|| panic!("versions: {json}"));
    list.len()
}

#[test]
fn console_in_a_browser_on_a_follower() {
    let Some(py) = browser_python("console_in_a_browser_on_a_follower") else { return };
    mt().block_on(async {
        // Idle time: short for the expiry check, long enough that a loaded machine does not
        // end a session between two steps of one check.
        let c = TestCluster::start(3, |s| {
            s.set("VAULT_UI_ADDR", &format!("127.0.0.1:{}", free_port()))
                .set("VAULT_UI_SESSION_IDLE", "4s")
                .set("VAULT_UI_LOGIN_RATE", "20");
        })
        .await;
        let leader = c.leader_seen_by(0, |_| true).await;
        let follower = (leader + 1) % 3;
        let value = canary("console-value");
        let seeded = seed(&c, leader, &value);
        let before = versions(&c, leader, "app/db");
        let url = format!("http://{}", c.specs[follower].env["VAULT_UI_ADDR"]);

        let (ok, out) = run_script(
            &py,
            &url,
            &[
                "--secret",
                "app/db",
                "--prefix",
                "app/",
                "--actor",
                "console:bootstrap-admin",
                "--ungranted-secret",
                "other/x",
                "--limited-name",
                "outsider-1",
                "--idle-wait",
                "5",
            ],
            &[
                ("VAULT_CONSOLE_ADMIN_TOKEN", &c.token),
                ("VAULT_CONSOLE_LIMITED_TOKEN", &seeded.limited),
                ("VAULT_CONSOLE_VALUE", &value),
                ("VAULT_CONSOLE_UNGRANTED_VALUE", &seeded.ungranted_value),
            ],
        )
        .await;
        println!("{out}");
        assert!(ok && out.contains("all console checks passed"), "console checks failed on node {follower}:\n{out}");
        // Seen from the leader's API: the one good write landed (forwarded by the follower),
        // the stale check-and-set and the forged POSTs wrote nothing.
        assert_eq!(versions(&c, leader, "app/db"), before + 1, "app/db after the browser's writes");
        // Nothing of the value or the tokens in the node's log.
        for n in &c.nodes {
            let log = n.log();
            assert!(!log.contains(&value), "the value is in {}", n.log_path.display());
            assert!(!log.contains(&seeded.ungranted_value), "other/x's value is in {}", n.log_path.display());
            assert!(
                !log.contains(&c.token) && !log.contains(&seeded.limited),
                "a token is in {}",
                n.log_path.display()
            );
        }
    });
}

/// With TLS on the API the console serves TLS too, with the same certificate: the session
/// cookie is `Secure`, every page carries `Strict-Transport-Security`, and plain HTTP on its
/// port gets no page. The script's shorter run (`--quick`): login, a reveal and its audit
/// record, CSRF, logout, headers and the HTML scan.
#[test]
fn browser_over_tls() {
    let Some(py) = browser_python("browser_over_tls") else { return };
    mt().block_on(async {
        let c = TestCluster::start(1, |s| {
            s.serve_api_tls().set("VAULT_UI_ADDR", &format!("127.0.0.1:{}", free_port()));
        })
        .await;
        let value = canary("tls-value");
        c.ctl(0, &["secret", "put", "app/db", "--value", &value]);
        let addr = c.specs[0].env["VAULT_UI_ADDR"].clone();
        assert!(http_get(&addr, "/login").await.is_none(), "the console answers plain HTTP under TLS");

        let (ok, out) = run_script(
            &py,
            &format!("https://{addr}"),
            &["--secret", "app/db", "--quick"],
            &[("VAULT_CONSOLE_ADMIN_TOKEN", &c.token), ("VAULT_CONSOLE_VALUE", &value)],
        )
        .await;
        println!("{out}");
        assert!(ok && out.contains("all console checks passed"), "console checks over TLS failed:\n{out}");
    });
}
