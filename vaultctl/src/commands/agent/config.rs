//! The agent's configuration: one TOML file. Credentials are never in it: the token and the
//! client key come from files (or the environment), so the file can be world-readable and kept
//! in configuration management without holding anything secret.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Mode bits a rendered file may never have: anything for "other".
const WORLD_BITS: u32 = 0o007;
/// Most templates in one agent.
const MAX_TEMPLATES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    addrs: Vec<String>,
    ca_file: Option<PathBuf>,
    token_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    metrics_addr: Option<String>,
    /// Silence from the cluster after which the agent logs that its files may be stale.
    stale_after_secs: Option<u64>,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default, rename = "template")]
    templates: Vec<RawTemplate>,
    exec: Option<RawExec>,
    // Refused with a clear message rather than "unknown field": credentials never go inline.
    token: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    min_ms: Option<u64>,
    max_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    /// The template file, or `contents` inline (templates name secrets; they hold no values).
    source: Option<PathBuf>,
    contents: Option<String>,
    destination: PathBuf,
    /// The secrets the template may use (`{{ secret("app/db") }}`): read, and watched.
    secrets: Vec<String>,
    /// Octal, as a string ("0640"); default 0600.
    mode: Option<String>,
    /// A user or group name, or a number; default: the agent's own.
    owner: Option<String>,
    group: Option<String>,
    /// Run after the file changed (argv, no shell).
    command: Option<Vec<String>>,
    /// Send a signal to the process whose pid is in `pid_file` after the file changed.
    pid_file: Option<PathBuf>,
    signal: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExec {
    command: Vec<String>,
    /// "restart" (default) or "signal".
    on_change: Option<String>,
    /// With on_change = "signal": which (default HUP).
    signal: Option<String>,
    /// How long a child has to stop on SIGTERM before SIGKILL (default 10 s).
    stop_timeout_secs: Option<u64>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub addrs: Vec<String>,
    pub ca_file: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub stale_after: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub templates: Vec<Template>,
    pub exec: Option<Exec>,
}

#[derive(Debug, Clone)]
pub struct Template {
    pub source: TemplateSource,
    pub destination: PathBuf,
    pub secrets: Vec<String>,
    pub mode: u32,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub on_change: Vec<Action>,
}

#[derive(Debug, Clone)]
pub enum TemplateSource {
    File(PathBuf),
    Inline(String),
}

/// What to do after a template's file changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Command(Vec<String>),
    Signal { pid_file: PathBuf, signal: nix::sys::signal::Signal },
}

#[derive(Debug, Clone)]
pub struct Exec {
    pub command: Vec<String>,
    pub on_change: ExecOnChange,
    pub stop_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecOnChange {
    Restart,
    Signal(nix::sys::signal::Signal),
}

/// `HUP`, `SIGHUP` or a number.
pub fn parse_signal(s: &str) -> Result<nix::sys::signal::Signal, String> {
    use std::str::FromStr;
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).map_err(|_| format!("{n} is not a signal number"));
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    nix::sys::signal::Signal::from_str(&name).map_err(|_| format!("{s:?} is not a signal name"))
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.trim().trim_start_matches("0o");
    let mode = u32::from_str_radix(digits, 8).map_err(|_| format!("mode {s:?} is not octal (e.g. \"0600\")"))?;
    if mode > 0o777 {
        return Err(format!("mode {s:?}: only permission bits (at most 0777)"));
    }
    if mode & WORLD_BITS != 0 {
        return Err(format!(
            "mode {s:?} would let every user of the host read or change the file; drop the last digit"
        ));
    }
    if mode & 0o400 == 0 {
        return Err(format!("mode {s:?}: the owner must be able to read the file"));
    }
    Ok(mode)
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.message().to_string() })?;
        let invalid = |message: String| ConfigError::Invalid { path: path.to_path_buf(), message };
        if raw.token.is_some() {
            return Err(invalid(
                "`token` may not be written in the configuration: use `token_file` or VAULT_TOKEN / VAULT_TOKEN_FILE"
                    .into(),
            ));
        }
        if raw.templates.is_empty() {
            return Err(invalid("no [[template]]: the agent would have nothing to render".into()));
        }
        if raw.templates.len() > MAX_TEMPLATES {
            return Err(invalid(format!("at most {MAX_TEMPLATES} templates")));
        }
        let retry_min = Duration::from_millis(raw.retry.min_ms.unwrap_or(250).max(10));
        let retry_max = Duration::from_millis(raw.retry.max_ms.unwrap_or(30_000)).max(retry_min);
        let metrics_addr = raw
            .metrics_addr
            .map(|a| a.parse().map_err(|_| invalid(format!("metrics_addr {a:?} is not HOST:PORT"))))
            .transpose()?;
        let mut destinations = BTreeSet::new();
        let mut templates = Vec::with_capacity(raw.templates.len());
        for (i, t) in raw.templates.into_iter().enumerate() {
            let at = |m: String| invalid(format!("template {} ({}): {m}", i + 1, t.destination.display()));
            let source = match (t.source, t.contents) {
                (Some(p), None) => TemplateSource::File(p),
                (None, Some(c)) => TemplateSource::Inline(c),
                _ => return Err(at("give exactly one of `source` (a file) or `contents`".into())),
            };
            if !t.destination.is_absolute() {
                return Err(at("destination must be an absolute path".into()));
            }
            if !destinations.insert(t.destination.clone()) {
                return Err(at("another template renders to the same destination".into()));
            }
            if t.secrets.is_empty() {
                return Err(at("list the secrets it uses in `secrets`".into()));
            }
            for name in &t.secrets {
                vault_core::SecretName::parse(name).map_err(|e| at(format!("secret {name:?}: {e}")))?;
            }
            let mode = parse_mode(t.mode.as_deref().unwrap_or("0600")).map_err(at)?;
            let mut on_change = Vec::new();
            if let Some(cmd) = t.command {
                if cmd.is_empty() || cmd[0].is_empty() {
                    return Err(at("command needs a program".into()));
                }
                on_change.push(Action::Command(cmd));
            }
            match (t.pid_file, t.signal) {
                (Some(pid_file), signal) => {
                    let signal = parse_signal(signal.as_deref().unwrap_or("HUP")).map_err(at)?;
                    on_change.push(Action::Signal { pid_file, signal });
                }
                (None, Some(_)) => return Err(at("`signal` needs `pid_file`".into())),
                (None, None) => {}
            }
            templates.push(Template {
                source,
                destination: t.destination,
                secrets: t.secrets,
                mode,
                owner: t.owner,
                group: t.group,
                on_change,
            });
        }
        let exec = match raw.exec {
            None => None,
            Some(e) => {
                if e.command.is_empty() || e.command[0].is_empty() {
                    return Err(invalid("[exec] command needs a program".into()));
                }
                let on_change = match e.on_change.as_deref().unwrap_or("restart") {
                    "restart" => ExecOnChange::Restart,
                    "signal" => ExecOnChange::Signal(
                        parse_signal(e.signal.as_deref().unwrap_or("HUP"))
                            .map_err(|m| invalid(format!("[exec] {m}")))?,
                    ),
                    other => return Err(invalid(format!("[exec] on_change {other:?}: \"restart\" or \"signal\""))),
                };
                Some(Exec {
                    command: e.command,
                    on_change,
                    stop_timeout: Duration::from_secs(e.stop_timeout_secs.unwrap_or(10).max(1)),
                })
            }
        };
        Ok(Config {
            addrs: raw.addrs,
            ca_file: raw.ca_file,
            token_file: raw.token_file,
            client_cert: raw.client_cert,
            client_key: raw.client_key,
            metrics_addr,
            stale_after: Duration::from_secs(raw.stale_after_secs.unwrap_or(15).max(1)),
            retry_min,
            retry_max,
            templates,
            exec,
        })
    }

    /// Every secret some template uses, each once.
    pub fn secret_names(&self) -> Vec<String> {
        let all: BTreeSet<&String> = self.templates.iter().flat_map(|t| &t.secrets).collect();
        all.into_iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("agent.toml"), text)
    }

    const ONE: &str = r#"
[[template]]
contents = "password={{ secret('app/db') }}"
destination = "/run/app/db.conf"
secrets = ["app/db"]
"#;

    #[test]
    fn a_minimal_config_renders_owner_only_files() {
        let c = parse(ONE).expect("valid");
        assert_eq!(c.templates[0].mode, 0o600);
        assert_eq!(c.secret_names(), vec!["app/db".to_string()]);
        assert!(c.exec.is_none());
    }

    #[test]
    fn world_readable_modes_and_inline_tokens_are_refused() {
        let err = parse(&format!("{ONE}mode = \"0644\"\n")).expect_err("0644");
        assert!(err.to_string().contains("every user"), "{err}");
        assert!(parse(&format!("{ONE}mode = \"0640\"\n")).is_ok());
        let err = parse(&format!("token = \"abc\"\n{ONE}")).expect_err("inline token");
        assert!(err.to_string().contains("token_file"), "{err}");
        assert!(!err.to_string().contains("abc"), "the value is not echoed: {err}");
    }

    #[test]
    fn templates_name_their_secrets_and_distinct_destinations() {
        let err =
            parse("[[template]]\ncontents = \"x\"\ndestination = \"/a\"\nsecrets = []\n").expect_err("no secrets");
        assert!(err.to_string().contains("secrets"), "{err}");
        let twice = format!("{ONE}{ONE}");
        assert!(parse(&twice).expect_err("same destination").to_string().contains("same destination"));
        let relative = ONE.replace("/run/app/db.conf", "db.conf");
        assert!(parse(&relative).expect_err("relative").to_string().contains("absolute"));
    }

    #[test]
    fn actions_and_signals_parse() {
        let c = parse(&format!("{ONE}pid_file = \"/run/app.pid\"\nsignal = \"usr1\"\ncommand = [\"/bin/true\"]\n"))
            .expect("valid");
        assert_eq!(c.templates[0].on_change.len(), 2);
        assert!(c.templates[0]
            .on_change
            .contains(&Action::Signal { pid_file: "/run/app.pid".into(), signal: nix::sys::signal::Signal::SIGUSR1 }));
        let e =
            parse(&format!("{ONE}[exec]\ncommand = [\"/bin/sleep\", \"9\"]\non_change = \"signal\"\n")).expect("exec");
        assert_eq!(e.exec.map(|x| x.on_change), Some(ExecOnChange::Signal(nix::sys::signal::Signal::SIGHUP)));
        assert!(parse(&format!("{ONE}signal = \"HUP\"\n")).is_err(), "a signal needs a pid file");
        assert!(parse_signal("NOPE").is_err());
    }
}
