use serde::{Deserialize, Serialize};

use crate::token::TokenHash;
use crate::CoreError;

/// Name of the token created from `VAULT_BOOTSTRAP_TOKEN` on first start.
pub const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap-admin";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub name: String,
    pub hash: TokenHash,
    pub role: String,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
}

impl TokenRecord {
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|t| now_ms >= t)
    }
}

/// Token and role names: 1–64 bytes of `[A-Za-z0-9._-]`.
pub fn validate_label(kind: &str, s: &str) -> Result<(), CoreError> {
    if s.is_empty() || s.len() > 64 {
        return Err(CoreError::InvalidArgument(format!("{kind} name must be 1 to 64 bytes")));
    }
    if let Some(c) = s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(CoreError::InvalidArgument(format!("{kind} name contains {c:?}; use only A-Z a-z 0-9 . _ -")));
    }
    Ok(())
}
