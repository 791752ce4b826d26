//! Speaking to a node's Raft port as a member would: a client presenting a node certificate
//! of the test cluster, for tests of what the port admits.

use std::path::Path;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use vault_raft::codec::{decode, encode};
use vault_raft::transport::pb as raftpb;
use vault_raft::transport::{node_server_name, ForwardError, ForwardRequest, ForwardResponse};

pub type RaftClient = raftpb::raft_client::RaftClient<Channel>;

/// A Raft client presenting `certs/node-<as_id>` to node `target` at `addr`.
pub async fn raft_as(certs: &Path, as_id: u64, target: u64, addr: std::net::SocketAddr) -> RaftClient {
    let read = |f: String| std::fs::read(certs.join(f)).expect("read cert file");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem".into())))
        .identity(Identity::from_pem(read(format!("node-{as_id}.pem")), read(format!("node-{as_id}.key"))))
        .domain_name(node_server_name(target));
    let ch = Channel::from_shared(format!("https://{addr}"))
        .expect("address")
        .tls_config(tls)
        .expect("tls config")
        .connect()
        .await
        .expect("connect to the raft port");
    RaftClient::new(ch)
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
