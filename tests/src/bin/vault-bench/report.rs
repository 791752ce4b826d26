//! What the bench prints (markdown tables) and writes (JSON) from its runs.

use serde_json::{json, Value};

use crate::workload::{ms, Stats, VALUE_LEN};

/// Measured runs, per system.
#[derive(Default)]
pub struct Runs(Vec<(&'static str, String, usize, Stats)>);

impl Runs {
    pub fn add(&mut self, system: &'static str, scenario: &str, clients: usize, stats: Stats) {
        eprintln!(
            "{system} {scenario} x{clients}: {:.0}/s p99 {:.2} ms, {:.0} µs server CPU/op ({} errors)",
            stats.per_sec(),
            ms(stats.p99_us),
            stats.server_cpu_us,
            stats.errors
        );
        self.0.push((system, scenario.to_string(), clients, stats));
    }

    fn get(&self, system: &str, scenario: &str, clients: usize) -> Option<&Stats> {
        self.0.iter().find(|(s, sc, n, _)| *s == system && sc == scenario && *n == clients).map(|(_, _, _, st)| st)
    }

    /// One row per vault run, beside etcd's run of the same scenario and clients.
    pub fn rows(&self) -> Vec<Row> {
        self.0
            .iter()
            .filter(|(system, ..)| *system == "vault")
            .map(|(_, scenario, clients, vault)| Row {
                scenario: scenario.clone(),
                clients: *clients,
                vault: vault.clone(),
                etcd: self.get("etcd", scenario, *clients).cloned(),
            })
            .collect()
    }
}

pub struct Row {
    pub scenario: String,
    pub clients: usize,
    pub vault: Stats,
    pub etcd: Option<Stats>,
}

impl Row {
    pub fn json(&self) -> Value {
        json!({"scenario": self.scenario, "clients": self.clients, "vault": self.vault.json(),
               "etcd": self.etcd.as_ref().map(Stats::json)})
    }
}

fn cell(s: Option<&Stats>) -> String {
    match s {
        Some(s) => format!("{:.0} | {:.2} | {:.2} | {:.2}", s.per_sec(), ms(s.p50_us), ms(s.p99_us), ms(s.max_us)),
        None => "- | - | - | -".into(),
    }
}

/// What the first line says about the set-up.
pub struct Setup<'a> {
    pub api_tls: bool,
    pub node_env: &'a [(String, String)],
    pub peer_delay_ms: Option<f64>,
    pub cores: usize,
    pub fsync_ms: f64,
}

pub fn print_throughput(setup: &Setup, rows: &[Row]) {
    let mut api = if setup.api_tls { ", vault API over TLS".to_string() } else { String::new() };
    if let Some(d) = setup.peer_delay_ms {
        api.push_str(&format!(", peer links delayed {d} ms each way"));
    }
    for (k, v) in setup.node_env {
        api.push_str(&format!(", {k}={v}"));
    }
    println!(
        "\n## vault-bench: 3 nodes on loopback{api}, {VALUE_LEN}-byte values, {} cores, fdatasync p50 {:.2} ms\n",
        setup.cores, setup.fsync_ms
    );
    println!("| scenario | clients | vault ops/s | p50 ms | p99 ms | max ms | etcd ops/s | p50 ms | p99 ms | max ms | vault/etcd |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let ratio =
            r.etcd.as_ref().map(|e| format!("{:.2}x", r.vault.per_sec() / e.per_sec().max(1e-9))).unwrap_or("-".into());
        println!("| {} | {} | {} | {} | {ratio} |", r.scenario, r.clients, cell(Some(&r.vault)), cell(r.etcd.as_ref()));
    }
    // The delay proxy runs in the generator's process; its CPU is shown apart when it ran.
    let proxy = rows.iter().any(|r| r.vault.proxy_cpu_us > 0.0);
    println!(
        "\nCPU time per operation (µs): the 3 server processes together, and the load generator{}.\n",
        if proxy { ", and the delay proxy on the peer links" } else { "" }
    );
    let (head, rule) = match proxy {
        true => (" vault proxy | etcd proxy |", "---:|---:|"),
        false => ("", ""),
    };
    println!("| scenario | clients | vault servers | vault client | etcd servers | etcd client |{head}");
    println!("|---|---:|---:|---:|---:|---:|{rule}");
    for r in rows {
        let etcd = |f: fn(&Stats) -> f64| r.etcd.as_ref().map(|e| format!("{:.0}", f(e))).unwrap_or("-".into());
        let mut line = format!(
            "| {} | {} | {:.0} | {:.0} | {} | {} |",
            r.scenario,
            r.clients,
            r.vault.server_cpu_us,
            r.vault.client_cpu_us,
            etcd(|e| e.server_cpu_us),
            etcd(|e| e.client_cpu_us)
        );
        if proxy {
            line.push_str(&format!(" {:.0} | {} |", r.vault.proxy_cpu_us, etcd(|e| e.proxy_cpu_us)));
        }
        println!("{line}");
    }
}

/// Each server process per operation: CPU, context switches (from `/proc`; with `perf stat`
/// also perf's exact count and system calls), allocations (`--alloc`).
pub fn print_nodes(rows: &[Row]) {
    let runs: Vec<(&str, &Row, &Stats)> = rows
        .iter()
        .flat_map(|r| [("vault", r, Some(&r.vault)), ("etcd", r, r.etcd.as_ref())])
        .filter_map(|(system, r, s)| Some((system, r, s?)))
        .filter(|(_, _, s)| !s.nodes.is_empty())
        .collect();
    if runs.is_empty() {
        return;
    }
    let perf = runs.iter().any(|(_, _, s)| s.nodes.iter().any(|n| n.perf.is_some()));
    let alloc = runs.iter().any(|(_, _, s)| s.nodes.iter().any(|n| n.alloc.is_some()));
    println!("\nEach server process per operation: CPU time, and context switches voluntary + involuntary");
    println!(
        "(from /proc, threads alive at the run's end){}{}.\n",
        if perf { "; perf stat's exact context switches and system calls" } else { "" },
        if alloc { "; allocations and bytes allocated (counting-alloc build)" } else { "" }
    );
    let mut head = "| system | scenario | clients | node | CPU µs | context switches (vol + invol) |".to_string();
    let mut rule = "|---|---|---:|---|---:|---:|".to_string();
    if perf {
        head.push_str(" perf: context switches | perf: system calls |");
        rule.push_str("---:|---:|");
    }
    if alloc {
        head.push_str(" allocations | bytes allocated |");
        rule.push_str("---:|---:|");
    }
    println!("{head}\n{rule}");
    for (system, r, s) in runs {
        for n in &s.nodes {
            let sw = n.switches;
            let mut line = format!(
                "| {system} | {} | {} | {} ({}) | {:.0} | {:.2} ({:.2} + {:.2}) |",
                r.scenario,
                r.clients,
                n.node,
                n.role,
                n.cpu_us,
                sw.voluntary + sw.involuntary,
                sw.voluntary,
                sw.involuntary
            );
            if perf {
                match n.perf {
                    Some((switches, syscalls)) => line.push_str(&format!(" {switches:.2} | {syscalls:.1} |")),
                    None => line.push_str(" - | - |"),
                }
            }
            if alloc {
                match n.alloc {
                    Some((allocations, bytes)) => line.push_str(&format!(" {allocations:.1} | {bytes:.0} |")),
                    None => line.push_str(" - | - |"),
                }
            }
            println!("{line}");
        }
    }
}

/// The vault leader's write pipeline in each write run (from its `/metrics`).
pub fn print_pipelines(pipelines: &[(usize, Value)]) {
    if pipelines.is_empty() {
        return;
    }
    println!("\nThe vault leader's write pipeline in each write run (from its `/metrics`): entries in flight");
    println!("is the sum of entry times over the run's time (Little's law; stop-and-wait is at most 1),");
    println!("\"behind another\" the share of entries proposed while another was in flight. Times are means.\n");
    println!("| clients | entries/s | writes per entry | entries in flight | proposed behind another | queue wait ms | entry ms (proposed → answered) | own-sync wait ms | apply ms | fsyncs/s | entries per fsync | fsync ms |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (clients, p) in pipelines {
        let f = |k: &str| p.get(k).and_then(Value::as_f64).unwrap_or(0.0);
        println!(
            "| {clients} | {:.0} | {:.1} | {:.2} | {:.0}% | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} | {:.1} | {:.3} |",
            f("entries_per_sec"),
            f("writes_per_entry"),
            f("mean_entries_in_flight"),
            f("proposed_behind_another_pct"),
            f("queue_wait_ms"),
            f("entry_ms"),
            f("own_sync_wait_ms"),
            f("apply_ms"),
            f("fsyncs_per_sec"),
            f("entries_per_fsync"),
            f("fsync_ms"),
        );
    }
}

/// The table of single measures (preload, scale, catch-up, re-wrap, watch, agent).
pub fn print_measures(extra: &serde_json::Map<String, Value>, scale: u64, watchers: usize, rotations: usize) {
    println!("\n| measure | vault | etcd |\n|---|---|---|");
    let show = |k: &str| measure_cell(extra.get(k));
    println!("| preload of {scale} secrets | {} | {} |", show("vault_preload"), show("etcd_preload"));
    println!("| nodes at scale (RSS, disk) | {} | {} |", show("vault_nodes_at_scale"), show("etcd_nodes_at_scale"));
    println!("| empty 4th node catch-up | {} | - |", show("snapshot_catch_up"));
    println!("| re-wrap against moto (pacing off) | {} | - |", show("rewrap"));
    println!("| watch: commit → delivery, {watchers} watchers on a follower | {} | - |", show("watch"));
    println!("| agent: rotate → rendered file, {rotations} rotations | {} | - |", show("agent"));
}

/// One cell of the "measure" table in words; raw JSON for a shape it does not know (an error).
fn measure_cell(v: Option<&Value>) -> String {
    let Some(v) = v else { return "-".into() };
    let num = |k: &str| v.get(k).and_then(Value::as_f64);
    if let (Some(rate), Some(p99)) = (num("ops_per_sec"), num("p99_ms")) {
        let cpu = |k: &str| v.get("cpu_us_per_op").and_then(|c| c.get(k)).and_then(Value::as_f64).unwrap_or(0.0);
        let errors = num("errors").unwrap_or(0.0);
        return format!(
            "{rate:.0}/s, p99 {p99:.1} ms, {errors:.0} errors; CPU/op servers {:.0} µs, client {:.0} µs",
            cpu("servers"),
            cpu("client")
        );
    }
    if let Some(nodes) = v.as_array() {
        let list = |k: &str| {
            let each: Vec<String> =
                nodes.iter().map(|n| format!("{:.0}", n.get(k).and_then(Value::as_f64).unwrap_or(0.0))).collect();
            each.join(", ")
        };
        return format!("RSS {} MiB; disk {} MiB", list("rss_mib"), list("disk_mib"));
    }
    if let (Some(keys), Some(per_sec), Some(txn)) = (num("keys"), num("keys_per_sec"), num("txn_puts")) {
        let failed = num("failed_txns").unwrap_or(0.0);
        return format!(
            "{keys:.0} keys at {per_sec:.0}/s in transactions of {txn:.0} puts, {failed:.0} failed (not comparable)"
        );
    }
    if let (Some(secs), Some(ok)) = (num("secs"), v.get("ok").and_then(Value::as_bool)) {
        let rss = num("rss_mib").unwrap_or(0.0);
        let how = match v.get("by_snapshot").and_then(Value::as_bool) {
            Some(true) => " by snapshot",
            _ => " from the log (no snapshot was needed)",
        };
        return format!("{secs:.1} s{how}{} (its RSS after: {rss:.0} MiB)", if ok { "" } else { ", FAILED" });
    }
    if let (Some(per_sec), Some(versions), Some(secs)) = (num("per_sec"), num("versions"), num("secs")) {
        let failed = num("failed").unwrap_or(0.0);
        return format!("{versions:.0} versions in {secs:.1} s: {per_sec:.0}/s, {failed:.0} failed");
    }
    let pcts = |k: &str| {
        let p = v.get(k)?;
        let ms = |q: &str| p.get(q).and_then(Value::as_f64).unwrap_or(0.0);
        Some(format!("p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms", ms("p50_ms"), ms("p99_ms"), ms("max_ms")))
    };
    if let (Some(lat), Some(loss)) = (pcts("commit_to_delivery"), num("read_throughput_loss")) {
        let (failed, missed) = (num("failed_watchers").unwrap_or(0.0), num("missed_deliveries").unwrap_or(0.0));
        return format!(
            "{lat}; linearizable reads at 64 clients lose {:.1}%; {failed:.0} watchers failed, {missed:.0} deliveries missed",
            loss * 100.0
        );
    }
    if let (Some(ack), Some(sent), Some(missed)) =
        (pcts("rotate_ack_to_file"), pcts("rotate_sent_to_file"), num("missed"))
    {
        let within = num("within_1s_of_sending").unwrap_or(0.0);
        let event = pcts("event_to_file").unwrap_or_default();
        let failed = num("failed_rotations").unwrap_or(0.0);
        return format!(
            "from the rotation's event {event}; from the acknowledgement {ack}; from the sending {sent}, \
             {within:.0} within 1 s; {missed:.0} missed, {failed:.0} rotations failed"
        );
    }
    v.to_string()
}
