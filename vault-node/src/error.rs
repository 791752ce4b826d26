//! Domain errors to gRPC status, in one place. Request paths return [`ApiError`]; it becomes a
//! `Status` once, at the edge of the handler (`From<ApiError> for Status`). Messages are for the
//! caller and never carry secret material; storage details are logged here, where they are
//! handled.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use vault_core::CoreError;
use vault_raft::transport::ForwardError;
use vault_raft::{Rejection, StoreError};

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Forward(#[from] ForwardError),
    /// A deterministic refusal decided when a command was applied.
    #[error("{0:?}")]
    Rejected(Rejection),
    /// A refusal or validation failure decided here, already in gRPC terms.
    #[error("{}", .0.message())]
    Status(#[from] Status),
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        ApiError::Rejected(r)
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        match e {
            ApiError::Core(e) => from_core(e),
            ApiError::Store(e) => from_store(e),
            ApiError::Forward(e) => from_forward(e),
            ApiError::Rejected(r) => from_rejection(r),
            ApiError::Status(s) => s,
        }
    }
}

/// Runs a request's work and turns its error into the caller's status: the one place where
/// an [`ApiError`] becomes a `Status`.
pub async fn answer<T>(work: impl std::future::Future<Output = Result<T, ApiError>>) -> Result<T, Status> {
    work.await.map_err(Status::from)
}

/// Runs storage work that may scan (listings, counts, verification) on the blocking pool,
/// off the async workers.
pub async fn blocking<T, E>(work: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, ApiError>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(r) => r.map_err(Into::into),
        Err(e) => Err(Status::internal(format!("blocking task failed: {e}")).into()),
    }
}

/// Metadata key carrying the leader's API address on `UNAVAILABLE` from a follower.
pub const LEADER_HEADER: &str = "x-vault-leader";

fn from_core(e: CoreError) -> Status {
    match e {
        CoreError::InvalidName(_) | CoreError::InvalidArgument(_) | CoreError::ValueTooLarge { .. } => {
            Status::invalid_argument(e.to_string())
        }
        CoreError::KmsUnavailable(_) => Status::unavailable(e.to_string()),
        CoreError::KmsRejected(_) | CoreError::KeyMismatch { .. } => Status::failed_precondition(e.to_string()),
        CoreError::Authentication(_) | CoreError::Malformed(_) => {
            tracing::error!(error = %e, "stored secret failed integrity checks");
            Status::internal(format!("{e}; the stored record is damaged or was moved"))
        }
    }
}

fn from_store(e: StoreError) -> Status {
    tracing::error!(error = %e, "storage failure");
    Status::internal("storage failure on this node; see its log")
}

fn from_rejection(r: Rejection) -> Status {
    match r {
        Rejection::NotFound(m) => Status::not_found(m),
        Rejection::AlreadyExists(m) => Status::already_exists(m),
        Rejection::CasMismatch { expected, actual } => Status::failed_precondition(format!(
            "check-and-set failed: expected version {expected}, current version is {actual}"
        )),
        Rejection::VersionConflict { current } => {
            Status::aborted(format!("a concurrent write moved the secret to version {current}; retry"))
        }
        Rejection::FailedPrecondition(m) => Status::failed_precondition(m),
        Rejection::Unauthenticated(m) => Status::unauthenticated(m),
        Rejection::PermissionDenied(m) => Status::permission_denied(m),
        Rejection::WrongMasterKey { sealed_with, cluster } => Status::failed_precondition(format!(
            "sealed under master key {sealed_with}, but the cluster's master key is {cluster}"
        )),
    }
}

fn from_forward(e: ForwardError) -> Status {
    match e {
        ForwardError::NotLeader { leader } => unavailable_with_leader(
            "no leader could take this request",
            leader.as_ref().map(|(_, n)| n.api_addr.as_str()),
        ),
        ForwardError::Unavailable(m) | ForwardError::Unreachable(m) => Status::unavailable(m),
        ForwardError::Rejected(m) => Status::failed_precondition(m),
        ForwardError::NotFound(m) => Status::not_found(m),
        ForwardError::Refused(m) => Status::permission_denied(m),
        ForwardError::NoRoom(m) => Status::resource_exhausted(m),
    }
}

/// `UNAVAILABLE` naming the leader, with its API address in `x-vault-leader` when known.
pub fn unavailable_with_leader(message: &str, leader_api: Option<&str>) -> Status {
    let mut status = match leader_api {
        Some(addr) => Status::unavailable(format!("{message} (leader: {addr})")),
        None => Status::unavailable(format!("{message} (no leader known)")),
    };
    if let Some(v) = leader_api.and_then(|a| MetadataValue::try_from(a).ok()) {
        status.metadata_mut().insert(LEADER_HEADER, v);
    }
    status
}

/// The status code in words, as the CLI and the audit log show it.
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

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use prost::Message;

    use crate::pb;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        /// The request messages of the API decode any bytes without panicking.
        #[test]
        fn request_messages_decode_any_bytes_without_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = pb::PutSecretRequest::decode(bytes.as_slice());
            let _ = pb::GetSecretRequest::decode(bytes.as_slice());
            let _ = pb::BatchGetSecretsRequest::decode(bytes.as_slice());
            let _ = pb::ListSecretsRequest::decode(bytes.as_slice());
            let _ = pb::ListRotationsRequest::decode(bytes.as_slice());
            let _ = pb::VersionsRequest::decode(bytes.as_slice());
            let _ = pb::CreateTokenRequest::decode(bytes.as_slice());
            let _ = pb::CreateRoleRequest::decode(bytes.as_slice());
            let _ = pb::AddMemberRequest::decode(bytes.as_slice());
            let _ = pb::ListAuditRequest::decode(bytes.as_slice());
        }
    }
}
