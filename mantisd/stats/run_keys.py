"""The key that tells runs apart in the cache: a 64-bit hash of `run_id`, the same in every
process.

The reader drops a row whose `hash(run_id)` it has seen; Python salts `hash` per process, so a
cache read by later processes needs a hash of its own. Equal keys mean one run, exactly as
equal `hash()` values do for the reader: a chance collision between two run_ids (about one in
ten million over a million runs) drops one of them either way, and a crafted one gives nobody
a power they lack (whoever can write rows can write a row with the same `run_id`).

Vectorized: run_ids of up to `WIDE` characters, as 64-bit words (two UCS-4 code points each),
are hashed in numpy, FNV-1a style with the length mixed in and a murmur3 finish; longer ones
(rare) with BLAKE2b. A run_id's key depends on nothing but its text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

WIDE: Final = 32
_OFFSET: Final = np.uint64(0xCBF29CE484222325)
_PRIME: Final = np.uint64(0x100000001B3)
_LENGTH: Final = np.uint64(0x9E3779B97F4A7C15)
_FMIX1: Final = np.uint64(0xFF51AFD7ED558CCD)
_FMIX2: Final = np.uint64(0xC4CEB9FE1A85EC53)
_SHIFT: Final = np.uint64(33)


def run_keys(run_ids: Sequence[str]) -> np.ndarray[Any, np.dtype[np.int64]]:
    """The keys of `run_ids`, in order."""
    count = len(run_ids)
    keys = np.empty(count, np.uint64)
    if not count:
        return keys.view(np.int64)
    lengths = np.fromiter(map(len, run_ids), np.int64, count)
    long = np.flatnonzero(lengths > WIDE)
    if len(long):
        for index in long.tolist():
            keys[index] = _long_key(run_ids[index])
        short = np.flatnonzero(lengths <= WIDE)
        if len(short):
            keys[short] = _short_keys([run_ids[i] for i in short.tolist()], lengths[short])
    else:
        keys[:] = _short_keys(run_ids, lengths)
    return keys.view(np.int64)


def _long_key(run_id: str) -> np.uint64:
    data = run_id.encode("utf-8", "surrogatepass")
    return np.uint64(int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little"))


def _short_keys(
    run_ids: Sequence[str], lengths: np.ndarray[Any, np.dtype[np.int64]]
) -> np.ndarray[Any, np.dtype[np.uint64]]:
    width = max(2, int(lengths.max()) + int(lengths.max()) % 2)  # an even number of chars
    text = np.array(run_ids, dtype=f"<U{width}")  # zero padded
    words = text.view(np.uint64).reshape(len(run_ids), width // 2)
    used = (lengths + 1) // 2
    hashed = _OFFSET ^ (lengths.astype(np.uint64) * _LENGTH)
    uniform = bool((used == used[0]).all())
    for j in range(int(used.max())):
        mixed = (hashed ^ words[:, j]) * _PRIME
        hashed = mixed if uniform else np.where(used > j, mixed, hashed)
    hashed ^= hashed >> _SHIFT
    hashed *= _FMIX1
    hashed ^= hashed >> _SHIFT
    hashed *= _FMIX2
    hashed ^= hashed >> _SHIFT
    return hashed
