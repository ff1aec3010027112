"""An archived month, open for shipping: its decompressed content, read by offset.

`mantis runs archive` writes seekable zstd (`mantisd.compressed`): independent frames of about
1 MiB of whole lines behind a seek table. `ArchiveContent` reads any range of the decompressed
content by decompressing only the frames that cover it, one at a time, and keeps the last two
for the next reads (a batch starts inside the frame where the last one ended; its tail mark
may reach back into the frame before). Memory is bounded by a batch plus two frames (at most
`compressed.FRAME_LIMIT` each), never a month, and a resume in the middle of a month starts
at its frame. An archive without a seek table (an operator's own gzip, a `.zst` from another
tool) is decompressed forward, in bounded memory, into an anonymous temporary file, as every
reader does (`compressed.decompress_to_temporary`), and read from there.

Damage never passes for content: a frame that does not decompress to what the table says
(its checksum included) ends the readable content at its start (`ArchiveContent.damage` says
why), so only the whole lines before it are shipped, never a piece of one. As in a shard, a
last line without its newline is never shipped (`mantis runs archive` ends every line; an
archive made otherwise may not). An archive without
a table that is damaged anywhere, a truncated one included (its table went with its end),
cannot be read at all: `open_archive` raises `compressed.DamagedArchive`.

Opened as a shard is: relative to `runs_log/`'s fd, never through a link, a regular file only
(`mantisd.safe_fs`).
"""

from __future__ import annotations

import os
import threading
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Final

from mantisd import compressed, safe_fs
from mantisd.fleet.shard_file import Content

#: Decompressed frames kept for the next reads.
_KEPT_FRAMES: Final = 2


class ArchiveContent:
    """The decompressed content of a seekable zstd archive open as `fd` (seek table `table`,
    `compressed.frames`), read like a file with `pread`. Safe to share between threads."""

    def __init__(self, fd: int, table: list[tuple[int, int, int]]) -> None:
        self._fd = fd
        self._table = table
        #: Where each frame starts in the decompressed content; the last entry is its size.
        self._starts = list(accumulate((size for _, _, size in table), initial=0))
        self.size = self._starts[-1]
        #: Why the content cannot be read past `readable` (None: it can be read to its end).
        self.damage: str | None = None
        self._readable = self.size
        self._kept: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def pread(self, size: int, offset: int) -> bytes:
        """The `size` bytes at `offset`; fewer at the end, or where a damaged frame starts."""
        with self._lock:
            stop = min(offset + size, self._readable)
            parts = []
            pos = offset
            while pos < stop:
                index = bisect_right(self._starts, pos) - 1
                frame = self._frame(index)
                if frame is None:
                    break
                begin = self._starts[index]
                parts.append(frame[pos - begin : stop - begin])
                pos = min(stop, begin + len(frame))
            return b"".join(parts)

    def _frame(self, index: int) -> bytes | None:
        if index in self._kept:
            return self._kept[index]
        try:
            data = compressed.read_frame(self._fd, self._table, index)
        except compressed.DamagedArchive as exc:
            self.damage = str(exc)
            self._readable = self._starts[index]
            return None
        if len(self._kept) >= _KEPT_FRAMES:
            del self._kept[next(iter(self._kept))]  # the one decompressed first
        self._kept[index] = data
        return data


@dataclass
class OpenArchive:
    """An archive opened for reading: its identity (device, inode, and the size and mtime
    of the compressed file) and its decompressed `content` of `size` bytes."""

    name: str
    fd: int
    device: int
    inode: int
    file_size: int
    mtime_ns: int
    content: Content
    size: int

    @property
    def seen(self) -> tuple[int, ...]:
        """What `shard_file.quick_identity` says of the file while it is unchanged."""
        return self.device, self.inode, self.file_size, self.mtime_ns

    @property
    def damage(self) -> str | None:
        """Why the content could not be read to its end, once a read met the damage."""
        return self.content.damage if isinstance(self.content, ArchiveContent) else None

    def close(self) -> None:
        if isinstance(self.content, int):
            os.close(self.content)
        os.close(self.fd)


def open_archive(log_fd: int, log_path: Path, name: str) -> OpenArchive:
    """Open an archive (`<YYYY-MM>.jsonl.zst` or `.gz`) for reading its content forward.

    Never a link, FIFO or device (`UnsafeEntryError`); `compressed.DamagedArchive` when it has
    no seek table and does not decompress to its end; ImportError without `zstandard`.
    """
    fd = safe_fs.open_file_for_reading(log_fd, log_path / name)
    try:
        found = os.fstat(fd)
        kind = name.rsplit(".", 1)[1]
        table = compressed.frames(fd) if kind == compressed.ZSTD else None
        content: Content
        if table is not None:
            content = ArchiveContent(fd, table)
            size = content.size
        else:
            content = compressed.decompress_to_temporary(fd, kind)
            size = os.fstat(content).st_size
    except BaseException:
        os.close(fd)
        raise
    return OpenArchive(
        name, fd, found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, content, size
    )
