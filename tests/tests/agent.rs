//! `vaultctl agent` against real nodes: files rendered from secrets, kept current through
//! changes, rotations and the loss of a node; actions on change; the example configuration and
//! systemd unit shipped in `vaultctl/examples/agent/`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vault_tests::*;

fn mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime")
}

fn utf8(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Polls `probe` every 100 ms for up to `secs`; panics with `what` and the last thing seen.
fn wait_for<T>(secs: u64, what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match probe() {
            Ok(t) => return t,
            Err(seen) => assert!(Instant::now() < deadline, "{what}: not within {secs} s; last seen: {seen}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// A running `vaultctl agent`, its log in a file; killed when dropped.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn start(config: &Path, env: &[(&str, &str)]) -> Agent {
        let log = config.with_extension("log");
        let mut cmd = Command::new(bin("vaultctl"));
        cmd.env_clear()
            .env("VAULT_LOG", "info")
            .args(["agent", "--config", utf8(config)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the agent log"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        Agent { child: cmd.spawn().expect("start vaultctl agent"), log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Agent {
    /// SIGTERM first, so the agent stops the program it supervises; SIGKILL after 5 s.
    fn drop(&mut self) {
        if self.running() {
            let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process that writes its pid to `pid_file` and appends a line to `signals` for every
/// SIGUSR1 it gets; killed when dropped.
struct Listener(Child);

impl Listener {
    fn start(pid_file: &Path, signals: &Path, signal: &str) -> Listener {
        let script = format!(
            "trap 'echo {signal} >> \"{}\"' {signal}; echo $$ > \"{}\"; while :; do sleep 0.1; done",
            utf8(signals),
            utf8(pid_file)
        );
        let child = Command::new("/bin/sh").args(["-c", &script]).stdin(Stdio::null()).spawn().expect("start sh");
        wait_for(5, "the listener writes its pid", || read(pid_file).map(|_| ()));
        Listener(child)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `vaultctl` with the admin token against `n`, with its CA; must succeed.
fn admin(n: &SingleNode, args: &[&str]) -> String {
    let out = n.node.vaultctl(Some(&n.token), args);
    assert!(out.status.success(), "vaultctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|t| t.lines().count()).unwrap_or(0)
}

/// The example configuration and unit (`vaultctl/examples/agent/`) against a TLS node whose
/// reader rule grants `app/*` to the certificate `agent-1` only: the agent renders the
/// example template to a file of mode 0640 in the agent's group; a put and a rotation reach
/// it and each signals the process named by the pid file; its reads are on record as
/// `cert:agent-1`; with the node stopped the file stays and the agent says how stale it is
/// (log and metric); when the node is back a change reaches the file again. The unit passes
/// `systemd-analyze verify` where that exists.
#[test]
fn the_example_agent_config_keeps_a_rendered_file_current_over_tls() {
    mt().block_on(async {
        let work = test_dir();
        let (certs, readers, out) = (work.path().join("certs"), work.path().join("readers"), work.path().join("run"));
        std::fs::create_dir_all(&out).expect("mkdir run");
        mint_certs(&certs, &[1]);
        mint_reader_cert("agent-1", &readers);
        let mut n = SingleNode::start(|s| {
            s.set("VAULT_TLS_CERT", utf8(&certs.join("node-1.pem")))
                .set("VAULT_TLS_KEY", utf8(&certs.join("node-1.key")))
                .set("VAULT_TLS_CLIENT_CA", utf8(&readers.join("reader-ca.pem")));
            s.api_ca = Some(certs.join("ca.pem"));
        })
        .await;
        let first = canary("agent-db-1");
        admin(&n, &["secret", "put", "app/db", "--value", &first]);
        admin(&n, &["reader", "create", "agents", "--cert-cn", "agent-1", "--grant", "app/*"]);

        // The example, pointed at this node, these files and this user's group.
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../vaultctl/examples/agent");
        let metrics = format!("127.0.0.1:{}", free_port());
        let gid = std::fs::metadata(&out).expect("stat").gid().to_string();
        let example = read(&examples.join("agent.toml")).expect("the example config");
        let addrs_line = example.lines().find(|l| l.starts_with("addrs")).expect("an addrs line").to_string();
        let config_text = example
            .replace(&addrs_line, &format!("addrs = [{:?}]", n.url()))
            .replace("/etc/vault-agent/ca.pem", utf8(&certs.join("ca.pem")))
            .replace("/etc/vault-agent/client.pem", utf8(&readers.join("reader-agent-1.pem")))
            .replace("/etc/vault-agent/db.conf.tmpl", utf8(&examples.join("db.conf.tmpl")))
            .replace("/run/app/", &format!("{}/", utf8(&out)))
            .replace("127.0.0.1:9209", &metrics)
            .replace("group = \"app\"", &format!("group = \"{gid}\""))
            // A top-level key, so before the first table.
            .replacen("[[template]]", "stale_after_secs = 1\n\n[[template]]", 1);
        assert_ne!(config_text, example, "the example was adapted");
        let signals = work.path().join("signals");
        let reload = "[\"/bin/systemctl\", \"reload\", \"app.service\"]";
        assert!(config_text.contains(reload), "the example reloads the app with systemctl");
        let config_text =
            config_text.replace(reload, &format!("[\"/bin/sh\", \"-c\", \"echo reload >> {}\"]", utf8(&signals)));
        let config = work.path().join("agent.toml");
        std::fs::write(&config, &config_text).expect("write the config");
        let key = readers.join("reader-agent-1.key");
        let mut agent = Agent::start(&config, &[("VAULT_CLIENT_KEY", utf8(&key))]);
        let rendered = out.join("db.conf");
        let text = wait_for(20, "the first render", || {
            read(&rendered)
                .and_then(|t| if t.contains(&first) { Ok(t) } else { Err(t) })
                .map_err(|e| format!("{e}; the agent's log:\n{}", agent.log()))
        });
        assert!(text.contains("from app/db version 1"), "{text}");
        let meta = std::fs::metadata(&rendered).expect("stat");
        assert_eq!(meta.permissions().mode() & 0o777, 0o640, "the mode the config asks for");
        assert_eq!(meta.gid().to_string(), gid, "the group the config asks for");
        assert_eq!(lines(&signals), 0, "a file created at start reloads nothing");

        let second = canary("agent-db-2");
        admin(&n, &["secret", "put", "app/db", "--value", &second]);
        wait_for(10, "a put reaches the file", || {
            read(&rendered).and_then(|t| if t.contains(&second) { Ok(()) } else { Err(t) })
        });
        wait_for(10, "the app is reloaded", || {
            if lines(&signals) == 1 {
                Ok(())
            } else {
                Err(lines(&signals).to_string())
            }
        });

        admin(&n, &["secret", "rotation", "set", "app/db", "--every", "1h", "--generator", "random:16"]);
        admin(&n, &["secret", "rotate", "app/db"]);
        wait_for(10, "a rotation reaches the file", || {
            read(&rendered).and_then(|t| if t.contains("version 3") && !t.contains(&second) { Ok(()) } else { Err(t) })
        });
        wait_for(10, "the app is reloaded again", || {
            if lines(&signals) == 2 {
                Ok(())
            } else {
                Err(lines(&signals).to_string())
            }
        });

        let records: Value =
            serde_json::from_str(&admin(&n, &["--output", "json", "audit", "list", "--secret", "app/db"]))
                .expect("json");
        let by_agent = records
            .as_array()
            .expect("records")
            .iter()
            .filter(|r| r["action"] == "secret.get" && r["actor"] == "cert:agent-1")
            .count();
        assert!(by_agent >= 3, "the agent's reads are on record under its certificate: {records}");
        let log = agent.log();
        for leaked in [&first, &second] {
            assert!(!log.contains(leaked.as_str()), "a value in the agent's log:\n{log}");
        }

        // The node goes away: the file stays, and the agent says how stale it is.
        n.node.stop();
        let stale = wait_for(15, "the agent says it is stale", || {
            let log = agent.log();
            if log.contains("files may be stale") {
                Ok(log)
            } else {
                Err(log)
            }
        });
        assert!(stale.contains("stale_secs"), "{stale}");
        let stale_secs = sample(&scrape(&metrics).await, "vault_agent_stale_seconds");
        assert!(stale_secs.is_some_and(|v| v >= 1.0), "vault_agent_stale_seconds {stale_secs:?}");
        let held = read(&rendered).expect("the file is still there");
        assert!(held.contains("version 3"), "the last render stays: {held}");
        assert!(agent.running(), "the agent keeps running:\n{}", agent.log());

        n.node = n.spec.start();
        n.node.wait_ready().await;
        let fourth = canary("agent-db-4");
        admin(&n, &["secret", "put", "app/db", "--value", &fourth]);
        wait_for(30, "a change after the node's return reaches the file", || {
            read(&rendered).and_then(|t| if t.contains(&fourth) { Ok(()) } else { Err(t) })
        });
        assert!(agent.log().contains("the cluster answers again"), "{}", agent.log());

        verify_unit(&examples.join("vault-agent.service"), &config, work.path());
    });
}

/// `systemd-analyze verify` of the example unit, its ExecStart pointed at the vaultctl built
/// here (the unit names /usr/local/bin/vaultctl). Skipped, saying so, where systemd-analyze is
/// missing.
fn verify_unit(unit: &Path, config: &Path, work: &Path) {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("SKIP systemd-analyze verify: systemd-analyze is not installed");
        return;
    };
    assert!(probe.status.success());
    let text = read(unit).expect("the example unit");
    let adapted = text
        .replace("/usr/local/bin/vaultctl", utf8(&bin("vaultctl")))
        .replace("/etc/vault-agent/agent.toml", utf8(config));
    assert_ne!(adapted, text, "ExecStart was pointed at the built vaultctl");
    let path = work.join("vault-agent.service");
    std::fs::write(&path, adapted).expect("write the unit");
    let out = Command::new("systemd-analyze").args(["verify", utf8(&path)]).output().expect("systemd-analyze");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Lines about other units on this host (or a host without a running systemd) are not the
    // example's; any line naming the example is.
    let about_it: Vec<&str> = said.lines().filter(|l| l.contains("vault-agent.service")).collect();
    assert!(about_it.is_empty(), "systemd-analyze verify finds fault with the example unit:\n{said}");
}

/// On a three-node cluster given all its addresses: the agent follows puts through the loss
/// of the node it was reading from (SIGKILL), runs a template's command after each change,
/// restarts the program it supervises (a new pid each time, the old one gone), and leaves with
/// that program's status when it exits by itself.
#[test]
fn an_agent_follows_changes_across_a_node_loss_and_restarts_its_program() {
    mt().block_on(async {
        let mut c = TestCluster::start(3, |_| {}).await;
        let work = test_dir();
        let first = canary("svc-1");
        c.ctl(0, &["secret", "put", "svc/key", "--value", &first]);
        let (rendered, ran, pids) = (work.path().join("svc.env"), work.path().join("ran"), work.path().join("pids"));
        let (envs, pid_file, signals) =
            (work.path().join("envs"), work.path().join("app.pid"), work.path().join("sigs"));
        let _app = Listener::start(&pid_file, &signals, "USR1");
        let addrs: Vec<String> = (0..3).map(|i| format!("{:?}", c.url(i))).collect();
        let config = work.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                r#"addrs = [{addrs}]

[[template]]
contents = "KEY={{{{ secret('svc/key') }}}}\n"
destination = "{dest}"
secrets = ["svc/key"]
command = ["/bin/sh", "-c", "env >> {envs}; echo ran >> {ran}"]
pid_file = "{pid_file}"
signal = "USR1"

[exec]
command = ["/bin/sh", "-c", "env >> {envs}; echo $$ >> {pids}; exec sleep 120"]
on_change = "restart"
stop_timeout_secs = 2
"#,
                addrs = addrs.join(", "),
                dest = utf8(&rendered),
                envs = utf8(&envs),
                ran = utf8(&ran),
                pids = utf8(&pids),
                pid_file = utf8(&pid_file),
            ),
        )
        .expect("write the config");
        // Credentials the agent has (or would have under systemd) that its children must not.
        let credentials = [
            ("VAULT_TOKEN", c.token.as_str()),
            ("VAULT_TOKEN_FILE", "/nonexistent/token"),
            ("CREDENTIALS_DIRECTORY", "/run/credentials/vault-agent.service"),
        ];
        let mut agent = Agent::start(&config, &credentials);
        wait_for(20, "the first render", || {
            read(&rendered).and_then(|t| if t == format!("KEY={first}\n") { Ok(()) } else { Err(t) })
        });
        assert_eq!(std::fs::metadata(&rendered).expect("stat").permissions().mode() & 0o777, 0o600, "default mode");
        let started = wait_for(10, "the program starts after the render", || {
            if lines(&pids) == 1 {
                Ok(read(&pids)?)
            } else {
                Err(format!("{} pids", lines(&pids)))
            }
        });
        let first_pid: u32 = started.trim().parse().expect("a pid");
        assert_eq!(lines(&ran), 0, "no command for the first render");

        // The agent reads and watches through the first address it was given: kill that node.
        c.nodes[0].kill();
        let second = canary("svc-2");
        let via = c.leader_seen_by(1, |_| true).await;
        c.ctl(via, &["secret", "put", "svc/key", "--value", &second]);
        wait_for(30, "a put after the node's loss reaches the file", || {
            read(&rendered).and_then(|t| if t.contains(&second) { Ok(()) } else { Err(t) })
        });
        wait_for(10, "the command runs", || if lines(&ran) == 1 { Ok(()) } else { Err(lines(&ran).to_string()) });
        wait_for(10, "the app named by the pid file is signalled", || {
            if lines(&signals) == 1 {
                Ok(())
            } else {
                Err(lines(&signals).to_string())
            }
        });
        let restarted = wait_for(10, "the program restarts", || {
            if lines(&pids) == 2 {
                Ok(read(&pids)?)
            } else {
                Err(format!("{} pids", lines(&pids)))
            }
        });
        let second_pid: u32 = restarted.lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("a second pid");
        assert_ne!(first_pid, second_pid);
        wait_for(5, "the old program is gone", || {
            if Path::new(&format!("/proc/{first_pid}")).exists() {
                Err("alive".into())
            } else {
                Ok(())
            }
        });

        let seen = read(&envs).expect("the children's environments");
        for (var, _) in credentials {
            assert!(!seen.lines().any(|l| l.starts_with(&format!("{var}="))), "{var} reached a child:\n{seen}");
        }
        assert!(!seen.contains(&c.token), "the token reached a child");

        // The program exits by itself (killed from outside): the agent leaves with its status.
        let killed = Command::new("kill").args(["-TERM", &second_pid.to_string()]).status().expect("kill");
        assert!(killed.success());
        let status = wait_for(10, "the agent exits with its program", || match agent.child.try_wait() {
            Ok(Some(s)) => Ok(s),
            other => Err(format!("{other:?}")),
        });
        assert!(!status.success(), "a program ended by a signal is a failure: {status}");
        assert!(agent.log().contains("the supervised process exited"), "{}", agent.log());
    });
}

/// Configuration mistakes stop the agent at once with one clear line, and nothing is written:
/// a world-readable mode, a token written in the file.
#[test]
fn a_bad_agent_config_is_refused_with_a_clear_message() {
    let work = test_dir();
    let dest = work.path().join("out.conf");
    for (extra, expect) in [("mode = \"0644\"\n", "every user"), ("", "token_file")] {
        let token_line = if extra.is_empty() { "token = \"not-here\"\n" } else { "" };
        let config = work.path().join("bad.toml");
        std::fs::write(
            &config,
            format!(
                "{token_line}addrs = [\"http://127.0.0.1:1\"]\n[[template]]\ncontents = \"x\"\ndestination = \"{}\"\nsecrets = [\"a/b\"]\n{extra}",
                utf8(&dest)
            ),
        )
        .expect("write");
        let out = Command::new(bin("vaultctl"))
            .env_clear()
            .args(["agent", "--config", utf8(&config)])
            .stdin(Stdio::null())
            .output()
            .expect("run the agent");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "refused");
        assert!(err.contains(expect), "{expect:?} in {err}");
        assert!(!err.contains("not-here"), "the token's value is not echoed: {err}");
        assert!(!dest.exists());
    }
}
