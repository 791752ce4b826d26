//! Who is calling and what they may do. One tower layer ([`layer::AuthLayer`]) authenticates
//! every API request: reads against the address allowlist, management calls by bearer token.
//! Handlers then ask the resulting [`caller::Caller`] for the action on the secret path.

pub mod allowlist;
pub mod caller;
pub mod client_ip;
pub mod header_limit;
pub mod layer;
pub mod refusals;
pub mod rpcs;
