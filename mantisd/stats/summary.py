"""p50/p95/p99 per bucket, ordered the way the table shows them.

The values come as sorted runs (one per shard, sorted by the workers that read them), so no
bucket is ever sorted here as a whole.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mantisd.schema import TOTAL
from mantisd.stats.percentiles import percentiles_of_runs


@dataclass(frozen=True)
class BucketStats:
    """p50/p95/p99 of one bucket, or None when no selected run reported it."""

    bucket: str
    values: tuple[float, ...] | None


def bucket_stats(
    sorted_runs: Mapping[str, Sequence[array[float]]],
    buckets: Iterable[str],
    *,
    total: bool = True,
    computed: Mapping[str, tuple[float, ...]] | None = None,
) -> list[BucketStats]:
    """Stats of `buckets` ordered by p50 descending (ties by name), then `total_time_s`.

    Buckets nobody reported come after the others; `total_time_s` is always last, unless
    `total` is False (cost components have no total). `computed`: percentiles a source's
    engine already computed (`Selection.percentiles`), used instead of the runs.
    """

    def stats_of(bucket: str) -> BucketStats:
        if computed and bucket in computed:
            return BucketStats(bucket, computed[bucket])
        runs = sorted_runs.get(bucket, ())
        return BucketStats(bucket, percentiles_of_runs(runs) if any(runs) else None)

    stats = [stats_of(b) for b in dict.fromkeys(buckets) if b != TOTAL]
    stats.sort(key=lambda s: (s.values is None, -(s.values or (0.0,))[0], s.bucket))
    if total:
        stats.append(stats_of(TOTAL))
    return stats
