"""`Client`: several node addresses, reads from any healthy node, writes to the leader.

Reads go to the node that answered last and move on to the next configured node when a node
fails (UNAVAILABLE, a connection error, a deadline); they never follow a leader hint.

Writes (and admin calls) go to the last known leader and move to another node only when the
write certainly did not run (`_write_not_run`): no connection could be opened, or the node
said no leader could take it: UNAVAILABLE with the leader's address in `x-vault-leader` (tried
next) or ending "(no leader known)". Any other failure, an UNAVAILABLE saying "the write may or
may not have been applied" or "rotation of ... failed" included, is raised to the caller, who
knows whether a repeat is safe (`put(..., cas=...)` is). Only a configured node is remembered
as leader. Both retry, with backoff, for at most `retry_for` seconds before raising the last
error.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

import grpc

from . import errors
from ._proto import pb, pb_grpc
from .types import Secret
from .watch import Watch

_READ_RETRY = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}

# How gRPC reports a call that never reached a node (no connection could be opened).
_NOT_CONNECTED = ("failed to connect to all addresses", "DNS resolution failed")


def _read_may_move(err: errors.VaultError) -> bool:
    return err.code in _READ_RETRY


def _write_not_run(err: errors.VaultError) -> bool:
    """Whether a failed write certainly did not run, so another node may take it: no
    connection could be opened, or the node said no leader could take it (the server's
    "no leader could take this request (leader: ADDR)" with `x-vault-leader`, or "... (no
    leader known)"). Not: a broken connection, a timeout, "...; the write may or may not have
    been applied", "rotation of NAME failed: ...", an unavailable key manager."""
    if err.code != grpc.StatusCode.UNAVAILABLE:
        return False
    return bool(err.leader) or err.message.endswith("(no leader known)") or err.message.startswith(_NOT_CONNECTED)


def _target(addr: str) -> str:
    """`host:port` from `host:port`, `http://host:port` or `https://host:port/`."""
    for scheme in ("http://", "https://"):
        if addr.startswith(scheme):
            addr = addr[len(scheme):]
    return addr.rstrip("/")


def _read(path: Optional[str]) -> Optional[bytes]:
    return Path(path).read_bytes() if path else None


class Client:
    """A client of a vault cluster.

    `addrs`: node API addresses (`host:port`, optionally with `http://` or `https://`).
    `token`: sent as `authorization: Bearer` (reads need none: they are authorized by
    address allowlist and reader rules). `ca_file` turns on TLS (so does an `https://`
    address); `cert_file`/`key_file` present a client certificate (reader rules by CN).
    `keepalive`: seconds between HTTP/2 pings on an idle connection, so a quiet watch is not
    closed by the node's idle timeout (`VAULT_API_IDLE_SECS`).
    """

    def __init__(
        self,
        addrs: Union[str, Sequence[str]],
        token: Optional[str] = None,
        ca_file: Optional[str] = None,
        cert_file: Optional[str] = None,
        key_file: Optional[str] = None,
        timeout: float = 5.0,
        retry_for: float = 15.0,
        keepalive: float = 60.0,
    ):
        if isinstance(addrs, str):
            addrs = [a for a in addrs.split(",")]
        addrs = [a.strip() for a in addrs if a.strip()]
        if not addrs:
            raise ValueError("no vault address given")
        if bool(cert_file) != bool(key_file):
            raise ValueError("a client certificate needs both cert_file and key_file")
        self._tls = bool(ca_file or cert_file or any(a.startswith("https://") for a in addrs))
        self._addrs: List[str] = [_target(a) for a in addrs]
        self._token = token
        self._creds = (
            grpc.ssl_channel_credentials(
                root_certificates=_read(ca_file), private_key=_read(key_file), certificate_chain=_read(cert_file)
            )
            if self._tls
            else None
        )
        self._channels: Dict[str, grpc.Channel] = {}
        self._reader = 0  # index into _addrs of the node that answered the last read
        self._leader: Optional[str] = None
        self.timeout = timeout
        self.retry_for = retry_for
        self._options = [
            ("grpc.keepalive_time_ms", int(keepalive * 1000)),
            ("grpc.keepalive_timeout_ms", 20000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        ]

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **kwargs) -> "Client":
        """A client from `VAULT_ADDR` (comma-separated), `VAULT_TOKEN` or `VAULT_TOKEN_FILE`,
        `VAULT_CACERT`, `VAULT_CLIENT_CERT` and `VAULT_CLIENT_KEY`; `kwargs` override them."""
        env = os.environ if environ is None else environ
        token = env.get("VAULT_TOKEN") or None
        if token is None and env.get("VAULT_TOKEN_FILE"):
            token = Path(env["VAULT_TOKEN_FILE"]).read_text().strip() or None
        opts = dict(
            addrs=env.get("VAULT_ADDR", ""),
            token=token,
            ca_file=env.get("VAULT_CACERT") or None,
            cert_file=env.get("VAULT_CLIENT_CERT") or None,
            key_file=env.get("VAULT_CLIENT_KEY") or None,
        )
        opts.update(kwargs)
        return cls(**opts)

    def __repr__(self) -> str:
        token = "set" if self._token else "none"
        return f"Client(addrs={self._addrs!r}, tls={self._tls}, token=<{token}>)"

    def close(self) -> None:
        for ch in self._channels.values():
            ch.close()
        self._channels.clear()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def addrs(self) -> List[str]:
        return list(self._addrs)

    # ---- reads -------------------------------------------------------------------------

    def get(self, name: str, version: int = 0) -> Secret:
        """The newest live version of `name`, or `version`."""
        r = self._read("GetSecret", pb.GetSecretRequest(name=name, version=version))
        return Secret(r.name, r.version, r.value, r.created_at_ms)

    def get_many(self, names: Iterable[str]) -> Dict[str, Union[Secret, errors.VaultError]]:
        """Several secrets in one call: each name maps to its `Secret` or to its typed error."""
        req = pb.BatchGetSecretsRequest(requests=[pb.GetSecretRequest(name=n) for n in names])
        out: Dict[str, Union[Secret, errors.VaultError]] = {}
        for item in self._read("BatchGetSecrets", req).results:
            if item.WhichOneof("result") == "secret":
                s = item.secret
                out[item.name] = Secret(s.name, s.version, s.value, s.created_at_ms)
            else:
                code = next((c for c in grpc.StatusCode if c.value[0] == item.error.code), grpc.StatusCode.UNKNOWN)
                cls = errors._BY_CODE.get(code, errors.VaultError)
                out[item.name] = cls(item.error.message, code)
        return out

    def list(self, prefix: str = "") -> Iterator["pb.SecretSummary"]:
        """Every secret under `prefix` (metadata only), page by page."""
        token = ""
        while True:
            page = self._read("ListSecrets", pb.ListSecretsRequest(prefix=prefix, page_token=token))
            yield from page.secrets
            token = page.next_page_token
            if not token:
                return

    def versions(self, name: str) -> "pb.ListVersionsResponse":
        return self._read("ListVersions", pb.ListVersionsRequest(name=name))

    def status(self) -> "pb.ServerStatusResponse":
        """ServerStatus of the node that answers (no token needed)."""
        return self._read("ServerStatus", pb.ServerStatusRequest(), service="Admin")

    def watch(
        self,
        names: Sequence[str] = (),
        prefixes: Sequence[str] = (),
        after_revision: int = 0,
        progress: bool = False,
        give_up_after: Optional[float] = None,
    ) -> Watch:
        """An iterator of `WatchBatch`es for changes to `names` and `prefixes`, surviving the
        loss of its node (see `Watch`)."""
        return Watch(self, list(names), list(prefixes), after_revision, progress, give_up_after)

    # ---- writes ------------------------------------------------------------------------

    def put(
        self, name: str, value: Union[bytes, str], cas: Optional[int] = None, max_versions: Optional[int] = None
    ) -> int:
        """Writes a new version; returns its number. `cas`: only if the current version is
        this (0: only if the secret does not exist), else `CasMismatchError`."""
        if isinstance(value, str):
            value = value.encode()
        req = pb.PutSecretRequest(name=name, value=value)
        if cas is not None:
            req.expected_version = cas
        if max_versions is not None:
            req.max_versions = max_versions
        return self._write("PutSecret", req).version

    def delete(self, name: str, destroy: bool = False) -> None:
        """Soft-deletes every version (undelete brings them back), or destroys them."""
        self._write("DeleteSecret", pb.DeleteSecretRequest(name=name, destroy=destroy))

    def delete_versions(self, name: str, versions: Sequence[int]) -> List[int]:
        return list(self._write("DeleteVersions", pb.VersionsRequest(name=name, versions=versions)).changed)

    def undelete_versions(self, name: str, versions: Sequence[int]) -> List[int]:
        return list(self._write("UndeleteVersions", pb.VersionsRequest(name=name, versions=versions)).changed)

    def destroy_versions(self, name: str, versions: Sequence[int]) -> List[int]:
        return list(self._write("DestroyVersions", pb.VersionsRequest(name=name, versions=versions)).changed)

    def set_rotation(self, name: str, every_secs: int, generator: str) -> "pb.RotationInfo":
        req = pb.SetRotationRequest(name=name, every_secs=every_secs, generator=generator)
        return self._write("SetRotation", req)

    def rotate(self, name: str) -> int:
        """Rotates now with the secret's policy; returns the new version."""
        return self._write("RotateSecret", pb.RotateSecretRequest(name=name)).version

    def create_reader(
        self, name: str, grants: Sequence[str], cidrs: Sequence[str] = (), cert_cns: Sequence[str] = (),
        replace: bool = False,
    ) -> None:
        """A reader rule (admin): clients matching `cidrs` or `cert_cns` may read `grants`."""
        req = pb.CreateReaderRequest(name=name, cidrs=cidrs, cert_cns=cert_cns, grants=grants, replace=replace)
        self._write("CreateReader", req, service="Admin")

    def delete_reader(self, name: str) -> None:
        self._write("DeleteReader", pb.DeleteReaderRequest(name=name), service="Admin")

    def cluster_status(self) -> "pb.ClusterStatusResponse":
        return self._read("ClusterStatus", pb.ClusterStatusRequest(), service="Admin")

    # ---- plumbing ----------------------------------------------------------------------

    def _metadata(self):
        return (("authorization", f"Bearer {self._token}"),) if self._token else ()

    def _channel(self, addr: str) -> grpc.Channel:
        ch = self._channels.get(addr)
        if ch is None:
            if self._creds is not None:
                ch = grpc.secure_channel(addr, self._creds, options=self._options)
            else:
                ch = grpc.insecure_channel(addr, options=self._options)
            self._channels[addr] = ch
        return ch

    def _stub(self, addr: str, service: str):
        stub = pb_grpc.SecretsStub if service == "Secrets" else pb_grpc.AdminStub
        return stub(self._channel(addr))

    def _read(self, method: str, req, service: str = "Secrets"):
        def order() -> List[str]:
            n = len(self._addrs)
            return [self._addrs[(self._reader + k) % n] for k in range(n)]

        def good(addr: str) -> None:
            if addr in self._addrs:
                self._reader = self._addrs.index(addr)

        return self._call(method, req, service, order, good, _read_may_move, follow_hints=False)

    def _write(self, method: str, req, service: str = "Secrets"):
        def order() -> List[str]:
            first = [self._leader] if self._leader else []
            return first + [a for a in self._addrs if a != self._leader]

        def good(addr: str) -> None:
            if addr in self._addrs:
                self._leader = addr

        return self._call(method, req, service, order, good, _write_not_run, follow_hints=True)

    def _call(self, method, req, service, order, good, may_move, follow_hints):
        deadline = time.monotonic() + self.retry_for
        backoff = 0.05
        last: Optional[errors.VaultError] = None
        while True:
            queue = order()
            tried = set()
            while queue:
                addr = queue.pop(0)
                if addr in tried:
                    continue
                tried.add(addr)
                try:
                    resp = getattr(self._stub(addr, service), method)(
                        req, timeout=self.timeout, metadata=self._metadata()
                    )
                except grpc.RpcError as e:
                    err = errors.from_rpc_error(e)
                    if not may_move(err):
                        raise err from None
                    last = err
                    if follow_hints and err.leader:
                        # For this call; remembered as leader only once it answers (and only
                        # if configured: `good`).
                        hint = _target(err.leader)
                        if hint not in tried:
                            queue.insert(0, hint)
                    continue
                good(addr)
                return resp
            if time.monotonic() + backoff > deadline:
                assert last is not None
                raise last
            time.sleep(backoff)
            backoff = min(backoff * 2, 1.0)
