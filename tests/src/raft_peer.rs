//! Speaking to a node's Raft port as a member would: a client presenting a node certificate
//! of the test cluster, for tests of what the port admits.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use vault_raft::codec::{decode, encode};
use vault_raft::transport::pb as raftpb;
use vault_raft::transport::{node_server_name, ForwardError, ForwardRequest, ForwardResponse};

pub type RaftClient = raftpb::raft_client::RaftClient<Channel>;

/// A Raft client presenting `certs/node-<as_id>` to node `target` at `addr`.
pub async fn raft_as(certs: &Path, as_id: u64, target: u64, addr: SocketAddr) -> RaftClient {
    raft_as_from(certs, as_id, target, addr, None).await.expect("connect to the raft port")
}

/// [`raft_as`] from the local address `from` (any of 127/8 reaches the loopback interface):
/// the connection error when the node closes the connection before its handshake is done.
pub async fn raft_as_from(
    certs: &Path,
    as_id: u64,
    target: u64,
    addr: SocketAddr,
    from: Option<IpAddr>,
) -> Result<RaftClient, tonic::transport::Error> {
    let read = |f: String| std::fs::read(certs.join(f)).expect("read cert file");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem".into())))
        .identity(Identity::from_pem(read(format!("node-{as_id}.pem")), read(format!("node-{as_id}.key"))))
        .domain_name(node_server_name(target));
    let ch = Channel::from_shared(format!("https://{addr}"))
        .expect("address")
        .local_address(from)
        .tls_config(tls)
        .expect("tls config")
        .connect()
        .await?;
    Ok(RaftClient::new(ch))
}

/// A bare TLS connection to node `target` at `addr` from the loopback address `from`,
/// presenting `certs/node-<as_id>`, its handshake done as far as the client sees it (with
/// TLS 1.3 the server checks the client's certificate after that); `None` when the node closed
/// it first, or it took longer than 5 s.
pub async fn tls_from(
    certs: &Path,
    as_id: u64,
    target: u64,
    addr: SocketAddr,
    from: [u8; 4],
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(certs.join("ca.pem")).expect("read ca.pem") {
        roots.add(c.expect("a CA certificate")).expect("add the CA");
    }
    let chain = CertificateDer::pem_file_iter(certs.join(format!("node-{as_id}.pem")))
        .expect("read the certificate")
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM certificates");
    let key = PrivateKeyDer::from_pem_file(certs.join(format!("node-{as_id}.key"))).expect("read the key");
    let mut config = ClientConfig::builder_with_provider(std::sync::Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("a client certificate");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.bind((from, 0).into()).expect("bind a loopback source address");
    let name = ServerName::try_from(node_server_name(target)).expect("a DNS name");
    let handshake = async {
        let tcp = socket.connect(addr).await.ok()?;
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.ok()
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), handshake).await.ok().flatten()
}

pub fn blob<T: serde::Serialize>(v: &T) -> raftpb::Blob {
    raftpb::Blob { data: encode(v).expect("encode").into() }
}

/// Forwards `req` in the name of node `from`: the port's status, or the node's answer.
pub async fn forward_as(
    c: &mut RaftClient,
    from: u64,
    req: ForwardRequest,
) -> Result<Result<ForwardResponse, ForwardError>, tonic::Status> {
    let r = c.forward(blob(&(from, req))).await?;
    Ok(decode(&r.into_inner().data).expect("decode forward reply"))
}

/// A vote request for `candidate` at `term`, with an empty log.
pub async fn vote_as(c: &mut RaftClient, candidate: u64, term: u64) -> Result<(), tonic::Status> {
    use vault_raft::typ::Vote;
    let req = openraft::raft::VoteRequest::<u64> { vote: Vote::new(term, candidate), last_log_id: None };
    c.vote(blob(&req)).await.map(|_| ())
}

/// An append with no entries, in `leader`'s name at `term`, committed up to nothing.
pub fn empty_append(leader: u64, term: u64) -> raftpb::Blob {
    use vault_raft::typ::{TypeConfig, Vote};
    blob(&openraft::raft::AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(term, leader),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    })
}

/// [`empty_append`] as a single call.
pub async fn append_as(c: &mut RaftClient, leader: u64, term: u64) -> Result<(), tonic::Status> {
    c.append_entries(empty_append(leader, term)).await.map(|_| ())
}

/// A token record of the admin role for a token nobody holds.
pub fn token_record(name: &str) -> vault_core::model::TokenRecord {
    vault_core::model::TokenRecord {
        name: name.into(),
        hash: vault_core::token::RawToken::generate().hash(),
        role: "admin".into(),
        created_at_ms: 1,
        expires_at_ms: None,
    }
}

/// The hash of a raw token, as every member stores it.
pub fn hash_of(token: &str) -> vault_core::token::TokenHash {
    vault_core::token::RawToken::parse_strict(token).expect("a valid token").hash()
}
