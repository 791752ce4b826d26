//! Domain types stored by the state machine and shown by the API.

mod audit;
mod hook_binding;
mod listing;
mod master_key;
mod reader;
mod rewrap;
mod role;
mod rotation;
mod secret;
mod token;

pub use audit::{
    audit_field, audit_field_owned, AuditContext, AuditRecord, MAX_AUDIT_FIELD, MAX_AUDIT_OUTCOME, MAX_REFUSAL_OUTCOME,
    MAX_REFUSED_NAME,
};
pub use hook_binding::{hook_under, validate_hook_path, HookBinding, MAX_BOUND_PATTERNS};
pub use listing::NameRange;
pub use master_key::MasterKeyState;
pub use reader::{ReaderDecision, ReaderRule, ReaderRules, MAX_READER_ENTRIES};
pub use rewrap::RewrapState;
pub use role::{pattern_matches, validate_pattern, Action, Grant, Role, ADMIN_ROLE};
pub use rotation::{Generator, RotationPolicy, MAX_GENERATED_BYTES, MIN_ROTATION_PERIOD_MS};
pub use secret::{NewVersionRecord, SecretMeta, VersionRecord, VersionState, DEFAULT_MAX_VERSIONS, MAX_MAX_VERSIONS};
pub use token::{validate_label, TokenRecord, BOOTSTRAP_TOKEN_NAME};
