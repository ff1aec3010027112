"""A small PNG reader for screenshot checks: 8-bit RGB/RGBA, non-interlaced (what Chromium writes).

Stdlib `zlib` for the data, numpy for the None, Sub and Up filters (vectorised); Average and
Paeth depend on the byte to their left, so they run byte by byte in plain Python.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {2: 3, 6: 4}  # colour type: RGB, RGBA


def read_png(path: Path) -> npt.NDArray[np.uint8]:
    """The image as an array of shape (height, width, channels)."""
    data = path.read_bytes()
    assert data.startswith(SIGNATURE), f"{path} is not a PNG"
    offset = len(SIGNATURE)
    idat = []
    width = height = channels = 0
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        offset += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and colour in CHANNELS and not interlace, (depth, colour, interlace)
            channels = CHANNELS[colour]
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    stride = width * channels
    rows = raw.reshape(height, stride + 1)
    image = np.zeros((height, stride), dtype=np.uint8)
    previous = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:]
        image[y] = _unfilter(int(kind), line, previous, channels)
        previous = image[y]
    return image.reshape(height, width, channels)


def _unfilter(
    kind: int, line: npt.NDArray[np.uint8], up: npt.NDArray[np.uint8], bpp: int
) -> npt.NDArray[np.uint8]:
    if kind == 0:
        return line.copy()
    if kind == 2:
        return (line + up).astype(np.uint8)
    if kind == 1:  # Sub: a running sum per channel, modulo 256
        pixels = line.reshape(-1, bpp).astype(np.int64)
        return (np.cumsum(pixels, axis=0) % 256).astype(np.uint8).reshape(-1)
    return np.frombuffer(_unfilter_slow(kind, bytes(line), bytes(up), bpp), dtype=np.uint8)


def _unfilter_slow(kind: int, line: bytes, up: bytes, bpp: int) -> bytes:
    """Average (3) and Paeth (4), byte by byte in plain Python (faster than numpy per pixel)."""
    out = bytearray(line)
    for i in range(len(out)):
        left = out[i - bpp] if i >= bpp else 0
        above = up[i]
        if kind == 3:
            out[i] = (out[i] + (left + above) // 2) & 0xFF
        elif kind == 4:
            corner = up[i - bpp] if i >= bpp else 0
            p = left + above - corner
            pa, pb, pc = abs(p - left), abs(p - above), abs(p - corner)
            predictor = left if pa <= pb and pa <= pc else above if pb <= pc else corner
            out[i] = (out[i] + predictor) & 0xFF
        else:
            raise AssertionError(f"unknown PNG filter {kind}")
    return bytes(out)


def distinct_colours(image: npt.NDArray[np.uint8]) -> int:
    rgb = image[..., :3].reshape(-1, 3).astype(np.uint32)
    packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    return int(np.unique(packed).size)


def share_not_white(image: npt.NDArray[np.uint8]) -> float:
    rgb = image[..., :3].reshape(-1, 3)
    return float(np.mean(np.any(rgb < 245, axis=1)))
