"""Plain results of the client's calls. A `Secret` never shows its value in `repr`."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Tuple


@dataclass(frozen=True)
class Secret:
    name: str
    version: int
    value: bytes = field(repr=False)
    created_at_ms: int = 0

    @property
    def text(self) -> str:
        """The value as UTF-8 text."""
        return self.value.decode()


class Change(enum.IntEnum):
    """What a watch event reports (the proto's ChangeKind)."""

    UNSPECIFIED = 0
    PUT = 1
    DELETE = 2
    UNDELETE = 3
    DESTROY = 4
    ROTATION = 5
    REMOVE = 6
    RESET = 7


@dataclass(frozen=True)
class WatchEvent:
    name: str
    version: int
    kind: Change
    revision: int


@dataclass(frozen=True)
class WatchBatch:
    """One message of a watch: every event of its revisions, and the revision to resume from.
    A batch without events is progress only."""

    revision: int
    events: Tuple[WatchEvent, ...] = ()
