//! `vault-bench`: throughput, latency and scale of a 3-node vault cluster on loopback, beside a
//! 3-member etcd cluster driven by the same generator (value size, concurrency, durability).
//!
//! Every load phase is bounded in time (or in count, for preloading) and stops by itself.
//! Prints markdown tables and writes JSON. Run by `make bench`.
//!
//! Modules by role: `args` (the command line), `clusters` (starting both systems, with the
//! delay proxy on their peer links), `workload` (the generator and what one run measured),
//! `measure` (CPU, context switches, allocations and metrics around each run), `perf`
//! (`--perf`), `report` (tables and JSON), and the scenarios of their own: `watch`, `agent`,
//! `rewrap`.

mod agent;
mod args;
mod clusters;
mod measure;
mod perf;
mod report;
mod rewrap;
mod watch;
mod workload;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use vault_tests::test_dir;

use args::Args;
use clusters::{in_turn, settle, PeerDelay, System, SNAPSHOT_LOG_ENTRIES};
use measure::{node_json, rss_mib};
use report::Runs;
use workload::{load, Op, Until, VALUE_LEN};

const SCALE_CLIENTS: usize = 64;

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Some(dir) = &args.perf {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("--perf {}: {e}", dir.display());
            std::process::exit(2);
        }
        perf::enable(dir.clone(), args.perf_mode);
    }
    if args.alloc {
        measure::count_allocations();
    }
    let d = Duration::from_secs(args.duration);
    let dir = test_dir();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let fsync = measure::fdatasync_ms(dir.path());
    eprintln!("vault-bench: {cores} cores, fdatasync p50 {fsync:.2} ms; data under {}", dir.path().display());
    let mut extra = serde_json::Map::new();
    let peer_delay = args.peer_delay().map(|delay| PeerDelay::new(delay).expect("start the delay proxy's runtime"));
    if let Some(pd) = &peer_delay {
        eprintln!("peer links of both systems delayed {:?} each way", pd.delay);
    }

    // Both clusters stay up for the whole bench, and every scenario runs on each in turn.
    let mut cluster = clusters::start_vault(peer_delay.as_ref(), |s| {
        s.set("VAULT_LOG", "warn");
        // As in production; the nodes' metrics are read around each run.
        vault_tests::with_metrics(s);
        for (k, v) in &args.node_env {
            s.set(k, v);
        }
        s.set("VAULT_SNAPSHOT_LOG_ENTRIES", SNAPSHOT_LOG_ENTRIES);
        if args.api_tls {
            s.serve_api_tls();
        }
    })
    .await;
    let (vault, leader) = clusters::vault_system(&cluster).await;
    if args.alloc && !measure::nodes_count_allocations(&vault.nodes).await {
        eprintln!(
            "--alloc: the vault nodes export no vault_alloc_total; build vault-node with \
             `--features counting-alloc` (make bench BENCH_FEATURES=counting-alloc)"
        );
        // `exit` runs no destructors: stop the nodes and remove their directories first.
        drop(cluster);
        drop(dir);
        std::process::exit(2);
    }
    let mut systems = vec![vault];
    let edir = test_dir();
    let etcd = match args.skip_etcd {
        true => None,
        false => clusters::start_etcd(edir.path(), peer_delay.as_ref()).await,
    };
    let etcd = etcd.map(|(etcd, system)| {
        systems.push(system);
        etcd
    });

    let mut runs = Runs::default();
    let mut pipelines = Vec::new();
    let mut turn = 0;
    let read_rows = [("read (leader)", true), ("read (follower)", false)];
    let clients: &[usize] = if args.skip_throughput { &[] } else { &args.clients };
    for &n in clients {
        // Reads pick among keys every client of this system's write run wrote.
        let mut written = HashMap::new();
        for sys in in_turn(&systems, &mut turn) {
            settle(&systems).await;
            let w = load("write", &sys.target(true, n).await, Op::Write, "w", n, Until::Elapsed(d), None).await;
            if let Some(p) = &w.pipeline {
                pipelines.push((n, p.clone()));
            } else if sys.token.is_some() {
                eprintln!("the vault leader's metrics did not answer around the write run");
            }
            written.insert(sys.name, w.min_per_client.max(1));
            runs.add(sys.name, "write", n, w);
        }
        for (label, leader_side) in read_rows {
            for sys in in_turn(&systems, &mut turn) {
                settle(&systems).await;
                let space = Some((n, written.get(sys.name).copied().unwrap_or(1)));
                let r =
                    load(label, &sys.target(leader_side, n).await, Op::Read, "w", n, Until::Elapsed(d), space).await;
                runs.add(sys.name, label, n, r);
            }
        }
    }

    if !args.skip_watch {
        settle(&systems).await;
        let setup = watch::Setup {
            leader: &systems[0].leader,
            follower: &systems[0].follower,
            token: &cluster.token,
            ca: systems[0].ca.as_deref(),
            servers: &systems[0].nodes,
        };
        extra.insert("watch".into(), watch::run(setup, args.watchers, d).await);
    }

    if !args.skip_agent {
        settle(&systems).await;
        let setup = agent::Setup { cluster: &cluster, leader };
        extra.insert("agent".into(), agent::run(setup, args.agent_rotations).await);
    }

    if !args.skip_scale {
        scale(&args, &systems, &mut turn, &mut runs, &mut extra).await;
        let nodes: Vec<Value> = cluster
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| node_json(i, node.pid(), &cluster.specs[i].data_dir()))
            .collect();
        eprintln!("vault nodes at scale: {nodes:?}");
        extra.insert("vault_nodes_at_scale".into(), json!(nodes));
        if let Some(etcd) = &etcd {
            let nodes: Vec<Value> = etcd
                .pids()
                .iter()
                .enumerate()
                .map(|(i, pid)| node_json(i, Some(*pid), &edir.path().join(format!("etcd{i}"))))
                .collect();
            extra.insert("etcd_nodes_at_scale".into(), json!(nodes));
        }

        // An empty fourth node catches up: by snapshot, once the log was purged. `cluster add`
        // returns when it has every entry the leader had.
        settle(&systems).await;
        let (spec, advertised) = clusters::fourth_node(&cluster, peer_delay.as_ref()).await;
        let mut n4 = spec.start();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t0 = Instant::now();
        let token = cluster.token.clone();
        let out = cluster.nodes[leader]
            .vaultctl(Some(&token), &["cluster", "add", "4", &advertised.to_string(), &spec.api_addr.to_string()]);
        let catch_up = t0.elapsed().as_secs_f64();
        let ok = out.status.success();
        // A node keeps the snapshot it installed as its own snapshot file.
        let by_snapshot = vault_tests::count_files(&spec.data_dir().join("snapshots")) > 0;
        eprintln!(
            "4th node catch-up: {catch_up:.1} s (ok: {ok}, by snapshot: {by_snapshot}) {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        extra.insert(
            "snapshot_catch_up".into(),
            json!({"secs": (catch_up * 10.0).round() / 10.0, "ok": ok, "by_snapshot": by_snapshot,
                   "rss_mib": n4.pid().map(rss_mib).unwrap_or(0.0)}),
        );
        let _ = cluster.nodes[leader].vaultctl(Some(&token), &["cluster", "remove", "4"]);
        n4.stop();
    }
    for n in cluster.nodes.iter_mut() {
        n.stop();
    }
    drop(cluster);
    drop(etcd);
    if let Some(pd) = &peer_delay {
        extra.insert("peer_delay".into(), pd.json());
    }
    drop(peer_delay);

    if !args.skip_rewrap {
        match rewrap::rewrap_rate(args.rewrap_versions).await {
            Ok(v) => {
                eprintln!("re-wrap: {v}");
                extra.insert("rewrap".into(), v);
            }
            Err(e) => eprintln!("re-wrap run failed: {e}"),
        }
    }

    let rows = runs.rows();
    let setup = report::Setup {
        api_tls: args.api_tls,
        node_env: &args.node_env,
        peer_delay_ms: args.peer_delay().and(args.peer_delay_ms),
        cores,
        fsync_ms: fsync,
    };
    report::print_throughput(&setup, &rows);
    report::print_nodes(&rows);
    report::print_pipelines(&pipelines);
    if !pipelines.is_empty() {
        let list: Vec<Value> = pipelines.iter().map(|(c, p)| json!({"clients": c, "leader": p})).collect();
        extra.insert("vault_write_pipeline".into(), json!(list));
    }
    report::print_measures(&extra, args.scale, args.watchers, args.agent_rotations);

    let out = json!({
        "cores": cores,
        "fdatasync_p50_ms": (fsync * 100.0).round() / 100.0,
        "value_bytes": VALUE_LEN,
        "duration_secs": args.duration,
        "api_tls": args.api_tls,
        "peer_delay_ms": setup.peer_delay_ms,
        "alloc": args.alloc,
        "node_env": args.node_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "scale": args.scale,
        "rows": rows.iter().map(report::Row::json).collect::<Vec<_>>(),
        "extra": extra,
    });
    if let Err(e) = std::fs::write(&args.out, serde_json::to_string_pretty(&out).unwrap_or_default()) {
        eprintln!("cannot write {}: {e}", args.out.display());
    } else {
        eprintln!("wrote {}", args.out.display());
    }
}

/// Preloads `--scale` secrets into each system, then repeats the 64-client runs on them.
async fn scale(
    args: &Args,
    systems: &[System],
    turn: &mut usize,
    runs: &mut Runs,
    extra: &mut serde_json::Map<String, Value>,
) {
    let d = Duration::from_secs(args.duration);
    let preload_clients = args.preload_clients.max(1);
    let per_client = args.scale.div_ceil(preload_clients as u64);
    for sys in in_turn(systems, turn) {
        settle(systems).await;
        if sys.token.is_none() {
            let pre = workload::etcd_txn_preload(&sys.leader, preload_clients, per_client).await;
            eprintln!("{} preload: {pre}", sys.name);
            extra.insert(format!("{}_preload", sys.name), pre);
            continue;
        }
        let t = sys.target(true, preload_clients).await;
        let pre = load("preload", &t, Op::Write, "scale", preload_clients, Until::EachDid(per_client), None).await;
        eprintln!("{} preload {} secrets: {:.0}/s ({} errors)", sys.name, pre.ops, pre.per_sec(), pre.errors);
        extra.insert(format!("{}_preload", sys.name), pre.json());
    }
    for sys in in_turn(systems, turn) {
        settle(systems).await;
        let t = sys.target(true, SCALE_CLIENTS).await;
        let w = load("write @1M", &t, Op::Write, "w1m", SCALE_CLIENTS, Until::Elapsed(d), None).await;
        runs.add(sys.name, "write @1M", SCALE_CLIENTS, w);
    }
    for (label, leader_side) in [("read @1M (leader)", true), ("read @1M (follower)", false)] {
        for sys in in_turn(systems, turn) {
            settle(systems).await;
            let t = sys.target(leader_side, SCALE_CLIENTS).await;
            let space = Some((preload_clients, per_client));
            runs.add(
                sys.name,
                label,
                SCALE_CLIENTS,
                load(label, &t, Op::Read, "scale", SCALE_CLIENTS, Until::Elapsed(d), space).await,
            );
        }
    }
}
