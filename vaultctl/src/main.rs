//! `vaultctl`: the admin CLI. Speaks the public gRPC API through `vault-client`, so it takes
//! several node addresses (`--addr` / `VAULT_ADDR`, comma-separated) and fails over like any
//! client of the library. One module per command noun in `commands/`.
//!
//! Exit status 0 on success; otherwise a one-line `error: <code in words>: <why>` on stderr
//! and a status by kind (see `failure.rs`). Secret values print raw on stdout.

mod certs;
mod clock;
mod commands;
mod failure;
mod logging;
mod output;
mod util;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use commands::{agent, audit, cluster, hook, kms, reader, role, run, secret, snapshot, status, token};
use failure::Failure;
use vault_client::Client;

#[derive(Parser)]
#[command(name = "vaultctl", version, about = "Admin CLI of the secrets vault")]
struct Cli {
    /// API address of a node, or several, comma-separated: reads go to any that answers,
    /// writes to the leader. Node-local views (status, audit, cluster status) ask the first.
    #[arg(long, env = "VAULT_ADDR", default_value = "http://127.0.0.1:8200", global = true)]
    addr: String,
    /// Admin bearer token. A generated token may begin with `-` (base64url), so a value that
    /// does is taken as the token, not as an option.
    #[arg(long, env = "VAULT_TOKEN", hide_env_values = true, global = true, allow_hyphen_values = true)]
    token: Option<String>,
    /// File holding the admin bearer token (used when no --token is given).
    #[arg(long, env = "VAULT_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) to verify the server's TLS certificate (https:// addresses).
    /// Without it, the system's trusted roots are used (`SSL_CERT_FILE` / `SSL_CERT_DIR` apply).
    #[arg(long, env = "VAULT_CACERT", global = true)]
    ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) to present over TLS, for reader rules that name its subject
    /// (`reader create --cert-cn`). Needs --client-key (the agent may take either from its
    /// configuration, so the pair is checked where the client is built).
    #[arg(long, env = "VAULT_CLIENT_CERT", global = true)]
    client_cert: Option<PathBuf>,
    /// Key (PEM) of --client-cert.
    #[arg(long, env = "VAULT_CLIENT_KEY", global = true)]
    client_key: Option<PathBuf>,
    #[arg(long, env = "VAULT_FORMAT", value_enum, default_value = "table", global = true)]
    output: Output,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Secrets and their versions.
    #[command(subcommand)]
    Secret(secret::Cmd),
    /// Admin tokens.
    #[command(subcommand)]
    Token(token::Cmd),
    /// Roles and their grants.
    #[command(subcommand)]
    Role(role::Cmd),
    /// Reader rules: which secrets a reading client (by address or client certificate) may get.
    #[command(subcommand)]
    Reader(reader::Cmd),
    /// Rotation hooks: the secret names each exec: hook may rotate (admin).
    #[command(subcommand)]
    Rotation(hook::HooksCmd),
    /// The audit log of the node addressed.
    #[command(subcommand)]
    Audit(audit::Cmd),
    /// Cluster membership and state.
    #[command(subcommand)]
    Cluster(cluster::Cmd),
    /// The KMS re-wrap worker.
    #[command(subcommand)]
    Kms(kms::Cmd),
    /// Backup and restore of the replicated state.
    #[command(subcommand)]
    Snapshot(snapshot::Cmd),
    /// Version, role, leader and readiness of the node addressed; needs no token. Exits
    /// non-zero (unavailable) when the node is not ready.
    Status,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions { shell: clap_complete::Shell },
    /// Run CMD with secrets in its environment: read as a reader (no token), never written to
    /// disk or put on a command line. vaultctl becomes CMD (exec), so CMD's exit status and
    /// signals are its own.
    Run(run::RunArgs),
    /// Keep files rendered from secrets current (templates, atomic writes, watch), and run a
    /// command, signal a process or supervise one when they change. Configured by one TOML
    /// file; see docs/agent.md.
    Agent(agent::AgentArgs),
}

/// The client for `cli`'s addresses, TLS material and token, with the budget of `cli.cmd`.
fn client(cli: &Cli) -> Result<Client, Failure> {
    let mut b = Client::builder().addrs([&cli.addr]).timeout(call_timeout(&cli.cmd));
    match cli.token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => b = b.token(t),
        None => {
            if let Some(f) = &cli.token_file {
                b = b.token_file(f);
            }
        }
    }
    if let Some(ca) = &cli.ca_cert {
        b = b.ca_cert_file(ca);
    }
    match (&cli.client_cert, &cli.client_key) {
        (Some(cert), Some(key)) => b = b.client_cert_files(cert, key),
        (None, None) => {}
        _ => {
            return Err(Failure::Local(anyhow::anyhow!(
                "--client-cert and --client-key (VAULT_CLIENT_CERT, VAULT_CLIENT_KEY) go together"
            )))
        }
    }
    Ok(b.build()?)
}

/// Cluster changes wait on the leader for up to two minutes (a new node catching up from a
/// large store), then say what state they left: this waits a little longer, to hear it.
const CLUSTER_CHANGE_TIMEOUT: Duration = Duration::from_secs(150);

/// How long vaultctl waits for one call of `cmd`.
fn call_timeout(cmd: &Cmd) -> Duration {
    match cmd {
        Cmd::Snapshot(_) => snapshot::SNAPSHOT_TIMEOUT,
        Cmd::Cluster(
            cluster::Cmd::Add { .. }
            | cluster::Cmd::Promote { .. }
            | cluster::Cmd::Remove { .. }
            | cluster::Cmd::TransferLeader { .. }
            | cluster::Cmd::Upgrade,
        )
        | Cmd::Kms(kms::Cmd::Rotate { .. }) => CLUSTER_CHANGE_TIMEOUT,
        // The server waits up to 50 s for the leader's attempt, after a barrier and a write
        // of up to 10 s each, and reads the outcome after one more barrier.
        Cmd::Secret(secret::Cmd::Rotate { .. }) => Duration::from_secs(90),
        _ => Duration::from_secs(60),
    }
}

async fn dispatch(cli: Cli) -> Result<(), Failure> {
    match &cli.cmd {
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(*shell, &mut Cli::command(), "vaultctl", &mut std::io::stdout());
            return Ok(());
        }
        Cmd::Cluster(cluster::Cmd::Certs { out, nodes, sans, days, renew }) => {
            return cluster::certs(out, nodes, sans, *days, *renew);
        }
        Cmd::Reader(reader::Cmd::Cert { cn, out, days }) => return reader::cert(cn, out, *days),
        Cmd::Audit(audit::Cmd::Verify { file, audit_key_file, .. }) if !file.is_empty() => {
            return commands::audit_file::verify(file, audit_key_file, cli.output == Output::Json);
        }
        _ => {}
    }
    let c = client(&cli)?;
    let json = cli.output == Output::Json;
    match cli.cmd {
        Cmd::Completions { .. } | Cmd::Agent(_) => Ok(()),
        Cmd::Kms(cmd) => kms::run(&c, cmd, json).await,
        Cmd::Snapshot(cmd) => snapshot::run(&c, cmd, json).await,
        Cmd::Run(args) => run::run(&c, args).await,
        Cmd::Status => status::run(&c, json).await,
        Cmd::Secret(cmd) => secret::run(&c, cmd, json).await,
        Cmd::Token(cmd) => token::run(&c, cmd, json).await,
        Cmd::Role(cmd) => role::run(&c, cmd, json).await,
        Cmd::Reader(cmd) => reader::run(&c, cmd, json).await,
        Cmd::Rotation(hook::HooksCmd::Hook(cmd)) => hook::run(&c, cmd, json).await,
        Cmd::Audit(cmd) => audit::run(&c, cmd, json).await,
        Cmd::Cluster(cmd) => cluster::run(&c, cmd, json).await,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Agent(args) = cli.cmd {
        // Long-running: it logs, and leaves with its supervised program's status.
        let defaults = agent::Defaults {
            addr: cli.addr,
            ca_cert: cli.ca_cert,
            client_cert: cli.client_cert,
            client_key: cli.client_key,
            token: cli.token,
            token_file: cli.token_file,
        };
        return match agent::run(args, defaults).await {
            Ok(code) => code,
            Err(e) => ExitCode::from(Failure::Local(e).report()),
        };
    }
    match dispatch(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => ExitCode::from(f.report()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One generated token in 64 begins with `-`; `--token -X...` must still parse as a token.
    #[test]
    fn a_token_or_value_that_begins_with_a_hyphen_is_taken_as_one() {
        let cli = Cli::try_parse_from(["vaultctl", "--token", "-Xabc", "secret", "put", "a/b", "--value", "-v"])
            .unwrap_or_else(|e| panic!("parse: {e}"));
        assert_eq!(cli.token.as_deref(), Some("-Xabc"));
        match cli.cmd {
            Cmd::Secret(secret::Cmd::Put { value, .. }) => assert_eq!(value.as_deref(), Some("-v")),
            _ => panic!("not secret put"),
        }
    }

    /// A client certificate without its key (or a key alone) is refused before any call.
    #[test]
    fn a_client_certificate_needs_its_key() {
        for half in [["--client-cert", "c.pem"], ["--client-key", "c.key"]] {
            let cli = Cli::try_parse_from(["vaultctl", half[0], half[1], "secret", "list"]).expect("parses");
            let err = match client(&cli) {
                Err(Failure::Local(e)) => e.to_string(),
                Err(_) => "another failure".into(),
                Ok(_) => "accepted".into(),
            };
            assert!(err.contains("go together"), "{half:?}: {err}");
        }
    }
}
