//! Conversions between domain types and protobuf messages.

mod impl_admin;
mod impl_secret;
