"""Benchmark `mantis runs stats --parquet` against DuckDB's own query on the same dataset
(issue 12).

Usage: .venv/bin/python bench/bench_parquet.py [--repeat 5] [--data DIR]

Data: 1,000,000 rows of one workflow over 10 months (`mantisd.sample.generate`), exported once
with `mantis runs export --parquet` under bench/data/. Both sides answer "p50/p95/p99 of every
bucket across the last 1,000,000 succeeded runs", each as a fresh process (process start and
imports included), best of `--repeat`, interleaved, after checking that they agree:

- mantis: `mantis runs stats WF --last 1000000 --json --parquet DIR` (click, mantisd's
  imports, DuckDB, and the table);
- DuckDB: `python -c "import duckdb; ..."` running the docs' query (docs/fleet-files.md)
  with the same LIMIT. Goal: mantis at most 1.2x.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchlib import best_of

from mantisd.sample import generate, workflow_ids
from mantisd.schema import BUCKETS, TOTAL

HERE = Path(__file__).resolve().parent
MANTIS = Path(sys.executable).parent / "mantis"
END = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
WORKFLOW = workflow_ids(1)[0]
LAST = 1_000_000
COLUMNS = (*BUCKETS, TOTAL)


def duckdb_program() -> str:
    """The docs' question as a stand-alone program: argv = dataset, N, workflow."""
    cells = ", ".join(f"quantile_cont({c}, [0.5, 0.95, 0.99])" for c in COLUMNS)
    return (
        "import json, sys, duckdb\n"
        "conn = duckdb.connect()\n"
        "conn.execute('SET enable_progress_bar = false')\n"
        "row = conn.execute('''\n"
        "    WITH last_runs AS (\n"
        "        SELECT * FROM read_parquet(? || '/month=*/*.parquet',\n"
        "                                   hive_partitioning = true,\n"
        "                                   hive_types = {'month': VARCHAR})\n"
        "        WHERE workflow_id = ? AND status = 'succeeded'\n"
        "        ORDER BY finished_at DESC, run_id DESC LIMIT ?)\n"
        f"    SELECT count(*), {cells} FROM last_runs''',\n"
        "    [sys.argv[1], sys.argv[3], int(sys.argv[2])]).fetchone()\n"
        "print(json.dumps(row))\n"
    )


def dataset(root: Path) -> Path:
    target = root / "parquet-one-workflow-1000000"
    if not (target / "complete").exists():
        source = root / "parquet-one-workflow-1000000-jsonl"
        shutil.rmtree(source, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)
        generate(source, rows=1_000_000, months=10, workflows=1, seed=1, end=END)
        started = time.perf_counter()
        subprocess.run(
            [MANTIS, "runs", "export", "--parquet", target, "--data-dir", source],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        print(f"mantis runs export: {time.perf_counter() - started:.1f} s for 1,000,000 rows")
        (target / "complete").touch()
    return target


def mantis(target: Path) -> dict[str, object]:
    argv = [MANTIS, "runs", "stats", WORKFLOW, "--last", str(LAST), "--json"]
    result = subprocess.run([*argv, "--parquet", target], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    document: dict[str, object] = json.loads(result.stdout)
    return document


def duckdb(target: Path) -> list[object]:
    argv = [sys.executable, "-c", duckdb_program(), str(target), str(LAST), WORKFLOW]
    result = subprocess.run(argv, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    row: list[object] = json.loads(result.stdout)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--data", type=Path, default=HERE / "data")
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    target = dataset(args.data)
    ours, theirs = mantis(target), duckdb(target)
    assert ours["run_count"] == theirs[0]
    for column, values in zip(COLUMNS, theirs[1:], strict=True):
        got = ours["percentiles"][column]  # type: ignore[index]
        wanted = dict(zip(("p50", "p95", "p99"), values, strict=True))  # type: ignore[call-overload]
        assert all(math.isclose(got[k], wanted[k], abs_tol=1e-6) for k in wanted), column
    times = {"mantis stats --parquet": 0.0, "DuckDB (python -c)": 0.0}
    for _ in range(args.repeat):  # interleaved, best of each
        for name, run in (("mantis stats --parquet", mantis), ("DuckDB (python -c)", duckdb)):
            took = best_of(1, lambda run=run: run(target))
            times[name] = min(times[name] or took, took)
    base = times["DuckDB (python -c)"]
    print(f"stats {WORKFLOW} --last {LAST} over {theirs[0]:,} succeeded runs (1M rows):")
    print("| process | time | vs DuckDB |")
    print("| --- | ---: | ---: |")
    for name, took in times.items():
        print(f"| {name} | {took * 1e3:,.0f} ms | {took / base:.2f}x |")


if __name__ == "__main__":
    main()
