//! gRPC services of the public API.

pub mod admin;
mod page_token;
pub mod secrets;
