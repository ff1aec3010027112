"""The shipper's cursor: how far one shard of one source was shipped, and where to resume.

A cursor is committed in the same transaction as the rows it covers, so after a crash
anywhere it points exactly past the last committed line. Resuming trusts it only while the
file is provably the same one: same device and inode, not shorter than the offset, the same
first line, and the same bytes just before the offset (appends never change them). Anything
else (replaced, archived and recreated, truncated, rewritten) is read again from the start:
the rows already there are skipped by the table's key, so a replay costs time, never a
duplicate.

An archive (`<YYYY-MM>.jsonl.zst`, `.gz`) has a cursor of its own, by its name, in the same
columns: offsets, first line and tail marks are of its decompressed content. Where to start
it is proved by content alone (`archive_start`), because of how archives come to be: an
archive's content begins with its shard's bytes (whole lines, copied), and an archive made
again to merge late rows begins with the old archive's content, byte for byte. So the longest
part of it that any cursor of its month (its own, its shard's, another archive's) proves
shipped (the same first line, the same bytes before that cursor's offset) is not read again;
an archive nothing proves is read from the start, and what was shipped of it already is
skipped by the table's key. Content, not identity (device, inode, size), because content
carries across files: a month archived while the shipper was behind costs only its unshipped
tail, not a month read again, and rows a database's retention has dropped since are not
inserted again. The proof is the one a shard's resume already trusts, less its inode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mantisd.fleet.shard_file import OpenShard


@dataclass(frozen=True)
class Cursor:
    """File `shard` (a shard's or an archive's name) shipped up to `offset` (just past a
    `\\n`; of an archive, in its decompressed content); `fingerprint` of its first line,
    `tail` of the bytes before `offset` (`mantisd.fleet.shard_file`)."""

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


def archive_start(
    own: Cursor | None,
    others: Iterable[Cursor],
    size: int,
    fingerprint: bytes | None,
    tail_at: Callable[[int], bytes | None],
) -> tuple[int, str | None]:
    """Where to read an archive of `size` decompressed bytes from: past the longest shipped
    part that its `own` cursor or a cursor of another file of its month (`others`) proves is
    its beginning; and why it is read again from the start (None: it is not, or nothing of
    it was shipped under its name). `tail_at(offset)`: its content's tail mark before `offset`.
    """
    start = 0
    if fingerprint is not None:
        for cursor in (own, *others):
            if cursor is None or not start < cursor.offset <= size:
                continue
            if cursor.fingerprint == fingerprint and tail_at(cursor.offset) == cursor.tail:
                start = cursor.offset
    if start == 0 and own is not None and own.offset:
        return 0, "its content does not begin with what was shipped of it"
    return start, None
