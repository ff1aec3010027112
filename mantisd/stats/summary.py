"""p50/p95/p99 per bucket, ordered the way the table shows them.

Sorting is the costly step of a big query (a million values per bucket): with many values the
buckets are sorted in forked workers, which inherit the columns instead of receiving them.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mantisd.schema import TOTAL
from mantisd.stats.fanout import fan_out
from mantisd.stats.percentiles import percentiles

#: Below this many values in all, sorting here is faster than forking workers.
PARALLEL_SORT_MIN = 200_000


@dataclass(frozen=True)
class BucketStats:
    """p50/p95/p99 of one bucket, or None when no selected run reported it."""

    bucket: str
    values: tuple[float, ...] | None


def bucket_stats(
    seconds: Mapping[str, array[float]], buckets: Iterable[str], *, workers: int = 1
) -> list[BucketStats]:
    """Stats of `buckets` ordered by p50 descending (ties by name), then `total_time_s`.

    Buckets nobody reported come after the others; `total_time_s` is always last. `workers`:
    how many processes may sort when there are many values.
    """
    names = [b for b in dict.fromkeys(buckets) if b != TOTAL] + [TOTAL]
    present = [b for b in names if seconds.get(b)]
    size = sum(len(seconds[b]) for b in present)
    workers = workers if size >= PARALLEL_SORT_MIN else 1
    computed = fan_out(lambda b: percentiles(seconds[b]), present, workers=workers)
    found = dict(zip(present, computed, strict=True))
    stats = [BucketStats(b, found.get(b)) for b in names[:-1]]
    stats.sort(key=lambda s: (s.values is None, -(s.values or (0.0,))[0], s.bucket))
    stats.append(BucketStats(TOTAL, found.get(TOTAL)))
    return stats
