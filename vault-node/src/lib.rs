//! The vault node: gRPC API, authentication and authorization, and the server that ties the
//! Raft storage, the key manager and the listeners together.

pub mod alloc_count;
pub mod api;
pub mod api_conn;
pub mod audit_ship;
pub mod auth;
#[cfg(feature = "aws")]
pub mod aws_env;
pub mod backup;
pub mod cluster;
pub mod config;
pub mod console;
pub mod disk;
pub mod environ;
pub mod error;
pub mod hooks;
pub mod kms;
pub mod logging;
pub mod master_key;
pub mod name_queue;
pub mod observe;
pub mod pb_impl;
pub mod rewrap;
pub mod rotation;
pub mod server;
pub mod settings;
pub mod vault;

/// Generated protobuf types and gRPC stubs of `proto/vault/v1/vault.proto`.
pub mod pb {
    #![allow(clippy::all)]
    tonic::include_proto!("vault.v1");

    /// The API's file descriptor set, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("vault_descriptor");
}
