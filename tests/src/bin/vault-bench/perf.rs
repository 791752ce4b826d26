//! `--perf`: `perf record` or `perf stat` attached to the server processes and this generator
//! during each timed run.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use crate::args::PerfMode;

/// What `--perf-mode stat` counts: all system calls, the ones a gRPC server or client makes
/// per request, context switches (voluntary and involuntary together, every thread of the
/// process, those that exit during the run included) and CPU time.
const PERF_STAT_EVENTS: &str = "raw_syscalls:sys_enter,syscalls:sys_enter_futex,syscalls:sys_enter_epoll_wait,\
syscalls:sys_enter_recvfrom,syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_writev,\
syscalls:sys_enter_sendmsg,syscalls:sys_enter_sendto,syscalls:sys_enter_pwrite64,syscalls:sys_enter_fdatasync,\
syscalls:sys_enter_getrandom,syscalls:sys_enter_sched_yield,syscalls:sys_enter_madvise,syscalls:sys_enter_mmap,\
syscalls:sys_enter_munmap,syscalls:sys_enter_mprotect,syscalls:sys_enter_lseek,syscalls:sys_enter_fsync,\
syscalls:sys_enter_statx,syscalls:sys_enter_newfstatat,syscalls:sys_enter_openat,syscalls:sys_enter_close,\
context-switches,task-clock";

/// Where `--perf` puts its files, and how it makes them.
static PERF: OnceLock<(PathBuf, PerfMode)> = OnceLock::new();

/// Turns `--perf` on for the rest of the bench.
pub fn enable(dir: PathBuf, mode: PerfMode) {
    let _ = PERF.set((dir, mode));
}

/// Counts of one process in one run, by `perf stat` event name.
pub type StatCounts = HashMap<String, f64>;

/// `perf` attached to some processes for as long as it lives; stopped with SIGINT, as perf
/// expects, and waited for so the files are complete.
pub struct Perf {
    children: Vec<Child>,
    /// The `perf stat` output of each process, in the order of the pids (record mode: none).
    stat_files: Vec<PathBuf>,
}

impl Perf {
    /// One perf per process: `<dir>/<name>.<k>.data` (or `.txt` for `stat`), `k` the
    /// process's place in `pids`. `None` without `--perf`.
    pub fn start(name: &str, pids: &[u32]) -> Option<Perf> {
        let (dir, mode) = PERF.get()?;
        let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let mut children = Vec::new();
        let mut stat_files = Vec::new();
        for (k, pid) in pids.iter().enumerate() {
            let mut cmd = Command::new("perf");
            match mode {
                PerfMode::Record => {
                    cmd.args(["record", "-q", "-F", "999", "--call-graph", "dwarf,16384", "-o"])
                        .arg(dir.join(format!("{name}.{k}.data")));
                }
                PerfMode::Stat => {
                    let file = dir.join(format!("{name}.{k}.txt"));
                    cmd.args(["stat", "-x,", "-e", PERF_STAT_EVENTS, "-o"]).arg(&file);
                    stat_files.push(file);
                }
            }
            match cmd.args(["-p", &pid.to_string()]).stdout(Stdio::null()).spawn() {
                Ok(c) => children.push(c),
                Err(e) => eprintln!("perf not started ({e})"),
            }
        }
        Some(Perf { children, stat_files })
    }

    /// Stops every perf and, in `stat` mode, reads what each counted (in the order of the
    /// pids; `None` for a file perf did not write).
    pub fn finish(mut self) -> Vec<Option<StatCounts>> {
        self.stop();
        self.stat_files.iter().map(|f| std::fs::read_to_string(f).ok().map(|text| parse_stat(&text))).collect()
    }

    fn stop(&mut self) {
        for c in &self.children {
            let _ = Command::new("kill").args(["-INT", &c.id().to_string()]).status();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
        self.children.clear();
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `perf stat -x,` output: `value,unit,event,...` per line; comments and events perf could
/// not count (`<not counted>`, `<not supported>`) are left out.
fn parse_stat(text: &str) -> StatCounts {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut fields = l.split(',');
            let value: f64 = fields.next()?.trim().parse().ok()?;
            let event = fields.nth(1)?.trim();
            (!event.is_empty()).then(|| (event.to_string(), value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_perf_stat_csv() {
        let text = "# started on Mon Dec  7 22:00:00 2026\n\n\
                    51234,,raw_syscalls:sys_enter,4001234567,100.00,,\n\
                    1789,,context-switches,4001234567,100.00,0.447,K/sec\n\
                    3998.12,msec,task-clock,3998120000,100.00,0.999,CPUs utilized\n\
                    <not counted>,,syscalls:sys_enter_fsync,0,0.00,,\n";
        let counts = parse_stat(text);
        assert_eq!(counts.get("raw_syscalls:sys_enter"), Some(&51234.0));
        assert_eq!(counts.get("context-switches"), Some(&1789.0));
        assert_eq!(counts.get("task-clock"), Some(&3998.12));
        assert!(!counts.contains_key("syscalls:sys_enter_fsync"), "uncounted events are left out");
    }
}
