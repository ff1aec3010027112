"""Benchmark `mantis runs compare` against two `mantis runs stats` runs over the same windows.

Usage: .venv/bin/python bench/bench_compare.py [--repeat 5] [--data DIR]

Issue 6: `compare` over two 30-day windows of 100,000 rows each must take no more than 1.5x
the time of two `stats` runs over the same windows. Data: `mantisd.sample.generate` under
bench/data/ (git-ignored), once: 203,334 rows over September and October 2026 (61 days), so
that each window, [2026-09-02, 2026-10-02) and [2026-10-02, 2026-11-01), holds 100,000 rows:

- one workflow: every row is the queried workflow's (90% succeeded): the per-row work is
  all there is;
- 50 workflows: the queried, most popular workflow has ~22% of the rows.

Every figure is the best of `--repeat` wall-clock runs of the installed console script, as a
subprocess (process start included). `stats` gets `--last 1000000` so that it, too, reads
every run of its window. Before timing, the script checks that `compare`'s run counts and
percentiles equal those of the two `stats` runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import best_of

from mantisd.paths import list_shards
from mantisd.sample import generate, workflow_ids

HERE = Path(__file__).resolve().parent
MANTIS = Path(sys.executable).parent / "mantis"
END = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
ROWS = 203_334  # 100,000 rows per 30 of the 61 days
BASELINE = ("2026-09-02", "2026-10-02")
CURRENT = ("2026-10-02", "2026-11-01")
WORKFLOW = workflow_ids(1)[0]


def dataset(root: Path, name: str, workflows: int) -> Path:
    """Generated once; a marker file says it is complete."""
    data_dir = root / name
    marker = data_dir / "complete"
    if not marker.exists():
        for _, shard in list_shards(data_dir):
            shard.unlink()
        started = time.perf_counter()
        generate(data_dir, rows=ROWS, months=2, workflows=workflows, seed=1, end=END)
        print(f"generated {name} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        marker.write_text("ok\n")
    return data_dir


def mantis(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [str(MANTIS), "runs", *args, "--json"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    document: dict[str, Any] = json.loads(proc.stdout)
    return document


def run_compare(data_dir: Path) -> dict[str, Any]:
    return mantis(
        "compare",
        WORKFLOW,
        "--since",
        CURRENT[0],
        "--until",
        CURRENT[1],
        "--baseline-since",
        BASELINE[0],
        "--baseline-until",
        BASELINE[1],
        "--data-dir",
        str(data_dir),
    )


def run_stats(data_dir: Path, window: tuple[str, str]) -> dict[str, Any]:
    return mantis(
        "stats",
        WORKFLOW,
        "--since",
        window[0],
        "--until",
        window[1],
        "--last",
        "1000000",
        "--data-dir",
        str(data_dir),
    )


def check_agreement(data_dir: Path) -> int:
    """`compare`'s counts and p50/p95 equal the two `stats` runs'; returns runs per window."""
    both = run_compare(data_dir)
    for side, window in (("baseline", BASELINE), ("current", CURRENT)):
        alone = run_stats(data_dir, window)
        assert both[side]["run_count"] == alone["run_count"], side
        for bucket in both["buckets"]:
            for p in ("p50", "p95"):
                ours = bucket[side][p]
                theirs = alone["percentiles"][bucket["bucket"]][p]
                assert abs(ours - theirs) <= 1e-6, (side, bucket["bucket"], p, ours, theirs)
    count: int = both["current"]["run_count"]
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--data", type=Path, default=HERE / "data")
    args = parser.parse_args()
    cases = [
        ("one workflow", dataset(args.data, "compare-2x100k-one-workflow", 1)),
        ("50 workflows", dataset(args.data, "compare-2x100k", 50)),
    ]
    print(
        f"workflow {WORKFLOW}; {os.cpu_count()} CPUs; best of {args.repeat}; "
        f"python {sys.version.split()[0]}; windows {BASELINE} vs {CURRENT}",
        flush=True,
    )
    print(
        "| data | runs per window | compare | stats baseline | stats current | two stats | ratio |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, data_dir in cases:
        runs = check_agreement(data_dir)
        # interleaved, so that a burst of load on the shared machine hits both sides alike
        compare_times, baseline_times, current_times = [], [], []
        for _ in range(args.repeat):
            compare_times.append(best_of(1, lambda d=data_dir: run_compare(d)))
            baseline_times.append(best_of(1, lambda d=data_dir: run_stats(d, BASELINE)))
            current_times.append(best_of(1, lambda d=data_dir: run_stats(d, CURRENT)))
        ours, base, cur = min(compare_times), min(baseline_times), min(current_times)
        print(
            f"| {name} | {runs:,} | {ours * 1000:,.0f} ms | {base * 1000:,.0f} ms | "
            f"{cur * 1000:,.0f} ms | {(base + cur) * 1000:,.0f} ms | {ours / (base + cur):.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
