//! The bench's command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

#[derive(Parser)]
#[command(name = "vault-bench")]
pub struct Args {
    /// Secrets stored before the scale runs.
    #[arg(long, default_value_t = 1_000_000)]
    pub scale: u64,
    /// Seconds per measured run.
    #[arg(long, default_value_t = 4)]
    pub duration: u64,
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub clients: Vec<usize>,
    /// Concurrent clients writing the secrets stored before the scale runs.
    #[arg(long, default_value_t = 256)]
    pub preload_clients: usize,
    /// Versions re-wrapped in the re-wrap run.
    #[arg(long, default_value_t = 2000)]
    pub rewrap_versions: u64,
    #[arg(long)]
    pub skip_etcd: bool,
    #[arg(long)]
    pub skip_scale: bool,
    #[arg(long)]
    pub skip_rewrap: bool,
    /// Watchers of the watch scenario (see `watch`).
    #[arg(long, default_value_t = 1000)]
    pub watchers: usize,
    #[arg(long)]
    pub skip_watch: bool,
    /// Rotations of the agent scenario (see `agent`).
    #[arg(long, default_value_t = 100)]
    pub agent_rotations: usize,
    #[arg(long)]
    pub skip_agent: bool,
    /// Leave out the write and read runs at each `--clients` (the table's rows).
    #[arg(long)]
    pub skip_throughput: bool,
    /// Serve the vault cluster's API over TLS (`VAULT_TLS_CERT`) and load it over TLS. The
    /// etcd baseline stays plaintext, so leave it out (`--skip-etcd`) to compare like with like.
    #[arg(long)]
    pub api_tls: bool,
    #[arg(long, default_value = "bench-results.json")]
    pub out: PathBuf,
    /// Record every timed run of the server processes and of this generator with `perf` into
    /// this directory, one file per run and process (for profiling, not for the figures:
    /// perf costs CPU too).
    #[arg(long)]
    pub perf: Option<PathBuf>,
    /// With `--perf`: `record` samples call graphs; `stat` counts system calls, context
    /// switches and CPU time exactly, and the per-node table reports them per operation.
    #[arg(long, value_enum, default_value_t = PerfMode::Record)]
    pub perf_mode: PerfMode,
    /// `NAME=VALUE` set in the environment of every vault node (repeatable), to compare
    /// settings on one build: `--node-env VAULT_RAFT_MAX_IN_FLIGHT=1` turns pipelining off.
    #[arg(long = "node-env", value_parser = parse_node_env)]
    pub node_env: Vec<(String, String)>,
    /// Delay, in milliseconds (fractions allowed: 0.25), added in each direction of every
    /// peer link of both systems (vault's Raft ports, etcd's peer URLs) by a proxy this bench
    /// runs, to model members a LAN or a zone apart. Clients still talk to the nodes directly.
    #[arg(long, value_parser = parse_delay_ms)]
    pub peer_delay_ms: Option<f64>,
    /// Report allocations (and bytes allocated) per operation on each vault node, from the
    /// `vault_alloc_total` metrics of a vault-node built with `--features counting-alloc`
    /// (`make bench BENCH_FEATURES=counting-alloc`). The bench stops if the nodes lack them.
    #[arg(long)]
    pub alloc: bool,
}

impl Args {
    pub fn peer_delay(&self) -> Option<Duration> {
        self.peer_delay_ms.filter(|ms| *ms > 0.0).map(|ms| Duration::from_secs_f64(ms / 1000.0))
    }
}

fn parse_node_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected NAME=VALUE, not {s:?}")),
    }
}

fn parse_delay_ms(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(ms) if ms.is_finite() && (0.0..=10_000.0).contains(&ms) => Ok(ms),
        _ => Err(format!("expected milliseconds between 0 and 10000, not {s:?}")),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PerfMode {
    Record,
    Stat,
}
