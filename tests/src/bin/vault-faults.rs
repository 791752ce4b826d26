//! The fault suite: `make test-faults`.
//!
//! Starts real clusters (3 and 5 nodes, Raft over mutual TLS), each node in a network
//! namespace of its own, runs concurrent clients whose every operation is recorded, injects
//! one nemesis per run (partitions with nftables, SIGKILL, SIGSTOP, leader transfers,
//! membership changes, or a mix), then checks the history for linearizability per key and
//! reports how long writes and reads were unavailable after each fault and heal.
//!
//! Needs root (namespaces, nftables); without it, says SKIP and exits 0. Everything it makes
//! (namespaces, their nftables tables, processes, data directories) is removed before it exits.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use vault_tests::faults::lab::{enter, Lab};
use vault_tests::faults::scenario::{self, Nemesis, RunReport, Settings};

#[derive(Parser)]
#[command(
    about = "Fault-injection suite: partitions, crashes, pauses, transfers; histories checked for linearizability"
)]
struct Args {
    /// Cluster sizes to run.
    #[arg(long, value_delimiter = ',', default_value = "3,5")]
    nodes: Vec<u64>,
    /// Nemeses for 3-node clusters (all by default).
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Nemeses for clusters of 5 and more.
    #[arg(long, value_delimiter = ',', default_value = "partition-leader,bridge,pause-follower,transfer-leader")]
    scenarios_large: Vec<String>,
    /// After the scenarios, a soak: random nemeses on 3 nodes for this many minutes.
    #[arg(long, env = "FAULTS_MINUTES", default_value_t = 0.0)]
    minutes: f64,
    /// Seconds each fault lasts.
    #[arg(long, default_value_t = 3.0)]
    fault_secs: f64,
    #[arg(long, default_value_t = 12)]
    clients: u32,
    #[arg(long, default_value_t = 6)]
    keys: usize,
    /// Fail when a gap exceeds the availability targets (they are always reported).
    #[arg(long, env = "FAULTS_STRICT")]
    strict: bool,
    /// Seed for choosing victims and mixes (printed; random by default).
    #[arg(long, env = "FAULTS_SEED")]
    seed: Option<u64>,
    /// Where the JSON report goes.
    #[arg(long, default_value = "faults-report.json")]
    out: std::path::PathBuf,
    #[arg(long, short)]
    verbose: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP fault suite: it needs root (network namespaces, nftables); run as root: make test-faults");
        return ExitCode::SUCCESS;
    }
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("fault suite: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn plan(args: &Args) -> anyhow::Result<Vec<(u64, Nemesis)>> {
    let parse = |names: &[String]| -> anyhow::Result<Vec<Nemesis>> {
        names.iter().map(|n| Nemesis::parse(n).with_context(|| format!("unknown scenario {n}"))).collect()
    };
    let small = if args.scenarios.is_empty() { Nemesis::ALL.to_vec() } else { parse(&args.scenarios)? };
    let large = parse(&args.scenarios_large)?;
    let mut plan = Vec::new();
    for n in &args.nodes {
        for nem in if *n <= 3 { &small } else { &large } {
            plan.push((*n, *nem));
        }
    }
    Ok(plan)
}

fn run(args: Args) -> anyhow::Result<bool> {
    let plan = plan(&args)?;
    let seed =
        args.seed.unwrap_or_else(|| Instant::now().elapsed().as_nanos() as u64 ^ u64::from(std::process::id()) << 20);
    let max_nodes = args.nodes.iter().copied().max().unwrap_or(3);
    // One spare beyond the largest cluster, for the membership nemesis.
    let lab = Lab::create(max_nodes + 1).context("create the network namespaces")?;
    let suffix = lab.suffix.clone();
    println!("fault suite: seed {seed}, namespaces *-{suffix}, {} scenario(s)", plan.len());
    let settings = Settings {
        clients: args.clients,
        keys: args.keys,
        fault_for: Duration::from_secs_f64(args.fault_secs),
        verbose: args.verbose,
    };
    // The clients and this process's gRPC calls live in the client namespace; the nodes in
    // their own (started through `ip netns exec`).
    let reports = std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<Vec<RunReport>> {
            enter(&lab.client_ns)?;
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(async {
                tokio::select! {
                    r = run_plan(&lab, &plan, seed, &settings, args.minutes) => r,
                    _ = interrupted() => anyhow::bail!("interrupted"),
                }
            })
        })
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the suite panicked")))
    });
    drop(lab);
    let left = Lab::leftovers(&suffix);
    let reports = reports?;
    let json = serde_json::to_string_pretty(&reports)?;
    std::fs::write(&args.out, json).with_context(|| format!("write {}", args.out.display()))?;
    let ok = summarize(&reports, args.strict);
    println!("report: {}", args.out.display());
    let pids = scenario::survivors();
    if !left.is_empty() || !pids.is_empty() {
        println!("FAIL: left behind: namespaces {left:?}, node PIDs {pids:?}");
        return Ok(false);
    }
    println!("cleanup: no namespace (nor its nftables table) and no node process left");
    Ok(ok)
}

async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn run_plan(
    lab: &Lab,
    plan: &[(u64, Nemesis)],
    seed: u64,
    settings: &Settings,
    minutes: f64,
) -> anyhow::Result<Vec<RunReport>> {
    let mut reports = Vec::new();
    let mut dice = scenario::Dice(seed | 1);
    let one = |n: u64, nem: Nemesis, i: u64| {
        let s = seed.wrapping_add(i.wrapping_mul(0x9E37_79B9));
        async move {
            let dir = vault_tests::test_dir();
            println!("- {} nodes, {} ...", n, nem.name());
            let r = scenario::run(lab, dir.path(), n, nem, s, settings).await;
            if let Ok(r) = &r {
                print_run(r);
            }
            r.with_context(|| format!("{} on {n} nodes", nem.name()))
        }
    };
    for (i, (n, nem)) in plan.iter().enumerate() {
        reports.push(one(*n, *nem, i as u64).await?);
    }
    if minutes > 0.0 {
        let until = Instant::now() + Duration::from_secs_f64(minutes * 60.0);
        let mut i = plan.len() as u64;
        println!("soak: random nemeses on 3 nodes for {minutes} min");
        while Instant::now() < until {
            let nem = Nemesis::ALL[dice.below(Nemesis::ALL.len() as u64) as usize];
            reports.push(one(3, nem, i).await?);
            i += 1;
        }
    }
    Ok(reports)
}

fn ms(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.0}")
    } else {
        "none".into()
    }
}

fn print_run(r: &RunReport) {
    println!(
        "  {} ops ({} writes, {} reads acknowledged, {} unknown), anomalies {}, longest gap writes {} ms, reads {} ms{}",
        r.ops,
        r.ok_writes,
        r.ok_reads,
        r.unknown,
        r.anomalies.len(),
        ms(r.longest_write_gap_ms),
        ms(r.longest_read_gap_ms),
        if r.transfers_tried > 0 { format!(", transfers {}/{}", r.transfers_ok, r.transfers_tried) } else { String::new() }
    );
    if r.reset_floods > 0 {
        println!("  FAIL: {} node log line(s) show HTTP/2 reset-flood protection cutting connections", r.reset_floods);
    }
    if r.inconclusive_keys > 0 {
        println!("  FAIL: {} key(s) too costly to check (inconclusive)", r.inconclusive_keys);
    }
    for m in &r.marks {
        let heal = m.after_heal.as_ref().map_or(String::new(), |g| {
            format!("; after heal: writes {} ms, reads {} ms", ms(g.write_ms), ms(g.read_ms))
        });
        println!(
            "    {:<44} after fault: writes {} ms, reads {} ms{heal}{}",
            m.mark.what,
            ms(m.after_fault.write_ms),
            ms(m.after_fault.read_ms),
            if m.within_target { "" } else { "  OVER TARGET" }
        );
    }
    for a in &r.anomalies {
        println!("{a}");
    }
}

/// Prints the table; false if any run found an anomaly (or, strict, missed a target).
fn summarize(reports: &[RunReport], strict: bool) -> bool {
    println!(
        "\n| nodes | nemesis | ops | anomalies | worst write/read gap after fault (ms) | after heal (ms) | targets |"
    );
    println!("|---|---|---:|---:|---|---|---|");
    let mut ok = true;
    for r in reports {
        let worst = |f: &dyn Fn(&scenario::MarkFigures) -> Option<(f64, f64)>| {
            r.marks.iter().filter_map(f).fold(None, |acc: Option<(f64, f64)>, (w, rd)| {
                Some(acc.map_or((w, rd), |(aw, ar)| (aw.max(w), ar.max(rd))))
            })
        };
        let fault = worst(&|m| Some((m.after_fault.write_ms, m.after_fault.read_ms)));
        let heal = worst(&|m| m.after_heal.as_ref().map(|g| (g.write_ms, g.read_ms)));
        let fmt = |g: Option<(f64, f64)>| g.map_or("-".into(), |(w, rd)| format!("{} / {}", ms(w), ms(rd)));
        let met = r.marks.iter().all(|m| m.within_target);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.nodes,
            r.nemesis.name(),
            r.ops,
            r.anomalies.len(),
            fmt(fault),
            fmt(heal),
            if met { "met" } else { "MISSED" }
        );
        ok &= r.anomalies.is_empty() && r.inconclusive_keys == 0 && r.reset_floods == 0 && (met || !strict);
        if r.transfers_tried > 0 && r.transfers_ok < r.transfers_tried && strict {
            ok = false;
        }
    }
    let total: usize = reports.iter().map(|r| r.ops).sum();
    let anomalies: usize = reports.iter().map(|r| r.anomalies.len()).sum();
    println!(
        "\nfault suite: {} run(s), {total} operations, {anomalies} anomalies: {}",
        reports.len(),
        if ok { "PASS" } else { "FAIL" }
    );
    ok
}
