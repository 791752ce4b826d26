use thiserror::Error;

/// Errors of the core: validation, sealing and key management.
///
/// Messages never contain secret material (values, DEKs, master keys, tokens).
#[derive(Debug, Error)]
pub enum CoreError {
    #[error("invalid secret name: {0}")]
    InvalidName(String),

    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    #[error("secret value is {len} bytes; the limit is {max} bytes")]
    ValueTooLarge { len: usize, max: usize },

    /// The KMS could not be reached or refused for a transient reason; retryable.
    #[error("key management service unavailable: {0}")]
    KmsUnavailable(String),

    /// The KMS answered, but cannot do what was asked (wrong key, disabled key, bad input).
    #[error("key management service refused: {0}")]
    KmsRejected(String),

    /// The data key is (or is to be) wrapped by a master key this node does not hold.
    #[error("master key {stored} is not in this node's keyring (it holds {configured})")]
    KeyMismatch { stored: String, configured: String },

    /// Authenticated decryption failed: wrong key, tampered data or a record moved to
    /// another name/version. Deliberately says nothing more.
    #[error("ciphertext failed authentication for {0}")]
    Authentication(String),

    #[error("malformed stored record: {0}")]
    Malformed(String),
}

impl CoreError {
    /// Whether a caller may retry the same operation later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CoreError::KmsUnavailable(_))
    }
}
