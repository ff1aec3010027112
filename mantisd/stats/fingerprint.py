"""What ties a cache segment to the bytes of the log it was made from.

A segment holds the rows of `[start, end)` of one log file. It is believed only while the file
is the same file (device and inode), at least `end` bytes long, and the same bytes where it
was sampled: the first and the last `SAMPLE` bytes of the range (the file's first bytes for
the first segment; the bytes just before the cached offset for the last) and three samples
evenly spread between. Hashing every byte would cost what reading the log costs; the log is
append-only (rows are added, a failed write is rolled back, a month is archived into a new
file), so what changes under a segment changes its file's identity, its size below `end`, or
the bytes at the cached offset, and a rewrite in place that keeps all five samples is not a
way the log changes. Deleting the cache changes no answer.

Layer 1 (stdlib).
"""

from __future__ import annotations

import hashlib
import os
from typing import Final

SAMPLE: Final = 4096
#: Samples evenly spread between the first and the last.
INTERIOR: Final = 3


def sample_ranges(start: int, end: int) -> list[tuple[int, int]]:
    """The byte ranges of `[start, end)` that are hashed (overlapping ones merged)."""
    points = [start, *(start + (end - start) * k // (INTERIOR + 1) for k in range(1, 4))]
    points.append(max(start, end - SAMPLE))
    ranges: list[tuple[int, int]] = []
    for point in sorted(points):
        low, high = point, min(point + SAMPLE, end)
        if ranges and low <= ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], high))
        elif low < high:
            ranges.append((low, high))
    return ranges


def digest(fd: int, start: int, end: int) -> str | None:
    """The fingerprint of `[start, end)` of the file open as `fd`, or None when the file is
    shorter than `end` now."""
    hasher = hashlib.blake2b(f"{start}:{end}".encode(), digest_size=16)
    for low, high in sample_ranges(start, end):
        data = os.pread(fd, high - low, low)
        if len(data) != high - low:
            return None
        hasher.update(data)
    return hasher.hexdigest()
