//! The network the fault suite runs in, made by itself and removed on drop: a bridge in a
//! namespace of its own, one namespace per node (10.77.0.11, .12, ...) and one for the
//! clients (10.77.0.100). Nodes run in their namespaces (`ip netns exec`), Raft over mutual
//! TLS; partitions are nftables rules in the nodes' namespaces. Nothing outside these
//! namespaces is touched, and only PIDs started here are signalled.

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{bail, Context};

/// Names of everything one lab creates, all carrying one random suffix.
pub struct Lab {
    pub suffix: String,
    /// Node namespaces, index i for node id i+1 (spares included).
    pub node_ns: Vec<String>,
    pub client_ns: String,
    bridge_ns: String,
    created: Vec<String>,
}

fn run(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0]).args(&args[1..]).output().with_context(|| format!("run {}", args[0]))?;
    if !out.status.success() {
        bail!("{} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Runs `nft` with `script` on stdin inside namespace `ns`.
fn nft(ns: &str, script: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("run nft")?;
    child.stdin.take().context("nft stdin")?.write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft in {ns} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

pub fn node_ip(id: u64) -> String {
    format!("10.77.0.{}", 10 + id)
}

pub const CLIENT_IP: &str = "10.77.0.100";
const TABLE: &str = "vaultfaults";

impl Lab {
    /// Namespaces for `nodes` node ids (1..=nodes) and the clients.
    pub fn create(nodes: u64) -> anyhow::Result<Lab> {
        let suffix = vault_core_suffix();
        let mut lab = Lab {
            node_ns: (1..=nodes).map(|i| format!("vf-n{i}-{suffix}")).collect(),
            client_ns: format!("vf-cl-{suffix}"),
            bridge_ns: format!("vf-br-{suffix}"),
            suffix,
            created: Vec::new(),
        };
        lab.build().inspect_err(|_| lab.remove())?;
        Ok(lab)
    }

    fn add_ns(&mut self, ns: &str) -> anyhow::Result<()> {
        run(&["ip", "netns", "add", ns])?;
        self.created.push(ns.to_string());
        run(&["ip", "-n", ns, "link", "set", "lo", "up"])
    }

    fn build(&mut self) -> anyhow::Result<()> {
        let br = self.bridge_ns.clone();
        self.add_ns(&br)?;
        run(&["ip", "-n", &br, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &br, "link", "set", "br0", "up"])?;
        let mut hosts: Vec<(String, String, usize)> =
            self.node_ns.iter().enumerate().map(|(i, ns)| (ns.clone(), node_ip(i as u64 + 1), i + 1)).collect();
        hosts.push((self.client_ns.clone(), CLIENT_IP.to_string(), 99));
        for (ns, ip, n) in hosts {
            self.add_ns(&ns)?;
            let (a, b) = (format!("vfa{n}{}", self.suffix), format!("vfb{n}{}", self.suffix));
            run(&["ip", "link", "add", &a, "netns", &ns, "type", "veth", "peer", "name", &b, "netns", &br])?;
            run(&["ip", "-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", &a])?;
            run(&["ip", "-n", &ns, "link", "set", &a, "up"])?;
            run(&["ip", "-n", &br, "link", "set", &b, "master", "br0", "up"])?;
        }
        for ns in &self.node_ns {
            nft(
                ns,
                &format!(
                    "table inet {TABLE} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n  }}\n}}\n"
                ),
            )?;
        }
        Ok(())
    }

    /// Cuts the network so that node `a` and node `b` (ids) cannot talk, for every pair in
    /// `cut`, and heals every other pair. Clients keep reaching every node.
    pub fn partition(&self, cut: &BTreeSet<(u64, u64)>) -> anyhow::Result<()> {
        for (i, ns) in self.node_ns.iter().enumerate() {
            let me = i as u64 + 1;
            let mut script = format!("flush chain inet {TABLE} input\n");
            for (a, b) in cut {
                let other = if *a == me {
                    *b
                } else if *b == me {
                    *a
                } else {
                    continue;
                };
                script.push_str(&format!("add rule inet {TABLE} input ip saddr {} drop\n", node_ip(other)));
            }
            nft(ns, &script)?;
        }
        Ok(())
    }

    pub fn heal(&self) -> anyhow::Result<()> {
        self.partition(&BTreeSet::new())
    }

    /// Deletes every namespace this lab made (their links and nftables tables go with them).
    fn remove(&mut self) {
        for ns in self.created.drain(..).rev() {
            let _ = run(&["ip", "netns", "del", &ns]);
        }
    }

    /// Namespaces carrying this lab's suffix that still exist.
    pub fn leftovers(suffix: &str) -> Vec<String> {
        let out = Command::new("ip").args(["netns", "list"]).output().map(|o| o.stdout).unwrap_or_default();
        String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.ends_with(suffix))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.remove();
    }
}

fn vault_core_suffix() -> String {
    let c = crate::canary("x");
    c.chars().skip(2).filter(|ch| ch.is_ascii_alphanumeric()).take(5).collect::<String>().to_lowercase()
}

/// Moves the calling thread into namespace `ns`. Threads it creates afterwards (a tokio
/// runtime's workers) and processes it starts are in that namespace too.
pub fn enter(ns: &str) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/var/run/netns/{ns}")).with_context(|| format!("open namespace {ns}"))?;
    // SAFETY: setns on a valid namespace file descriptor affects only the calling thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!("setns {ns}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}
