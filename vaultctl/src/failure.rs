//! What a command can fail with, and how vaultctl reports it: one line
//! `error: <code in words>: <why>` on stderr and an exit status by kind.

use tonic::Code;
use vault_client::code_words;

/// A failure to report: from the client, a status vaultctl decided itself, or a local problem
/// (arguments, files).
pub enum Failure {
    Api(vault_client::Error),
    Status(Code, String),
    Local(anyhow::Error),
}

impl From<vault_client::Error> for Failure {
    fn from(e: vault_client::Error) -> Self {
        Failure::Api(e)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Local(e)
    }
}

impl Failure {
    /// A failure with this code, decided by vaultctl (e.g. "node not ready").
    pub fn status(code: Code, message: impl Into<String>) -> Failure {
        Failure::Status(code, message.into())
    }

    fn code_and_message(&self) -> (Code, String) {
        match self {
            Failure::Api(e) => (e.code(), e.to_string()),
            Failure::Status(code, m) => (*code, m.clone()),
            // Everything vaultctl refuses by itself is about its arguments or local files.
            Failure::Local(e) => (Code::InvalidArgument, format!("{e:#}")),
        }
    }

    /// Prints the error line; returns the exit status.
    pub fn report(&self) -> u8 {
        let (code, message) = self.code_and_message();
        eprintln!("error: {}: {message}", code_words(code));
        exit_code(code)
    }
}

/// Exit codes: 0 success, 1 any other failure, 2 usage (bad flags or arguments), 3 not found,
/// 4 refused (unauthenticated or permission denied), 5 unavailable (no connection, no leader or
/// quorum, rate limited, timed out: retry later).
fn exit_code(code: Code) -> u8 {
    match code {
        Code::InvalidArgument => 2,
        Code::NotFound => 3,
        Code::Unauthenticated | Code::PermissionDenied => 4,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted => 5,
        _ => 1,
    }
}
