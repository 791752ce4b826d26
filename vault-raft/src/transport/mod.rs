//! The Raft transport: a tonic gRPC service on the Raft listener and the matching clients.
//!
//! Messages are openraft's own types in the versioned binary encoding (`codec`). Peers prove
//! who they are with a client certificate from the cluster CA naming their node id (or, in
//! dev mode, a shared secret); what each may send is decided in `admission`.

mod admission;
mod client;
mod forward;
mod listener;
mod network;
mod peer_audit;
mod peer_failures;
mod security;
mod server;

pub use client::PeerClients;
pub(crate) use client::MAX_MESSAGE;
pub use forward::{AdminOp, CallerWrite, ForwardError, ForwardRequest, ForwardResponse, LeaderView};
pub use listener::{
    connections, AcceptTask, PeerIdentity, RaftConn, HANDSHAKE_TIMEOUT, IDLE_TIMEOUT, MAX_CONNECTIONS, MAX_PER_ADDRESS,
    MEMBERSHIP_RECHECK, MEMBER_SLOTS,
};
pub use network::GrpcNetwork;
pub use security::{cert_node_id, node_server_name, TlsFiles, TransportSecurity};
pub use server::{RaftService, RaftServiceServer};

/// Generated types of `proto/vault/raft/v1/raft.proto`.
pub mod pb {
    #![allow(clippy::all)]
    tonic::include_proto!("vault.raft.v1");
}
