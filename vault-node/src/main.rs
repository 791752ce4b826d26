//! `vault-node`: one node of the vault cluster.

use std::path::PathBuf;

use clap::Parser;
use vault_node::config::RawConfig;

/// mimalloc instead of glibc's malloc: allocation and freeing were a fifth of a leader's CPU
/// under write load (request and response buffers, futures, encoded entries), and glibc's
/// arenas also hold on to memory freed by other threads.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One node of the Raft-replicated secrets vault. Settings come from a TOML file, then
/// VAULT_* environment variables, then these flags.
#[derive(Parser)]
#[command(name = "vault-node", version)]
struct Flags {
    /// TOML file with settings (keys are the variable names in lower case).
    #[arg(long)]
    config: Option<PathBuf>,
    /// VAULT_NODE_ID
    #[arg(long)]
    node_id: Option<String>,
    /// VAULT_DATA_DIR
    #[arg(long)]
    data_dir: Option<String>,
    /// VAULT_API_ADDR
    #[arg(long)]
    api_addr: Option<String>,
    /// VAULT_RAFT_ADDR
    #[arg(long)]
    raft_addr: Option<String>,
    /// VAULT_PEERS
    #[arg(long)]
    peers: Option<String>,
    /// VAULT_ALLOWED_IPS
    #[arg(long)]
    allowed_ips: Option<String>,
    /// VAULT_KMS_MODE
    #[arg(long)]
    kms_mode: Option<String>,
}

impl Flags {
    fn apply(&self, raw: &mut RawConfig) {
        let pairs = [
            ("VAULT_NODE_ID", &self.node_id),
            ("VAULT_DATA_DIR", &self.data_dir),
            ("VAULT_API_ADDR", &self.api_addr),
            ("VAULT_RAFT_ADDR", &self.raft_addr),
            ("VAULT_PEERS", &self.peers),
            ("VAULT_ALLOWED_IPS", &self.allowed_ips),
            ("VAULT_KMS_MODE", &self.kms_mode),
        ];
        for (key, value) in pairs {
            if let Some(v) = value {
                raw.set(key, v.clone());
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let flags = Flags::parse();
    let mut raw = RawConfig::default();
    if let Some(path) = &flags.config {
        if let Err(e) = raw.merge_file(path) {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    }
    raw.merge_env();
    flags.apply(&mut raw);
    let config = match raw.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    vault_node::logging::init(&config.log_filter, config.log_format);
    match vault_node::server::run(config, shutdown_signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
