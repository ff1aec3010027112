"""The shipper's cursor: how far one shard of one source was shipped, and where to resume.

A cursor is committed in the same transaction as the rows it covers, so after a crash
anywhere it points exactly past the last committed line. Resuming trusts it only while the
file is provably the same one: same device and inode, not shorter than the offset, the same
first line, and the same bytes just before the offset (appends never change them). Anything
else (replaced, archived and recreated, truncated, rewritten) is read again from the start:
the rows already there are skipped by the table's key, so a replay costs time, never a
duplicate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mantisd.fleet.shard_file import OpenShard


@dataclass(frozen=True)
class Cursor:
    """Shard `shard` (a file name) shipped up to `offset` (just past a `\\n`); `fingerprint`
    of its first line, `tail` of the bytes before `offset` (`mantisd.fleet.shard_file`)."""

    shard: str
    device: int
    inode: int
    fingerprint: bytes | None
    offset: int
    tail: bytes | None


def resume_offset(
    cursor: Cursor | None,
    shard: OpenShard,
    fingerprint: bytes | None,
    tail_at: Callable[[int], bytes | None],
) -> tuple[int, str | None]:
    """Where to read `shard` from, and why it is read again from the start (None: it is not,
    or it was never shipped). `tail_at(offset)`: the file's tail mark before `offset`."""
    if cursor is None or cursor.offset == 0:
        return 0, None
    if (cursor.device, cursor.inode) != (shard.device, shard.inode):
        return 0, "replaced by another file (device or inode changed)"
    if shard.size < cursor.offset:
        return 0, f"shrank below the shipped offset ({shard.size} < {cursor.offset} bytes)"
    if fingerprint != cursor.fingerprint:
        return 0, "its first line changed"
    if tail_at(cursor.offset) != cursor.tail:
        return 0, "its bytes before the shipped offset changed"
    return cursor.offset, None
