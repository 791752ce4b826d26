//! Rust client of the secrets vault.
//!
//! A [`Client`] knows several nodes of one cluster and hides which one answers:
//!
//! - **reads** ([`Client::get`], [`Client::batch_get`], [`Client::list`]) go to any healthy
//!   node and are retried on another when one is unreachable, times out or answers
//!   `UNAVAILABLE`;
//! - **writes and management calls** ([`Client::put`], [`Client::delete`], [`Route::Write`])
//!   go to the node last seen as leader and follow the leader a follower names (metadata
//!   `x-vault-leader` on `UNAVAILABLE`), else the next node; a write is only sent again when
//!   it certainly was not carried out;
//! - **watch** ([`Client::watch`]) streams changes of names and prefixes and resumes on
//!   another node from the last revision received when its node goes away, without gaps or
//!   repeats.
//!
//! One channel per node, opened on first use; every call has a budget ([`Builder::timeout`],
//! failover included). Errors are typed ([`Error`]). Any RPC of the API is reachable with
//! [`Client::call`] and the generated stubs in [`pb`].
//!
//! ```no_run
//! # async fn demo() -> vault_client::Result<()> {
//! use vault_client::Client;
//!
//! let client = Client::builder()
//!     .addrs(["https://10.0.0.1:8200", "https://10.0.0.2:8200", "https://10.0.0.3:8200"])
//!     .ca_cert_file("/etc/vault/api-ca.pem")
//!     .client_cert_files("/etc/vault/reader-app.pem", "/etc/vault/reader-app.key")
//!     .build()?;
//! let db = client.get("app/db").await?;
//! println!("version {}", db.version);
//! # Ok(()) }
//! ```
//!
//! From the environment: [`Client::from_env`] reads `VAULT_ADDR` (comma-separated),
//! `VAULT_TOKEN` or `VAULT_TOKEN_FILE`, `VAULT_CACERT`, `VAULT_CLIENT_CERT` and
//! `VAULT_CLIENT_KEY`. See `docs/clients.md`.

mod auth;
mod client;
mod config;
mod error;
mod secrets;
mod watch;

/// The generated messages and client stubs of `proto/vault/v1/vault.proto`.
pub mod pb {
    #![allow(clippy::all)]
    tonic::include_proto!("vault.v1");
}

pub use auth::Auth;
pub use client::{Authed, Client, Conn, Route};
pub use config::{parse_addrs, Builder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT};
pub use error::{code_words, Error, Result, LEADER_HEADER};
pub use secrets::Secret;
pub use watch::{ChangeKind, Event, Watch, WatchBatch, WatchRequest, DEFAULT_IDLE_LIMIT};
