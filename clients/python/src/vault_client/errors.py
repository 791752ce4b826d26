"""Typed errors: one exception class per gRPC status code the vault answers with.

Every error carries the status `code` (a `grpc.StatusCode`) and the server's `message`;
`from_rpc_error` maps a `grpc.RpcError` onto the class of its code.
"""

from __future__ import annotations

from typing import Optional

import grpc

LEADER_HEADER = "x-vault-leader"


class VaultError(Exception):
    """A call the vault (or the connection to it) refused. `code` is the gRPC status code."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: Optional[grpc.StatusCode] = None, leader: Optional[str] = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        #: The leader's API address, when a follower named it (`x-vault-leader`).
        self.leader = leader

    def __str__(self) -> str:
        return f"{self.code.name.lower()}: {self.message}"


class InvalidArgumentError(VaultError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(VaultError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(VaultError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDeniedError(VaultError):
    """The token's role, the address allowlist or the reader rules refuse the call."""

    code = grpc.StatusCode.PERMISSION_DENIED


class UnauthenticatedError(VaultError):
    code = grpc.StatusCode.UNAUTHENTICATED


class FailedPreconditionError(VaultError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class CasMismatchError(FailedPreconditionError):
    """A check-and-set write found another current version."""


class AbortedError(VaultError):
    code = grpc.StatusCode.ABORTED


class ResourceExhaustedError(VaultError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class CompactedError(VaultError):
    """A watch asked to resume from a revision the node no longer keeps (OUT_OF_RANGE):
    read the watched secrets again, then watch from `revision` (the last one received)."""

    code = grpc.StatusCode.OUT_OF_RANGE

    def __init__(self, message: str, code: Optional[grpc.StatusCode] = None, leader: Optional[str] = None):
        super().__init__(message, code, leader)
        #: The last revision this watch received (what it asked to resume after).
        self.revision = 0


class UnimplementedError(VaultError):
    code = grpc.StatusCode.UNIMPLEMENTED


class UnavailableError(VaultError):
    """No node could answer (down, no leader, unreachable) within the client's retry time."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(VaultError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class InternalError(VaultError):
    code = grpc.StatusCode.INTERNAL


_BY_CODE = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        NotFoundError,
        AlreadyExistsError,
        PermissionDeniedError,
        UnauthenticatedError,
        FailedPreconditionError,
        AbortedError,
        ResourceExhaustedError,
        CompactedError,
        UnimplementedError,
        UnavailableError,
        DeadlineExceededError,
        InternalError,
    )
}


def leader_hint(err: grpc.RpcError) -> Optional[str]:
    """The leader's address a follower put in the trailers of its UNAVAILABLE, if any."""
    try:
        trailers = err.trailing_metadata() or ()
    except Exception:  # not a call error (e.g. a channel that never connected)
        return None
    for key, value in trailers:
        if key == LEADER_HEADER and value:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def from_rpc_error(err: grpc.RpcError) -> VaultError:
    """The typed error for a failed call."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = err.details() if hasattr(err, "details") else str(err)
    message = message or code.name.lower()
    cls = _BY_CODE.get(code, VaultError)
    if cls is FailedPreconditionError and message.startswith("check-and-set failed"):
        cls = CasMismatchError
    return cls(message, code, leader_hint(err))
