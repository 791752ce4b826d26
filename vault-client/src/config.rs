//! Building a [`Client`]: node addresses, TLS material, the bearer token and timeouts, from
//! code or from the environment (`VAULT_ADDR`, `VAULT_TOKEN` / `VAULT_TOKEN_FILE`,
//! `VAULT_CACERT`, `VAULT_CLIENT_CERT` / `VAULT_CLIENT_KEY`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::auth::{Auth, Token};
use crate::client::Client;
use crate::error::{Error, Result};

/// Default budget of one call, failover to other nodes included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default limit on opening a connection to one node.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds a [`Client`]. Files (CA, client certificate and key, token file) are read by
/// [`build`](Builder::build), which reports the first problem.
#[derive(Default)]
pub struct Builder {
    addrs: Vec<String>,
    token: Option<Token>,
    token_file: Option<PathBuf>,
    ca_cert: Option<PathBuf>,
    ca_pem: Option<Vec<u8>>,
    identity: Option<(PathBuf, PathBuf)>,
    identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("addrs", &self.addrs)
            .field("token", &self.token)
            .field("token_file", &self.token_file)
            .field("ca_cert", &self.ca_cert)
            .field("client_cert", &self.identity.as_ref().map(|(c, _)| c))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Builder {
    /// Node API addresses: `http://host:port`, `https://host:port`, or `host:port` (https when
    /// a CA or client certificate is configured, else http). Each item may itself be a
    /// comma-separated list. Adds to earlier addresses.
    pub fn addrs<I, S>(mut self, addrs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.addrs.extend(addrs.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// The bearer token sent with every call (management calls and RBAC-checked writes need
    /// one; reads as a reader need none). Never printed by `Debug`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Token::new(token.into()));
        self
    }

    /// Read the token from this file (surrounding whitespace ignored); the token given by
    /// [`token`](Builder::token) wins.
    pub fn token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.token_file = Some(path.into());
        self
    }

    /// CA certificate (PEM file) that signed the nodes' TLS certificates. Without one, the
    /// system's trusted roots are used.
    pub fn ca_cert_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_cert = Some(path.into());
        self
    }

    /// CA certificate as PEM bytes.
    pub fn ca_cert_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Client certificate and key (PEM files) presented over TLS: reader rules match its
    /// common name.
    pub fn client_cert_files(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.identity = Some((cert.into(), key.into()));
        self
    }

    /// Client certificate and key as PEM bytes.
    pub fn client_cert_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.identity_pem = Some((cert.into(), key.into()));
        self
    }

    /// Budget of one call, including retries on other nodes (default 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Limit on opening a connection to one node (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Takes what the environment sets and the builder does not: `VAULT_ADDR`
    /// (comma-separated), `VAULT_TOKEN`, `VAULT_TOKEN_FILE`, `VAULT_CACERT`,
    /// `VAULT_CLIENT_CERT` with `VAULT_CLIENT_KEY`. Empty variables count as unset.
    pub fn with_env(self) -> Self {
        self.with_vars(|k| std::env::var(k).ok())
    }

    /// [`with_env`](Builder::with_env) over any source of variables (for tests).
    pub fn with_vars(mut self, var: impl Fn(&str) -> Option<String>) -> Self {
        let var = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        if self.addrs.is_empty() {
            if let Some(a) = var("VAULT_ADDR") {
                self.addrs.push(a);
            }
        }
        if self.token.is_none() {
            self.token = var("VAULT_TOKEN").map(Token::new);
        }
        if self.token_file.is_none() {
            self.token_file = var("VAULT_TOKEN_FILE").map(PathBuf::from);
        }
        if self.ca_cert.is_none() && self.ca_pem.is_none() {
            self.ca_cert = var("VAULT_CACERT").map(PathBuf::from);
        }
        if self.identity.is_none() && self.identity_pem.is_none() {
            if let (Some(c), Some(k)) = (var("VAULT_CLIENT_CERT"), var("VAULT_CLIENT_KEY")) {
                self.identity = Some((c.into(), k.into()));
            }
        }
        self
    }

    /// Checks the addresses, reads the files and returns the client. Connects to nothing:
    /// each node's connection opens on first use.
    pub fn build(self) -> Result<Client> {
        let ca_pem = match (self.ca_pem, &self.ca_cert) {
            (Some(pem), _) => Some(pem),
            (None, Some(path)) => Some(read(path, "CA certificate")?),
            (None, None) => None,
        };
        let identity = match (self.identity_pem, &self.identity) {
            (Some(pair), _) => Some(pair),
            (None, Some((c, k))) => Some((read(c, "client certificate")?, read(k, "client key")?)),
            (None, None) => None,
        };
        let token = match (self.token, &self.token_file) {
            (Some(t), _) => Some(t),
            (None, Some(path)) => {
                let raw = zeroize::Zeroizing::new(read(path, "token file")?);
                let text = std::str::from_utf8(&raw)
                    .map_err(|_| Error::Config(format!("token file {} is not UTF-8 text", path.display())))?;
                Some(Token::new(text.to_string()))
            }
            (None, None) => None,
        };
        let tls_wanted = ca_pem.is_some() || identity.is_some();
        let addrs = parse_addrs(&self.addrs, if tls_wanted { "https" } else { "http" })?;
        if identity.is_some() && addrs.iter().any(|a| a.starts_with("http://")) {
            return Err(Error::Config("a client certificate needs https:// addresses".into()));
        }
        let mut tls = ClientTlsConfig::new();
        tls = match ca_pem {
            Some(pem) => tls.ca_certificate(Certificate::from_pem(pem)),
            None => tls.with_enabled_roots(),
        };
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        let settings = Settings {
            tls,
            auth: Auth::new(token.as_ref())?,
            timeout: self.timeout.unwrap_or(DEFAULT_TIMEOUT),
            connect_timeout: self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        };
        Client::new(addrs, settings)
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Config(format!("read {what} {}: {e}", path.display())))
}

/// What every node's connection shares.
#[derive(Clone)]
pub(crate) struct Settings {
    pub tls: ClientTlsConfig,
    pub auth: Auth,
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

impl Settings {
    /// The endpoint for `url` (already checked by [`parse_addrs`]).
    pub fn endpoint(&self, url: &str) -> Result<Endpoint> {
        let mut ep = Endpoint::from_shared(url.to_string())
            .map_err(|_| Error::Config(format!("address {url:?} is not a valid URL (e.g. http://127.0.0.1:8200)")))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        if url.starts_with("https://") {
            ep = ep.tls_config(self.tls.clone()).map_err(|e| Error::Config(format!("configure TLS for {url}: {e}")))?;
        }
        Ok(ep)
    }
}

/// Node addresses as URLs: comma-separated lists split, blanks dropped, `host:port` given
/// `default_scheme`. At least one is needed; only http and https are accepted.
pub fn parse_addrs<S: AsRef<str>>(items: &[S], default_scheme: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for item in items {
        for a in item.as_ref().split(',').map(str::trim).filter(|a| !a.is_empty()) {
            let url = match a.split_once("://") {
                Some(("http" | "https", rest)) if !rest.is_empty() => a.trim_end_matches('/').to_string(),
                Some(_) => {
                    return Err(Error::Config(format!(
                    "address {a:?} is not a valid URL (e.g. http://127.0.0.1:8200): the scheme must be http or https"
                )))
                }
                None => format!("{default_scheme}://{}", a.trim_end_matches('/')),
            };
            if url.parse::<http::Uri>().map(|u| u.host().is_none()).unwrap_or(true) {
                return Err(Error::Config(format!("address {a:?} is not a valid URL (e.g. http://127.0.0.1:8200)")));
            }
            if !out.contains(&url) {
                out.push(url);
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Config("no node address given (VAULT_ADDR or the builder's addrs)".into()));
    }
    Ok(out)
}

/// `host:port` of a node URL, as a leader hint names it.
pub(crate) fn authority(url: &str) -> &str {
    url.split_once("://").map_or(url, |(_, rest)| rest).trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn addresses_split_on_commas_and_get_a_scheme() {
        let got = parse_addrs(&["http://10.0.0.1:8200, 10.0.0.2:8200,,", "https://n3:8200/"], "http").unwrap();
        assert_eq!(got, ["http://10.0.0.1:8200", "http://10.0.0.2:8200", "https://n3:8200"]);
        let got = parse_addrs(&["n1:8200"], "https").unwrap();
        assert_eq!(got, ["https://n1:8200"]);
        // Duplicates collapse: one channel per node.
        assert_eq!(parse_addrs(&["n1:1,http://n1:1"], "http").unwrap(), ["http://n1:1"]);
    }

    #[test]
    fn bad_addresses_are_refused() {
        assert!(matches!(parse_addrs::<&str>(&[], "http"), Err(Error::Config(_))));
        assert!(matches!(parse_addrs(&[" , "], "http"), Err(Error::Config(_))));
        assert!(matches!(parse_addrs(&["ftp://n1:21"], "http"), Err(Error::Config(_))));
        assert!(matches!(parse_addrs(&["http://"], "http"), Err(Error::Config(_))));
        assert!(matches!(parse_addrs(&["http://a b:1"], "http"), Err(Error::Config(_))));
    }

    #[test]
    fn authority_is_host_and_port() {
        assert_eq!(authority("https://10.0.0.2:8200"), "10.0.0.2:8200");
        assert_eq!(authority("10.0.0.2:8200"), "10.0.0.2:8200");
    }

    #[test]
    fn environment_fills_what_the_builder_lacks() {
        let env: HashMap<&str, &str> = [
            ("VAULT_ADDR", "http://n1:1,http://n2:1"),
            ("VAULT_TOKEN", ""),
            ("VAULT_TOKEN_FILE", "/run/secrets/token"),
            ("VAULT_CACERT", "/etc/ca.pem"),
            ("VAULT_CLIENT_CERT", "/etc/c.pem"),
        ]
        .into();
        let b = Builder::default().with_vars(|k| env.get(k).map(|v| v.to_string()));
        assert_eq!(b.addrs, ["http://n1:1,http://n2:1"]);
        assert!(b.token.is_none(), "an empty VAULT_TOKEN is unset");
        assert_eq!(b.token_file.as_deref(), Some(Path::new("/run/secrets/token")));
        assert_eq!(b.ca_cert.as_deref(), Some(Path::new("/etc/ca.pem")));
        assert!(b.identity.is_none(), "a certificate without its key is not used");
        // Set in code wins over the environment.
        let b = Builder::default().addrs(["http://mine:1"]).with_vars(|k| env.get(k).map(|v| v.to_string()));
        assert_eq!(b.addrs, ["http://mine:1"]);
    }

    #[test]
    fn the_token_never_shows_in_debug() {
        let b = Builder::default().addrs(["http://n1:1"]).token("s3cr3t-t0ken");
        let shown = format!("{b:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        let client = b.build().unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("http://n1:1"), "{shown}");
    }

    #[test]
    fn a_token_file_is_read_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("vault-client-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "tok-from-file\n").unwrap();
        let client = Builder::default().addrs(["http://n1:1"]).token_file(&path).build().unwrap();
        assert!(client.has_token());
        let missing = Builder::default().addrs(["http://n1:1"]).token_file(dir.join("nope")).build();
        assert!(matches!(missing, Err(Error::Config(m)) if m.contains("token file")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
