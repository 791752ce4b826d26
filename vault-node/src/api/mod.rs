//! gRPC services of the public API.

pub mod admin;
pub mod secrets;
