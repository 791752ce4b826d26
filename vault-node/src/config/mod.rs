//! Node configuration: a TOML file, then `VAULT_*` environment variables, then flags (later
//! wins; `main` layers them, the settings themselves are listed once in [`crate::settings`]).
//! Everything is collected as raw strings keyed by the environment variable name, then
//! validated into a typed [`Config`]. Tests build a [`RawConfig`] directly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use vault_core::keys::{AuditMacKey, MasterKey};
use vault_core::token::RawToken;

use vault_raft::transport::TlsFiles;
use vault_raft::Retention;

use crate::audit_ship::SinkConfig;
use crate::auth::allowlist::Allowlist;
use crate::logging::LogFormat;

mod features;

/// Unvalidated settings, keyed by environment variable name. Secret settings print redacted
/// in `Debug`, and every value is zeroized when the config is dropped.
#[derive(Clone, Default)]
pub struct RawConfig(pub BTreeMap<String, String>);

impl std::fmt::Debug for RawConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = |k: &str| crate::settings::find(k).is_none_or(|s| s.secret);
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, if secret(k) { "[REDACTED]" } else { v.as_str() })))
            .finish()
    }
}

impl Drop for RawConfig {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for v in self.0.values_mut() {
            v.zeroize();
        }
    }
}

impl RawConfig {
    pub fn set(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.0.insert(key.to_string(), value.into());
        self
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|s| s.trim()).filter(|s| !s.is_empty())
    }

    /// Loads a TOML file whose keys are the variable names in lower case, with or without the
    /// `vault_` prefix (`vault_data_dir` or `data_dir`).
    pub fn merge_file(&mut self, path: &Path) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read config file {}", path.display()))?;
        let table: toml::Table = text.parse().with_context(|| format!("parse config file {}", path.display()))?;
        for (k, v) in table {
            let upper = k.to_ascii_uppercase();
            let key = if upper.starts_with("VAULT_") { upper } else { format!("VAULT_{upper}") };
            if crate::settings::find(&key).is_none() {
                bail!("config file {}: unknown key {k:?}", path.display());
            }
            let value = match v {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Array(items) => items
                    .into_iter()
                    .map(|i| match i {
                        toml::Value::String(s) => Ok(s),
                        other => Err(anyhow!("config key {k}: list items must be strings, got a {}", other.type_str())),
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?
                    .join(","),
                other => bail!("config key {k}: unsupported value type {}", other.type_str()),
            };
            self.0.insert(key, value);
        }
        Ok(())
    }

    /// The raw value of `key` as set (before defaults), if any.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.get(key)
    }

    fn parse<T: std::str::FromStr>(&self, key: &str, default: T) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(s) => s.parse().map_err(|e| anyhow!("{key}={s:?} is not valid: {e}")),
        }
    }

    fn flag(&self, key: &str) -> anyhow::Result<bool> {
        match self.get(key).map(|s| s.to_ascii_lowercase()) {
            None => Ok(false),
            Some(s) if matches!(s.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
            Some(s) if matches!(s.as_str(), "0" | "false" | "no" | "off") => Ok(false),
            Some(s) => bail!("{key}={s:?} is not a boolean (true/false)"),
        }
    }

    pub fn validate(&self) -> anyhow::Result<Config> {
        let node_id: u64 = self.parse("VAULT_NODE_ID", 1)?;
        if node_id == 0 {
            bail!("VAULT_NODE_ID must be at least 1");
        }
        let api_addr: SocketAddr = self.parse("VAULT_API_ADDR", "0.0.0.0:8200".parse()?)?;
        let raft_addr: SocketAddr = self.parse("VAULT_RAFT_ADDR", "0.0.0.0:8201".parse()?)?;
        let peers = parse_peers(self.get("VAULT_PEERS").unwrap_or(""))?;
        if !peers.is_empty() && !peers.iter().any(|(id, _)| *id == node_id) {
            bail!("VAULT_PEERS must list this node (id {node_id})");
        }

        let raft_tls =
            match (self.get("VAULT_RAFT_TLS_CA"), self.get("VAULT_RAFT_TLS_CERT"), self.get("VAULT_RAFT_TLS_KEY")) {
                (Some(ca), Some(cert), Some(key)) => {
                    Some(TlsFiles { ca: PathBuf::from(ca), cert: PathBuf::from(cert), key: PathBuf::from(key) })
                }
                (None, None, None) => None,
                _ => bail!("VAULT_RAFT_TLS_CA, VAULT_RAFT_TLS_CERT and VAULT_RAFT_TLS_KEY go together"),
            };
        let raft_insecure = self.flag("VAULT_RAFT_INSECURE")?;
        let cluster_secret = self.get("VAULT_CLUSTER_SECRET").map(str::to_string);
        if raft_insecure && raft_tls.is_some() {
            bail!("VAULT_RAFT_INSECURE=true and VAULT_RAFT_TLS_* contradict each other; pick one");
        }
        if raft_insecure && cluster_secret.as_ref().is_none_or(|s| s.len() < 16) {
            bail!("VAULT_RAFT_INSECURE=true needs VAULT_CLUSTER_SECRET (at least 16 characters) so the Raft port is not open to anyone");
        }
        let raft_security = match (raft_tls, raft_insecure) {
            (Some(files), _) => RaftSecurity::MutualTls { files, cluster_secret },
            (None, true) => RaftSecurity::InsecureWithSecret { cluster_secret: cluster_secret.unwrap_or_default() },
            (None, false) => RaftSecurity::Disabled,
        };
        let join = self.flag("VAULT_JOIN")?;
        if peers.len() > 1 && matches!(raft_security, RaftSecurity::Disabled) {
            bail!("VAULT_PEERS lists several nodes: configure VAULT_RAFT_TLS_CA/_CERT/_KEY (or, for development only, VAULT_RAFT_INSECURE=true with VAULT_CLUSTER_SECRET)");
        }
        if join && matches!(raft_security, RaftSecurity::Disabled) {
            bail!("VAULT_JOIN=true needs the Raft transport: configure VAULT_RAFT_TLS_CA/_CERT/_KEY");
        }

        let bootstrap_token = self
            .get("VAULT_BOOTSTRAP_TOKEN")
            .map(|t| RawToken::parse_strict(t).map_err(|e| anyhow!("VAULT_BOOTSTRAP_TOKEN: {e}")))
            .transpose()?;

        let allowed_ips = Allowlist::parse(self.get("VAULT_ALLOWED_IPS").unwrap_or(""))
            .map_err(|e| anyhow!("VAULT_ALLOWED_IPS: {e}"))?;
        let trust_proxy = self.flag("VAULT_TRUST_PROXY")?;
        let trusted_proxies = Allowlist::parse(self.get("VAULT_TRUSTED_PROXIES").unwrap_or(""))
            .map_err(|e| anyhow!("VAULT_TRUSTED_PROXIES: {e}"))?;
        if trust_proxy && trusted_proxies.is_empty() {
            bail!("VAULT_TRUST_PROXY=true needs VAULT_TRUSTED_PROXIES: the proxy addresses allowed to set x-forwarded-for");
        }

        let kms = match self.get("VAULT_KMS_MODE") {
            None => bail!("VAULT_KMS_MODE is required: local or aws"),
            Some("local") => {
                let mut keys = Vec::new();
                match (self.get("VAULT_LOCAL_MASTER_KEY"), self.get("VAULT_LOCAL_MASTER_KEY_FILE")) {
                    (Some(_), Some(_)) => bail!("set VAULT_LOCAL_MASTER_KEY or VAULT_LOCAL_MASTER_KEY_FILE, not both"),
                    (Some(b64), None) => {
                        keys.push(MasterKey::from_base64(b64).map_err(|e| anyhow!("VAULT_LOCAL_MASTER_KEY: {e}"))?)
                    }
                    (None, Some(path)) => keys.push(
                        MasterKey::from_base64(&read_secret_file(path, "VAULT_LOCAL_MASTER_KEY_FILE")?)
                            .map_err(|e| anyhow!("VAULT_LOCAL_MASTER_KEY_FILE: {e}"))?,
                    ),
                    (None, None) => {}
                }
                match (self.get("VAULT_LOCAL_MASTER_KEYS"), self.get("VAULT_LOCAL_MASTER_KEYS_FILE")) {
                    (Some(_), Some(_)) => {
                        bail!("set VAULT_LOCAL_MASTER_KEYS or VAULT_LOCAL_MASTER_KEYS_FILE, not both")
                    }
                    (Some(list), None) => keys.extend(parse_keyring(list, ',', "VAULT_LOCAL_MASTER_KEYS")?),
                    (None, Some(path)) => keys.extend(parse_keyring(
                        &read_secret_file(path, "VAULT_LOCAL_MASTER_KEYS_FILE")?,
                        '\n',
                        "VAULT_LOCAL_MASTER_KEYS_FILE",
                    )?),
                    (None, None) => {}
                }
                KmsConfig::Local { keys }
            }
            Some("aws") => {
                let key_id =
                    self.get("VAULT_KMS_KEY_ID").ok_or_else(|| anyhow!("VAULT_KMS_MODE=aws needs VAULT_KMS_KEY_ID"))?;
                KmsConfig::Aws { key_id: key_id.to_string() }
            }
            Some(other) => bail!("VAULT_KMS_MODE={other:?}: expected local or aws"),
        };

        let tls = match (self.get("VAULT_TLS_CERT"), self.get("VAULT_TLS_KEY")) {
            (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
            (None, None) => None,
            _ => bail!("VAULT_TLS_CERT and VAULT_TLS_KEY go together"),
        };
        let tls_client_ca = self.get("VAULT_TLS_CLIENT_CA").map(PathBuf::from);
        if tls_client_ca.is_some() && tls.is_none() {
            bail!("VAULT_TLS_CLIENT_CA needs the API served over TLS (VAULT_TLS_CERT and VAULT_TLS_KEY)");
        }
        let rotation = RotationConfig {
            hooks_dir: self.get("VAULT_ROTATION_HOOKS_DIR").map(PathBuf::from),
            retry: Duration::from_secs(self.parse::<u64>("VAULT_ROTATION_RETRY_SECS", 30)?.max(1)),
            hook_timeout: Duration::from_secs(self.parse::<u64>("VAULT_ROTATION_HOOK_TIMEOUT_SECS", 30)?.max(1)),
            max_per_sec: self.parse::<u32>("VAULT_ROTATION_MAX_PER_SEC", 10)?.max(1),
        };
        let max_value_bytes: usize = self.parse("VAULT_MAX_VALUE_BYTES", 64 * 1024)?;
        if max_value_bytes == 0 || max_value_bytes > 3 * 1024 * 1024 {
            bail!("VAULT_MAX_VALUE_BYTES must be between 1 and 3145728");
        }
        let restore_max_mb: u64 = self.parse("VAULT_RESTORE_MAX_MB", 1024)?;
        if restore_max_mb == 0 || restore_max_mb > 1 << 20 {
            bail!("VAULT_RESTORE_MAX_MB must be between 1 and 1048576");
        }
        let max_per_sec: u32 = self.parse("VAULT_KMS_REWRAP_MAX_PER_SEC", 10)?;
        let audit_key = match (self.get("VAULT_AUDIT_KEY"), self.get("VAULT_AUDIT_KEY_FILE")) {
            (Some(_), Some(_)) => bail!("set VAULT_AUDIT_KEY or VAULT_AUDIT_KEY_FILE, not both"),
            (Some(b64), None) => Some(b64.to_string()),
            (None, Some(path)) => Some(read_secret_file(path, "VAULT_AUDIT_KEY_FILE")?.trim().to_string()),
            (None, None) => None,
        }
        .map(|b64| {
            MasterKey::from_base64(&b64)
                .and_then(|k| AuditMacKey::from_slice(k.expose()))
                .map_err(|e| anyhow!("VAULT_AUDIT_KEY: {e}"))
        })
        .transpose()?;
        let days =
            |key: &str, default: u64| -> anyhow::Result<u64> { Ok(self.parse::<u64>(key, default)? * 86_400_000) };
        let audit = AuditConfig {
            key: audit_key,
            sinks: self.audit_sinks()?,
            sink_max_lag: self.parse::<u64>("VAULT_AUDIT_SINK_MAX_LAG", 1000)?,
            retention: Retention {
                max_age_ms: days("VAULT_AUDIT_RETAIN_DAYS", 365)?,
                max_bytes: self.parse::<u64>("VAULT_AUDIT_MAX_MB", 1024)?.saturating_mul(1 << 20),
                min_age_ms: days("VAULT_AUDIT_MIN_RETAIN_DAYS", 30)?,
                hard_max_bytes: match self.get("VAULT_AUDIT_HARD_MAX_MB") {
                    Some(_) => self.parse::<u64>("VAULT_AUDIT_HARD_MAX_MB", 0)?.saturating_mul(1 << 20),
                    None => self.parse::<u64>("VAULT_AUDIT_MAX_MB", 1024)?.saturating_mul(4 << 20),
                },
            },
            refusals_per_sec: self.parse("VAULT_REFUSALS_PER_SEC", 10.0)?,
            refusals_burst: self.parse("VAULT_REFUSALS_BURST", 50.0)?,
            refusals_global_per_sec: self.parse("VAULT_REFUSALS_GLOBAL_PER_SEC", 20.0)?,
        };
        if audit.retention.hard_max_bytes < audit.retention.max_bytes {
            bail!("VAULT_AUDIT_HARD_MAX_MB cannot be below VAULT_AUDIT_MAX_MB");
        }
        if audit.retention.min_age_ms > audit.retention.max_age_ms {
            bail!("VAULT_AUDIT_MIN_RETAIN_DAYS cannot exceed VAULT_AUDIT_RETAIN_DAYS");
        }
        if !(audit.refusals_per_sec > 0.0 && audit.refusals_burst >= 1.0) {
            bail!("VAULT_REFUSALS_PER_SEC must be above 0 and VAULT_REFUSALS_BURST at least 1");
        }
        if audit.refusals_global_per_sec.is_nan() || audit.refusals_global_per_sec < 0.2 {
            bail!("VAULT_REFUSALS_GLOBAL_PER_SEC must be at least 0.2");
        }

        let api_limits = ApiLimits {
            max_connections: self.parse::<usize>("VAULT_API_MAX_CONNECTIONS", 4096)?.max(1),
            max_per_addr: self.parse::<usize>("VAULT_API_MAX_CONNECTIONS_PER_ADDR", 512)?.max(1),
            max_streams: self.parse::<u32>("VAULT_API_MAX_STREAMS", 100)?.max(1),
            max_header_bytes: self.parse::<u32>("VAULT_API_MAX_HEADER_BYTES", 16 * 1024)?.max(1024),
            idle: Duration::from_secs(self.parse::<u64>("VAULT_API_IDLE_SECS", 300)?.max(1)),
            request_timeout: Duration::from_secs(self.parse::<u64>("VAULT_API_REQUEST_TIMEOUT_SECS", 30)?.max(1)),
            rate_per_addr: self.parse("VAULT_RATE_PER_ADDR", 0.0)?,
            rate_per_token: self.parse("VAULT_RATE_PER_TOKEN", 0.0)?,
        };
        if api_limits.rate_per_addr < 0.0 || api_limits.rate_per_token < 0.0 {
            bail!("VAULT_RATE_PER_ADDR and VAULT_RATE_PER_TOKEN are requests per second, 0 for no limit");
        }
        let watch = WatchConfig {
            history: self.parse::<u64>("VAULT_WATCH_HISTORY", vault_raft::watch_log::DEFAULT_WATCH_HISTORY)?.max(1),
            max_watchers: self.parse::<usize>("VAULT_WATCH_MAX", 4096)?,
            max_per_connection: self.parse::<usize>("VAULT_WATCH_MAX_PER_CONNECTION", 64)?,
            max_per_addr: self.parse::<usize>("VAULT_WATCH_MAX_PER_ADDR", 256)?,
        };
        Ok(Config {
            api_limits,
            watch,
            node_id,
            data_dir: PathBuf::from(self.get("VAULT_DATA_DIR").unwrap_or("./vault-data")),
            api_addr,
            metrics_addr: self
                .get("VAULT_METRICS_ADDR")
                .map(|s| s.parse().map_err(|e| anyhow!("VAULT_METRICS_ADDR={s:?} is not host:port: {e}")))
                .transpose()?,
            ui: self.ui()?,
            disk: self.disk_limit()?,
            raft_addr,
            api_advertise: advertise(self.get("VAULT_API_ADVERTISE_ADDR"), api_addr),
            raft_advertise: advertise(self.get("VAULT_RAFT_ADVERTISE_ADDR"), raft_addr),
            peers,
            join,
            raft_security,
            bootstrap_token,
            allowed_ips,
            trust_proxy,
            trusted_proxies,
            kms,
            dek_cache_ttl: Duration::from_secs(self.parse("VAULT_DEK_CACHE_TTL_SECS", 300)?),
            rewrap: RewrapConfig {
                enabled: self.flag("VAULT_KMS_REWRAP_ENABLED")?,
                poll: Duration::from_secs(self.parse("VAULT_KMS_REWRAP_POLL_SECS", 86_400)?.max(1)),
                max_per_sec,
            },
            tls,
            tls_client_ca,
            rotation,
            max_value_bytes,
            restore_max_bytes: restore_max_mb << 20,
            snapshot_log_entries: self.parse::<u64>("VAULT_SNAPSHOT_LOG_ENTRIES", 20_000)?.max(1),
            election: vault_raft::ElectionTiming {
                timeout: Duration::from_millis(
                    self.parse::<u64>("VAULT_RAFT_ELECTION_TIMEOUT_MS", 500)?.clamp(100, 60_000),
                ),
            },
            max_feature_level: self
                .get("VAULT_MAX_FEATURE_LEVEL")
                .map(|_| self.parse::<u32>("VAULT_MAX_FEATURE_LEVEL", vault_raft::features::FEATURE_LEVEL))
                .transpose()?,
            max_in_flight: match self.get("VAULT_RAFT_MAX_IN_FLIGHT") {
                None => vault_raft::default_max_in_flight(),
                Some(_) => self.parse::<usize>("VAULT_RAFT_MAX_IN_FLIGHT", 1)?.clamp(1, 64),
            },
            audit,
            backup: self.backup()?,
            log_filter: self.get("VAULT_LOG").unwrap_or("info,openraft=warn").to_string(),
            log_format: match self.get("VAULT_LOG_FORMAT").unwrap_or("text") {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => bail!("VAULT_LOG_FORMAT={other:?}: text or json"),
            },
        })
    }
}

/// The address others should use: the configured one, else the bind address (with an
/// unspecified IP replaced by loopback, which is only right for single-host setups).
fn advertise(configured: Option<&str>, bind: SocketAddr) -> String {
    match configured {
        Some(a) => a.to_string(),
        None if bind.ip().is_unspecified() => format!("127.0.0.1:{}", bind.port()),
        None => bind.to_string(),
    }
}

/// `id=host:port,id=host:port`.
pub fn parse_peers(s: &str) -> anyhow::Result<Vec<(u64, String)>> {
    let mut out: Vec<(u64, String)> = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (id, addr) =
            item.split_once('=').ok_or_else(|| anyhow!("VAULT_PEERS item {item:?} must be id=host:port"))?;
        let id: u64 = id.trim().parse().map_err(|_| anyhow!("VAULT_PEERS item {item:?}: id must be a number"))?;
        if id == 0 || out.iter().any(|(i, _)| *i == id) {
            bail!("VAULT_PEERS: node ids must be unique and at least 1 ({item:?})");
        }
        if !addr.contains(':') {
            bail!("VAULT_PEERS item {item:?}: address needs a port");
        }
        out.push((id, addr.trim().to_string()));
    }
    Ok(out)
}

fn read_secret_file(path: &str, what: &str) -> anyhow::Result<zeroize::Zeroizing<String>> {
    Ok(zeroize::Zeroizing::new(std::fs::read_to_string(path).with_context(|| format!("read {what} {path}"))?))
}

/// Base64 master keys separated by `sep`; blank entries and lines starting with `#` are
/// skipped. Errors name the entry's position, never its text.
fn parse_keyring(text: &str, sep: char, what: &str) -> anyhow::Result<Vec<MasterKey>> {
    let entries = text.split(sep).map(str::trim).filter(|e| !e.is_empty() && !e.starts_with('#'));
    let keys = entries
        .enumerate()
        .map(|(i, e)| MasterKey::from_base64(e).map_err(|err| anyhow!("{what}: entry {}: {err}", i + 1)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if keys.is_empty() {
        bail!("{what} holds no key");
    }
    Ok(keys)
}

/// How the Raft listener and peers authenticate each other.
pub enum RaftSecurity {
    /// No Raft listener: a single-node cluster that cannot grow.
    Disabled,
    /// Mutual TLS with the cluster CA (production), optionally also a shared secret.
    MutualTls { files: TlsFiles, cluster_secret: Option<String> },
    /// Plaintext with a shared secret: development only.
    InsecureWithSecret { cluster_secret: String },
}

pub enum KmsConfig {
    /// The keyring, configured key first. Empty means an ephemeral random key (data unreadable
    /// after restart).
    Local {
        keys: Vec<MasterKey>,
    },
    Aws {
        key_id: String,
    },
}

pub struct RewrapConfig {
    pub enabled: bool,
    pub poll: Duration,
    /// ReEncrypt calls per second; 0 = unpaced.
    pub max_per_sec: u32,
}

impl RewrapConfig {
    pub fn disabled() -> Self {
        RewrapConfig { enabled: false, poll: Duration::from_secs(86_400), max_per_sec: 10 }
    }
}

/// The scheduled rotation worker (leader only).
#[derive(Clone, Debug)]
pub struct RotationConfig {
    /// `exec:` generators must name an executable inside this directory; unset: none may run.
    pub hooks_dir: Option<PathBuf>,
    /// Wait before the first retry of a failed rotation; doubled after each further failure,
    /// up to the policy's period (at most an hour).
    pub retry: Duration,
    /// A hook still running after this is killed and the attempt fails.
    pub hook_timeout: Duration,
    /// Rotations started per second, at most.
    pub max_per_sec: u32,
}

/// Validated node configuration.
pub struct Config {
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub api_addr: SocketAddr,
    /// Prometheus metrics, `/healthz` and `/readyz` (HTTP); off unless set.
    pub metrics_addr: Option<SocketAddr>,
    /// The operator console (`VAULT_UI_*`); off unless `VAULT_UI_ADDR` is set.
    pub ui: Option<crate::console::UiConfig>,
    /// Free space under which writes are refused (`VAULT_DISK_MIN_FREE_*`).
    pub disk: crate::disk::DiskLimit,
    pub raft_addr: SocketAddr,
    pub api_advertise: String,
    pub raft_advertise: String,
    pub peers: Vec<(u64, String)>,
    /// Never initialize a cluster: wait to be added to an existing one.
    pub join: bool,
    pub raft_security: RaftSecurity,
    pub bootstrap_token: Option<RawToken>,
    pub allowed_ips: Allowlist,
    pub trust_proxy: bool,
    pub trusted_proxies: Allowlist,
    pub kms: KmsConfig,
    pub dek_cache_ttl: Duration,
    pub rewrap: RewrapConfig,
    pub tls: Option<(PathBuf, PathBuf)>,
    /// CA of reader client certificates (`VAULT_TLS_CLIENT_CA`); needs `tls`.
    pub tls_client_ca: Option<PathBuf>,
    pub rotation: RotationConfig,
    pub max_value_bytes: usize,
    /// Largest backup a restore takes (`VAULT_RESTORE_MAX_MB`), in bytes.
    pub restore_max_bytes: u64,
    /// Build a snapshot (and purge the log before it) every this many applied entries.
    pub snapshot_log_entries: u64,
    /// How long without a leader before a voter campaigns (pre-vote first).
    pub election: vault_raft::ElectionTiming,
    /// Entries kept in flight from client writes while leading (`VAULT_RAFT_MAX_IN_FLIGHT`).
    pub max_in_flight: usize,
    /// Report at most this feature level, holding the cluster back (see `vault_raft::features`).
    pub max_feature_level: Option<u32>,
    pub audit: AuditConfig,
    /// Scheduled backups (`VAULT_BACKUP_*`).
    pub backup: BackupConfig,
    pub api_limits: ApiLimits,
    pub watch: WatchConfig,
    pub log_filter: String,
    pub log_format: LogFormat,
}

/// Scheduled backups and their destination (see `backup::schedule`).
#[derive(Clone, Debug, Default)]
pub struct BackupConfig {
    /// `VAULT_BACKUP_EVERY`: none, no schedule (a destination still serves list and restore).
    pub every: Option<Duration>,
    pub dir: Option<PathBuf>,
    /// Newest backups kept (0: all).
    pub keep: usize,
    pub max_age: Option<Duration>,
    pub s3: Option<S3Config>,
}

/// An S3 destination of backups.
#[derive(Clone, Debug)]
pub struct S3Config {
    pub bucket: String,
    pub prefix: String,
}

/// Bounds on what one client may take of the API listener.
#[derive(Clone)]
pub struct ApiLimits {
    pub max_connections: usize,
    pub max_per_addr: usize,
    /// Concurrent streams (calls) per HTTP/2 connection.
    pub max_streams: u32,
    pub max_header_bytes: u32,
    /// A connection with nothing sent for this long is closed.
    pub idle: Duration,
    /// A call still running after this is answered DEADLINE_EXCEEDED (cancelled).
    pub request_timeout: Duration,
    /// Requests per second per client address and per token (bursts of twice that); 0: none.
    pub rate_per_addr: f64,
    pub rate_per_token: f64,
}

/// `WatchSecrets`: the history kept and the bounds on watchers (see docs/watch.md).
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// Events this node keeps for resuming watches (`VAULT_WATCH_HISTORY`).
    pub history: u64,
    /// Watches open at once on this node (`VAULT_WATCH_MAX`; 0 turns watching off).
    pub max_watchers: usize,
    /// Watches open at once on one client connection (`VAULT_WATCH_MAX_PER_CONNECTION`).
    pub max_per_connection: usize,
    /// Watches open at once from one client address, grouped like the rate limits
    /// (`VAULT_WATCH_MAX_PER_ADDR`).
    pub max_per_addr: usize,
}

/// The audit log's key, copy, retention and refusal limits.
pub struct AuditConfig {
    /// `VAULT_AUDIT_KEY`: a dedicated key for the hash chain. Without it, the key is derived from
    /// the local master key(s), or (AWS mode) kept in the data directory.
    pub key: Option<AuditMacKey>,
    /// Where records are shipped (`VAULT_AUDIT_FILE`, `VAULT_AUDIT_SOCKET`, `VAULT_AUDIT_SYSLOG`).
    pub sinks: Vec<SinkConfig>,
    /// `VAULT_AUDIT_SINK_MAX_LAG`: a required sink this many records behind refuses.
    pub sink_max_lag: u64,
    pub retention: Retention,
    /// Refused requests recorded one by one per client address (token bucket); beyond it they
    /// get RESOURCE_EXHAUSTED and are summarised.
    pub refusals_per_sec: f64,
    pub refusals_burst: f64,
    /// Refused requests recorded one by one from all addresses together, per second (bursts of
    /// five times that); beyond it they are summarised too.
    pub refusals_global_per_sec: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_prints_no_secret_setting() {
        let mut r = RawConfig::default();
        r.set("VAULT_LOCAL_MASTER_KEY", "canary-master-key").set("VAULT_BOOTSTRAP_TOKEN", "canary-token");
        r.set("VAULT_DATA_DIR", "/var/lib/vault");
        let shown = format!("{r:?}");
        assert!(!shown.contains("canary"), "{shown}");
        assert!(shown.contains("VAULT_LOCAL_MASTER_KEY") && shown.contains("/var/lib/vault"), "{shown}");
    }

    fn base() -> RawConfig {
        let mut r = RawConfig::default();
        r.set("VAULT_KMS_MODE", "local");
        r
    }

    #[test]
    fn defaults() {
        let c = base().validate().unwrap();
        assert_eq!(c.node_id, 1);
        assert_eq!(c.api_addr.to_string(), "0.0.0.0:8200");
        assert_eq!(c.raft_addr.to_string(), "0.0.0.0:8201");
        assert_eq!(c.data_dir, PathBuf::from("./vault-data"));
        assert_eq!(c.dek_cache_ttl, Duration::from_secs(300));
        assert!(c.allowed_ips.is_empty());
        assert!(matches!(&c.kms, KmsConfig::Local { keys } if keys.is_empty()));
    }

    #[test]
    fn kms_mode_is_required_and_checked() {
        assert!(RawConfig::default().validate().err().unwrap().to_string().contains("VAULT_KMS_MODE is required"));
        let mut r = base();
        r.set("VAULT_KMS_MODE", "vaultish");
        assert!(r.validate().is_err());
        r.set("VAULT_KMS_MODE", "aws");
        assert!(r.validate().err().unwrap().to_string().contains("VAULT_KMS_KEY_ID"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (k, v) in [
            ("VAULT_NODE_ID", "0"),
            ("VAULT_NODE_ID", "x"),
            ("VAULT_API_ADDR", "nope"),
            ("VAULT_ALLOWED_IPS", "10.0.0.0/33"),
            ("VAULT_BOOTSTRAP_TOKEN", "short"),
            ("VAULT_LOCAL_MASTER_KEY", "AAAA"),
            ("VAULT_PEERS", "1=a:1,1=b:2"),
            ("VAULT_TRUST_PROXY", "maybe"),
        ] {
            let mut r = base();
            r.set(k, v);
            let e = r.validate().err().unwrap_or_else(|| panic!("{k}={v} accepted")).to_string();
            assert!(e.contains(k), "{k}={v}: {e}");
        }
        let mut r = base();
        r.set("VAULT_TRUST_PROXY", "true");
        assert!(r.validate().err().unwrap().to_string().contains("VAULT_TRUSTED_PROXIES"));
    }

    #[test]
    fn the_audit_hard_cap_defaults_to_four_times_the_size_and_is_never_below_it() {
        let mut r = base();
        r.set("VAULT_AUDIT_MAX_MB", "100");
        let c = r.validate().unwrap();
        assert_eq!(c.audit.retention.hard_max_bytes, 400 << 20);
        assert_eq!(c.audit.refusals_global_per_sec, 20.0);
        r.set("VAULT_AUDIT_HARD_MAX_MB", "50");
        assert!(r.validate().err().unwrap().to_string().contains("VAULT_AUDIT_HARD_MAX_MB"));
        r.set("VAULT_AUDIT_HARD_MAX_MB", "100");
        assert_eq!(r.validate().unwrap().audit.retention.hard_max_bytes, 100 << 20);
        r.set("VAULT_REFUSALS_GLOBAL_PER_SEC", "0");
        assert!(r.validate().err().unwrap().to_string().contains("VAULT_REFUSALS_GLOBAL_PER_SEC"));
    }

    #[test]
    fn raft_transport_must_be_secured_for_clusters() {
        let mut r = base();
        r.set("VAULT_PEERS", "1=a:1,2=b:2");
        assert!(r.validate().err().unwrap().to_string().contains("VAULT_RAFT_TLS"));
        r.set("VAULT_RAFT_INSECURE", "true");
        assert!(r.validate().err().unwrap().to_string().contains("VAULT_CLUSTER_SECRET"));
        r.set("VAULT_CLUSTER_SECRET", "short");
        assert!(r.validate().is_err());
        r.set("VAULT_CLUSTER_SECRET", "a-long-enough-dev-secret");
        assert!(matches!(r.validate().unwrap().raft_security, RaftSecurity::InsecureWithSecret { .. }));
        let mut r = base();
        r.set("VAULT_RAFT_TLS_CA", "/ca.pem");
        assert!(r.validate().err().unwrap().to_string().contains("go together"));
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.toml");
        std::fs::write(&path, "vault_node_id = 3\ndata_dir = \"/from/file\"\nallowed_ips = [\"10.0.0.0/8\", \"::1\"]\nkms_mode = \"local\"\n").unwrap();
        let mut r = RawConfig::default();
        r.merge_file(&path).unwrap();
        r.set("VAULT_DATA_DIR", "/from/env");
        let c = r.validate().unwrap();
        assert_eq!(c.node_id, 3);
        assert_eq!(c.data_dir, PathBuf::from("/from/env"));
        assert!(c.allowed_ips.contains("::1".parse().unwrap()));
        std::fs::write(&path, "colour = \"blue\"\n").unwrap();
        assert!(RawConfig::default().merge_file(&path).is_err());
    }
}
