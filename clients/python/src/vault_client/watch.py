"""`Watch`: an iterator over a WatchSecrets stream that outlives the node it is connected to.

Each message the server sends holds every event of its revisions and the revision to resume
from. When the stream breaks (the node stops, the connection drops, the server cuts a slow
consumer) the watch connects to the next node with `after_revision` = the last revision it
received, so nothing is missed and nothing comes twice. A revision one node no longer keeps
(OUT_OF_RANGE: pruned, or the node installed a snapshot) is asked of the other nodes; when
none keeps it the watch raises `CompactedError`: read the secrets again and watch anew.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, List, Optional

import grpc

from . import errors
from ._proto import pb
from .types import Change, WatchBatch, WatchEvent

if TYPE_CHECKING:
    from .client import Client

# Stream failures after which the watch resumes on another node.
_RESUMABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}


def _kind(value: int) -> Change:
    """A kind this client knows, or UNSPECIFIED for one a newer server added."""
    try:
        return Change(value)
    except ValueError:
        return Change.UNSPECIFIED


class Watch:
    """Iterate for `WatchBatch`es (only those with events unless `progress`). `revision` is
    the last revision received, `node` the address now streaming. `close()` (or leaving a
    `with` block) ends the iteration, from any thread. If no node answers for
    `give_up_after` seconds (default: the client's `retry_for`), raises `UnavailableError`."""

    def __init__(
        self,
        client: "Client",
        names: List[str],
        prefixes: List[str],
        after_revision: int,
        progress: bool,
        give_up_after: Optional[float],
    ):
        self._client = client
        self._names = names
        self._prefixes = prefixes
        self.revision = after_revision
        self._progress = progress
        self._give_up_after = client.retry_for if give_up_after is None else give_up_after
        self._index = client._reader
        self._stream = None
        self._closed = False
        self._failing_since: Optional[float] = None
        self._backoff = 0.05
        self.node: Optional[str] = None
        self._compacted_on: set = set()
        #: How many times the watch resumed on a node after its stream broke.
        self.resumes = 0

    def __iter__(self) -> "Watch":
        return self

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        if self._stream is not None:
            self._stream.cancel()

    def __next__(self) -> WatchBatch:
        while True:
            if self._closed:
                raise StopIteration
            if self._stream is None:
                self._connect()
            try:
                msg = next(self._stream)
            except StopIteration:  # the server ended the stream: resume elsewhere
                self._broken(None)
                continue
            except grpc.RpcError as e:
                if self._closed:
                    raise StopIteration from None
                err = errors.from_rpc_error(e)
                if isinstance(err, errors.CompactedError):
                    self._compacted_on.add(self.node)
                    if self._compacted_on >= set(self._client._addrs):
                        err.revision = self.revision
                        raise err from None
                    self._next_node()
                    continue
                if err.code not in _RESUMABLE:
                    raise err from None
                self._broken(err)
                continue
            self._failing_since = None
            self._backoff = 0.05
            self._compacted_on.clear()
            self.revision = max(self.revision, msg.revision)
            events = tuple(WatchEvent(ev.name, ev.version, _kind(ev.kind), ev.revision) for ev in msg.events)
            if events or self._progress:
                return WatchBatch(msg.revision, events)

    def _connect(self) -> None:
        addrs = self._client._addrs
        self.node = addrs[self._index % len(addrs)]
        req = pb.WatchSecretsRequest(names=self._names, prefixes=self._prefixes, after_revision=self.revision)
        stub = self._client._stub(self.node, "Secrets")
        self._stream = stub.WatchSecrets(req, metadata=self._client._metadata())

    def _next_node(self) -> None:
        if self._stream is not None:
            self._stream.cancel()
        self._stream = None
        self._index += 1

    def _broken(self, err: Optional[errors.VaultError]) -> None:
        """Drops the stream and moves to the next node, waiting (with backoff) once every
        node failed in a row; raises when none answered for `give_up_after` seconds."""
        self._next_node()
        self.resumes += 1
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._failing_since > self._give_up_after:
            raise err or errors.UnavailableError("every watch stream ended", grpc.StatusCode.UNAVAILABLE)
        if self._failing_since != now:  # not the first failure in a row
            time.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, 1.0)
