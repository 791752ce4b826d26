"""Python client of the Raft-replicated secrets vault.

    from vault_client import Client
    vault = Client.from_env()          # VAULT_ADDR=host:port,host:port ...
    db = vault.get("app/db")           # a Secret: name, version, value (bytes)
    for batch in vault.watch(names=["app/db"]):
        ...

The gRPC code is generated from the vault's proto when the package is built.
"""

from .client import Client
from .errors import (
    AbortedError,
    AlreadyExistsError,
    CasMismatchError,
    CompactedError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    VaultError,
)
from .types import Change, Secret, WatchBatch, WatchEvent
from .watch import Watch

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "CasMismatchError",
    "Change",
    "Client",
    "CompactedError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "Secret",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "VaultError",
    "Watch",
    "WatchBatch",
    "WatchEvent",
]
