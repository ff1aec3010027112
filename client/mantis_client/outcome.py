"""What became of an appended row, for the callers (and tests) that want to know."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Outcome(enum.Enum):
    """Where a row ended up. Only `DROPPED` means the row is not on disk."""

    #: The daemon acknowledged it: the row is durable (its fsync returned).
    DELIVERED = "delivered"
    #: The daemon was absent, refused, hung or failed to store it; the client wrote it itself.
    WRITTEN_DIRECTLY = "written_directly"
    #: The row is invalid (locally or per the daemon); it was logged, never written.
    REJECTED = "rejected"
    #: Every path to disk failed; logged once with the row's `run_id`.
    DROPPED = "dropped"


@dataclass(frozen=True, slots=True)
class AppendResult:
    """The outcome of one `append`, and why (empty `detail` when the daemon took the row)."""

    outcome: Outcome
    detail: str = ""
    run_id: str | None = None

    @property
    def durable(self) -> bool:
        """True when the row is on disk, by either path."""
        return self.outcome in (Outcome.DELIVERED, Outcome.WRITTEN_DIRECTLY)
