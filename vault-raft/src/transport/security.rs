//! How peers prove who they are on the Raft port.
//!
//! With mutual TLS every node certificate names its node id as the DNS name `vault-node-<id>`
//! (what `vaultctl cluster certs` mints). The listener's handshake requires a client
//! certificate from the cluster CA and reads that id from it ([`cert_node_id`]); a caller
//! without one fails the handshake. The service then admits a call
//! only from a current member whose id matches every id the call carries. A dialing node
//! verifies that the server's certificate names the id it meant to reach. Certificates and
//! the CA are re-read on [`TransportSecurity::reload`] (SIGHUP), so a renewed certificate
//! takes effect without a restart.
//!
//! Dev mode (plaintext with a shared secret) proves only knowledge of the secret: it binds no
//! node id.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{crypto, RootCertStore, ServerConfig};
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tonic::{Request, Status};
use zeroize::Zeroizing;

use super::listener::PeerIdentity;
use crate::typ::NodeId;

const SECRET_HEADER: &str = "x-vault-cluster-secret";
/// Prefix of the DNS name that carries a node id in a node certificate.
const NODE_NAME_PREFIX: &str = "vault-node-";

/// The DNS name a node certificate carries for node `id`, which peers verify when dialing it.
pub fn node_server_name(id: NodeId) -> String {
    format!("{NODE_NAME_PREFIX}{id}")
}

/// The node id a certificate (DER) names: its one `vault-node-<id>` DNS name. `None` when it
/// names none, several different ones, or does not parse.
pub fn cert_node_id(der: &[u8]) -> Option<NodeId> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut ids = san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::DNSName(d) => d.strip_prefix(NODE_NAME_PREFIX)?.parse::<NodeId>().ok(),
        _ => None,
    });
    let first = ids.next()?;
    ids.all(|other| other == first).then_some(first)
}

/// Paths of the cluster CA and this node's certificate and key (PEM).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// TLS material as last loaded from [`TlsFiles`].
struct Tls {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Secret,
    server: Arc<ServerConfig>,
}

/// Key material shared between clones; wiped when the last clone goes. No `Debug`.
type Secret = Arc<Zeroizing<Vec<u8>>>;

/// How this node authenticates to peers and peers to it. Clones share the loaded material.
#[derive(Clone)]
pub struct TransportSecurity {
    files: Option<TlsFiles>,
    tls: Option<Arc<RwLock<Arc<Tls>>>>,
    secret: Option<Secret>,
}

fn read(p: &PathBuf, what: &str) -> std::io::Result<Vec<u8>> {
    std::fs::read(p).map_err(|e| std::io::Error::new(e.kind(), format!("read Raft TLS {what} {}: {e}", p.display())))
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

impl Tls {
    fn load(f: &TlsFiles) -> std::io::Result<Tls> {
        let (ca, cert) = (read(&f.ca, "CA")?, read(&f.cert, "certificate")?);
        let key: Secret = Arc::new(Zeroizing::new(read(&f.key, "key")?));
        let provider = Arc::new(crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&ca) {
            let c = c.map_err(|e| invalid(format!("Raft TLS CA {}: {e}", f.ca.display())))?;
            roots.add(c).map_err(|e| invalid(format!("Raft TLS CA {}: {e}", f.ca.display())))?;
        }
        let chain = CertificateDer::pem_slice_iter(&cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("Raft TLS certificate {}: {e}", f.cert.display())))?;
        let leaf = chain.first().ok_or_else(|| invalid(format!("{} holds no certificate", f.cert.display())))?;
        if cert_node_id(leaf).is_none() {
            return Err(invalid(format!(
                "Raft TLS certificate {} names no node id (a DNS name vault-node-<id>); mint it with \
                 `vaultctl cluster certs`",
                f.cert.display()
            )));
        }
        // The parse error is not shown: it could quote key material.
        let private = PrivateKeyDer::from_pem_slice(key.as_slice())
            .map_err(|_| invalid(format!("Raft TLS key {} holds no PEM private key", f.key.display())))?;
        // A caller without a certificate from the cluster CA fails the handshake (a TLS alert):
        // let through to be answered UNAUTHENTICATED, it could hold a connection open without
        // ever proving anything.
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| invalid(format!("Raft TLS CA {}: {e}", f.ca.display())))?;
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("Raft TLS protocol versions: {e}")))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, private)
            .map_err(|e| invalid(format!("Raft TLS certificate and key do not match: {e}")))?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Tls { ca, cert, key, server: Arc::new(server) })
    }
}

impl TransportSecurity {
    /// `tls`: mutual TLS with the cluster CA. `cluster_secret`: a shared secret every call
    /// must carry (required when there is no TLS).
    pub fn load(tls: Option<&TlsFiles>, cluster_secret: Option<&str>) -> std::io::Result<Self> {
        let loaded = tls.map(Tls::load).transpose()?;
        let secret = cluster_secret.map(|s| Arc::new(Zeroizing::new(s.as_bytes().to_vec())));
        Ok(TransportSecurity { files: tls.cloned(), tls: loaded.map(|t| Arc::new(RwLock::new(Arc::new(t)))), secret })
    }

    /// Re-reads the CA, certificate and key. On any error the material in use stays.
    /// Connections already open keep the certificates they were made with.
    pub fn reload(&self) -> std::io::Result<()> {
        let (Some(files), Some(slot)) = (&self.files, &self.tls) else { return Ok(()) };
        let fresh = Tls::load(files)?;
        *slot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        Ok(())
    }

    fn current(&self) -> Option<Arc<Tls>> {
        self.tls.as_ref().map(|t| t.read().unwrap_or_else(|p| p.into_inner()).clone())
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The listener's TLS settings as currently loaded.
    pub fn server_config(&self) -> Option<Arc<ServerConfig>> {
        self.current().map(|t| t.server.clone())
    }

    /// TLS settings for dialing node `target`: its certificate must name `vault-node-<target>`.
    pub fn client_tls(&self, target: NodeId) -> Option<ClientTlsConfig> {
        self.current().map(|t| {
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&t.ca))
                .identity(Identity::from_pem(&t.cert, t.key.as_slice()))
                .domain_name(node_server_name(target))
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

/// Server-side check of every Raft RPC: a certificate naming a node id (mTLS) and the shared
/// secret (when configured). Membership is checked per call by the service.
#[derive(Clone)]
pub struct ServerGuard {
    require_cert: bool,
    secret_hash: Option<[u8; 32]>,
}

impl tonic::service::Interceptor for ServerGuard {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        if self.require_cert {
            match req.extensions().get::<PeerIdentity>() {
                Some(p) if p.node_id.is_some() => {}
                Some(p) if p.has_cert => {
                    return Err(Status::permission_denied("the client certificate names no node id (vault-node-<id>)"))
                }
                _ => {
                    return Err(Status::unauthenticated(
                        "the Raft service needs a client certificate from the cluster CA",
                    ))
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(names: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_certificate_names_exactly_one_node_id() {
        assert_eq!(cert_node_id(&cert_with(&["vault-raft", "vault-node-7"])), Some(7));
        assert_eq!(cert_node_id(&cert_with(&["vault-node-7", "vault-node-7"])), Some(7));
        assert_eq!(cert_node_id(&cert_with(&["vault-node-7", "vault-node-8"])), None, "two ids");
        assert_eq!(cert_node_id(&cert_with(&["vault-raft"])), None, "no id");
        assert_eq!(cert_node_id(&cert_with(&["vault-node-x"])), None);
        assert_eq!(cert_node_id(b"not a certificate"), None);
        assert_eq!(node_server_name(3), "vault-node-3");
    }
}
