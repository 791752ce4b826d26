//! `vaultctl`: the admin CLI. Speaks the public gRPC API.
//!
//! Exit status 0 on success; otherwise 1 with a one-line `error: <code in words>: <why>` on
//! stderr. Secret values print raw on stdout.

mod audit;
mod cluster;
mod hook;
mod kms;
mod output;
mod reader;
mod role;
mod run;
mod secret;
mod snapshot;
mod status;
mod token;
mod util;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Parser, Subcommand, ValueEnum};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};
use vault_node::error::code_words;
use vault_node::pb::admin_client::AdminClient;
use vault_node::pb::secrets_client::SecretsClient;

#[derive(Parser)]
#[command(name = "vaultctl", version, about = "Admin CLI of the secrets vault")]
struct Cli {
    /// API address of any node.
    #[arg(long, env = "VAULT_ADDR", default_value = "http://127.0.0.1:8200", global = true)]
    addr: String,
    /// Admin bearer token. A generated token may begin with `-` (base64url), so a value that
    /// does is taken as the token, not as an option.
    #[arg(long, env = "VAULT_TOKEN", hide_env_values = true, global = true, allow_hyphen_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) to verify the server's TLS certificate (https:// addresses).
    /// Without it, the system's trusted roots are used (`SSL_CERT_FILE` / `SSL_CERT_DIR` apply).
    #[arg(long, env = "VAULT_CACERT", global = true)]
    ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) to present over TLS, for reader rules that name its subject
    /// (`reader create --cert-cn`). Needs --client-key.
    #[arg(long, env = "VAULT_CLIENT_CERT", global = true, requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// Key (PEM) of --client-cert.
    #[arg(long, env = "VAULT_CLIENT_KEY", global = true, requires = "client_cert")]
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
}

type Authed = InterceptedService<Channel, Bearer>;

#[derive(Clone)]
struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A failure to report: gRPC status or a local problem.
enum Failure {
    Grpc(Status),
    Local(anyhow::Error),
}

impl From<Status> for Failure {
    fn from(s: Status) -> Self {
        Failure::Grpc(s)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Local(e)
    }
}

async fn channel(cli: &Cli) -> anyhow::Result<Channel> {
    channel_to(cli, &cli.addr).await
}

async fn channel_to(cli: &Cli, addr: &str) -> anyhow::Result<Channel> {
    let mut ep = Endpoint::from_shared(addr.to_string())
        .map_err(|_| anyhow!("--addr {addr:?} is not a valid URL (e.g. http://127.0.0.1:8200)"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(call_timeout(&cli.cmd));
    if addr.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_enabled_roots();
        if let Some(ca) = &cli.ca_cert {
            let pem = std::fs::read(ca).with_context(|| format!("read --ca-cert {}", ca.display()))?;
            tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem));
        }
        if let (Some(cert), Some(key)) = (&cli.client_cert, &cli.client_key) {
            let cert_pem = std::fs::read(cert).with_context(|| format!("read --client-cert {}", cert.display()))?;
            let key_pem = std::fs::read(key).with_context(|| format!("read --client-key {}", key.display()))?;
            tls = tls.identity(tonic::transport::Identity::from_pem(cert_pem, key_pem));
        }
        ep = ep.tls_config(tls).context("configure TLS")?;
    } else if cli.client_cert.is_some() {
        return Err(anyhow!("--client-cert needs an https:// address"));
    }
    ep.connect().await.map_err(|e| {
        // The cause chain says why (refused, no route, TLS): a connection failure is UNAVAILABLE.
        let mut why = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            why = format!("{why}: {s}");
            source = s.source();
        }
        anyhow::Error::new(Unreachable(format!("connect to {addr}: {why}")))
    })
}

/// A server that could not be reached (reported as `unavailable`).
#[derive(Debug)]
struct Unreachable(String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreachable {}

/// The same scheme as `--addr`, pointed at `host:port`.
fn url_like(cli: &Cli, host_port: &str) -> String {
    let scheme = if cli.addr.starts_with("https://") { "https" } else { "http" };
    format!("{scheme}://{host_port}")
}

fn bearer(cli: &Cli) -> anyhow::Result<Bearer> {
    match cli.token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(Bearer(None)),
        Some(t) => {
            let v = MetadataValue::try_from(format!("Bearer {t}"))
                .map_err(|_| anyhow!("--token / VAULT_TOKEN contains characters not allowed in a header"))?;
            Ok(Bearer(Some(v)))
        }
    }
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
    if let Cmd::Completions { shell } = &cli.cmd {
        use clap::CommandFactory;
        clap_complete::generate(*shell, &mut Cli::command(), "vaultctl", &mut std::io::stdout());
        return Ok(());
    }
    if let Cmd::Cluster(cluster::Cmd::Certs { out, nodes, sans, days, renew }) = &cli.cmd {
        return cluster::certs(out, nodes, sans, *days, *renew);
    }
    if let Cmd::Reader(reader::Cmd::Cert { cn, out, days }) = &cli.cmd {
        return reader::cert(cn, out, *days);
    }
    let ch = channel(&cli).await?;
    let auth = bearer(&cli)?;
    let mut secrets: SecretsClient<Authed> = SecretsClient::with_interceptor(ch.clone(), auth.clone());
    let mut admin: AdminClient<Authed> = AdminClient::with_interceptor(ch, auth);
    let json = cli.output == Output::Json;
    if let Cmd::Kms(k) = &cli.cmd {
        return kms::run(&cli, &mut admin, k, json).await;
    }
    match cli.cmd {
        Cmd::Kms(_) => Ok(()),
        Cmd::Snapshot(cmd) => snapshot::run(&mut admin, cmd, json).await,
        Cmd::Completions { .. } => Ok(()),
        Cmd::Run(args) => run::run(&mut secrets, args).await,
        Cmd::Status => status::run(&mut admin, json).await,
        Cmd::Secret(cmd) => secret::run(&mut secrets, cmd, json).await,
        Cmd::Token(cmd) => token::run(&mut admin, cmd, json).await,
        Cmd::Role(cmd) => role::run(&mut admin, cmd, json).await,
        Cmd::Reader(cmd) => reader::run(&mut admin, cmd, json).await,
        Cmd::Rotation(hook::HooksCmd::Hook(cmd)) => hook::run(&mut admin, cmd, json).await,
        Cmd::Audit(cmd) => audit::run(&mut admin, cmd, json).await,
        Cmd::Cluster(cmd) => cluster::run(&mut admin, cmd, json).await,
    }
}

/// Exit codes: 0 success, 1 any other failure, 2 usage (bad flags or arguments), 3 not found,
/// 4 refused (unauthenticated or permission denied), 5 unavailable (no connection, no leader or
/// quorum, rate limited, timed out: retry later).
fn exit_code(code: tonic::Code) -> u8 {
    use tonic::Code::*;
    match code {
        InvalidArgument => 2,
        NotFound => 3,
        Unauthenticated | PermissionDenied => 4,
        Unavailable | DeadlineExceeded | ResourceExhausted => 5,
        _ => 1,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let status = match dispatch(cli).await {
        Ok(()) => return ExitCode::SUCCESS,
        Err(Failure::Grpc(s)) => s,
        Err(Failure::Local(e)) => match e.downcast_ref::<Unreachable>() {
            Some(u) => Status::unavailable(u.0.clone()),
            // Everything vaultctl refuses by itself is about its arguments or local files.
            None => Status::invalid_argument(format!("{e:#}")),
        },
    };
    // Every error line names the code, in words.
    eprintln!("error: {}: {}", code_words(status.code()), status.message());
    ExitCode::from(exit_code(status.code()))
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
}
