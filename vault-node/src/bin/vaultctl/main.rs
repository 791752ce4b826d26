//! `vaultctl`: the admin CLI. Speaks the public gRPC API.
//!
//! Exit status 0 on success; otherwise 1 with a one-line `error: <code in words>: <why>` on
//! stderr. Secret values print raw on stdout.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};
use vault_core::model::audit_field;
use vault_node::clock::fmt_ms;
use vault_node::error::{code_words, LEADER_HEADER};
use vault_node::pb;
use vault_node::pb::admin_client::AdminClient;
use vault_node::pb::secrets_client::SecretsClient;

#[derive(Parser)]
#[command(name = "vaultctl", version, about = "Admin CLI of the secrets vault")]
struct Cli {
    /// API address of any node.
    #[arg(long, env = "VAULT_ADDR", default_value = "http://127.0.0.1:8200", global = true)]
    addr: String,
    /// Admin bearer token.
    #[arg(long, env = "VAULT_TOKEN", hide_env_values = true, global = true)]
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
    Secret(SecretCmd),
    /// Admin tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Roles and their grants.
    #[command(subcommand)]
    Role(RoleCmd),
    /// Reader rules: which secrets a reading client (by address or client certificate) may get.
    #[command(subcommand)]
    Reader(ReaderCmd),
    /// Rotation hooks: the secret names each exec: hook may rotate (admin).
    #[command(subcommand)]
    Rotation(HooksCmd),
    /// The audit log of the node addressed.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Cluster membership and state.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// The KMS re-wrap worker.
    #[command(subcommand)]
    Kms(KmsCmd),
    /// Backup and restore of the replicated state.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Version, role, leader and readiness of the node addressed; needs no token. Exits
    /// non-zero (unavailable) when the node is not ready.
    Status,
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions { shell: clap_complete::Shell },
    /// Run CMD with secrets in its environment: read as a reader (no token), never written to
    /// disk or put on a command line. vaultctl becomes CMD (exec), so CMD's exit status and
    /// signals are its own.
    Run {
        /// VAR=NAME or VAR=NAME@VERSION; repeat for more.
        #[arg(long = "env", value_name = "VAR=NAME[@VERSION]", required_unless_present = "env_file")]
        env: Vec<String>,
        /// A file of VAR=NAME[@VERSION] lines (blank lines and `#` comments allowed): which
        /// secrets go in which variables, never values. Adds to --env.
        #[arg(long, value_name = "FILE")]
        env_file: Option<PathBuf>,
        /// The program and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Write a consistent backup (ciphertext, wrapped data keys, token hashes, roles) to FILE.
    Save { file: PathBuf },
    /// Replace the cluster's secrets, tokens and roles with a backup, through Raft.
    Restore { file: PathBuf },
}

#[derive(Subcommand)]
enum KmsCmd {
    /// Enabled, running, watermark, latest rotation, total and pending versions.
    Status,
    /// Force a re-wrap pass on the leader and follow its progress.
    Rewrap {
        /// Return once the pass has started instead of following it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Local keyring: make a new master key the cluster's. Every node must hold it first;
    /// the leader's worker then re-wraps every older data key onto it (see `kms status`).
    Rotate {
        /// The key to make current (an id from `kms status`); default: the first key of this
        /// node's keyring.
        #[arg(long)]
        key_id: Option<String>,
    },
}

#[derive(Subcommand)]
enum SecretCmd {
    /// Write a new version; prints its number. The value comes from --value, --file or stdin.
    Put {
        name: String,
        #[arg(long, conflicts_with = "file")]
        value: Option<String>,
        #[arg(long)]
        file: Option<PathBuf>,
        /// Check-and-set: only if the current version is N (0 = must not exist).
        #[arg(long)]
        cas: Option<u64>,
        /// Keep at most this many versions.
        #[arg(long)]
        max_versions: Option<u32>,
    },
    /// Print a value, raw.
    Get {
        name: String,
        #[arg(long)]
        version: Option<u64>,
    },
    /// Secret names and metadata (never values).
    List {
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Versions of a secret and their states.
    Versions { name: String },
    /// Soft-delete every version of a secret (or only --versions); `undelete` restores them.
    Delete(VersionsArg),
    /// Restore soft-deleted versions.
    Undelete(RequiredVersions),
    /// Purge versions' ciphertext and wrapped data key for good (--versions, or --all).
    Destroy(DestroyArgs),
    /// Scheduled rotation policies.
    #[command(subcommand)]
    Rotation(RotationCmd),
    /// Rotate now by the secret's policy (the leader runs it); prints the new version. Needs
    /// `rotate`.
    Rotate { name: String },
}

#[derive(Args)]
struct VersionsArg {
    name: String,
    /// Comma-separated versions, e.g. 1,2.
    #[arg(long, value_delimiter = ',')]
    versions: Vec<u64>,
}

#[derive(Args)]
struct RequiredVersions {
    name: String,
    #[arg(long, value_delimiter = ',', required = true)]
    versions: Vec<u64>,
}

#[derive(Args)]
struct DestroyArgs {
    name: String,
    /// Versions to destroy for good (needs `destroy`).
    #[arg(long, value_delimiter = ',', required_unless_present = "all", conflicts_with = "all")]
    versions: Vec<u64>,
    /// Destroy every version of the secret for good; its highest version number is kept.
    #[arg(long)]
    all: bool,
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a token; prints the raw token once.
    Create {
        name: String,
        #[arg(long)]
        role: String,
        /// Lifetime: seconds, or a number with s, m, h or d.
        #[arg(long)]
        ttl: Option<String>,
    },
    List,
    Revoke {
        name: String,
    },
}

#[derive(Subcommand)]
enum HooksCmd {
    /// Hook bindings: an exec: policy is accepted, and run, only for names its hook is bound to.
    #[command(subcommand)]
    Hook(HookCmd),
}

#[derive(Subcommand)]
enum HookCmd {
    /// Bind HOOK (its path inside VAULT_ROTATION_HOOKS_DIR) to the names it may rotate;
    /// replaces its earlier binding.
    Bind {
        hook: String,
        /// Secret name patterns: exact, prefix ending in `*`, or `*`.
        #[arg(long = "names", value_name = "PATTERN", required = true, num_args = 1..)]
        names: Vec<String>,
    },
    List,
    /// Remove HOOK's binding: policies that name it stop running it.
    Unbind {
        hook: String,
    },
}

#[derive(Subcommand)]
enum ReaderCmd {
    /// Create a rule: clients at --cidr, or presenting a certificate named --cert-cn, may read
    /// the names --grant matches. Once any rule exists, every read needs one.
    Create {
        name: String,
        /// Client address or network (10.0.1.0/24, ::1); repeat for more.
        #[arg(long = "cidr", value_name = "CIDR")]
        cidrs: Vec<String>,
        /// Common name of a client certificate (signed by the node's VAULT_TLS_CLIENT_CA).
        #[arg(long = "cert-cn", value_name = "CN")]
        cert_cns: Vec<String>,
        /// Secret name pattern: exact, prefix ending in `*`, or `*`; repeat for more.
        #[arg(long = "grant", value_name = "PATTERN", required = true)]
        grants: Vec<String>,
        /// Replace the rule if it exists.
        #[arg(long)]
        replace: bool,
    },
    List,
    Get {
        name: String,
    },
    Delete {
        name: String,
    },
    /// Mint a reader client certificate for CN into --out: reader-<CN>.pem and .key, signed by
    /// reader-ca.pem (created there on first use; point VAULT_TLS_CLIENT_CA at it).
    Cert {
        cn: String,
        #[arg(long)]
        out: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
}

#[derive(Subcommand)]
enum RotationCmd {
    /// Rotate NAME every --every (e.g. 30d, 12h) with --generator: random:N (N random bytes,
    /// URL-safe base64), hex:N (N random bytes, hex) or exec:/path (a hook in the leader's
    /// VAULT_ROTATION_HOOKS_DIR: gets the old value on stdin, prints the new one). Needs `rotate`.
    Set {
        name: String,
        #[arg(long)]
        every: String,
        #[arg(long)]
        generator: String,
    },
    /// The policy and its progress: next due, last rotation, failures and the last error.
    Get { name: String },
    /// Stop rotating NAME.
    Clear { name: String },
}

#[derive(Subcommand)]
enum RoleCmd {
    /// Create a role from grants ACTION[,ACTION]:PATTERN.
    Create {
        name: String,
        #[arg(long = "grant", required = true)]
        grants: Vec<String>,
        /// Replace the role if it exists.
        #[arg(long)]
        replace: bool,
    },
    List,
    Get {
        name: String,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Recent records, newest first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        secret: Option<String>,
        /// Only records at or after this: milliseconds since the epoch, or an age such as 30m,
        /// 12h or 7d.
        #[arg(long)]
        since: Option<String>,
    },
    /// Check this node's audit hash chain; names the first missing or altered record and exits
    /// non-zero if there is one. Prints the head (`SEQ:MAC`): keep it off the node and pass it
    /// to `--extends` later to catch a rollback of the whole data directory.
    Verify {
        /// A head printed by an earlier verify: the log must still grow from it.
        #[arg(long, value_name = "SEQ:MAC")]
        extends: Option<String>,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Members, roles, leader, term, last log and applied index, lag.
    Status,
    /// Add a node as a learner; returns once it has caught up.
    Add { id: u64, raft_addr: String, api_addr: String },
    /// Make a learner a voter.
    Promote { id: u64 },
    /// Remove a voter or learner.
    Remove { id: u64 },
    /// Hand leadership to a caught-up voter.
    TransferLeader { id: u64 },
    /// Raise the cluster's feature level to the lowest every member understands (after a
    /// rolling upgrade; the leader also does it by itself within seconds).
    Upgrade,
    /// Mint the cluster CA (once) and node certificates for Raft mTLS. Needs no server.
    Certs {
        /// Directory for ca.pem, ca.key, node-<id>.pem and node-<id>.key.
        #[arg(long)]
        out: PathBuf,
        /// Node ids, e.g. 1,2,3.
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<u64>,
        /// Extra IP address or DNS name for the node certificates (repeatable).
        #[arg(long = "san")]
        sans: Vec<String>,
        /// Validity of node certificates in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
        /// Replace existing node certificates and keys (renewal); the CA stays. Send SIGHUP to
        /// the running node to use them.
        #[arg(long)]
        renew: bool,
    },
}

/// `println!` that ends the process quietly when stdout is closed (`vaultctl ... | head`),
/// as a SIGPIPE would, instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        if writeln!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit(141);
        }
    }};
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

fn opt_ms(v: Option<u64>) -> String {
    match v {
        None => "-".into(),
        Some(0) => "0 (no rotation yet)".into(),
        Some(ms) => format!("{} ({ms})", fmt_ms(ms)),
    }
}

async fn kms_cmd(cli: &Cli, admin: &mut AdminClient<Authed>, cmd: &KmsCmd, json: bool) -> Result<(), Failure> {
    match cmd {
        KmsCmd::Status => {
            let mut s = admin.kms_status(pb::KmsStatusRequest {}).await?.into_inner();
            // Pass progress lives on the leader; ask it when this node is not.
            if !s.is_leader && !s.leader_api_addr.is_empty() {
                let ch = channel_to(cli, &url_like(cli, &s.leader_api_addr)).await?;
                let mut leader = AdminClient::with_interceptor(ch, bearer(cli)?);
                s = leader.kms_status(pb::KmsStatusRequest {}).await?.into_inner();
            }
            if json {
                print_json(json!({
                    "kind": s.kind, "key_id": s.key_id, "enabled": s.enabled, "running": s.running,
                    "watermark_ms": s.watermark_ms, "latest_rotation_ms": s.latest_rotation_ms,
                    "rotation_error": s.rotation_error, "total_versions": s.total_versions,
                    "pending_versions": s.pending_versions, "pass_target_ms": s.pass_target_ms,
                    "pass_total": s.pass_total, "pass_done": s.pass_done, "pass_failed": s.pass_failed,
                    "last_error": s.last_error, "leader_api_addr": s.leader_api_addr,
                    "cluster_key_id": s.cluster_key_id, "node_key_ids": s.node_key_ids,
                    "versions_by_key": s.versions_by_key, "missing_key_ids": s.missing_key_ids,
                }));
            } else {
                outln!("kms:              {} {}", s.kind, s.key_id);
                if !s.cluster_key_id.is_empty() {
                    outln!("cluster key:      {}", s.cluster_key_id);
                }
                outln!("node keyring:     {}", s.node_key_ids.join(", "));
                for (key, n) in &s.versions_by_key {
                    outln!("  wraps {n:>8} version(s): {key}");
                }
                if !s.missing_key_ids.is_empty() {
                    outln!(
                        "MISSING here:     {} (still needed; add to this node's keyring)",
                        s.missing_key_ids.join(", ")
                    );
                }
                outln!(
                    "worker:           {}{}",
                    if s.enabled { "enabled" } else { "disabled" },
                    if s.running { ", running" } else { "" }
                );
                outln!("watermark:        {}", opt_ms(s.watermark_ms));
                outln!(
                    "latest rotation:  {}{}",
                    opt_ms(s.latest_rotation_ms),
                    if s.rotation_error.is_empty() { String::new() } else { format!(" ({})", s.rotation_error) }
                );
                outln!("versions:         {} total, {} pending", s.total_versions, s.pending_versions);
                if s.pass_target_ms.is_some() {
                    outln!(
                        "last pass:        {}/{} re-wrapped, {} failed, to {}",
                        s.pass_done,
                        s.pass_total,
                        s.pass_failed,
                        opt_ms(s.pass_target_ms)
                    );
                }
                if !s.last_error.is_empty() {
                    outln!("last error:       {}", s.last_error);
                }
            }
            Ok(())
        }
        KmsCmd::Rotate { key_id } => {
            let r = admin
                .kms_rotate(pb::KmsRotateRequest { key_id: key_id.clone().unwrap_or_default() })
                .await?
                .into_inner();
            if json {
                print_json(json!({
                    "previous_key_id": r.previous_key_id, "key_id": r.key_id, "pending_versions": r.pending_versions,
                }));
            } else {
                outln!("master key is now {} (was {})", r.key_id, r.previous_key_id);
                outln!("{} version(s) to re-wrap; follow with `vaultctl kms status`", r.pending_versions);
            }
            Ok(())
        }
        KmsCmd::Rewrap { no_wait } => {
            let first = admin.kms_rewrap(pb::KmsRewrapRequest {}).await;
            // Runs on the leader: follow the hint once.
            let (r, mut leader_admin) = match first {
                Err(s) if s.code() == tonic::Code::Unavailable && s.metadata().get(LEADER_HEADER).is_some() => {
                    let addr =
                        s.metadata().get(LEADER_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                    let ch = channel_to(cli, &url_like(cli, &addr)).await?;
                    let mut leader = AdminClient::with_interceptor(ch, bearer(cli)?);
                    let r = leader.kms_rewrap(pb::KmsRewrapRequest {}).await?.into_inner();
                    (r, leader)
                }
                other => (other?.into_inner(), admin.clone()),
            };
            if !json {
                outln!("{}", r.outcome);
            }
            let mut last = None;
            if r.running && !no_wait {
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let s = leader_admin.kms_status(pb::KmsStatusRequest {}).await?.into_inner();
                    if !json && last != Some((s.pass_done, s.pass_failed)) {
                        outln!("re-wrapped {}/{} ({} failed)", s.pass_done, s.pass_total, s.pass_failed);
                        last = Some((s.pass_done, s.pass_failed));
                    }
                    if !s.running {
                        if json {
                            print_json(
                                json!({"outcome": r.outcome, "done": s.pass_done, "failed": s.pass_failed, "pending": s.pending_versions}),
                            );
                        } else {
                            outln!(
                                "pass finished: {} pending, watermark {}",
                                s.pending_versions,
                                opt_ms(s.watermark_ms)
                            );
                        }
                        if s.pass_failed > 0 {
                            return Err(Failure::Local(anyhow!(
                                "{} version(s) failed to re-wrap: {}",
                                s.pass_failed,
                                s.last_error
                            )));
                        }
                        return Ok(());
                    }
                }
            }
            if json {
                print_json(json!({"outcome": r.outcome, "running": r.running}));
            }
            Ok(())
        }
    }
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

/// `--since`: milliseconds since the epoch, or an age (`30m`, `12h`, `7d`) before now.
fn parse_since(s: &str) -> anyhow::Result<u64> {
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    let age_ms = parse_ttl(s)
        .map_err(|_| anyhow!("--since {s:?}: expected milliseconds since the epoch, or an age such as 30m, 12h or 7d"))?
        .saturating_mul(1000);
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    Ok(now.saturating_sub(age_ms))
}

/// A duration in seconds: `90`, `90s`, `30m`, `12h`, `7d`.
fn parse_ttl(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| anyhow!("duration {s:?}: expected e.g. 3600, 30m, 12h or 7d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("duration {s:?}: unit must be s, m, h or d"),
    };
    let secs = n.checked_mul(mult).ok_or_else(|| anyhow!("duration {s:?} is too long"))?;
    if secs == 0 {
        bail!("a duration must be more than zero");
    }
    Ok(secs)
}

fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        outln!("{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn print_json(v: serde_json::Value) {
    outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
}

async fn run(cli: Cli) -> Result<(), Failure> {
    if let Cmd::Completions { shell } = &cli.cmd {
        use clap::CommandFactory;
        clap_complete::generate(*shell, &mut Cli::command(), "vaultctl", &mut std::io::stdout());
        return Ok(());
    }
    if let Cmd::Cluster(ClusterCmd::Certs { out, nodes, sans, days, renew }) = &cli.cmd {
        for path in vault_node::certs::mint(out, nodes, sans, *days, *renew)? {
            outln!("wrote {}", path.display());
        }
        return Ok(());
    }
    if let Cmd::Reader(ReaderCmd::Cert { cn, out, days }) = &cli.cmd {
        for path in vault_node::certs::mint_reader(out, cn, *days)? {
            outln!("wrote {}", path.display());
        }
        return Ok(());
    }
    let ch = channel(&cli).await?;
    let auth = bearer(&cli)?;
    let mut secrets: SecretsClient<Authed> = SecretsClient::with_interceptor(ch.clone(), auth.clone());
    let mut admin: AdminClient<Authed> = AdminClient::with_interceptor(ch, auth);
    let json = cli.output == Output::Json;
    if let Cmd::Kms(k) = &cli.cmd {
        return kms_cmd(&cli, &mut admin, k, json).await;
    }
    match cli.cmd {
        Cmd::Kms(_) => Ok(()),
        Cmd::Snapshot(cmd) => snapshot_cmd(&mut admin, cmd, json).await,
        Cmd::Completions { .. } => Ok(()),
        Cmd::Run { mut env, env_file, command } => {
            if let Some(file) = env_file {
                env.extend(read_env_file(&file)?);
            }
            run_with_secrets(&mut secrets, &env, &command).await
        }
        Cmd::Status => {
            let s = admin.server_status(pb::ServerStatusRequest {}).await?.into_inner();
            if json {
                print_json(json!({
                    "version": s.version, "vaultctl_version": env!("CARGO_PKG_VERSION"), "node_id": s.node_id,
                    "state": s.state, "leader_id": s.leader_id, "leader_api_addr": s.leader_api_addr,
                    "ready": s.ready, "not_ready": s.not_ready, "feature_level": s.feature_level,
                }));
            } else {
                let leader = match s.leader_id {
                    Some(id) => format!("node {id} at {}", s.leader_api_addr),
                    None => "none".into(),
                };
                outln!("version {} (vaultctl {})", s.version, env!("CARGO_PKG_VERSION"));
                outln!("node {} ({}), leader {leader}, feature level {}", s.node_id, s.state, s.feature_level);
                outln!("{}", if s.ready { "ready".to_string() } else { format!("not ready: {}", s.not_ready) });
            }
            if s.ready {
                Ok(())
            } else {
                Err(Failure::Grpc(Status::unavailable(format!("node {} is not ready: {}", s.node_id, s.not_ready))))
            }
        }
        Cmd::Secret(cmd) => secret_cmd(&mut secrets, cmd, json).await,
        Cmd::Token(cmd) => token_cmd(&mut admin, cmd, json).await,
        Cmd::Role(cmd) => role_cmd(&mut admin, cmd, json).await,
        Cmd::Reader(cmd) => reader_cmd(&mut admin, cmd, json).await,
        Cmd::Rotation(HooksCmd::Hook(cmd)) => hook_cmd(&mut admin, cmd, json).await,
        Cmd::Audit(AuditCmd::Verify { extends }) => {
            let extends = extends.unwrap_or_default();
            let r = admin.verify_audit(pb::VerifyAuditRequest { extends }).await?.into_inner();
            if json {
                print_json(json!({
                    "ok": r.ok, "problem": r.problem, "checked": r.checked, "legacy": r.legacy,
                    "unverifiable": r.unverifiable, "first_seq": r.first_seq, "last_seq": r.last_seq,
                    "head": r.head,
                }));
            } else {
                let span = match (r.first_seq, r.last_seq) {
                    (Some(a), Some(b)) => format!("records {a} to {b}"),
                    _ => "no records".into(),
                };
                outln!(
                    "{span}: {} checked, {} from before chaining, {} under retired keys this node no longer holds",
                    r.checked,
                    r.legacy,
                    r.unverifiable
                );
                if !r.head.is_empty() {
                    outln!("head: {}", r.head);
                }
                if r.ok {
                    outln!("audit chain intact");
                }
            }
            if r.ok {
                Ok(())
            } else {
                Err(Failure::Grpc(Status::data_loss(format!("audit chain broken: {}", r.problem))))
            }
        }
        Cmd::Audit(AuditCmd::List { limit, secret, since }) => {
            let since_ms = since.as_deref().map(parse_since).transpose()?.unwrap_or(0);
            let r = admin
                .list_audit(pb::ListAuditRequest { limit, secret: secret.unwrap_or_default(), since_ms })
                .await?
                .into_inner();
            if json {
                print_json(json!(r
                    .records
                    .iter()
                    .map(|a| json!({
                        "seq": a.seq, "time_ms": a.time_ms, "node_id": a.node_id, "actor": a.actor,
                        "client_ip": a.client_ip, "action": a.action, "secret": a.secret, "outcome": a.outcome,
                    }))
                    .collect::<Vec<_>>()));
            } else {
                table(
                    &["TIME", "NODE", "ACTOR", "CLIENT", "ACTION", "SECRET", "OUTCOME"],
                    r.records
                        .into_iter()
                        .map(|a| {
                            // Client-supplied text: escaped, so nothing reaches the terminal raw.
                            let safe = |s: &str| audit_field(s, usize::MAX);
                            vec![
                                fmt_ms(a.time_ms),
                                a.node_id.to_string(),
                                safe(&a.actor),
                                safe(&a.client_ip),
                                safe(&a.action),
                                safe(&a.secret),
                                safe(&a.outcome),
                            ]
                        })
                        .collect(),
                );
            }
            Ok(())
        }
        Cmd::Cluster(ClusterCmd::Add { id, raft_addr, api_addr }) => {
            let mut watcher = admin.clone();
            let add = admin.add_member(pb::AddMemberRequest { id, raft_addr, api_addr });
            tokio::pin!(add);
            // On a terminal, say how far the new node has caught up while the call waits.
            let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            tick.tick().await;
            loop {
                tokio::select! {
                    r = &mut add => {
                        r?;
                        break;
                    }
                    _ = tick.tick(), if progress => {
                        if let Ok(s) = watcher.cluster_status(pb::ClusterStatusRequest {}).await {
                            let s = s.into_inner();
                            let matched = s.members.iter().find(|m| m.id == id).and_then(|m| m.matched_index);
                            match (matched, s.last_log_index) {
                                (Some(m), Some(last)) => eprintln!("node {id}: at entry {m} of {last}, catching up..."),
                                _ => eprintln!("node {id}: waiting for it to answer..."),
                            }
                        }
                    }
                }
            }
            outln!("node {id} added as learner and caught up");
            Ok(())
        }
        Cmd::Cluster(ClusterCmd::Promote { id }) => {
            admin.promote_member(pb::MemberRequest { id }).await?;
            outln!("node {id} is a voter");
            Ok(())
        }
        Cmd::Cluster(ClusterCmd::Remove { id }) => {
            admin.remove_member(pb::MemberRequest { id }).await?;
            outln!("node {id} removed");
            Ok(())
        }
        Cmd::Cluster(ClusterCmd::TransferLeader { id }) => {
            admin.transfer_leader(pb::MemberRequest { id }).await?;
            outln!("node {id} is the leader");
            Ok(())
        }
        Cmd::Cluster(ClusterCmd::Certs { .. }) => Ok(()),
        Cmd::Cluster(ClusterCmd::Upgrade) => {
            let r = admin.upgrade_cluster(pb::UpgradeClusterRequest {}).await?.into_inner();
            if json {
                print_json(json!({
                    "feature_level": r.feature_level,
                    "members": r.members.iter().map(|m| json!({"id": m.id, "feature_level": m.feature_level})).collect::<Vec<_>>(),
                }));
            } else {
                outln!("cluster feature level {}", r.feature_level);
                table(
                    &["ID", "UNDERSTANDS"],
                    r.members.into_iter().map(|m| vec![m.id.to_string(), m.feature_level.to_string()]).collect(),
                );
            }
            Ok(())
        }
        Cmd::Cluster(ClusterCmd::Status) => {
            let s = admin.cluster_status(pb::ClusterStatusRequest {}).await?.into_inner();
            let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            if json {
                print_json(json!({
                    "node_id": s.node_id, "state": s.state, "leader_id": s.leader_id,
                    "leader_api_addr": s.leader_api_addr, "term": s.term,
                    "last_log_index": s.last_log_index, "last_applied_index": s.last_applied_index,
                    "feature_level": s.feature_level, "node_feature_level": s.node_feature_level,
                    "members": s.members.iter().map(|m| json!({
                        "id": m.id, "role": m.role, "raft_addr": m.raft_addr, "api_addr": m.api_addr,
                        "matched_index": m.matched_index, "lag": m.lag,
                    })).collect::<Vec<_>>(),
                }));
            } else {
                outln!(
                    "node {} ({}), term {}, leader {} {}, last log {}, applied {}, feature level {} (node understands {})",
                    s.node_id,
                    s.state,
                    s.term,
                    opt(s.leader_id),
                    s.leader_api_addr,
                    opt(s.last_log_index),
                    opt(s.last_applied_index),
                    s.feature_level,
                    s.node_feature_level
                );
                table(
                    &["ID", "ROLE", "RAFT", "API", "MATCHED", "LAG"],
                    s.members
                        .into_iter()
                        .map(|m| {
                            vec![m.id.to_string(), m.role, m.raft_addr, m.api_addr, opt(m.matched_index), opt(m.lag)]
                        })
                        .collect(),
                );
            }
            Ok(())
        }
    }
}

/// One `--env VAR=NAME[@VERSION]`.
fn parse_env_spec(spec: &str) -> anyhow::Result<(String, String, u64)> {
    let (var, target) = spec.split_once('=').ok_or_else(|| anyhow!("--env {spec:?}: expected VAR=NAME[@VERSION]"))?;
    let (var, target) = (var.trim(), target.trim());
    let valid_var = !var.is_empty()
        && !var.starts_with(|c: char| c.is_ascii_digit())
        && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_var {
        bail!("--env {spec:?}: {var:?} is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)");
    }
    let (name, version) = match target.rsplit_once('@') {
        Some((name, v)) => {
            let v: u64 = v.parse().map_err(|_| anyhow!("--env {spec:?}: version {v:?} is not a number"))?;
            if v == 0 {
                bail!("--env {spec:?}: versions start at 1");
            }
            (name, v)
        }
        None => (target, 0),
    };
    if name.is_empty() {
        bail!("--env {spec:?}: no secret name");
    }
    Ok((var.to_string(), name.to_string(), version))
}

/// The VAR=NAME[@VERSION] lines of an `--env-file` (blank lines and `#` comments skipped).
fn read_env_file(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read --env-file {}", path.display()))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect())
}

/// `vaultctl run`: reads every secret in one linearizable batch, then replaces this process
/// with `command`, the secrets in its environment. Values stay in memory that is zeroized if
/// the exec fails; on success the process image, and they with it, is replaced.
async fn run_with_secrets(c: &mut SecretsClient<Authed>, specs: &[String], command: &[String]) -> Result<(), Failure> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;
    let specs = specs.iter().map(|s| parse_env_spec(s)).collect::<anyhow::Result<Vec<_>>>()?;
    let requests =
        specs.iter().map(|(_, name, version)| pb::GetSecretRequest { name: name.clone(), version: *version }).collect();
    let results = c.batch_get_secrets(pb::BatchGetSecretsRequest { requests }).await?.into_inner().results;
    if results.len() != specs.len() {
        return Err(Failure::Grpc(Status::internal(format!(
            "asked for {} secrets, the server answered {}",
            specs.len(),
            results.len()
        ))));
    }
    let mut values: Vec<(String, zeroize::Zeroizing<Vec<u8>>)> = Vec::with_capacity(specs.len());
    for ((var, name, _), result) in specs.iter().zip(results) {
        match result.result {
            Some(pb::batch_get_result::Result::Secret(mut s)) => {
                let value = zeroize::Zeroizing::new(std::mem::take(&mut s.value));
                if value.contains(&0) {
                    return Err(Failure::Local(anyhow!(
                        "secret {name} holds a NUL byte and cannot be passed in the environment ({var})"
                    )));
                }
                values.push((var.clone(), value));
            }
            Some(pb::batch_get_result::Result::Error(e)) => {
                return Err(Failure::Grpc(Status::new(tonic::Code::from_i32(e.code), format!("{name}: {}", e.message))))
            }
            None => return Err(Failure::Grpc(Status::internal(format!("{name}: the server sent no result")))),
        }
    }
    let (program, args) = command.split_first().ok_or_else(|| anyhow!("run: no command after --"))?;
    let mut cmd = std::process::Command::new(program);
    // The program gets the secrets it was given, not vaultctl's own credentials.
    cmd.args(args).env_remove("VAULT_TOKEN");
    for (var, value) in &values {
        cmd.env(var, std::ffi::OsStr::from_bytes(value));
    }
    // Returns only if the exec failed.
    let err = cmd.exec();
    drop(values);
    Err(Failure::Local(anyhow!("run {program}: {err}")))
}

/// What it means that no reader rule is in force.
const NO_READER_RULE: &str = "rules stay required once in force, so no read is allowed until a rule is created \
     (a rule with --cidr 0.0.0.0/0 --cidr ::/0 --grant '*' leaves VAULT_ALLOWED_IPS alone to decide)";

/// How long a backup or restore may take end to end.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Cluster changes wait on the leader for up to two minutes (a new node catching up from a
/// large store), then say what state they left: this waits a little longer, to hear it.
const CLUSTER_CHANGE_TIMEOUT: Duration = Duration::from_secs(150);

/// How long vaultctl waits for one call of `cmd`.
fn call_timeout(cmd: &Cmd) -> Duration {
    match cmd {
        Cmd::Snapshot(_) => SNAPSHOT_TIMEOUT,
        Cmd::Cluster(
            ClusterCmd::Add { .. }
            | ClusterCmd::Promote { .. }
            | ClusterCmd::Remove { .. }
            | ClusterCmd::TransferLeader { .. }
            | ClusterCmd::Upgrade,
        )
        | Cmd::Kms(KmsCmd::Rotate { .. }) => CLUSTER_CHANGE_TIMEOUT,
        // The server waits up to 50 s for the leader's attempt, after a barrier and a write
        // of up to 10 s each, and reads the outcome after one more barrier.
        Cmd::Secret(SecretCmd::Rotate { .. }) => Duration::from_secs(90),
        _ => Duration::from_secs(60),
    }
}

async fn snapshot_cmd(admin: &mut AdminClient<Authed>, cmd: SnapshotCmd, json: bool) -> Result<(), Failure> {
    match cmd {
        SnapshotCmd::Save { file } => {
            use std::os::unix::fs::OpenOptionsExt;
            let mut req = Request::new(pb::SaveSnapshotRequest {});
            req.set_timeout(SNAPSHOT_TIMEOUT);
            let mut stream = admin.save_snapshot(req).await?.into_inner();
            // Written beside the target and renamed into place once complete: FILE is never
            // a partial backup. Owner-only: it holds wrapped keys and token hashes.
            let tmp = file.with_extension(format!("partial-{}", std::process::id()));
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("create {}", tmp.display()))?;
            let mut bytes = 0u64;
            let received = async {
                while let Some(chunk) = stream.message().await? {
                    out.write_all(&chunk.data).with_context(|| format!("write {}", tmp.display()))?;
                    bytes += chunk.data.len() as u64;
                }
                out.sync_all().with_context(|| format!("sync {}", tmp.display()))?;
                std::fs::rename(&tmp, &file).with_context(|| format!("rename to {}", file.display()))?;
                Ok::<_, Failure>(())
            }
            .await;
            if received.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            received?;
            if json {
                print_json(json!({ "file": file.display().to_string(), "bytes": bytes }));
            } else {
                outln!("wrote {} ({bytes} bytes)", file.display());
            }
            Ok(())
        }
        SnapshotCmd::Restore { file } => {
            // Streamed from the file, never read whole; a read error ends the upload (which the
            // node then refuses as truncated) and is reported here.
            let source = std::fs::File::open(&file).with_context(|| format!("open {}", file.display()))?;
            let read_error = std::sync::Arc::new(std::sync::Mutex::new(None::<std::io::Error>));
            let seen = read_error.clone();
            let chunks = futures::stream::unfold(Some(source), move |source| {
                let seen = seen.clone();
                async move {
                    let mut source = source?;
                    let mut data = Vec::with_capacity(256 << 10);
                    match Read::by_ref(&mut source).take(256 << 10).read_to_end(&mut data) {
                        Ok(0) => None,
                        Ok(_) => Some((pb::SnapshotChunk { data }, Some(source))),
                        Err(e) => {
                            *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                            None
                        }
                    }
                }
            });
            let mut req = Request::new(chunks);
            req.set_timeout(SNAPSHOT_TIMEOUT);
            // A restore puts back the backup's reader rules: none, if it predates them.
            let rules_before =
                admin.list_readers(pb::ListReadersRequest {}).await.map_or(0, |r| r.into_inner().readers.len());
            let answer = admin.restore_snapshot(req).await;
            if let Some(e) = read_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return Err(anyhow!("read {}: {e}", file.display()).into());
            }
            let r = answer?.into_inner();
            if json {
                print_json(json!({
                    "secrets": r.secrets, "versions": r.versions, "tokens": r.tokens, "roles": r.roles,
                    "reader_rules": r.reader_rules, "rotation_policies": r.rotation_policies,
                    "source_node_id": r.source_node_id, "source_applied_index": r.source_applied_index,
                    "created_ms": r.created_ms,
                }));
            } else {
                outln!(
                    "restored {} secrets, {} versions, {} tokens, {} roles, {} reader rules, {} rotation policies \
                     from a backup of node {} at index {} ({})",
                    r.secrets,
                    r.versions,
                    r.tokens,
                    r.roles,
                    r.reader_rules,
                    r.rotation_policies,
                    r.source_node_id,
                    r.source_applied_index,
                    fmt_ms(r.created_ms)
                );
            }
            if rules_before > 0 && r.reader_rules == 0 {
                eprintln!("warning: the backup holds no reader rule ({rules_before} were in force): {NO_READER_RULE}");
            }
            Ok(())
        }
    }
}

fn read_value(value: Option<String>, file: Option<PathBuf>) -> anyhow::Result<Vec<u8>> {
    Ok(match (value, file) {
        (Some(v), _) => v.into_bytes(),
        (None, Some(f)) => std::fs::read(&f).with_context(|| format!("read --file {}", f.display()))?,
        (None, None) => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).context("read the value from stdin")?;
            buf
        }
    })
}

async fn secret_cmd(c: &mut SecretsClient<Authed>, cmd: SecretCmd, json: bool) -> Result<(), Failure> {
    match cmd {
        SecretCmd::Put { name, value, file, cas, max_versions } => {
            let value = read_value(value, file)?;
            let r = c
                .put_secret(pb::PutSecretRequest { name: name.clone(), value, expected_version: cas, max_versions })
                .await?
                .into_inner();
            if json {
                print_json(json!({"name": name, "version": r.version}));
            } else {
                outln!("{}", r.version);
            }
        }
        SecretCmd::Get { name, version } => {
            let r = c.get_secret(pb::GetSecretRequest { name, version: version.unwrap_or(0) }).await?.into_inner();
            if json {
                let value = match std::str::from_utf8(&r.value) {
                    Ok(s) => json!({"value": s}),
                    Err(_) => {
                        json!({"value_base64": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &r.value)})
                    }
                };
                let mut obj = json!({"name": r.name, "version": r.version, "created_at_ms": r.created_at_ms});
                if let (Some(o), Some(v)) = (obj.as_object_mut(), value.as_object()) {
                    o.extend(v.clone());
                }
                print_json(obj);
            } else {
                let mut out = std::io::stdout().lock();
                out.write_all(&r.value).context("write value to stdout")?;
                out.flush().context("write value to stdout")?;
            }
        }
        SecretCmd::List { prefix } => {
            let mut all = Vec::new();
            let mut page_token = String::new();
            loop {
                let r = c
                    .list_secrets(pb::ListSecretsRequest { prefix: prefix.clone(), page_size: 1000, page_token })
                    .await?
                    .into_inner();
                all.extend(r.secrets);
                if r.next_page_token.is_empty() {
                    break;
                }
                page_token = r.next_page_token;
            }
            if json {
                print_json(json!(all
                    .iter()
                    .map(|s| json!({
                        "name": s.name, "current_version": s.current_version, "max_versions": s.max_versions,
                        "created_at_ms": s.created_at_ms, "updated_at_ms": s.updated_at_ms,
                    }))
                    .collect::<Vec<_>>()));
            } else {
                table(
                    &["NAME", "VERSION", "MAX", "UPDATED"],
                    all.into_iter()
                        .map(|s| {
                            vec![
                                s.name,
                                s.current_version.to_string(),
                                s.max_versions.to_string(),
                                fmt_ms(s.updated_at_ms),
                            ]
                        })
                        .collect(),
                );
            }
        }
        SecretCmd::Versions { name } => {
            let r = c.list_versions(pb::ListVersionsRequest { name }).await?.into_inner();
            if json {
                print_json(json!({
                    "name": r.name, "current_version": r.current_version, "max_versions": r.max_versions,
                    "versions": r.versions.iter().map(|v| json!({
                        "version": v.version, "state": v.state, "created_at_ms": v.created_at_ms,
                        "key_id": v.key_id, "rewrap_watermark_ms": v.rewrap_watermark_ms,
                        "ciphertext_sha256": v.ciphertext_sha256, "wrapped_dek_sha256": v.wrapped_dek_sha256,
                    })).collect::<Vec<_>>(),
                    "rotation": r.rotation.as_ref().map(rotation_json),
                }));
            } else {
                if let Some(rotation) = &r.rotation {
                    print_rotation(rotation);
                }
                table(
                    &["VERSION", "STATE", "CREATED", "KEY", "REWRAPPED"],
                    r.versions
                        .into_iter()
                        .map(|v| {
                            vec![
                                v.version.to_string(),
                                v.state,
                                fmt_ms(v.created_at_ms),
                                v.key_id,
                                fmt_ms(v.rewrap_watermark_ms),
                            ]
                        })
                        .collect(),
                );
            }
        }
        SecretCmd::Rotation(RotationCmd::Set { name, every, generator }) => {
            let every_secs = parse_ttl(&every)?;
            let r = c.set_rotation(pb::SetRotationRequest { name, every_secs, generator }).await?.into_inner();
            if json {
                print_json(rotation_json(&r));
            } else {
                print_rotation(&r);
            }
        }
        SecretCmd::Rotation(RotationCmd::Get { name }) => {
            let r = c.get_rotation(pb::GetRotationRequest { name }).await?.into_inner();
            if json {
                print_json(rotation_json(&r));
            } else {
                print_rotation(&r);
            }
        }
        SecretCmd::Rotation(RotationCmd::Clear { name }) => {
            c.clear_rotation(pb::ClearRotationRequest { name: name.clone() }).await?;
            if json {
                print_json(json!({"name": name, "cleared": true}));
            }
        }
        SecretCmd::Rotate { name } => {
            let r = c.rotate_secret(pb::RotateSecretRequest { name: name.clone() }).await?.into_inner();
            if json {
                print_json(json!({"name": name, "version": r.version}));
            } else {
                outln!("{}", r.version);
            }
        }
        SecretCmd::Delete(VersionsArg { name, versions }) => {
            if versions.is_empty() {
                c.delete_secret(pb::DeleteSecretRequest { name: name.clone(), destroy: false }).await?;
                if json {
                    print_json(json!({"name": name, "deleted": true}));
                }
            } else {
                let r = c.delete_versions(pb::VersionsRequest { name, versions }).await?.into_inner();
                print_changed(&r.changed, json);
            }
        }
        SecretCmd::Undelete(RequiredVersions { name, versions }) => {
            let r = c.undelete_versions(pb::VersionsRequest { name, versions }).await?.into_inner();
            print_changed(&r.changed, json);
        }
        SecretCmd::Destroy(DestroyArgs { name, all: true, .. }) => {
            c.delete_secret(pb::DeleteSecretRequest { name: name.clone(), destroy: true }).await?;
            if json {
                print_json(json!({"name": name, "destroyed": true}));
            }
        }
        SecretCmd::Destroy(DestroyArgs { name, versions, .. }) => {
            let r = c.destroy_versions(pb::VersionsRequest { name, versions }).await?.into_inner();
            print_changed(&r.changed, json);
        }
    }
    Ok(())
}

fn print_changed(changed: &[u64], json: bool) {
    if json {
        print_json(json!({"changed": changed}));
    } else {
        let list: Vec<String> = changed.iter().map(|v| v.to_string()).collect();
        outln!("changed: {}", if list.is_empty() { "none".to_string() } else { list.join(",") });
    }
}

async fn token_cmd(c: &mut AdminClient<Authed>, cmd: TokenCmd, json: bool) -> Result<(), Failure> {
    match cmd {
        TokenCmd::Create { name, role, ttl } => {
            let ttl_secs = ttl.as_deref().map(parse_ttl).transpose()?.unwrap_or(0);
            let r = c.create_token(pb::CreateTokenRequest { name, role, ttl_secs }).await?.into_inner();
            if json {
                print_json(json!({"name": r.name, "token": r.token, "expires_at_ms": r.expires_at_ms}));
            } else {
                outln!("{}", r.token);
            }
        }
        TokenCmd::List => {
            let r = c.list_tokens(pb::ListTokensRequest {}).await?.into_inner();
            if json {
                print_json(json!(r.tokens.iter().map(|t| json!({
                    "name": t.name, "role": t.role, "created_at_ms": t.created_at_ms, "expires_at_ms": t.expires_at_ms,
                })).collect::<Vec<_>>()));
            } else {
                table(
                    &["NAME", "ROLE", "CREATED", "EXPIRES"],
                    r.tokens
                        .into_iter()
                        .map(|t| {
                            vec![
                                t.name,
                                t.role,
                                fmt_ms(t.created_at_ms),
                                t.expires_at_ms.map_or("never".into(), fmt_ms),
                            ]
                        })
                        .collect(),
                );
            }
        }
        TokenCmd::Revoke { name } => {
            c.revoke_token(pb::RevokeTokenRequest { name: name.clone() }).await?;
            if json {
                print_json(json!({"name": name, "revoked": true}));
            }
        }
    }
    Ok(())
}

fn reader_json(r: &pb::ReaderInfo) -> serde_json::Value {
    json!({
        "name": r.name, "cidrs": r.cidrs, "cert_cns": r.cert_cns, "grants": r.grants,
        "created_at_ms": r.created_at_ms,
    })
}

async fn reader_cmd(c: &mut AdminClient<Authed>, cmd: ReaderCmd, json: bool) -> Result<(), Failure> {
    let show = |readers: Vec<pb::ReaderInfo>| {
        table(
            &["NAME", "CIDRS", "CERT CNS", "GRANTS"],
            readers
                .into_iter()
                .map(|r| vec![r.name, r.cidrs.join(" "), r.cert_cns.join(" "), r.grants.join(" ")])
                .collect(),
        );
    };
    match cmd {
        ReaderCmd::Create { name, cidrs, cert_cns, grants, replace } => {
            c.create_reader(pb::CreateReaderRequest { name: name.clone(), cidrs, cert_cns, grants, replace }).await?;
            if json {
                print_json(json!({"name": name, "created": true}));
            } else {
                outln!("reader {name} created");
            }
        }
        ReaderCmd::List => {
            let readers = c.list_readers(pb::ListReadersRequest {}).await?.into_inner().readers;
            if json {
                print_json(json!(readers.iter().map(reader_json).collect::<Vec<_>>()));
            } else {
                show(readers);
            }
        }
        ReaderCmd::Get { name } => {
            let r = c.get_reader(pb::GetReaderRequest { name }).await?.into_inner();
            if json {
                print_json(reader_json(&r));
            } else {
                show(vec![r]);
            }
        }
        ReaderCmd::Delete { name } => {
            c.delete_reader(pb::DeleteReaderRequest { name: name.clone() }).await?;
            if json {
                print_json(json!({"name": name, "deleted": true}));
            } else {
                outln!("reader {name} deleted");
            }
            // Rules stay required with none left: every read is refused; say so.
            if c.list_readers(pb::ListReadersRequest {}).await.is_ok_and(|r| r.into_inner().readers.is_empty()) {
                eprintln!("warning: no reader rule is left: {NO_READER_RULE}");
            }
        }
        // Handled before connecting.
        ReaderCmd::Cert { .. } => {}
    }
    Ok(())
}

async fn hook_cmd(c: &mut AdminClient<Authed>, cmd: HookCmd, json: bool) -> Result<(), Failure> {
    match cmd {
        HookCmd::Bind { hook, names } => {
            c.bind_hook(pb::BindHookRequest { hook: hook.clone(), names: names.clone() }).await?;
            if json {
                print_json(json!({"hook": hook, "names": names, "bound": true}));
            } else {
                outln!("hook {hook} bound to {}", names.join(" "));
            }
        }
        HookCmd::List => {
            let bindings = c.list_hook_bindings(pb::ListHookBindingsRequest {}).await?.into_inner().bindings;
            if json {
                let shown: Vec<_> = bindings
                    .iter()
                    .map(|b| json!({"hook": b.hook, "names": b.names, "created_at_ms": b.created_at_ms}))
                    .collect();
                print_json(json!(shown));
            } else {
                table(&["HOOK", "NAMES"], bindings.into_iter().map(|b| vec![b.hook, b.names.join(" ")]).collect());
            }
        }
        HookCmd::Unbind { hook } => {
            c.unbind_hook(pb::UnbindHookRequest { hook: hook.clone() }).await?;
            if json {
                print_json(json!({"hook": hook, "unbound": true}));
            } else {
                outln!("hook {hook} unbound");
            }
        }
    }
    Ok(())
}

fn rotation_json(r: &pb::RotationInfo) -> serde_json::Value {
    json!({
        "name": r.name, "every_secs": r.every_secs, "generator": r.generator, "next_due_ms": r.next_due_ms,
        "last_rotated_ms": r.last_rotated_ms, "last_attempt_ms": r.last_attempt_ms, "failures": r.failures,
        "last_error": r.last_error,
    })
}

/// The policy in words, for `rotation get` and `secret versions`.
fn print_rotation(r: &pb::RotationInfo) {
    let never = |ms: u64| if ms == 0 { "never".to_string() } else { fmt_ms(ms) };
    outln!("rotation: every {} s by {}, next due {}", r.every_secs, r.generator, fmt_ms(r.next_due_ms));
    outln!(
        "last rotated {}, last attempt {}, failures since: {}",
        never(r.last_rotated_ms),
        never(r.last_attempt_ms),
        r.failures
    );
    if !r.last_error.is_empty() {
        outln!("last error: {}", r.last_error);
    }
}

async fn role_cmd(c: &mut AdminClient<Authed>, cmd: RoleCmd, json: bool) -> Result<(), Failure> {
    let show = |roles: Vec<pb::RoleInfo>| {
        if json {
            print_json(json!(roles
                .iter()
                .map(|r| json!({"name": r.name, "grants": r.grants, "builtin": r.builtin}))
                .collect::<Vec<_>>()));
        } else {
            table(
                &["NAME", "GRANTS", "BUILTIN"],
                roles.into_iter().map(|r| vec![r.name, r.grants.join(" "), r.builtin.to_string()]).collect(),
            );
        }
    };
    match cmd {
        RoleCmd::Create { name, grants, replace } => {
            c.create_role(pb::CreateRoleRequest { name: name.clone(), grants, replace }).await?;
            if json {
                print_json(json!({"name": name, "created": true}));
            }
        }
        RoleCmd::List => show(c.list_roles(pb::ListRolesRequest {}).await?.into_inner().roles),
        RoleCmd::Get { name } => show(vec![c.get_role(pb::GetRoleRequest { name }).await?.into_inner()]),
        RoleCmd::Delete { name } => {
            c.delete_role(pb::DeleteRoleRequest { name: name.clone() }).await?;
            if json {
                print_json(json!({"name": name, "deleted": true}));
            }
        }
    }
    Ok(())
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
    let status = match run(cli).await {
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

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("90").unwrap(), 90);
        assert_eq!(parse_ttl("30m").unwrap(), 1800);
        assert_eq!(parse_ttl("2d").unwrap(), 172_800);
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("5y").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
