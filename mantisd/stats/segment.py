"""One segment of the columnar cache: the rows of a byte range of one log file, as arrays.

What a segment holds answers every file query of `mantisd.stats.query` (ungrouped, wall
time): for each valid row, in log order, its partition (workflow and status), its key
(`mantisd.stats.run_keys`), `finished_at` in microseconds, the nine usual buckets and
`total_time_s` (NaN: not reported), and, sparse, the seconds of buckets with other names.
Each partition's columns are also stored sorted (NaN dropped): a query that takes a whole
partition reads its sorted runs and sorts nothing. Lines that are not valid rows are kept
(their bytes, when they could ever hold a workflow id) so that each query counts the ones it
would have decoded; lines longer than the reader's limit are counted.

File layout: `MAGIC`, the header's length and CRC-32 (`<II`), the header (msgspec JSON),
then each array at a 64-byte aligned offset. Every array has a checksum (the wrapping sum of
its 64-bit words), checked whenever it is read: a file cut short, zeroed by a crash or damaged
is refused (`DamagedSegment`), never believed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import struct
import zlib
from array import array
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

import msgspec
import numpy as np

from mantisd.buckets import BUCKETS, TOTAL

MAGIC: Final = b"MNTSSEG\x01"
VERSION: Final = 1
#: The value columns every segment has, in this order; other bucket names follow.
COLUMNS: Final = (*BUCKETS, TOTAL)
_PREFIX: Final = struct.Struct("<8sII")
_ALIGN: Final = 64
#: A header bigger than this is not ours.
_MAX_HEADER: Final = 64 << 20

Array = np.ndarray[Any, Any]
#: A sorted run of seconds, as `Selection` holds them.
Floats: TypeAlias = "array[float]"


class DamagedSegment(Exception):
    """Raised when a segment file is not what its header says (cut short, corrupt, another
    version): it is ignored and built again. `where`: its directory fd and name, when known."""

    def __init__(self, message: str, where: tuple[int, str] | None = None) -> None:
        super().__init__(message)
        self.where = where


class Source(msgspec.Struct, frozen=True):
    """The log bytes a segment was made from (`mantisd.stats.fingerprint`)."""

    name: str
    device: int
    inode: int
    start: int
    end: int
    digest: str


class Partition(msgspec.Struct, frozen=True, array_like=True):
    """The rows of one workflow and status, and the span of their `finished_at` (µs)."""

    workflow_id: str
    status: str
    rows: int
    first_finished: int
    last_finished: int


class ArrayInfo(msgspec.Struct, frozen=True, array_like=True):
    offset: int
    dtype: str
    shape: tuple[int, ...]
    checksum: int


class Header(msgspec.Struct, frozen=True):
    version: int
    source: Source
    rows: int
    partitions: list[Partition]
    #: `COLUMNS`, then the other bucket names found.
    columns: list[str]
    #: Lines longer than the reader's limit (always counted as unreadable).
    overlong: int
    #: No two rows share a key.
    unique_keys: bool
    arrays: dict[str, ArrayInfo] = {}
    #: Bytes from the first array to the end of the file.
    data_size: int = 0


def checksum(data: Array) -> int:
    """The wrapping sum of the 64-bit words of `data`'s bytes (zero padded)."""
    raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    if len(raw) % 8:
        raw = np.concatenate([raw, np.zeros(8 - len(raw) % 8, np.uint8)])
    return int(raw.view(np.uint64).sum(dtype=np.uint64))


@dataclass
class Segment:
    """A segment in memory: its header and arrays by name.

    Arrays: `partition` (int32), `key`, `finished` (int64), `values` (float64, one row per
    column of `COLUMNS`), `extra_row`, `extra_column`, `extra_value` (the sparse other
    buckets), `sorted` (float64: partition by partition, column by column, each sorted) with
    `sorted_bounds` (int64, `len(partitions) * len(columns) + 1` offsets into it), and
    `bad_blob`, `bad_end` (the kept unreadable lines, end offsets into the blob).
    """

    header: Header
    arrays: dict[str, Array] = field(default_factory=dict)

    def array(self, name: str) -> Array:
        return self.arrays[name]

    def sorted_runs(self, partition: int) -> dict[str, Floats]:
        """The partition's sorted columns that are not empty, by column name."""
        return _runs(self.header, self.arrays["sorted_bounds"], partition, self.arrays["sorted"], 0)

    def bad_count(self) -> int:
        return len(self.arrays["bad_end"])

    def bad_lines(self) -> list[bytes]:
        return _bad_lines(self.array("bad_blob"), self.array("bad_end"))


def _runs(
    header: Header, bounds: Array, partition: int, values: Any, base: int
) -> dict[str, Floats]:
    """The partition's non-empty sorted columns; `values[0]` is `sorted[base]`."""
    width = len(header.columns)
    runs = {}
    for c, name in enumerate(header.columns):
        low, high = int(bounds[partition * width + c]), int(bounds[partition * width + c + 1])
        if high > low:
            run = array("d")
            run.frombytes(memoryview(values)[low - base : high - base].cast("B"))
            runs[name] = run
    return runs


def _bad_lines(blob: Array, ends: Array) -> list[bytes]:
    data = blob.tobytes()
    lines, start = [], 0
    for end in ends.tolist():
        lines.append(data[start:end])
        start = end
    return lines


def write(dir_fd: int, name: str, segment: Segment) -> None:
    """Write `segment` as the file `name` under `dir_fd`: into a temporary file (never
    following a link), then renamed over `name`. OSError when it cannot be written."""
    layout: dict[str, ArrayInfo] = {}
    blobs: list[tuple[int, Array]] = []
    offset = 0
    for key, data in segment.arrays.items():
        data = np.ascontiguousarray(data)
        layout[key] = ArrayInfo(offset, data.dtype.str, tuple(data.shape), checksum(data))
        blobs.append((offset, data))
        offset += -(-data.nbytes // _ALIGN) * _ALIGN
    header = msgspec.structs.replace(segment.header, arrays=layout, data_size=offset)
    encoded = msgspec.json.encode(header)
    start = _data_start(len(encoded))
    temp = f".{name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(
        temp,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
        dir_fd=dir_fd,
    )
    try:
        try:
            prefix = _PREFIX.pack(MAGIC, len(encoded), zlib.crc32(encoded))
            _pwrite_all(fd, prefix + encoded, 0)
            for at, data in blobs:
                _pwrite_all(fd, data.data.cast("B"), start + at)
            os.ftruncate(fd, start + offset)
        finally:
            os.close(fd)
        os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise


def _data_start(header_length: int) -> int:
    return -(-(_PREFIX.size + header_length) // _ALIGN) * _ALIGN


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _shapes(header: Header) -> dict[str, tuple[int, ...]]:
    """The shape every array of a segment with this header has."""
    rows, arrays = header.rows, header.arrays
    if [*header.columns[: len(COLUMNS)]] != [*COLUMNS] or "extra_row" not in arrays:
        return {}
    if sum(p.rows for p in header.partitions) != rows or "bad_end" not in arrays:
        return {}
    extras, bad = arrays["extra_row"].shape, arrays["bad_end"].shape
    return {
        "partition": (rows,),
        "key": (rows,),
        "finished": (rows,),
        "values": (len(COLUMNS), rows),
        "extra_row": extras,
        "extra_column": extras,
        "extra_value": extras,
        "sorted": arrays["sorted"].shape if "sorted" in arrays else (),
        "sorted_bounds": (len(header.partitions) * len(header.columns) + 1,),
        "sorted_sums": (len(header.partitions),),
        "bad_blob": arrays["bad_blob"].shape if "bad_blob" in arrays else (),
        "bad_end": bad,
    }


_header_decoder = msgspec.json.Decoder(Header)
_ZERO: Final = array("d", [0.0])


class SegmentFile:
    """A segment on disk, open: the header checked at once, each array when it is read."""

    def __init__(self, fd: int, where: tuple[int, str] | None = None) -> None:
        """Takes `fd` over (closed by `close`); `DamagedSegment` unless it is a segment.
        `where`: the directory fd and name it was opened at (to remove it when damaged)."""
        self.fd = fd
        self.where = where
        size = os.fstat(fd).st_size
        prefix = os.pread(fd, _PREFIX.size, 0)
        if len(prefix) != _PREFIX.size:
            raise DamagedSegment("shorter than its prefix")
        magic, length, crc = _PREFIX.unpack(prefix)
        if magic != MAGIC or length > min(_MAX_HEADER, size):
            raise DamagedSegment("not a segment of this version")
        encoded = os.pread(fd, length, _PREFIX.size)
        if len(encoded) != length or zlib.crc32(encoded) != crc:
            raise DamagedSegment("header cut short or corrupt")
        try:
            self.header = _header_decoder.decode(encoded)
        except msgspec.ValidationError as exc:
            raise DamagedSegment(f"header: {exc}") from None
        self._start = _data_start(length)
        self._bounds: tuple[list[int], Array] | None = None
        if self.header.version != VERSION or self._start + self.header.data_size != size:
            raise DamagedSegment("not the size its header says")
        for info in self.header.arrays.values():
            nbytes = np.dtype(info.dtype).itemsize * int(np.prod(info.shape))
            if info.offset < 0 or self._start + info.offset + nbytes > size:
                raise DamagedSegment("an array lies outside the file")
        if _shapes(self.header) != {n: i.shape for n, i in self.header.arrays.items()}:
            raise DamagedSegment("arrays of other shapes than its rows and partitions")

    def close(self) -> None:
        os.close(self.fd)

    def _read_into(self, buffer: Any, offset: int) -> None:
        view = memoryview(buffer).cast("B")
        while view:
            got = os.preadv(self.fd, [view], self._start + offset)
            if got <= 0:
                raise DamagedSegment("cut short", self.where)
            view, offset = view[got:], offset + got

    def array(self, name: str) -> Array:
        """A whole array, checksum checked."""
        try:
            info = self.header.arrays[name]
        except KeyError:
            raise DamagedSegment(f"no array {name}", self.where) from None
        data = np.empty(info.shape, np.dtype(info.dtype))
        self._read_into(data, info.offset)
        if checksum(data) != info.checksum:
            raise DamagedSegment(f"{name}: checksum mismatch", self.where)
        return data

    def sorted_runs(self, partition: int) -> dict[str, Floats]:
        """The partition's sorted columns that are not empty, each read straight into its
        array (the partition's checksum checked)."""
        if self._bounds is None:
            self._bounds = (self.array("sorted_bounds").tolist(), self.array("sorted_sums"))
        bounds, sums = self._bounds
        width = len(self.header.columns)
        base = self.header.arrays["sorted"].offset
        runs, total = {}, 0
        for c, name in enumerate(self.header.columns):
            low, high = bounds[partition * width + c], bounds[partition * width + c + 1]
            if high > low:
                run = _ZERO * (high - low)
                self._read_into(run, base + 8 * low)
                total += int(np.frombuffer(run, np.uint64).sum(dtype=np.uint64))
                runs[name] = run
        if total % (1 << 64) != int(sums[partition]):
            raise DamagedSegment("sorted: checksum mismatch", self.where)
        return runs

    def bad_lines(self) -> list[bytes]:
        return _bad_lines(self.array("bad_blob"), self.array("bad_end"))

    def bad_count(self) -> int:
        info = self.header.arrays.get("bad_end")
        return info.shape[0] if info is not None and info.shape else 0
