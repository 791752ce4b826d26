//! `vault-testcluster`: a real N-node cluster for tests written in other languages (the Python
//! and Node clients). Starts the nodes with the harness, prints one JSON line describing them,
//! then answers commands on stdin, one JSON line each:
//!
//! - `kill I` (SIGKILL node I, 0-based), `stop I` (SIGTERM), `start I` (start it again with
//!   its settings and wait until it serves);
//! - `leader` (the index of the leader, as the first running node sees it);
//! - `quit` (or end of input): kill the nodes and remove the cluster's directory.
//!
//! With `--tls --reader-cert CN` the nodes also verify client certificates against a reader
//! CA (`VAULT_TLS_CLIENT_CA`), and the JSON names the minted certificate and key of each CN.
//!
//! It only ever signals the PIDs it started. A test that dies closes our stdin, which ends
//! the cluster too.

use std::io::{BufRead, Write};

use clap::Parser;
use serde_json::{json, Value};
use vault_tests::{mint_reader_cert, test_dir, TestCluster};

#[derive(Parser)]
#[command(name = "vault-testcluster")]
struct Args {
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Serve the API over TLS (each node's cluster certificate, verified by the cluster CA).
    #[arg(long)]
    tls: bool,
    /// Mint a reader certificate for this common name (with `--tls`); repeatable.
    #[arg(long = "reader-cert", value_name = "CN", requires = "tls")]
    reader_certs: Vec<String>,
    /// A node setting for every node (`VAULT_WATCH_HISTORY=5`); repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = key_value)]
    env: Vec<(String, String)>,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    Ok((k.to_string(), v.to_string()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let tls = args.tls;
    // Reader CA and certificates, outside the cluster's directory (made before the nodes).
    let readers_dir = test_dir();
    let readers = readers_dir.path().join("readers");
    for cn in &args.reader_certs {
        mint_reader_cert(cn, &readers);
    }
    let reader_ca = (!args.reader_certs.is_empty()).then(|| readers.join("reader-ca.pem"));
    let mut cluster = TestCluster::start(args.nodes, |s| {
        if tls {
            s.serve_api_tls();
        }
        if let Some(ca) = &reader_ca {
            s.set("VAULT_TLS_CLIENT_CA", &ca.to_string_lossy());
        }
        for (k, v) in &args.env {
            s.set(k, v);
        }
    })
    .await;
    let certs = cluster.certs();
    let path = |name: &str| certs.join(name).to_string_lossy().into_owned();
    let hello = json!({
        "addrs": cluster.nodes.iter().map(|n| n.api_addr.to_string()).collect::<Vec<_>>(),
        "urls": (0..cluster.nodes.len()).map(|i| cluster.url(i)).collect::<Vec<_>>(),
        "token": cluster.token,
        "tls": tls,
        "ca_file": tls.then(|| path("ca.pem")),
        "dir": cluster.dir.path().to_string_lossy(),
        "reader_certs": args.reader_certs.iter().map(|cn| (cn.clone(), json!({
            "cert_file": readers.join(format!("reader-{cn}.pem")).to_string_lossy(),
            "key_file": readers.join(format!("reader-{cn}.key")).to_string_lossy(),
        }))).collect::<serde_json::Map<_, _>>(),
    });
    say(&hello);

    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = match words.as_slice() {
            [] => continue,
            ["quit"] => break,
            ["leader"] => leader(&cluster).await,
            [cmd @ ("kill" | "stop" | "start"), i] => match i.parse::<usize>() {
                Ok(i) if i < cluster.nodes.len() => node_command(&mut cluster, cmd, i).await,
                _ => json!({"error": format!("no node {i}")}),
            },
            _ => json!({"error": format!("unknown command {line:?}")}),
        };
        say(&reply);
    }
    // Dropping the cluster kills the nodes, then removes the directories.
    drop(cluster);
    drop(readers_dir);
}

async fn node_command(cluster: &mut TestCluster, cmd: &str, i: usize) -> Value {
    match cmd {
        "kill" => cluster.nodes[i].kill(),
        "stop" => cluster.nodes[i].stop(),
        _ => {
            if cluster.nodes[i].is_running() {
                return json!({"error": format!("node {i} is running")});
            }
            cluster.nodes[i] = cluster.specs[i].start();
            cluster.nodes[i].wait_ready().await;
        }
    }
    json!({"ok": true})
}

async fn leader(cluster: &TestCluster) -> Value {
    let Some(via) = (0..cluster.nodes.len()).find(|&i| cluster.nodes[i].pid().is_some()) else {
        return json!({"error": "no node is running"});
    };
    let running: Vec<u64> =
        cluster.specs.iter().zip(&cluster.nodes).filter(|(_, n)| n.pid().is_some()).map(|(s, _)| s.node_id).collect();
    let i = cluster.leader_seen_by(via, |id| running.contains(&id)).await;
    json!({"leader": i})
}

fn say(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}
