//! What the bench reads from outside the load: CPU time, context switches and memory of
//! processes (from `/proc`), the vault nodes' `/metrics` around each run (allocation counters,
//! the leader's write pipeline), the disk's fsync time and on-disk sizes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::{json, Value};

use crate::perf::StatCounts;

/// Whether timed runs read allocation counters (`--alloc`).
static COUNT_ALLOCATIONS: AtomicBool = AtomicBool::new(false);

pub fn count_allocations() {
    COUNT_ALLOCATIONS.store(true, Ordering::Relaxed);
}

pub fn counting_allocations() -> bool {
    COUNT_ALLOCATIONS.load(Ordering::Relaxed)
}

/// One server process of a system under test.
#[derive(Clone, Debug)]
pub struct Node {
    /// Its number in the table: the vault node id, or the etcd member's place plus one.
    pub id: u64,
    pub pid: u32,
    /// "leader" or "follower", as the system saw it when the bench started.
    pub role: &'static str,
    /// Its metrics listener (`host:port`), for vault nodes.
    pub metrics: Option<String>,
}

/// Clock ticks per second of `/proc`'s CPU times.
fn ticks_per_sec() -> f64 {
    static TICKS_PER_SEC: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS_PER_SEC.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User plus system CPU time in a `/proc/.../stat` line, in microseconds.
fn stat_cpu_us(stat: &str) -> f64 {
    // Fields after the command name (which may hold spaces): state is the first, utime and
    // stime the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / ticks_per_sec() * 1e6
}

/// User plus system CPU time of a process (`self` or a pid) so far, in microseconds.
pub fn cpu_us(pid: &str) -> f64 {
    stat_cpu_us(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

/// CPU time of several processes together, in microseconds.
pub fn cpu_us_of(pids: &[u32]) -> f64 {
    pids.iter().map(|p| cpu_us(&p.to_string())).sum()
}

/// CPU time so far of this process's threads named `name` (the delay proxy's), in
/// microseconds, so it can be taken out of the generator's.
pub fn own_threads_cpu_us(name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0.0 };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name))
        .map(|t| stat_cpu_us(&std::fs::read_to_string(t.path().join("stat")).unwrap_or_default()))
        .sum()
}

/// Voluntary and involuntary context switches of each live thread of `pid`, by thread id.
/// `/proc` keeps them per thread only, so a thread that exits takes its count along: between
/// two readings, the threads that lived through the second are counted (see [`Switches`]).
fn switches_by_thread(pid: u32) -> HashMap<u32, (u64, u64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return HashMap::new() };
    tasks
        .flatten()
        .filter_map(|t| {
            let tid = t.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(t.path().join("status")).ok()?;
            let field = |k: &str| -> Option<u64> {
                status.lines().find_map(|l| l.strip_prefix(k)).and_then(|v| v.trim().parse().ok())
            };
            Some((tid, (field("voluntary_ctxt_switches:")?, field("nonvoluntary_ctxt_switches:")?)))
        })
        .collect()
}

/// Context switches in a window: voluntary (a thread waits: a lock, a channel, I/O, epoll)
/// and involuntary (preempted). Threads that exit inside the window are not counted; `perf
/// stat` (`--perf-mode stat`) counts them too, as one total.
#[derive(Clone, Copy, Debug, Default)]
pub struct Switches {
    pub voluntary: f64,
    pub involuntary: f64,
}

fn switches_between(before: &HashMap<u32, (u64, u64)>, after: &HashMap<u32, (u64, u64)>) -> Switches {
    let mut s = Switches::default();
    for (tid, (v, i)) in after {
        let (v0, i0) = before.get(tid).copied().unwrap_or((0, 0));
        s.voluntary += v.saturating_sub(v0) as f64;
        s.involuntary += i.saturating_sub(i0) as f64;
    }
    s
}

/// What one node used in one run, per completed operation.
#[derive(Clone, Debug)]
pub struct NodeUse {
    pub node: u64,
    pub role: &'static str,
    pub cpu_us: f64,
    pub switches: Switches,
    /// `perf stat`'s exact counts (`--perf-mode stat`): context switches, system calls.
    pub perf: Option<(f64, f64)>,
    /// Allocations and bytes allocated (`--alloc`).
    pub alloc: Option<(f64, f64)>,
}

impl NodeUse {
    pub fn json(&self) -> Value {
        let r = |x: f64| (x * 100.0).round() / 100.0;
        let mut v = json!({"node": self.node, "role": self.role, "cpu_us_per_op": self.cpu_us.round(),
            "context_switches_per_op": {"voluntary": r(self.switches.voluntary), "involuntary": r(self.switches.involuntary)}});
        if let Some((switches, syscalls)) = self.perf {
            v["perf_stat"] = json!({"context_switches_per_op": r(switches), "syscalls_per_op": r(syscalls)});
        }
        if let Some((allocations, bytes)) = self.alloc {
            v["alloc"] = json!({"allocations_per_op": r(allocations), "bytes_per_op": bytes.round()});
        }
        v
    }
}

/// The allocation counters of a `counting-alloc` build in one scrape.
fn alloc_totals(page: &str) -> Option<(f64, f64)> {
    Some((vault_tests::sample(page, "vault_alloc_total")?, vault_tests::sample(page, "vault_alloc_bytes_total")?))
}

fn leader_metrics(nodes: &[Node]) -> Option<&str> {
    nodes.iter().find(|n| n.role == "leader")?.metrics.as_deref()
}

/// One `/metrics` page, or `None` if the listener does not answer 200 (the bench goes on).
pub async fn scrape_series(addr: &str) -> Option<String> {
    match vault_tests::http_get(addr, "/metrics").await? {
        (200, body) => Some(body),
        _ => None,
    }
}

/// Whether every node exports the allocation counters (a `counting-alloc` build).
pub async fn nodes_count_allocations(nodes: &[Node]) -> bool {
    for n in nodes {
        let Some(addr) = &n.metrics else { return false };
        if scrape_series(addr).await.as_deref().and_then(alloc_totals).is_none() {
            return false;
        }
    }
    true
}

/// A node's CPU time (µs) and its threads' context switches at one instant.
type Reading = (f64, HashMap<u32, (u64, u64)>);

/// The nodes' state around a run; [`finish`](Self::finish) makes it per operation.
pub struct Probe {
    nodes: Vec<Node>,
    /// Each node's CPU time and context switches by thread at the window's start and end.
    opened: Vec<Reading>,
    closed: Vec<Reading>,
    /// Each node's allocation totals at the start, less what one scrape itself allocates
    /// (two scrapes back to back measure that), so the scrape that ends the run is not
    /// charged to it. `None` without `--alloc`.
    alloc: Option<Vec<Option<(f64, f64)>>>,
    /// The leader's metrics page (for its write pipeline), if it serves one.
    pub leader_page: Option<String>,
}

impl Probe {
    pub async fn start(nodes: &[Node]) -> Probe {
        let leader_page = match leader_metrics(nodes) {
            Some(addr) => scrape_series(addr).await,
            None => None,
        };
        let alloc = if counting_allocations() {
            let mut at_start = Vec::new();
            for n in nodes {
                let Some(addr) = &n.metrics else {
                    at_start.push(None);
                    continue;
                };
                let first = scrape_series(addr).await.as_deref().and_then(alloc_totals);
                let second = scrape_series(addr).await.as_deref().and_then(alloc_totals);
                at_start.push(first.zip(second).map(|((a0, b0), (a1, b1))| (a1 + (a1 - a0), b1 + (b1 - b0))));
            }
            Some(at_start)
        } else {
            None
        };
        Probe { nodes: nodes.to_vec(), opened: Vec::new(), closed: Vec::new(), alloc, leader_page }
    }

    /// Each node's CPU time and context switches now.
    fn read(&self) -> Vec<Reading> {
        self.nodes.iter().map(|n| (cpu_us(&n.pid.to_string()), switches_by_thread(n.pid))).collect()
    }

    /// Starts the measured window (after the scrapes, and after `perf` is attached, so that
    /// its window holds this one).
    pub fn open(&mut self) {
        self.opened = self.read();
    }

    /// Ends the measured window.
    pub fn close(&mut self) {
        self.closed = self.read();
    }

    /// Per-node use between [`open`](Self::open) and [`close`](Self::close), each divided by
    /// `ops`; `perf` the `perf stat` counts of each node, if taken. Scrapes the nodes again:
    /// returns the leader's metrics page at the end too.
    pub async fn finish(self, ops: f64, perf: &[Option<StatCounts>]) -> (Vec<NodeUse>, Option<String>) {
        let ops = ops.max(1.0);
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let (Some((cpu0, sw0)), Some((cpu1, sw1))) = (self.opened.get(i), self.closed.get(i)) else { continue };
            let cpu = cpu1 - cpu0;
            let sw = switches_between(sw0, sw1);
            out.push(NodeUse {
                node: n.id,
                role: n.role,
                cpu_us: cpu / ops,
                switches: Switches { voluntary: sw.voluntary / ops, involuntary: sw.involuntary / ops },
                perf: perf.get(i).and_then(Option::as_ref).map(|c| {
                    let count = |k: &str| c.get(k).copied().unwrap_or(0.0) / ops;
                    (count("context-switches"), count("raw_syscalls:sys_enter"))
                }),
                alloc: None,
            });
        }
        let mut last_page = None;
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(addr) = n.metrics.as_ref().filter(|_| self.alloc.is_some() || n.role == "leader") else {
                continue;
            };
            let page = scrape_series(addr).await;
            if let Some(start) = self.alloc.as_ref().and_then(|a| a[i]) {
                if let Some((a, b)) = page.as_deref().and_then(alloc_totals) {
                    out[i].alloc = Some(((a - start.0).max(0.0) / ops, (b - start.1).max(0.0) / ops));
                }
            }
            if n.role == "leader" {
                last_page = page;
            }
        }
        (out, last_page)
    }
}

/// What a leader's write pipeline did between two scrapes `secs` apart (see `proposals.rs`).
pub fn pipeline(before: &str, after: &str, secs: f64) -> Value {
    let at = |page: &str, k: &str| vault_tests::sample(page, k).unwrap_or(0.0);
    let delta = |k: &str| at(after, k) - at(before, k);
    let per = |num: f64, den: f64| if den > 0.0 { num / den } else { 0.0 };
    let mean_ms = |h: &str| 1000.0 * per(delta(&format!("{h}_sum")), delta(&format!("{h}_count")));
    let entries = delta("vault_raft_write_entry_seconds_count");
    let alone = delta(r#"vault_raft_write_in_flight_bucket{le="1"}"#);
    let syncs = delta("vault_raft_log_sync_seconds_count");
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({
        "entries_per_sec": round(per(entries, secs)),
        "writes_per_entry": round(per(delta("vault_raft_write_entry_commands_sum"), entries)),
        "mean_entries_in_flight": round(per(delta("vault_raft_write_entry_seconds_sum"), secs)),
        "proposed_behind_another_pct": round(100.0 * per(entries - alone, entries)),
        "queue_wait_ms": round(mean_ms("vault_raft_write_queue_seconds")),
        "entry_ms": round(mean_ms("vault_raft_write_entry_seconds")),
        "own_sync_wait_ms": round(mean_ms("vault_raft_apply_sync_wait_seconds")),
        "apply_ms": round(mean_ms("vault_raft_apply_seconds")),
        "fsyncs_per_sec": round(per(syncs, secs)),
        "entries_per_fsync": round(per(delta("vault_raft_log_sync_entries_sum"), syncs)),
        "fsync_ms": round(mean_ms("vault_raft_log_sync_seconds")),
    })
}

pub fn fdatasync_ms(dir: &Path) -> f64 {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).expect("probe file");
    let buf = [7u8; 4096];
    let mut times = Vec::new();
    for _ in 0..200 {
        f.write_all(&buf).expect("write probe");
        let t0 = Instant::now();
        f.sync_data().expect("fdatasync");
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    let _ = std::fs::remove_file(&path);
    times.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    times[times.len() / 2]
}

pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    (kb / 1024.0 * 10.0).round() / 10.0
}

/// RSS and on-disk size of the `i`-th node of a cluster.
pub fn node_json(i: usize, pid: Option<u32>, dir: &Path) -> Value {
    json!({"node": i + 1, "rss_mib": pid.map(rss_mib).unwrap_or(0.0), "disk_mib": dir_mib(dir)})
}

fn dir_mib(dir: &Path) -> f64 {
    fn walk(p: &Path) -> u64 {
        let Ok(rd) = std::fs::read_dir(p) else { return 0 };
        rd.flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            })
            .sum()
    }
    (walk(dir) as f64 / (1024.0 * 1024.0) * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_switches_of_threads_that_lived_through_the_window() {
        let before = HashMap::from([(1, (10, 1)), (2, (5, 5)), (3, (100, 100))]);
        // Thread 3 exited (its count is gone), thread 4 was born.
        let after = HashMap::from([(1, (15, 3)), (2, (5, 6)), (4, (7, 0))]);
        let s = switches_between(&before, &after);
        assert_eq!((s.voluntary, s.involuntary), (5.0 + 7.0, 2.0 + 1.0));
    }

    #[test]
    fn reads_this_process_switches() {
        let me = std::process::id();
        let before = switches_by_thread(me);
        assert!(!before.is_empty(), "/proc lists this process's threads");
        for _ in 0..5 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let s = switches_between(&before, &switches_by_thread(me));
        assert!(s.voluntary >= 5.0, "each sleep is a voluntary switch: {s:?}");
    }
}
