"""Archived months: zstd frames of whole lines behind a seek table, read back newest first.

`mantis runs archive` writes `<YYYY-MM>.jsonl.zst` in zstd's seekable format: independent
frames of about `FRAME_BYTES` of whole lines each (with content checksums), then a skippable
frame holding the seek table (each frame's compressed and decompressed sizes). Any zstd tool
reads it as one stream (`zstdcat`, DuckDB); our readers use the table to decompress the last
frame first, so "last N" over an archive costs what it costs over a plain shard, and memory
stays bounded by a frame.

zstd, not gzip, by measurement (docs/fleet-files.md): on a 100,000-row month of realistic rows
zstd level 9 in 1 MiB frames compresses 8.0x and decompresses at ~1 GB/s; gzip -6 6.8x at
~0.3 GB/s, and every query reads archives.

Any other `.zst` (no seek table) or `.gz` (an operator's own gzip) is decompressed forward
into an anonymous temporary file and read from there: bounded memory, same reader.

Nothing in the data dir is trusted: sizes in a seek table are checked against the file before
anything is allocated, and a truncated or corrupt archive raises `DamagedArchive`.

Layer 1: stdlib, plus `zstandard` imported when an archive is met.
"""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from collections.abc import Iterator
from typing import Any, Final

ZSTD: Final = "zst"
GZIP: Final = "gz"
#: zstd level: ratio 8.0x at ~20 MB/s compressing (archiving runs once a day, in the
#: background), decompression as fast as at any level.
LEVEL: Final = 9
#: Decompressed bytes per frame (whole lines: a frame ends at the first line end past this).
FRAME_BYTES: Final = 1 << 20
#: The largest frame a reader decompresses in memory: a bigger one is not ours.
FRAME_LIMIT: Final = 64 << 20
READ_BYTES: Final = 1 << 20
_ZSTD_SLICE: Final = 8 << 10
_GZIP_OUTPUT: Final = 16 << 20

_SKIPPABLE_MAGIC: Final = 0x184D2A5E
_SEEKABLE_MAGIC: Final = 0x8F92EAB1
_FOOTER: Final = struct.Struct("<IBI")  # frame count, descriptor, seekable magic
_ENTRY: Final = struct.Struct("<II")  # compressed size, decompressed size
_SKIPPABLE_HEADER: Final = struct.Struct("<II")  # magic, frame size


class DamagedArchive(Exception):
    """Raised when an archive cannot be read to its end (truncated, corrupt, not what its
    name says); the message says what is wrong."""


def _zstd() -> Any:
    """zstandard, imported when an archive is met (the daemon and the client never need it)."""
    import zstandard

    return zstandard


class ArchiveWriter:
    """Writes lines to `fd` as seekable zstd: `add` whole lines, then `finish` once."""

    def __init__(self, fd: int, *, level: int = LEVEL) -> None:
        self._fd = fd
        zstd = _zstd()
        self._compressor = zstd.ZstdCompressor(
            level=level, write_checksum=True, write_content_size=True
        )
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._entries: list[tuple[int, int]] = []
        self.bytes_in = 0
        self.bytes_out = 0

    def add(self, lines: bytes) -> None:
        """Whole `\\n`-terminated lines, in order (a frame never splits a line)."""
        if not lines:
            return
        if not lines.endswith(b"\n"):
            raise ValueError("lines must end with a newline")
        self._pending.append(lines)
        self._pending_bytes += len(lines)
        if self._pending_bytes >= FRAME_BYTES:
            self._flush()

    def _flush(self) -> None:
        data = b"".join(self._pending)
        self._pending, self._pending_bytes = [], 0
        start = 0
        while start < len(data):  # frames of about FRAME_BYTES, cut at line ends
            cut = data.find(b"\n", min(start + FRAME_BYTES, len(data)) - 1) + 1
            self._frame(data[start:cut])
            start = cut

    def _frame(self, data: bytes) -> None:
        if len(data) > 0xFFFFFFFF:
            raise ValueError("a line longer than 4 GiB cannot be archived")
        frame = self._compressor.compress(data)
        _write_all(self._fd, frame)
        self._entries.append((len(frame), len(data)))
        self.bytes_in += len(data)
        self.bytes_out += len(frame)

    def finish(self) -> None:
        """Write the last frame and the seek table (the caller fsyncs)."""
        if self._pending:
            self._flush()
        table = b"".join(_ENTRY.pack(*entry) for entry in self._entries)
        table += _FOOTER.pack(len(self._entries), 0, _SEEKABLE_MAGIC)
        skippable = _SKIPPABLE_HEADER.pack(_SKIPPABLE_MAGIC, len(table)) + table
        _write_all(self._fd, skippable)
        self.bytes_out += len(skippable)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def frames(fd: int) -> list[tuple[int, int, int]] | None:
    """The seek table of the archive open as `fd`: (offset, compressed size, decompressed
    size) per frame, oldest first; None when it has none that fits the file."""
    size = os.fstat(fd).st_size
    if size < _FOOTER.size + _SKIPPABLE_HEADER.size:
        return None
    count, descriptor, magic = _FOOTER.unpack(os.pread(fd, _FOOTER.size, size - _FOOTER.size))
    entry = _ENTRY.size + (4 if descriptor & 0x80 else 0)
    table_size = count * entry + _FOOTER.size
    skippable = _SKIPPABLE_HEADER.size + table_size
    if magic != _SEEKABLE_MAGIC or descriptor & 0x7C or skippable > size:
        return None
    raw = os.pread(fd, skippable, size - skippable)
    if _SKIPPABLE_HEADER.unpack_from(raw) != (_SKIPPABLE_MAGIC, table_size):
        return None
    found, offset = [], 0
    for k in range(count):
        compressed, decompressed = _ENTRY.unpack_from(raw, _SKIPPABLE_HEADER.size + k * entry)
        if not compressed or decompressed > FRAME_LIMIT:
            return None
        found.append((offset, compressed, decompressed))
        offset += compressed
    return found if offset == size - skippable else None


def frames_newest_first(fd: int, table: list[tuple[int, int, int]]) -> Iterator[bytes]:
    """Each frame's lines, decompressed, last frame first; `DamagedArchive` at the first frame
    that does not decompress to what the table says (earlier frames are then not read)."""
    for index in range(len(table) - 1, -1, -1):
        yield read_frame(fd, table, index)


def read_frame(fd: int, table: list[tuple[int, int, int]], index: int) -> bytes:
    """Frame `index` of the seek table `table`, decompressed and checked against the table
    (and its content checksum); `DamagedArchive` when it does not decompress to that."""
    zstd = _zstd()
    offset, compressed, decompressed = table[index]
    frame = os.pread(fd, compressed, offset)
    try:
        if len(frame) != compressed:
            raise DamagedArchive("shorter than its seek table says")
        if zstd.get_frame_parameters(frame).content_size != decompressed:
            raise DamagedArchive(f"frame {index + 1} is not the size its seek table says")
        data: bytes = zstd.ZstdDecompressor().decompress(frame, max_output_size=decompressed)
    except zstd.ZstdError as exc:
        raise DamagedArchive(f"frame {index + 1} of {len(table)}: {exc}") from None
    if len(data) != decompressed:
        raise DamagedArchive(f"frame {index + 1} is not the size its seek table says")
    return data


def decompress_to_temporary(fd: int, kind: str) -> int:
    """The whole archive (`kind`: `ZSTD` or `GZIP`, any number of frames or members)
    decompressed into an anonymous temporary file, whose fd is returned (the caller closes
    it); `DamagedArchive` when it is truncated or corrupt anywhere."""
    out = tempfile.TemporaryFile()
    try:
        _decompress_stream(fd, kind, out.fileno())
        return os.dup(out.fileno())
    finally:
        out.close()


def _decompress_stream(fd: int, kind: str, out: int) -> None:
    """Decompress every frame (member) of `fd` into `out`, holding a bounded amount at once:
    gzip output is capped per call; zstd input is fed in slices small enough that even a
    crafted frame cannot expand one slice past a few hundred MiB."""
    zstd = _zstd() if kind == ZSTD else None
    errors: tuple[type[Exception], ...] = (zlib.error, *((zstd.ZstdError,) if zstd else ()))
    offset = 0
    stream: Any = None
    while True:
        data = os.pread(fd, READ_BYTES, offset)
        if not data:
            break
        offset += len(data)
        capped = False
        while data or capped:
            if stream is None:
                stream = zstd.ZstdDecompressor().decompressobj() if zstd else zlib.decompressobj(31)
            try:
                if zstd:
                    chunk, data = stream.decompress(data[:_ZSTD_SLICE]), data[_ZSTD_SLICE:]
                else:
                    chunk = stream.decompress(data, _GZIP_OUTPUT)
                    data = stream.unconsumed_tail
                    capped = len(chunk) == _GZIP_OUTPUT  # more output may be pending
            except errors as exc:
                raise DamagedArchive(f"corrupt near byte {offset - len(data)}: {exc}") from None
            _write_all(out, chunk)
            if stream.eof:
                data, stream, capped = stream.unused_data + data, None, False
    if stream is not None or offset == 0:
        raise DamagedArchive("truncated" if offset else "empty: not a compressed file")
