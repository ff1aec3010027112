"""Benchmark `mantis runs stats` against DuckDB and a naive stdlib `json` loop (issue 2).

Usage: .venv/bin/python bench/bench_stats.py [--repeat 5] [--data DIR] [--cache]

Data: made by `mantisd.sample.generate` under bench/data/ (git-ignored), once: one month of
100,000 rows and ten months of 1,000,000 rows, ending 2026-10. Every figure is the best of
`--repeat` wall-clock runs. The engines must agree on every percentile (to 1e-6 s) before
anything is timed.

- mantis: the installed console script, as a subprocess (process start included).
- DuckDB (query): `read_ndjson` + `quantile_cont` in this process, a fresh connection per run,
  `import duckdb` not counted, the columns declared up front (no schema sniffing): DuckDB's
  best case.
- DuckDB (process): the same query as a `python -c "import duckdb ..."` subprocess, the
  like-for-like figure next to mantis's.
- naive: `json.loads` per line, newest first, in this process (timed once: it is slow).

`--cache` (issue 13): only the columnar cache's figures, on the one-workflow datasets (1M
and 3M rows): mantis cold (its cache dir emptied before each run: it builds the cache),
warm, and without the cache (`MANTIS_CACHE=off`), against DuckDB on the JSONL and on a
Parquet copy (made once with DuckDB's `COPY ... PARTITION_BY (month)`), in-process and as a
process; interleaved, best of `--repeat`; CPU seconds per row, and peak RSS.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchlib import best_of

from mantisd.paths import list_shards
from mantisd.sample import generate, workflow_ids
from mantisd.schema import BUCKETS, TOTAL

HERE = Path(__file__).resolve().parent
MANTIS = Path(sys.executable).parent / "mantis"
END = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
WORKFLOWS = 50
WORKFLOW = workflow_ids(WORKFLOWS)[0]  # the most popular one: ~22% of the rows
QUANTILES = (0.5, 0.95, 0.99)
Percentiles = dict[str, dict[str, float]]


# ------------------------------------------------------------------------- data


def dataset(root: Path, name: str, rows: int, months: int, workflows: int = WORKFLOWS) -> Path:
    """Generated once; a marker file says it is complete."""
    data_dir = root / name
    marker = data_dir / "complete"
    if not marker.exists():
        if data_dir.exists():
            for _, shard in list_shards(data_dir):
                shard.unlink()
        started = time.perf_counter()
        generate(data_dir, rows=rows, months=months, workflows=workflows, seed=1, end=END)
        print(
            f"generated {name}: {rows} rows, {months} month(s) in "
            f"{time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
        marker.write_text("ok\n")
    return data_dir


# ---------------------------------------------------------------------- engines


def run_mantis(data_dir: Path, last: int, env: dict[str, str] | None = None) -> Percentiles:
    proc = subprocess.run(
        [
            str(MANTIS),
            "runs",
            "stats",
            WORKFLOW,
            "--last",
            str(last),
            "--json",
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    document: dict[str, Any] = json.loads(proc.stdout)
    result: Percentiles = document["percentiles"]
    result["run_count"] = {"n": document["run_count"]}
    return result


def duckdb_sql() -> str:
    cells = ", ".join(f"quantile_cont(wall_time_breakdown.{b}, $q) AS {b}" for b in BUCKETS)
    return (
        "WITH sel AS (SELECT * FROM read_ndjson($files, columns=$columns) "
        "WHERE workflow_id = $workflow AND status = 'succeeded' "
        "ORDER BY finished_at DESC LIMIT $last) "
        f"SELECT count(*) AS run_count, {cells}, quantile_cont(total_time_s, $q) AS {TOTAL} "
        "FROM sel"
    )


def duckdb_params(data_dir: Path, last: int) -> dict[str, Any]:
    return {
        "files": [str(p) for _, p in list_shards(data_dir)],
        "columns": {
            "run_id": "VARCHAR",
            "workflow_id": "VARCHAR",
            "status": "VARCHAR",
            "finished_at": "TIMESTAMP",
            "total_time_s": "DOUBLE",
            "wall_time_breakdown": "STRUCT(" + ", ".join(f"{b} DOUBLE" for b in BUCKETS) + ")",
        },
        "workflow": WORKFLOW,
        "last": last,
        "q": list(QUANTILES),
    }


def duckdb_query(data_dir: Path, last: int) -> Percentiles:
    return duckdb_percentiles(duckdb_sql(), duckdb_params(data_dir, last))


def duckdb_percentiles(sql: str, params: Any) -> Percentiles:
    """Run a percentile query on a fresh DuckDB connection: its one row holds the run count,
    then each column's [p50, p95, p99] (a column no selected run reports is left out, as
    mantis leaves it out)."""
    import duckdb

    with duckdb.connect() as con:
        cursor = con.execute(sql, params)
        names = [d[0] for d in cursor.description]
        row = cursor.fetchone()
    assert row is not None
    result: Percentiles = {
        name: dict(zip(("p50", "p95", "p99"), values, strict=True))
        for name, values in zip(names[1:], row[1:], strict=True)
        if values[0] is not None
    }
    result["run_count"] = {"n": row[0]}
    return result


def duckdb_process(data_dir: Path, last: int, flag: str = "--duckdb-child") -> None:
    subprocess.run(
        [sys.executable, __file__, flag, str(data_dir), str(last)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def parquet_copy(data_dir: Path) -> Path:
    """A Parquet copy of a dataset (the declared columns, buckets flattened), partitioned by
    month; made once."""
    import duckdb

    target = data_dir.with_name(data_dir.name + "-parquet")
    marker = target / "complete"
    if not marker.exists():
        shutil.rmtree(target, ignore_errors=True)
        params = duckdb_params(data_dir, 0)
        buckets = ", ".join(f"wall_time_breakdown.{b} AS {b}" for b in BUCKETS)
        with duckdb.connect() as con:
            con.execute(
                f"COPY (SELECT run_id, workflow_id, status, finished_at, {TOTAL}, {buckets}, "
                "strftime(finished_at, '%Y-%m') AS month "
                "FROM read_ndjson($files, columns=$columns)) "
                f"TO '{target}' (FORMAT parquet, PARTITION_BY (month))",
                {"files": params["files"], "columns": params["columns"]},
            )
        marker.write_text("ok\n")
    return target


def duckdb_parquet_query(target: Path, last: int) -> Percentiles:
    """The same question of DuckDB, over the Parquet copy."""
    cells = ", ".join(f"quantile_cont({b}, $q) AS {b}" for b in (*BUCKETS, TOTAL))
    sql = (
        "WITH sel AS (SELECT * FROM read_parquet($glob, hive_partitioning = true) "
        "WHERE workflow_id = $workflow AND status = 'succeeded' "
        "ORDER BY finished_at DESC LIMIT $last) "
        f"SELECT count(*) AS run_count, {cells} FROM sel"
    )
    params = {
        "glob": f"{target}/month=*/*.parquet",
        "workflow": WORKFLOW,
        "last": last,
        "q": list(QUANTILES),
    }
    return duckdb_percentiles(sql, params)


def cpu_of(action: Any) -> float:
    """CPU seconds (user + system) `action`'s child processes used, workers included."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    action()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cache_case(title: str, data_dir: Path, last: int, repeat: int) -> None:
    """mantis cold, warm and without the cache, against DuckDB on JSONL and on Parquet."""
    target = parquet_copy(data_dir)
    home = Path(tempfile.mkdtemp(prefix="mantis-bench-cache-"))
    warm_env = {**os.environ, "XDG_CACHE_HOME": str(home)}
    off_env = {**warm_env, "MANTIS_CACHE": "off"}

    def cold() -> Percentiles:
        shutil.rmtree(home / "mantis", ignore_errors=True)
        return run_mantis(data_dir, last, warm_env)

    def warm() -> Percentiles:
        return run_mantis(data_dir, last, warm_env)

    off = run_mantis(data_dir, last, off_env)
    for name, answer in (("cold", cold()), ("warm", warm())):
        same(off, answer, f"{title}: mantis {name} vs without the cache")
    same(off, duckdb_query(data_dir, last), f"{title}: mantis vs DuckDB (JSONL)")
    same(off, duckdb_parquet_query(target, last), f"{title}: mantis vs DuckDB (Parquet)")
    runs = off["run_count"]["n"]
    sides = {
        "mantis cold": cold,
        "mantis warm": warm,
        "mantis, no cache": lambda: run_mantis(data_dir, last, off_env),
        "DuckDB JSONL query": lambda: duckdb_query(data_dir, last),
        "DuckDB JSONL process": lambda: duckdb_process(data_dir, last),
        "DuckDB Parquet query": lambda: duckdb_parquet_query(target, last),
        "DuckDB Parquet process": lambda: duckdb_process(target, last, "--parquet-child"),
    }
    times: dict[str, list[float]] = {name: [] for name in sides}
    cpus: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeat):  # interleaved: a burst of load cannot favour one side
        for name, action in sides.items():
            started = time.perf_counter()
            cpus[name].append(cpu_of(action))
            times[name].append(time.perf_counter() - started)
    best = {name: min(values) for name, values in times.items()}
    rows = sum(1 for _ in open_lines(data_dir))
    print(f"{title}: {rows:,} rows, {int(runs):,} runs agree (best of {repeat}, interleaved)")
    for name in sides:
        cpu = min(cpus[name])
        per_row = f"{cpu / rows * 1e6:.2f} us CPU/row" if name.startswith("mantis") else ""
        per_row += f", {cpu / runs * 1e6:.2f} us/run" if name == "mantis warm" else ""
        print(
            f"  {name:24} {best[name] * 1000:7.0f} ms  cpu {cpu * 1000:6.0f} ms  {per_row}",
            flush=True,
        )
    for name, peer in (
        ("mantis warm", "DuckDB Parquet query"),
        ("mantis warm", "DuckDB Parquet process"),
        ("mantis cold", "DuckDB JSONL query"),
        ("mantis cold", "DuckDB JSONL process"),
    ):
        print(f"  {name} / {peer}: {best[name] / best[peer]:.2f}x")
    argv = [str(MANTIS), "runs", "stats", WORKFLOW, "--last", str(last), "--data-dir"]
    for name, prepare in (("cold", lambda: shutil.rmtree(home / "mantis", True)), ("warm", None)):
        if prepare:
            prepare()
        largest, tree = peak_rss_mb([*argv, str(data_dir)], env=warm_env, before=prepare)
        print(f"  peak RSS {name}: largest process {largest:.0f} MB, process tree {tree:.0f} MB")
    shutil.rmtree(home, ignore_errors=True)


def open_lines(data_dir: Path) -> Any:
    for _, path in list_shards(data_dir):
        with open(path, "rb") as f:
            yield from f


def naive(data_dir: Path, last: int) -> Percentiles:
    """What one would write first: `json.loads` every line, newest first."""
    seen: set[str] = set()
    seconds: dict[str, list[float]] = {}
    count = 0
    for _, path in list_shards(data_dir):
        with open(path, "rb") as f:
            lines = f.read().splitlines()
        for line in reversed(lines):
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row.get("workflow_id") != WORKFLOW or row.get("status") != "succeeded":
                continue
            if row["run_id"] in seen:
                continue
            seen.add(row["run_id"])
            for name, value in [*row["wall_time_breakdown"].items(), (TOTAL, row[TOTAL])]:
                seconds.setdefault(name, []).append(value)
            count += 1
            if count == last:
                break
        if count == last:
            break
    result: Percentiles = {}
    for name, values in seconds.items():
        cuts = statistics.quantiles(values, n=100, method="inclusive")
        result[name] = {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98]}
    result["run_count"] = {"n": count}
    return result


# ----------------------------------------------------------------- measurement


def same(a: Percentiles, b: Percentiles, what: str) -> None:
    assert a.keys() == b.keys(), f"{what}: buckets differ: {sorted(a)} vs {sorted(b)}"
    for bucket, cells in a.items():
        for name, value in cells.items():
            other = b[bucket][name]
            assert abs(value - other) <= 1e-6, f"{what}: {bucket} {name}: {value} != {other}"


def peak_rss_mb(
    argv: list[str], env: dict[str, str] | None = None, before: Any = None
) -> tuple[float, float]:
    """(largest single process, sampled sum over the process tree) peak RSS, in MB.

    The largest single process is `ru_maxrss` of the children of a fresh wrapper process (so
    that earlier benchmark children do not count). The sum counts pages that forked workers
    share with their parent once per process: an upper bound.
    """
    wrapper = (
        "import resource, subprocess, sys; "
        "subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, check=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    largest_kb = int(
        subprocess.run(
            [sys.executable, "-c", wrapper, *argv],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout
    )
    if before is not None:
        before()  # the same state for the second run (e.g. an empty cache again)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, env=env)
    peak_sum = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak_sum
        while not done.is_set():
            peak_sum = max(peak_sum, _tree_rss_kb(proc.pid))
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    proc.wait()
    done.set()
    sampler.join()
    return largest_kb / 1024, peak_sum / 1024


def _tree_rss_kb(pid: int) -> int:
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        for text in status.splitlines():
            if text.startswith("VmRSS:"):
                total += int(text.split()[1])
        pending.extend(map(int, children))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--data", type=Path, default=HERE / "data")
    parser.add_argument("--cache", action="store_true", help="only the cache's figures")
    parser.add_argument("--duckdb-child", nargs=2, metavar=("DATA_DIR", "LAST"))
    parser.add_argument("--parquet-child", nargs=2, metavar=("PARQUET_DIR", "LAST"))
    args = parser.parse_args()
    if args.duckdb_child:
        print(json.dumps(duckdb_query(Path(args.duckdb_child[0]), int(args.duckdb_child[1]))))
        return
    if args.parquet_child:
        target, last = Path(args.parquet_child[0]), int(args.parquet_child[1])
        print(json.dumps(duckdb_parquet_query(target, last)))
        return
    if args.cache:
        print(f"{os.cpu_count()} CPUs; python {sys.version.split()[0]}", flush=True)
        for rows, name in (
            (1_000_000, "ten-months-1m-one-workflow"),
            (3_000_000, "ten-months-3m-one-workflow"),
        ):
            data_dir = dataset(args.data, name, rows, 10, workflows=1)
            title = f"{rows // 1_000_000}M rows of one workflow, 10 months, --last {rows}"
            cache_case(title, data_dir, rows, args.repeat)  # every run: linear in the rows
        return

    one = dataset(args.data, "one-month-100k", 100_000, 1)
    ten = dataset(args.data, "ten-months-1m", 1_000_000, 10)
    single = dataset(args.data, "ten-months-1m-one-workflow", 1_000_000, 10, workflows=1)
    repeat = args.repeat
    print(
        f"workflow {WORKFLOW}; {os.cpu_count()} CPUs; best of {repeat}; "
        f"python {sys.version.split()[0]}",
        flush=True,
    )

    cases = [
        ("(a) 1 month, 100k rows, default flags", one, 100),
        ("(b) 10 months, 1M rows, --last 1000000", ten, 1_000_000),
        ("(d) 10 months, 1M rows, default flags", ten, 100),
        ("(worst) 10 months, 1M rows all of one workflow, --last 1000000", single, 1_000_000),
    ]
    figures: dict[str, dict[str, float]] = {}
    for title, data_dir, last in cases:
        ours = run_mantis(data_dir, last)
        theirs = duckdb_query(data_dir, last)
        same(ours, theirs, f"{title}: mantis vs DuckDB")
        slow_started = time.perf_counter()
        plain = naive(data_dir, last)
        naive_s = time.perf_counter() - slow_started
        same(ours, plain, f"{title}: mantis vs naive")
        runs = ours["run_count"]["n"]
        figures[title] = {
            "runs": runs,
            "mantis": best_of(repeat, lambda d=data_dir, n=last: run_mantis(d, n)),
            "duckdb_query": best_of(repeat, lambda d=data_dir, n=last: duckdb_query(d, n)),
            "duckdb_process": best_of(repeat, lambda d=data_dir, n=last: duckdb_process(d, n)),
            "naive": naive_s,
        }
        f = figures[title]
        print(
            f"{title}: {int(runs)} runs agree. mantis {f['mantis'] * 1000:.0f} ms | "
            f"DuckDB query {f['duckdb_query'] * 1000:.0f} ms "
            f"(mantis/DuckDB {f['mantis'] / f['duckdb_query']:.2f}x) | "
            f"DuckDB process {f['duckdb_process'] * 1000:.0f} ms "
            f"({f['mantis'] / f['duckdb_process']:.2f}x) | naive json {naive_s * 1000:.0f} ms",
            flush=True,
        )

    for label, data_dir in (("(c)", ten), ("(c, worst)", single)):
        argv = [str(MANTIS), "runs", "stats", WORKFLOW, "--last", "1000000"]
        largest, tree = peak_rss_mb([*argv, "--data-dir", str(data_dir)])
        print(
            f"{label} peak RSS, --last 1000000 over {data_dir.name}: largest process "
            f"{largest:.0f} MB, whole process tree (sampled; shared pages counted once per "
            f"process) {tree:.0f} MB"
        )

    help_s = best_of(
        repeat * 2,
        lambda: subprocess.run([str(MANTIS), "--help"], check=True, stdout=subprocess.DEVNULL),
    )
    bare_s = best_of(repeat * 2, lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))
    print(
        f"(e) mantis --help: {help_s * 1000:.0f} ms (bare `python -c pass`: {bare_s * 1000:.0f} ms)"
    )
    # (d) interleaved, so that a burst of load on the machine cannot favour either side
    times: dict[Path, list[float]] = {one: [], ten: []}
    for _ in range(repeat * 2):
        for data_dir in (one, ten):
            times[data_dir].append(best_of(1, lambda d=data_dir: run_mantis(d, 100)))
    print(
        f"(d) default query, 1 month vs 10 months kept (interleaved, best of {repeat * 2}): "
        f"{min(times[one]) * 1000:.0f} ms vs {min(times[ten]) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
