use std::path::PathBuf;

use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic::{Request, Status};

use zeroize::Zeroizing;

/// The DNS name every node certificate carries and every peer verifies, so node certificates
/// need not list each address a peer might dial.
pub const CLUSTER_SERVER_NAME: &str = "vault-raft";
const SECRET_HEADER: &str = "x-vault-cluster-secret";

/// Paths of the cluster CA and this node's certificate and key (PEM).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How this node authenticates to peers and peers to it.
#[derive(Clone)]
pub struct TransportSecurity {
    tls: Option<Tls>,
    secret: Option<Secret>,
}

#[derive(Clone)]
struct Tls {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Secret,
}

/// Key material shared between clones; wiped when the last clone goes. No `Debug`.
type Secret = Arc<Zeroizing<Vec<u8>>>;

impl TransportSecurity {
    /// `tls`: mutual TLS with the cluster CA. `cluster_secret`: a shared secret every call
    /// must carry (required when there is no TLS).
    pub fn load(tls: Option<&TlsFiles>, cluster_secret: Option<&str>) -> std::io::Result<Self> {
        let tls = match tls {
            Some(f) => {
                let read = |p: &PathBuf, what: &str| {
                    std::fs::read(p).map_err(|e| {
                        std::io::Error::new(e.kind(), format!("read Raft TLS {what} {}: {e}", p.display()))
                    })
                };
                Some(Tls {
                    ca: read(&f.ca, "CA")?,
                    cert: read(&f.cert, "certificate")?,
                    key: Arc::new(Zeroizing::new(read(&f.key, "key")?)),
                })
            }
            None => None,
        };
        let secret = cluster_secret.map(|s| Arc::new(Zeroizing::new(s.as_bytes().to_vec())));
        Ok(TransportSecurity { tls, secret })
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn server_tls(&self) -> Option<ServerTlsConfig> {
        self.tls.as_ref().map(|t| {
            ServerTlsConfig::new()
                .identity(Identity::from_pem(&t.cert, t.key.as_slice()))
                .client_ca_root(Certificate::from_pem(&t.ca))
                // Verified when presented; a caller without one is refused by `ServerGuard`
                // with UNAUTHENTICATED instead of a bare handshake failure.
                .client_auth_optional(true)
        })
    }

    pub fn client_tls(&self) -> Option<ClientTlsConfig> {
        self.tls.as_ref().map(|t| {
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&t.ca))
                .identity(Identity::from_pem(&t.cert, t.key.as_slice()))
                .domain_name(CLUSTER_SERVER_NAME)
        })
    }

    pub fn server_guard(&self) -> ServerGuard {
        ServerGuard {
            require_cert: self.tls.is_some(),
            secret_hash: self.secret.as_ref().map(|s| Sha256::digest(s.as_slice()).into()),
        }
    }

    pub fn client_stamp(&self) -> ClientStamp {
        let value = self
            .secret
            .as_ref()
            .and_then(|s| std::str::from_utf8(s.as_slice()).ok())
            .and_then(|s| MetadataValue::try_from(s).ok());
        ClientStamp { secret: value }
    }
}

/// Server-side check of every Raft RPC.
#[derive(Clone)]
pub struct ServerGuard {
    require_cert: bool,
    secret_hash: Option<[u8; 32]>,
}

impl tonic::service::Interceptor for ServerGuard {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        if self.require_cert && req.peer_certs().is_none_or(|c| c.is_empty()) {
            return Err(Status::unauthenticated("the Raft service needs a client certificate from the cluster CA"));
        }
        if let Some(want) = &self.secret_hash {
            let got = req.metadata().get(SECRET_HEADER).map(|v| Sha256::digest(v.as_bytes()));
            let ok = got.is_some_and(|g| bool::from(g.as_slice().ct_eq(want)));
            if !ok {
                return Err(Status::unauthenticated("cluster secret missing or wrong"));
            }
        }
        Ok(req)
    }
}

/// Client-side: adds the cluster secret, when there is one, to every Raft RPC.
#[derive(Clone)]
pub struct ClientStamp {
    secret: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl tonic::service::Interceptor for ClientStamp {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(s) = &self.secret {
            req.metadata_mut().insert(SECRET_HEADER, s.clone());
        }
        Ok(req)
    }
}
