//! The Raft transport: a tonic gRPC service on the Raft listener and the matching clients.
//!
//! Messages are openraft's own types in the versioned binary encoding (`codec`). Peers prove
//! membership with a client certificate from the cluster CA, or in dev mode a shared secret.

mod client;
mod forward;
mod network;
mod security;
mod server;

pub use client::PeerClients;
pub(crate) use client::MAX_MESSAGE;
pub use forward::{ForwardError, ForwardRequest, ForwardResponse, LeaderView};
pub use network::GrpcNetwork;
pub use security::{TlsFiles, TransportSecurity, CLUSTER_SERVER_NAME};
pub use server::{RaftService, RaftServiceServer};

/// Generated types of `proto/vault/raft/v1/raft.proto`.
pub mod pb {
    #![allow(clippy::all)]
    tonic::include_proto!("vault.raft.v1");
}
