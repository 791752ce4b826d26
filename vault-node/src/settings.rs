//! Every setting of `vault-node`, in one list: its environment variable, and from it its flag
//! (`--node-id`) and TOML key (`node_id`), its default and what it means. The flags, the
//! accepted TOML keys, `--print-config` and the configuration table in docs/configuration.md all come from
//! this list (a test keeps docs/configuration.md in step).

/// One setting.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    pub env: &'static str,
    /// As shown to people; empty when there is none.
    pub default: &'static str,
    /// Never printed (`--print-config` says `<redacted>`).
    pub secret: bool,
    pub help: &'static str,
}

const fn s(env: &'static str, default: &'static str, help: &'static str) -> Setting {
    Setting { env, default, secret: false, help }
}

const fn secret(env: &'static str, help: &'static str) -> Setting {
    Setting { env, default: "", secret: true, help }
}

impl Setting {
    /// `VAULT_NODE_ID` -> `node-id`.
    pub fn flag(&self) -> String {
        self.env.trim_start_matches("VAULT_").to_ascii_lowercase().replace('_', "-")
    }

    /// `VAULT_NODE_ID` -> `node_id`.
    pub fn toml_key(&self) -> String {
        self.env.trim_start_matches("VAULT_").to_ascii_lowercase()
    }
}

pub const SETTINGS: &[Setting] = &[
    s("VAULT_NODE_ID", "1", "Raft node id, at least 1"),
    s("VAULT_DATA_DIR", "./vault-data", "data directory (created 0700)"),
    s("VAULT_API_ADDR", "0.0.0.0:8200", "API listener (gRPC)"),
    s("VAULT_RAFT_ADDR", "0.0.0.0:8201", "Raft listener (gRPC); bind it to the WireGuard address"),
    s("VAULT_API_ADVERTISE_ADDR", "the API listener", "API address other nodes and clients are told"),
    s("VAULT_RAFT_ADVERTISE_ADDR", "the Raft listener", "Raft address other nodes are told"),
    s("VAULT_PEERS", "", "`id=host:raftport,...`: the initial members (empty: single node)"),
    s("VAULT_JOIN", "false", "never initialize; wait to be added with `vaultctl cluster add`"),
    s("VAULT_RAFT_TLS_CA", "", "Raft mutual TLS: the cluster CA (PEM)"),
    s("VAULT_RAFT_TLS_CERT", "", "Raft mutual TLS: this node's certificate (PEM, names `vault-node-<id>`)"),
    s("VAULT_RAFT_TLS_KEY", "", "Raft mutual TLS: this node's key (PEM)"),
    s("VAULT_RAFT_INSECURE", "false", "development only: plaintext Raft guarded by `VAULT_CLUSTER_SECRET`"),
    secret("VAULT_CLUSTER_SECRET", "shared secret of plaintext Raft (at least 16 characters)"),
    secret(
        "VAULT_BOOTSTRAP_TOKEN",
        "first start only: creates token `bootstrap-admin` (role `admin`) through Raft; base64url of 32 bytes; issued once ever",
    ),
    s("VAULT_ALLOWED_IPS", "", "IPs and CIDRs allowed to read secrets; empty denies every read"),
    s("VAULT_TRUST_PROXY", "false", "take the client address from `x-forwarded-for` sent by a trusted proxy: the right-most hop that is not one"),
    s("VAULT_TRUSTED_PROXIES", "", "proxy addresses allowed to set `x-forwarded-for`"),
    s("VAULT_KMS_MODE", "", "`local` or `aws` (required; `make run` sets `local`)"),
    secret("VAULT_LOCAL_MASTER_KEY", "local master key, base64 of 32 bytes; missing (and no keyring): a random ephemeral key and a loud warning"),
    s("VAULT_LOCAL_MASTER_KEY_FILE", "", "file holding the local master key"),
    secret("VAULT_LOCAL_MASTER_KEYS", "local keyring for rotation: more base64 keys, comma-separated"),
    s("VAULT_LOCAL_MASTER_KEYS_FILE", "", "file holding the keyring, one key per line"),
    s("VAULT_KMS_KEY_ID", "", "aws: key id, ARN or alias; the resolved ARN is stored"),
    s("VAULT_DEK_CACHE_TTL_SECS", "300", "cache of unwrapped data keys for KMS outages (0 disables); values are never cached"),
    s("VAULT_KMS_REWRAP_ENABLED", "false", "run the AWS re-wrap worker (leader only); with the local keyring it always runs after `kms rotate`"),
    s("VAULT_KMS_REWRAP_POLL_SECS", "86400", "how often the worker checks ListKeyRotations"),
    s("VAULT_KMS_REWRAP_MAX_PER_SEC", "10", "ReEncrypt pacing (0: unpaced)"),
    s("VAULT_TLS_CERT", "", "serve the API over TLS (1.2 and 1.3, HTTP/2 by ALPN; a handshake must finish within 10 s): certificate chain (PEM)"),
    s("VAULT_TLS_KEY", "", "serve the API over TLS: key (PEM)"),
    s("VAULT_TLS_CLIENT_CA", "", "accept reader client certificates signed by this CA (PEM; optional for clients); reader rules may name their common name"),
    s("VAULT_ROTATION_HOOKS_DIR", "", "`exec:` rotation generators must name an executable in this directory (unset: none runs)"),
    s("VAULT_ROTATION_RETRY_SECS", "30", "first retry of a failed rotation after this long, doubling up to the policy's period (at most an hour)"),
    s("VAULT_ROTATION_HOOK_TIMEOUT_SECS", "30", "kill a rotation hook running this long (the attempt fails)"),
    s("VAULT_ROTATION_MAX_PER_SEC", "10", "rotations the leader starts per second, at most"),
    s("VAULT_MAX_VALUE_BYTES", "65536", "largest secret value"),
    s("VAULT_RESTORE_MAX_MB", "1024", "largest backup `vaultctl snapshot restore` may upload, in MiB (see docs/backups.md)"),
    s("VAULT_BACKUP_EVERY", "", "take a scheduled backup this often (`2s`, `6h`), on the leader only; off unless set (see docs/backups.md)"),
    s("VAULT_BACKUP_DIR", "", "scheduled backups' destination: a local directory (created 0700)"),
    s("VAULT_BACKUP_KEEP", "0", "keep this cluster's newest N scheduled backups at the destination, removing older ones after each verified backup (0: keep all)"),
    s("VAULT_BACKUP_MAX_AGE", "", "also remove this cluster's scheduled backups older than this (`30d`); never the newest"),
    s("VAULT_BACKUP_S3_BUCKET", "", "scheduled backups' destination: an S3 bucket (AWS default credential chain; `AWS_ENDPOINT_URL_S3` for another endpoint, path-style), instead of a directory"),
    s("VAULT_BACKUP_S3_PREFIX", "", "key prefix of the backups in the bucket (`vault/prod/`)"),
    s("VAULT_SNAPSHOT_LOG_ENTRIES", "20000", "snapshot and purge the Raft log every N entries"),
    s("VAULT_RAFT_ELECTION_TIMEOUT_MS", "500", "how long voters go without a leader before one campaigns (after a pre-vote); the same on every node"),
    s("VAULT_RAFT_MAX_IN_FLIGHT", "a quarter of the cores, 2 to 8", "Raft entries of client writes a leader keeps in flight; 1 turns pipelining off"),
    s("VAULT_MAX_FEATURE_LEVEL", "this build's", "report at most this feature level, holding the cluster there (keeps a rollback possible); below 5 the node also keeps its Raft log in RocksDB (see docs/raft-log.md)"),
    s("VAULT_DISK_MIN_FREE_MB", "512", "refuse new writes (`RESOURCE_EXHAUSTED` \"disk nearly full\") while the data directory's file system has less free than this, or than `VAULT_DISK_MIN_FREE_PERCENT` of its size when that is more; reads go on (see docs/operations.md)"),
    s("VAULT_DISK_MIN_FREE_PERCENT", "2", "the free-space limit as a percentage of the file system's size (0 to 50)"),
    s("VAULT_METRICS_ADDR", "", "HTTP listener for `/metrics`, `/healthz`, `/readyz` (no authentication: loopback or a monitoring network); off unless set"),
    s("VAULT_UI_ADDR", "", "the operator console's listener (HTTPS with the API's certificate whenever the API has TLS; see docs/console.md); off unless set"),
    s("VAULT_UI_INSECURE", "false", "allow the console over plain HTTP on an address other than loopback (without API TLS it is refused there: tokens and session cookies would cross the network in the clear)"),
    s("VAULT_UI_SESSION_IDLE", "15m", "a console session unused this long ends"),
    s("VAULT_UI_SESSION_MAX", "8h", "a console session ends this long after its login, used or not"),
    s("VAULT_UI_LOGIN_RATE", "10", "console login attempts per minute per client address (IPv6: per /64); beyond, HTTP 429"),
    s("VAULT_LOG", "info,openraft=warn", "log filter (tracing-subscriber's `EnvFilter` syntax)"),
    s("VAULT_LOG_FORMAT", "text", "`text`, or `json`: one JSON object per line"),
    secret("VAULT_AUDIT_KEY", "key of the audit hash chain, base64 of 32 bytes (default: derived from the local master key; set it in AWS mode)"),
    s("VAULT_AUDIT_KEY_FILE", "", "file holding the audit chain key"),
    s("VAULT_AUDIT_FILE", "", "ship every audit record to this file as JSON lines with its chain position and MAC; reopened on SIGHUP (see docs/audit.md)"),
    s("VAULT_AUDIT_FILE_REQUIRED", "false", "fail closed: refuse changes and reads while the file sink cannot take records"),
    s("VAULT_AUDIT_SOCKET", "", "ship every audit record as JSON lines to `unix:/path` or `tcp:host:port` (a stream)"),
    s("VAULT_AUDIT_SOCKET_REQUIRED", "false", "fail closed: refuse changes and reads while the socket sink cannot take records"),
    s("VAULT_AUDIT_SYSLOG", "", "ship every audit record to syslog (RFC 5424, APP-NAME `vault`, MSGID the action, MSG the JSON line): `unix:/dev/log` (datagrams) or `tcp:host:port` (octet-counted)"),
    s("VAULT_AUDIT_SYSLOG_REQUIRED", "false", "fail closed: refuse changes and reads while the syslog sink cannot take records"),
    s("VAULT_AUDIT_SINK_MAX_LAG", "1000", "a required sink more records behind than this refuses changes and reads, as one that is down"),
    s("VAULT_AUDIT_RETAIN_DAYS", "365", "audit retention: oldest record kept"),
    s("VAULT_AUDIT_MAX_MB", "1024", "audit retention: size of the log"),
    s("VAULT_AUDIT_MIN_RETAIN_DAYS", "30", "audit retention: age under which `VAULT_AUDIT_MAX_MB` never removes a record"),
    s("VAULT_AUDIT_HARD_MAX_MB", "4 × `VAULT_AUDIT_MAX_MB`", "audit retention: hard cap; past it the oldest records go whatever their age (a WARN line and `vault_audit_removed_over_hard_cap_total`; see docs/audit.md)"),
    s("VAULT_REFUSALS_PER_SEC", "10", "refusals recorded one by one per client address (IPv6: per /64); beyond, `RESOURCE_EXHAUSTED` and a summary"),
    s("VAULT_REFUSALS_BURST", "50", "burst of refusals recorded one by one per client address (IPv6: per /64)"),
    s("VAULT_REFUSALS_GLOBAL_PER_SEC", "20", "refusals recorded one by one from all addresses together, bursts of five times that; beyond, `RESOURCE_EXHAUSTED` and summaries"),
    s("VAULT_API_MAX_CONNECTIONS", "4096", "API connections open at once"),
    s("VAULT_API_MAX_CONNECTIONS_PER_ADDR", "512", "API connections open at once from one client address (IPv6: per /64)"),
    s("VAULT_API_MAX_STREAMS", "100", "concurrent calls per HTTP/2 connection"),
    s("VAULT_API_MAX_HEADER_BYTES", "16384", "largest request header list; larger is RESOURCE_EXHAUSTED"),
    s("VAULT_API_IDLE_SECS", "300", "close a connection that sends nothing this long"),
    s("VAULT_API_REQUEST_TIMEOUT_SECS", "30", "cancel a call running this long (except backup, restore, `secret rotate` and cluster changes, which bound their own time)"),
    s("VAULT_RATE_PER_ADDR", "0", "requests per second per client address (IPv6: per /64), bursts of twice that; beyond, `RESOURCE_EXHAUSTED` \"retry in N s\" (0: off, since one address can be a NAT or proxy for many clients)"),
    s("VAULT_RATE_PER_TOKEN", "0", "requests per second per token, bursts of twice that (0: off)"),
    s("VAULT_WATCH_HISTORY", "100000", "change events this node keeps so that a `WatchSecrets` can resume from an earlier revision; older ones are pruned (see docs/watch.md)"),
    s("VAULT_WATCH_MAX", "4096", "`WatchSecrets` streams open at once on this node; beyond, `RESOURCE_EXHAUSTED` (0: none)"),
    s("VAULT_WATCH_MAX_PER_ADDR", "256", "`WatchSecrets` streams open at once from one client address (the address behind a trusted proxy; an IPv6 /64 is one address); beyond, `RESOURCE_EXHAUSTED`"),
    s("VAULT_WATCH_MAX_PER_CONNECTION", "64", "`WatchSecrets` streams open at once on one client connection; beyond, `RESOURCE_EXHAUSTED`"),
];

/// The setting named by `env`.
pub fn find(env: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.env == env)
}

/// The configuration table of docs/configuration.md, made from [`SETTINGS`].
pub fn markdown_table() -> String {
    let mut out = String::from("| variable | flag | default | meaning |\n|---|---|---|---|\n");
    for s in SETTINGS {
        let default = match (s.secret, s.default) {
            (true, _) | (false, "") => "none".to_string(),
            (false, d) if d.contains(' ') => d.to_string(),
            (false, d) => format!("`{d}`"),
        };
        let secret = if s.secret { " (secret: never printed)" } else { "" };
        out.push_str(&format!("| `{}` | `--{}` | {default} | {}{secret} |\n", s.env, s.flag(), s.help));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_derive_flags_and_keys() {
        let mut envs: Vec<&str> = SETTINGS.iter().map(|s| s.env).collect();
        envs.sort_unstable();
        envs.dedup();
        assert_eq!(envs.len(), SETTINGS.len(), "a setting is listed twice");
        let node = find("VAULT_NODE_ID").expect("listed");
        assert_eq!((node.flag(), node.toml_key()), ("node-id".to_string(), "node_id".to_string()));
    }

    /// The node reads exactly the listed settings: every `VAULT_*` name in config/ is here.
    #[test]
    fn every_setting_the_node_reads_is_listed() {
        let source = concat!(include_str!("config/mod.rs"), include_str!("config/features.rs"));
        for word in source.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            let is_name = word.starts_with("VAULT_") && word.len() > 6 && !word.ends_with('_');
            if is_name && word != "VAULT_RAFT_TLS" {
                assert!(find(word).is_some(), "config/ reads {word}, which SETTINGS does not list");
            }
        }
    }

    /// docs/configuration.md's table is this list, as generated.
    #[test]
    fn the_readme_documents_exactly_this_list() {
        let readme = include_str!("../../docs/configuration.md");
        assert!(
            readme.contains(&markdown_table()),
            "docs/configuration.md's configuration table is out of date; replace it with:\n{}",
            markdown_table()
        );
    }
}
