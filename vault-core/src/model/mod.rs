//! Domain types stored by the state machine and shown by the API.

mod audit;
mod master_key;
mod rewrap;
mod role;
mod secret;
mod token;

pub use audit::{audit_field, AuditContext, AuditRecord, MAX_AUDIT_FIELD, MAX_AUDIT_OUTCOME};
pub use master_key::MasterKeyState;
pub use rewrap::RewrapState;
pub use role::{Action, Grant, Role, ADMIN_ROLE};
pub use secret::{SecretMeta, VersionRecord, VersionState, DEFAULT_MAX_VERSIONS, MAX_MAX_VERSIONS};
pub use token::{validate_label, TokenRecord, BOOTSTRAP_TOKEN_NAME};
