//! gRPC services of the public API.

pub mod admin;
pub mod audit_head;
mod listing;
mod page_token;
pub mod secrets;
pub mod watch;
mod watch_feed;
mod watch_rules;
