"""Benchmark the fleet's PostgreSQL path (issue 11): catch-up, `--follow` lag, `stats --db`.

Usage: .venv/bin/python bench/bench_ship.py [--rows 1000000] [--lag-seconds 30] [--repeat 3]

A throwaway PostgreSQL cluster (`tests.pg`, fsync on, as a real server) on a Unix socket;
data from `mantisd.sample.generate` under bench/data/ (generated once). Printed side by side:

- Catch-up: `mantis runs ship` (one-shot, a subprocess) of every row into an empty database,
  against the floor: a plain `COPY ... FROM STDIN` of the very same rows (their text, taken
  back out of the database beforehand) into an identical empty table, in one transaction.
- `--follow` lag: a real `mantisd` takes 100 rows/s; for each row, the time from the
  daemon's acknowledgement (its fsync) to the row being visible to a query, p50 and p99.
- Query: `mantis runs stats WF --last N --json` over one workflow of N rows, `--db` against
  the files (both as subprocesses, best of `--repeat`), and the bucket storage question: the
  same percentiles over the nine bucket columns against the same values kept as JSONB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchlib import best_of  # noqa: E402

from mantisd.fleet.migrations import ensure_partitions, existing_partitions, migrate  # noqa: E402
from mantisd.fleet.records import COLUMNS  # noqa: E402
from mantisd.sample import generate, workflow_ids  # noqa: E402
from mantisd.schema import BUCKETS, TOTAL  # noqa: E402
from tests.daemon_process import running_daemon  # noqa: E402
from tests.pg import PgServer, running_postgres  # noqa: E402
from tests.rows import make_row  # noqa: E402

MANTIS = Path(sys.executable).parent / "mantis"
END = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def dataset(name: str, rows: int, workflows: int) -> Path:
    """Generated once under bench/data/ (a marker says it is complete)."""
    data_dir = HERE / "data" / name
    if not (data_dir / "complete").exists():
        started = time.perf_counter()
        generate(data_dir, rows=rows, months=10, workflows=workflows, seed=1, end=END)
        (data_dir / "complete").write_text("ok\n")
        print(f"generated {name} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return data_dir


def ship(url: str, data_dir: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        [str(MANTIS), "runs", "ship", "--to", url, "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


# ------------------------------------------------------------------------------ catch-up


def catch_up(server: PgServer, rows: int) -> dict[str, float]:
    import psycopg

    data_dir = dataset(f"ship-{rows}", rows, 50)
    for leftover in (data_dir / "source.json",):
        leftover.unlink(missing_ok=True)
    url = server.create_database()
    shipped = ship(url, data_dir)
    columns = ", ".join(COLUMNS)
    with tempfile.TemporaryFile() as copied:
        with psycopg.connect(url) as conn:
            (count,) = conn.execute("SELECT count(*) FROM mantis.runs").fetchone() or (0,)
            assert count == rows, count
            months = existing_partitions(conn)
            export = f"COPY (SELECT {columns} FROM mantis.runs) TO STDOUT"
            with conn.cursor().copy(export) as out:  # type: ignore[arg-type]
                for block in out:
                    copied.write(block)
        floor_url = server.create_database()
        with psycopg.connect(floor_url) as conn:
            migrate(conn)
            ensure_partitions(conn, months)
            copied.seek(0)
            started = time.perf_counter()
            with (
                conn.transaction(),
                conn.cursor().copy(
                    f"COPY mantis.runs ({columns}) FROM STDIN"  # type: ignore[arg-type]
                ) as into,
            ):
                while block := copied.read(1 << 20):
                    into.write(block)
            floor = time.perf_counter() - started
    return {"rows": rows, "ship_s": shipped, "copy_s": floor}


# ------------------------------------------------------------------------------ follow lag


def follow_lag(server: PgServer, seconds: float, rate: float = 100.0) -> list[float]:
    """Lags in seconds, from each row's acknowledgement to its first sighting in a query."""
    import psycopg

    url = server.create_database()
    work = Path(tempfile.mkdtemp(prefix="mantis-lag-", dir="/tmp"))
    data_dir = work / "data"
    data_dir.mkdir()
    acked: dict[str, float] = {}
    seen: dict[str, float] = {}
    done = threading.Event()
    with running_daemon(work / "d.sock", data_dir) as daemon:
        shipper = subprocess.Popen(
            [str(MANTIS), "runs", "ship", "--to", url, "--data-dir", str(data_dir), "--follow"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def watch() -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                while not done.is_set():
                    try:
                        found = conn.execute("SELECT run_id FROM mantis.runs").fetchall()
                    except psycopg.errors.UndefinedTable:
                        found = []
                    now = time.perf_counter()
                    for (run_id,) in found:
                        seen.setdefault(run_id, now)
                    time.sleep(0.002)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            started = time.perf_counter()
            sent = 0
            while time.perf_counter() - started < seconds:
                row = make_row()
                assert daemon.send_rows([row]) == [{"ok": True}]
                acked[row["run_id"]] = time.perf_counter()
                sent += 1
                pause = started + sent / rate - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
            deadline = time.perf_counter() + 30
            while len(seen.keys() & acked.keys()) < len(acked) and time.perf_counter() < deadline:
                time.sleep(0.05)
        finally:
            done.set()
            watcher.join(10)
            shipper.terminate()
            shipper.wait(30)
    shutil.rmtree(work, ignore_errors=True)
    assert acked.keys() <= seen.keys(), f"{len(acked.keys() - seen.keys())} rows never arrived"
    return [seen[run_id] - at for run_id, at in acked.items()]


# ------------------------------------------------------------------------------ stats --db


def stats_query(server: PgServer, rows: int, repeat: int) -> dict[str, Any]:
    import psycopg

    data_dir = dataset(f"ship-one-workflow-{rows}", rows, 1)
    (data_dir / "source.json").unlink(missing_ok=True)
    url = server.create_database()
    ship(url, data_dir)
    workflow = workflow_ids(1)[0]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE mantis.runs")  # type: ignore[arg-type]
        (runs,) = conn.execute(
            "SELECT count(*) FROM mantis.runs WHERE status = 'succeeded'"
        ).fetchone() or (0,)

    def mantis(*where: str) -> dict[str, Any]:
        proc = subprocess.run(
            [str(MANTIS), "runs", "stats", workflow, "--last", str(runs), "--json", *where],
            check=True,
            capture_output=True,
            text=True,
        )
        document: dict[str, Any] = json.loads(proc.stdout)
        return document

    files, database = mantis("--data-dir", str(data_dir)), mantis("--db", url)
    assert files["run_count"] == database["run_count"] == runs
    worst = max(
        abs(files["percentiles"][b][p] - database["percentiles"][b][p])
        for b in files["percentiles"]
        for p in ("p50", "p95", "p99")
    )
    result: dict[str, Any] = {"runs": runs, "max_difference_s": worst}
    result["files_s"] = best_of(repeat, lambda: mantis("--data-dir", str(data_dir)))
    result["db_s"] = best_of(repeat, lambda: mantis("--db", url))
    result |= bucket_layouts(url, repeat)
    return result


def bucket_layouts(url: str, repeat: int) -> dict[str, float]:
    """p50/p95/p99 of the nine buckets and the total, as columns and as JSONB members."""
    import psycopg

    fractions = "ARRAY[0.5, 0.95, 0.99]"
    with psycopg.connect(url, autocommit=True) as conn:
        members = ", ".join(f"'{b}', {b}" for b in BUCKETS)
        conn.execute(
            "CREATE TABLE bench_jsonb AS SELECT workflow_id, status, finished_at, total_time_s, "  # type: ignore[arg-type]
            f"jsonb_build_object({members}) AS buckets FROM mantis.runs"
        )
        conn.execute("VACUUM ANALYZE bench_jsonb")  # type: ignore[arg-type]
        as_columns = ", ".join(
            f"percentile_cont({fractions}) WITHIN GROUP (ORDER BY {b})" for b in (*BUCKETS, TOTAL)
        )
        as_jsonb = (
            ", ".join(
                f"percentile_cont({fractions}) WITHIN GROUP (ORDER BY (buckets ->> '{b}')::float8)"
                for b in BUCKETS
            )
            + f", percentile_cont({fractions}) WITHIN GROUP (ORDER BY total_time_s)"
        )
        columns_sql = f"SELECT {as_columns} FROM mantis.runs WHERE status = 'succeeded'"
        jsonb_sql = f"SELECT {as_jsonb} FROM bench_jsonb WHERE status = 'succeeded'"
        assert conn.execute(columns_sql).fetchone() == conn.execute(jsonb_sql).fetchone()  # type: ignore[arg-type]
        return {
            "columns_sql_s": best_of(repeat, lambda: conn.execute(columns_sql).fetchone()),  # type: ignore[arg-type]
            "jsonb_sql_s": best_of(repeat, lambda: conn.execute(jsonb_sql).fetchone()),  # type: ignore[arg-type]
        }


# ------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--lag-seconds", type=float, default=30.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"PostgreSQL: {PgServer(Path('/nonexistent')).bin}, fsync on; {os.cpu_count()} CPUs")
    with running_postgres(durable=True) as server:
        up = catch_up(server, args.rows)
        print(f"\nCatch-up, {up['rows']:,} rows (50 workflows, 10 months) into an empty database:")
        print(f"  {'':34}{'seconds':>10}{'rows/s':>12}{'vs COPY':>10}")
        rivals = (("plain COPY of the same rows", "copy_s"), ("mantis runs ship", "ship_s"))
        for name, key in rivals:
            seconds = up[key]
            print(
                f"  {name:34}{seconds:>10.1f}{up['rows'] / seconds:>12,.0f}"
                f"{seconds / up['copy_s']:>9.2f}x"
            )
        lags = sorted(follow_lag(server, args.lag_seconds))
        p50, p99 = statistics.median(lags), lags[int(0.99 * (len(lags) - 1))]
        print(f"\n--follow lag at 100 rows/s ({len(lags)} rows), from the daemon's ack to a query:")
        print(f"  p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms")
        query = stats_query(server, args.rows, args.repeat)
        print(
            f"\nmantis runs stats --last {query['runs']:,} --json, one workflow "
            f"(best of {args.repeat}; percentiles agree to {query['max_difference_s']:.1e} s):"
        )
        print(f"  from the files (--data-dir)   {query['files_s']:>8.2f} s")
        print(f"  from PostgreSQL (--db)        {query['db_s']:>8.2f} s")
        print("\nBucket storage, the same ten percentile_cont over those rows, in SQL:")
        print(f"  one column per bucket          {query['columns_sql_s']:>8.2f} s")
        print(f"  JSONB members                  {query['jsonb_sql_s']:>8.2f} s")


if __name__ == "__main__":
    main()
