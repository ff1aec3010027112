"""`--db`: stats, compare, trend and list answered from PostgreSQL, the same as from files
(`tests/test_analysis_db.py`: the same for `--by`, `--exemplars`, cost, `slowest`, csv, report).

One parity suite: three pods' data dirs are shipped into one database; the file side is one
data dir holding the same rows (every pod's lines, each month in `finished_at` order, which
is the order a database's "last N" follows). Every command must print the same thing from
both (JSON numbers to 1e-9 relative: PostgreSQL's `percentile_cont` may differ from the
files' arithmetic in the last bit), and `--source` must answer as that pod's own data dir.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from mantisd.cli.common import EXIT_UNREADABLE
from mantisd.source_id import read_source
from mantisd.stats.query import StatsQuery, select
from tests.fleet import month_lines, ship
from tests.parity import (
    CUSTOM,
    WF,
    WF2,
    assert_answers_as_files,
    assert_same,
    custom_lines,
    generate_pods,
    invoke,
    merge,
)
from tests.pg import PgServer
from tests.rows import utc
from tests.stats_data import line, write_shard


@pytest.fixture(scope="module")
def fleet(
    pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, dict[str, Path], Path]:
    """(database URL, each pod's data dir, the merged data dir)."""
    url = pg_server.create_database()
    pods = generate_pods(tmp_path_factory, rows=4000)
    write_shard(pods["pod-c"], "2026-11", custom_lines())
    for name, pod in pods.items():
        result = ship(url, pod, "--label", name)
        assert result.returncode == 0, result.stderr
    return url, pods, merge(tmp_path_factory.mktemp("merged"), list(pods.values()))


PARITY = [
    ["stats", WF],
    ["stats", WF, "--json"],
    ["stats", WF, "--last", "2500", "--json"],
    ["stats", WF, "--last", "100000", "--status", ""],
    ["stats", WF2, "--status", "failed", "--last", "30"],
    ["stats", WF, "--since", "2026-10-15", "--until", "2026-10-20", "--last", "100000"],
    ["stats", WF, "--bucket", "settle", "--bucket", "total_time_s", "--json"],
    ["stats", CUSTOM, "--last", "25"],
    ["stats", CUSTOM, "--bucket", "warmup", "--json"],
    ["stats", CUSTOM, "--bucket", "nonesuch"],
    ["stats", "default__nobody-v1", "--json"],
    ["compare", WF, "--since", "2026-10-02", "--until", "2026-11-01"],
    ["compare", WF, "--since", "2026-10-18", "--until", "2026-11-01", "--json"],
    ["compare", WF, "--since", "2026-10-18", "--until", "2026-11-01", "--fail-on-regression"],
    ["compare", WF2, "--since", "2026-10-02", "--until", "2026-11-01", "--last", "200"],
    ["trend", WF, "--bucket", "settle", "--until", "2026-11-01"],
    ["trend", WF, "--every", "1d", "--since", "2026-10-14", "--until", "2026-10-22", "--json"],
    ["trend", WF2, "--every", "1mo", "--since", "2026-09-01", "--until", "2026-12-01"],
    [
        "trend",
        CUSTOM,
        "--bucket",
        "warmup",
        "--every",
        "1d",
        "--since",
        "2026-11-01",
        "--until",
        "2026-11-04",
    ],
    ["list", "--json"],
    ["list", "--since", "2026-10-20"],
]


@pytest.mark.parametrize("args", PARITY, ids=[" ".join(a) for a in PARITY])
def test_the_database_answers_as_the_files_do(
    fleet: tuple[str, dict[str, Path], Path], args: list[str]
) -> None:
    url, _, merged = fleet
    assert_answers_as_files(args, merged, "--db", url)


PER_SOURCE = [
    ["stats", WF, "--json"],
    ["compare", WF, "--since", "2026-10-18", "--until", "2026-11-01", "--json"],
    ["trend", WF, "--bucket", "settle", "--until", "2026-11-01", "--json"],
    ["list", "--json"],
]


@pytest.mark.parametrize("args", PER_SOURCE, ids=[" ".join(a) for a in PER_SOURCE])
@pytest.mark.parametrize("by", ["label", "source_id"])
def test_a_source_answers_as_its_own_data_dir(
    fleet: tuple[str, dict[str, Path], Path], args: list[str], by: str
) -> None:
    url, pods, _ = fleet
    identity = read_source(pods["pod-b"])
    assert identity is not None
    name = "pod-b" if by == "label" else str(identity.source_id)
    files = invoke(*args, "--data-dir", str(pods["pod-b"]))
    assert_same(files, invoke(*args, "--db", url, "--source", name))


def test_several_sources_answer_as_their_logs_together(
    fleet: tuple[str, dict[str, Path], Path], tmp_path: Path
) -> None:
    url, pods, _ = fleet
    both = merge(tmp_path / "a+c", [pods["pod-a"], pods["pod-c"]])
    args = ["compare", WF, "--since", "2026-10-02", "--until", "2026-11-01", "--json"]
    files = invoke(*args, "--data-dir", str(both))
    assert_same(files, invoke(*args, "--db", url, "--source", "pod-a", "--source", "pod-c"))


def test_stats_percentiles_are_computed_by_postgresql(
    fleet: tuple[str, dict[str, Path], Path],
) -> None:
    """The engine answers with percentiles, not values: no value crosses the wire."""
    from mantisd.stats.source_postgres import PostgresSource

    url, _, merged = fleet
    query = StatsQuery(WF, last=3000)
    source = PostgresSource(url)
    try:
        answer = source.select(query, percentiles=True)
    finally:
        source.close()
    assert answer.sorted_runs == {} and answer.run_count == 3000
    expected = select(merged, query)
    assert set(answer.percentiles) == set(expected.sorted_runs)
    for bucket, values in answer.percentiles.items():
        assert answer.count(bucket) == expected.count(bucket)
        from mantisd.stats.percentiles import percentiles_of_runs

        wanted = percentiles_of_runs(expected.sorted_runs[bucket])
        assert all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(values, wanted, strict=True))


def test_last_n_in_a_database_is_the_newest_by_finished_at(pg_url: str, data_dir: Path) -> None:
    """There is no log order across pods: the database's last N are the newest finished."""
    early, late = (
        dt.datetime(2026, 10, 5, 10, tzinfo=dt.UTC),
        dt.datetime(2026, 10, 5, 11, tzinfo=dt.UTC),
    )
    newest = line(finished_at=utc(late), total_time_s=111.0, workflow_id=WF)
    logged_last = line(finished_at=utc(early), total_time_s=222.0, workflow_id=WF)
    write_shard(data_dir, "2026-10", [newest, logged_last])  # a late arrival, logged after
    assert ship(pg_url, data_dir).returncode == 0
    files = json.loads(
        invoke("stats", WF, "--last", "1", "--json", "--data-dir", str(data_dir)).stdout
    )
    database = json.loads(invoke("stats", WF, "--last", "1", "--json", "--db", pg_url).stdout)
    assert files["percentiles"]["total_time_s"]["p50"] == 222.0  # the log's last line
    assert database["percentiles"]["total_time_s"]["p50"] == 111.0  # the newest finished_at


# --- bad input --------------------------------------------------------------------------------


def test_an_unknown_source_is_a_usage_error_naming_the_known_ones(
    fleet: tuple[str, dict[str, Path], Path],
) -> None:
    url, _, _ = fleet
    result = invoke("stats", WF, "--db", url, "--source", "pod-z")
    assert result.exit_code == 2
    assert "no source 'pod-z'" in result.stderr and "pod-a (" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "pod-a"], "--source selects pods in a database: it needs --db"),
        (["--db", "postgresql:///x", "--data-dir", "/tmp"], "--data-dir and --db"),
    ],
)
def test_source_and_db_flags_that_do_not_fit_are_usage_errors(
    args: list[str], message: str
) -> None:
    result = invoke("stats", WF, *args)
    assert result.exit_code == 2 and message in result.stderr


def test_a_database_without_the_schema_says_how_to_fill_it(pg_url: str) -> None:
    result = invoke("stats", WF, "--db", pg_url)
    assert result.exit_code == 1 and "no mantis tables in this database yet" in result.stderr


def test_an_unreachable_database_is_exit_4_without_the_password(short_tmp: Path) -> None:
    result = invoke("trend", WF, "--db", f"postgresql://u:hunter2@/fleet?host={short_tmp}")
    assert result.exit_code == EXIT_UNREADABLE
    assert f"cannot query database fleet on {short_tmp}" in result.stderr
    assert "hunter2" not in result.output


def test_no_runs_names_the_database(fleet: tuple[str, dict[str, Path], Path]) -> None:
    url, _, _ = fleet
    result = invoke("stats", WF, "--db", url, "--since", "2027-01-01")
    assert result.exit_code == 1
    assert "no succeeded runs of" in result.stderr and "in database t" in result.stderr


def test_rows_shipped_later_are_seen_by_the_next_query(pg_url: str, data_dir: Path) -> None:
    write_shard(data_dir, "2026-10", month_lines("2026-10", 3, workflow_id=WF))
    assert ship(pg_url, data_dir).returncode == 0
    assert json.loads(invoke("stats", WF, "--json", "--db", pg_url).stdout)["run_count"] == 3
    write_shard(data_dir, "2026-10", month_lines("2026-10", 2, workflow_id=WF))
    assert ship(pg_url, data_dir).returncode == 0
    assert json.loads(invoke("stats", WF, "--json", "--db", pg_url).stdout)["run_count"] == 5


def test_the_command_line_reads_the_database_in_a_real_process(
    fleet: tuple[str, dict[str, Path], Path],
) -> None:
    url, _, merged = fleet
    mantis_bin = Path(sys.executable).parent / "mantis"
    args = ["runs", "compare", WF, "--since", "2026-10-18", "--until", "2026-11-01"]
    files = subprocess.run(
        [mantis_bin, *args, "--data-dir", merged], capture_output=True, text=True
    )
    database = subprocess.run([mantis_bin, *args, "--db", url], capture_output=True, text=True)
    assert (database.returncode, database.stdout) == (0, files.stdout)
    assert "regressed" in database.stdout  # pod-b's settle, seen across the fleet


@pytest.mark.parametrize(
    "args",
    [["runs", "stats", WF, "--db", "postgresql:///x"], ["runs", "ship", "--to", "postgresql:///x"]],
)
def test_without_psycopg_the_error_says_what_to_install(args: list[str], data_dir: Path) -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None\n"  # as if the extra were not installed
        "from mantisd.cli import mantis\n"
        f"mantis({[*args, *(['--data-dir', str(data_dir)] if 'ship' in args else [])]!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "PostgreSQL support needs psycopg 3: pip install 'mantisd[postgres]'" in proc.stderr
