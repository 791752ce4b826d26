use serde::{Deserialize, Serialize};

/// One audited action. Never holds a value, DEK or token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub time_ms: u64,
    pub node_id: u64,
    /// Token name for management calls; the client IP for allowlisted reads.
    pub actor: String,
    pub client_ip: String,
    pub action: String,
    pub secret: Option<String>,
    /// `ok`, or the status code in words with a short reason.
    pub outcome: String,
}
