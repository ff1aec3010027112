"""When `mantis runs stats|compare|trend` read the columnar cache (`MANTIS_CACHE`).

The cache (`mantisd.stats.cached_query`) pays off when a query reads whole shards: it costs
importing numpy (~0.15 s) and, the first time, writing the cache. So by default (`auto`) it
serves only big reads: at least `EAGER_FAN_OUT` runs (the size from which every shard is read
anyway), or a trend (every run of its window), over shards holding at least
`MIN_BYTES`. The default `stats` (the newest 100 runs: a few blocks of the newest shard)
never touches it. `always` uses it for every query it can answer (for tests, and to compare);
`off` never. Grouped queries and `--breakdown cost` are read from the log as before.

Light on purpose (stdlib only): the CLI asks this for every query.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from mantisd.stats.costs import WALL_TIME
from mantisd.stats.source import UnsupportedQuery

ENV: Final = "MANTIS_CACHE"
OFF: Final = "off"
AUTO: Final = "auto"
ALWAYS: Final = "always"
MODES: Final = (AUTO, OFF, ALWAYS)
#: Below this much JSONL in the shards a query reads, the log is read as before: decoding it
#: costs about what importing numpy does.
MIN_BYTES: Final = 16 << 20
#: From this many runs on a query reads whole shards (as `mantisd.stats.query.EAGER_FAN_OUT`).
MIN_LAST: Final = 5000


class CacheModeError(UnsupportedQuery):
    """Raised when `MANTIS_CACHE` holds something else than `auto`, `off` or `always` (a
    usage error that names the variable, as for a bad flag)."""


def mode() -> str:
    """`MANTIS_CACHE`, checked (empty or unset: `auto`)."""
    value = os.environ.get(ENV, "").strip().lower() or AUTO
    if value not in MODES:
        raise CacheModeError(
            f"Invalid value for environment variable {ENV}: {os.environ[ENV]!r} is not one "
            f"of {', '.join(MODES)}."
        )
    return value


def wanted(breakdown: str, by: tuple[str, ...], last: int | None, size: Callable[[], int]) -> bool:
    """Whether a query reads the cache: `last` None means every run (a trend); `size()`, the
    bytes of the log files it would read, is only asked in `auto` mode. When it does, numpy
    is about to be imported: its BLAS thread pool is not started (the cache does no linear
    algebra, and starting it costs ~50 ms of CPU)."""
    current = mode()
    if current == OFF or by or breakdown != WALL_TIME:
        return False
    use = current == ALWAYS or ((last is None or last >= MIN_LAST) and size() >= MIN_BYTES)
    if use:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    return use


def log_bytes(data_dir: Path, months: Sequence[str]) -> int:
    """The size of the log files (shards and archives) of `months`."""
    from mantisd.paths import list_log_files

    chosen = set(months)
    total = 0
    for file in list_log_files(data_dir):
        if file.month in chosen:
            with contextlib.suppress(OSError):
                total += os.stat(file.path, follow_symlinks=False).st_size
    return total
