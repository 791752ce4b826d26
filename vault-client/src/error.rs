//! The client's one error type. A `tonic::Status` becomes an [`Error`] in one place
//! ([`Error::from_status`]); transport failures (no connection, a connection lost mid-call, a
//! timeout) are told apart from statuses a server sent, because only they, and a server's
//! `UNAVAILABLE`, make the client try another node.

use tonic::{Code, Status};

/// Metadata key in which a follower that cannot take a request names the leader's API address
/// (`host:port`), on `UNAVAILABLE`.
pub const LEADER_HEADER: &str = "x-vault-leader";

/// Everything a call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No such secret, version, token, role or rule.
    #[error("{0}")]
    NotFound(String),
    /// The caller is known but may not do this (RBAC grant, reader rule, allowlist).
    #[error("{0}")]
    PermissionDenied(String),
    /// No token, or one the server does not accept.
    #[error("{0}")]
    Unauthenticated(String),
    /// The request itself is wrong (bad name, bad argument); retrying will not help.
    #[error("{0}")]
    InvalidArgument(String),
    /// A check-and-set write found another current version.
    #[error("{0}")]
    CasMismatch(String),
    /// The state does not allow the call (other than a check-and-set mismatch).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The thing to create exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// A concurrent change won; retry.
    #[error("{0}")]
    Aborted(String),
    /// A watch asked to resume from a revision the node no longer keeps: read the watched
    /// secrets again, then watch from now. `oldest` is the oldest revision the node keeps,
    /// when it said.
    #[error("{message}")]
    Compacted { message: String, oldest: Option<u64> },
    /// Rate limited or over a limit; retry later.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A node answered `UNAVAILABLE` (no leader or quorum, shutting down); `leader` is the
    /// leader's API address (`host:port`) when the node named one.
    #[error("{message}")]
    NodeUnavailable { message: String, leader: Option<String> },
    /// The node at `addr` could not be reached, or the connection broke during the call.
    /// `connected` is false when no connection could be opened (the request was certainly not
    /// sent), true when an open one broke (it may have been).
    #[error("{} {addr}: {message}", if *connected { "lost the connection to" } else { "connect to" })]
    Transport { addr: String, message: String, connected: bool },
    /// No answer in time: the call's budget ran out, or the server's deadline passed.
    #[error("no answer from {addr} in time")]
    Timeout { addr: String },
    /// Every node was tried and none could serve the call; `last` says why the last one failed.
    #[error("{last} ({tried} node(s) tried)")]
    Unavailable { tried: usize, last: Box<Error> },
    /// Bad client configuration: an address that is not a URL, an unreadable CA, key or token
    /// file, a token that cannot travel in a header.
    #[error("{0}")]
    Config(String),
    /// Any other status from a server (`INTERNAL`, `DATA_LOSS`, `UNIMPLEMENTED`, ...).
    #[error("{message}")]
    Server { code: Code, message: String },
}

impl Error {
    /// The error a status from `addr` stands for. Statuses that tonic made locally (they carry
    /// a source error) are transport failures; the rest were sent by a server.
    pub fn from_status(addr: &str, status: Status) -> Error {
        let message = status.message().to_string();
        if let Some(source) = std::error::Error::source(&status) {
            if chain(source).iter().any(|s| s == "Timeout expired") {
                return Error::Timeout { addr: addr.to_string() };
            }
            let connected = !has_connect_error(source);
            // tonic and hyper repeat their sources' words in their own messages: keep each once.
            let mut why = message;
            for s in chain(source) {
                if !why.contains(&s) {
                    why = if s.contains(&why) { s } else { format!("{why}: {s}") };
                }
            }
            return Error::Transport { addr: addr.to_string(), message: why, connected };
        }
        match status.code() {
            Code::NotFound => Error::NotFound(message),
            Code::PermissionDenied => Error::PermissionDenied(message),
            Code::Unauthenticated => Error::Unauthenticated(message),
            Code::InvalidArgument => Error::InvalidArgument(message),
            Code::FailedPrecondition if message.starts_with("check-and-set failed") => Error::CasMismatch(message),
            Code::FailedPrecondition => Error::FailedPrecondition(message),
            Code::AlreadyExists => Error::AlreadyExists(message),
            Code::Aborted => Error::Aborted(message),
            Code::OutOfRange => Error::Compacted { oldest: oldest_kept(&message), message },
            Code::ResourceExhausted => Error::ResourceExhausted(message),
            Code::DeadlineExceeded => Error::Timeout { addr: addr.to_string() },
            Code::Unavailable => {
                let leader = status
                    .metadata()
                    .get(LEADER_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_string);
                Error::NodeUnavailable { message, leader }
            }
            code => Error::Server { code, message },
        }
    }

    /// The gRPC code this error stands for (`UNAVAILABLE` for transport failures, timeouts
    /// `DEADLINE_EXCEEDED`, bad configuration `INVALID_ARGUMENT`).
    pub fn code(&self) -> Code {
        match self {
            Error::NotFound(_) => Code::NotFound,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::InvalidArgument(_) | Error::Config(_) => Code::InvalidArgument,
            Error::CasMismatch(_) | Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::Aborted(_) => Code::Aborted,
            Error::Compacted { .. } => Code::OutOfRange,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::NodeUnavailable { .. } | Error::Transport { .. } | Error::Unavailable { .. } => Code::Unavailable,
            Error::Timeout { .. } => Code::DeadlineExceeded,
            Error::Server { code, .. } => *code,
        }
    }

    /// Whether another node may succeed where this one failed: the node could not be reached,
    /// did not answer in time, or said it cannot serve now.
    pub fn is_node_failure(&self) -> bool {
        matches!(self, Error::Transport { .. } | Error::Timeout { .. } | Error::NodeUnavailable { .. })
    }

    /// Whether a node refused because it could not hand the call to a leader (the server's
    /// "no leader could take this request", with the leader's address when it knows one): the
    /// call was not carried out, and another node may take it. Other `UNAVAILABLE`s (a failed
    /// rotation hook, an unreachable KMS, a write that "may or may not have been applied")
    /// are not this.
    pub fn is_not_leader(&self) -> bool {
        match self {
            Error::NodeUnavailable { leader: Some(_), .. } => true,
            Error::NodeUnavailable { message, leader: None } => message.ends_with("(no leader known)"),
            _ => false,
        }
    }

    /// The leader a node named when it refused the call (`host:port`).
    pub fn leader_hint(&self) -> Option<&str> {
        match self {
            Error::NodeUnavailable { leader, .. } => leader.as_deref(),
            _ => None,
        }
    }
}

/// The oldest revision a node keeps, from its OUT_OF_RANGE message ("... oldest kept is N ...").
fn oldest_kept(message: &str) -> Option<u64> {
    let rest = message.split_once("oldest kept is ")?.1;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A status code in words, as `vaultctl` and the audit log show it (`not found`,
/// `permission denied`, ...).
pub fn code_words(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The messages of an error and its sources, outermost first.
fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        out.push(s.to_string());
        source = s.source();
    }
    out
}

fn has_connect_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if s.is::<tonic::ConnectError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// `Result` with the client's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use tonic::metadata::MetadataValue;

    use super::*;

    #[test]
    fn statuses_a_server_sends_map_to_their_kind() {
        let e = |s: Status| Error::from_status("http://n1:8200", s);
        assert!(
            matches!(e(Status::not_found("secret a/b not found")), Error::NotFound(m) if m == "secret a/b not found")
        );
        assert!(matches!(e(Status::permission_denied("no")), Error::PermissionDenied(_)));
        assert!(matches!(e(Status::unauthenticated("no")), Error::Unauthenticated(_)));
        assert!(matches!(e(Status::invalid_argument("bad")), Error::InvalidArgument(_)));
        assert!(matches!(
            e(Status::failed_precondition("check-and-set failed: expected version 1, current version is 2")),
            Error::CasMismatch(m) if m.contains("current version is 2")
        ));
        assert!(matches!(e(Status::failed_precondition("sealed under key k1")), Error::FailedPrecondition(_)));
        assert!(matches!(e(Status::out_of_range("compacted")), Error::Compacted { oldest: None, .. }));
        let s = Status::out_of_range(
            "revision 3 was compacted; oldest kept is 120: read again and watch from a newer revision",
        );
        assert!(matches!(e(s), Error::Compacted { oldest: Some(120), message } if message.starts_with("revision 3")));
        assert!(matches!(e(Status::resource_exhausted("slow down")), Error::ResourceExhausted(_)));
        assert!(matches!(e(Status::internal("bug")), Error::Server { code: Code::Internal, .. }));
        assert_eq!(e(Status::data_loss("x")).code(), Code::DataLoss);
        assert!(!e(Status::not_found("x")).is_node_failure());
    }

    #[test]
    fn unavailable_carries_the_leader_hint() {
        let mut s = Status::unavailable("no leader could take this request (leader: 10.0.0.2:8200)");
        s.metadata_mut().insert(LEADER_HEADER, MetadataValue::from_static("10.0.0.2:8200"));
        let e = Error::from_status("http://n1:8200", s);
        assert_eq!(e.leader_hint(), Some("10.0.0.2:8200"));
        assert!(e.is_node_failure());
        assert!(e.is_not_leader());
        let e = Error::from_status(
            "http://n1:8200",
            Status::unavailable("no leader could take this request (no leader known)"),
        );
        assert_eq!(e.leader_hint(), None);
        assert!(e.is_node_failure() && e.is_not_leader());
        // Refusals that are not about the leader: the call may have run (or will fail again).
        for m in [
            "hook /h exited with status 3",
            "leader 2 was replaced before it answered; the write may or may not have been applied",
        ] {
            let e = Error::from_status("http://n1:8200", Status::unavailable(m));
            assert!(e.is_node_failure() && !e.is_not_leader(), "{m}");
        }
    }

    #[test]
    fn a_locally_made_status_is_a_transport_failure() {
        #[derive(Debug)]
        struct Refused;
        impl std::fmt::Display for Refused {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("connection refused")
            }
        }
        impl std::error::Error for Refused {}
        let s = Status::from_error(Box::new(tonic::ConnectError(Box::new(Refused))));
        let e = Error::from_status("http://n1:8200", s);
        assert!(matches!(&e, Error::Transport { addr, connected: false, .. } if addr == "http://n1:8200"), "{e:?}");
        assert!(e.to_string().starts_with("connect to http://n1:8200: "), "{e}");
        assert!(e.to_string().contains("connection refused"), "{e}");
        assert_eq!(e.code(), Code::Unavailable);
        assert!(e.is_node_failure());
        let s = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        let e = Error::from_status("http://n1:8200", s);
        assert!(matches!(e, Error::Timeout { .. }), "{e:?}");
        assert!(e.is_node_failure());
    }
}
