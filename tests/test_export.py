"""`mantis runs export --parquet DIR` and `--parquet`: the dataset, written atomically and
incrementally, one row per run_id, read back by DuckDB (real files, a real DuckDB)."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner, Result

from mantisd.archive import archive_log
from mantisd.cli import mantis
from mantisd.export.dataset import COLUMNS, FINGERPRINT_KEY
from mantisd.sample import generate
from mantisd.source_id import ensure_source
from tests.fleet import month_line, month_lines
from tests.parity import close
from tests.stats_data import line, write_shard

MANTIS = Path(sys.executable).with_name("mantis")
WF = "default__marketplace-listings-v1"


def invoke(*args: str) -> Result:
    return CliRunner(env={"MANTIS_DATA_DIR": None}).invoke(mantis, ["runs", *args])


def export(target: Path, *dirs: Path, extra: tuple[str, ...] = ()) -> Result:
    args = [arg for d in dirs for arg in ("--data-dir", str(d))]
    result = invoke("export", "--parquet", str(target), *args, *extra)
    assert result.exit_code == 0, result.output
    return result


def files(target: Path) -> dict[str, tuple[int, int]]:
    """Every visible data file: relative path -> (inode, mtime_ns)."""
    return {
        str(p.relative_to(target)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in target.glob("month=*/*.parquet")
    }


def query(sql: str) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = duckdb.connect().execute(sql).fetchall()
    return rows


@pytest.fixture
def pod(data_dir: Path) -> Path:
    write_shard(data_dir, "2026-09", month_lines("2026-09", 50))
    write_shard(data_dir, "2026-10", month_lines("2026-10", 40))
    return data_dir


def test_one_file_per_source_and_month_with_the_declared_types(pod: Path, tmp_path: Path) -> None:
    target = tmp_path / "pq"
    result = export(target, pod)
    source_id = str(ensure_source(pod).source_id)
    assert sorted(files(target)) == [
        f"month=2026-09/{source_id}.parquet",
        f"month=2026-10/{source_id}.parquet",
    ]
    assert f"wrote month=2026-09/{source_id}.parquet" in result.stdout
    described = query(
        f"DESCRIBE SELECT * FROM read_parquet('{target}/month=2026-09/*.parquet', "
        "hive_partitioning = false)"
    )
    assert [(name, kind) for name, kind, *_ in described] == [
        (name, kind.replace("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE")) for name, kind in COLUMNS
    ]
    assert query(
        f"SELECT count(*), count(DISTINCT run_id), min(source_id) FROM "
        f"read_parquet('{target}/month=*/*.parquet')"
    ) == [(90, 90, source_id)]


def test_values_and_odd_buckets_survive_the_trip(data_dir: Path, tmp_path: Path) -> None:
    raw = line(
        workflow_id=WF,
        finished_at="2026-09-03T04:05:06.123456Z",
        wall_time_breakdown={"think": 1.5, "warmup": 2.25},
        cost_breakdown={"usd": 0.5, "note": "spot"},
        error={"kind": "timeout"},
        model=None,
    )
    write_shard(data_dir, "2026-09", [raw])
    target = tmp_path / "pq"
    export(target, data_dir)
    (row,) = query(
        "SELECT epoch_us(finished_at), think, settle, other_buckets, cost_breakdown, error, "
        f"model FROM read_parquet('{target}/month=*/*.parquet')"
    )
    stored = json.loads(raw)
    assert row[0] == 1788408306123456 and row[1:3] == (1.5, None)
    assert row[3] == {"warmup": 2.25}
    assert json.loads(str(row[4])) == stored["cost_breakdown"]
    assert json.loads(str(row[5])) == {"kind": "timeout"} and row[6] is None


def test_an_unchanged_month_is_not_rewritten_a_changed_one_is(pod: Path, tmp_path: Path) -> None:
    target = tmp_path / "pq"
    export(target, pod)
    first = files(target)
    time.sleep(0.01)
    second = export(target, pod)
    assert files(target) == first and "0 file(s) written, 2 unchanged" in second.stdout
    write_shard(pod, "2026-10", [month_line("2026-10")])  # the current month grows
    export(target, pod)
    now = files(target)
    september, october = sorted(now)
    assert now[september] == first[september] and now[october] != first[october]
    assert query(f"SELECT count(*) FROM read_parquet('{target}/month=*/*.parquet')") == [(91,)]
    stamp = query(
        f"SELECT value::VARCHAR FROM parquet_kv_metadata('{target}/{october}') "
        f"WHERE key::VARCHAR = '{FINGERPRINT_KEY}'"
    )
    assert len(stamp) == 1 and len(str(stamp[0][0])) == 64


def test_archived_months_are_exported_like_plain_ones(pod: Path, tmp_path: Path) -> None:
    export(tmp_path / "plain", pod)
    list(archive_log(pod, keep_months=1, now=dt.datetime(2026, 12, 1, tzinfo=dt.UTC)))
    export(tmp_path / "archived", pod)
    sql = (
        "SELECT * EXCLUDE (source_label) FROM read_parquet('{}/month=*/*.parquet') ORDER BY run_id"
    )
    assert query(sql.format(tmp_path / "plain")) == query(sql.format(tmp_path / "archived"))


def test_a_run_in_two_pods_is_exported_once(tmp_path: Path) -> None:
    shared = month_line("2026-09")
    a, b = tmp_path / "a", tmp_path / "b"
    write_shard(a, "2026-09", [shared, month_line("2026-09")])
    write_shard(b, "2026-09", [month_line("2026-09"), shared])  # same shard name, by content
    target = tmp_path / "pq"
    result = export(target, a, b)
    assert "1 already exported from another source" in result.stdout
    assert query(
        f"SELECT count(*), count(DISTINCT run_id) FROM read_parquet('{target}/month=*/*.parquet')"
    ) == [(3, 3)]
    export(target, a, b)  # again, unchanged: still once
    assert query(f"SELECT count(*) FROM read_parquet('{target}/month=*/*.parquet')") == [(3,)]


def test_copies_of_one_pod_make_one_source(pod: Path, tmp_path: Path) -> None:
    ensure_source(pod, label="pod-a")
    copy = tmp_path / "copy"
    shutil.copytree(pod, copy)
    write_shard(copy, "2026-10", [month_line("2026-10")])  # the copy is a bit newer
    target = tmp_path / "pq"
    export(target, pod, copy)
    assert len(files(target)) == 2
    assert query(
        f"SELECT count(*), min(source_label) FROM read_parquet('{target}/month=*/*.parquet')"
    ) == [(91, "pod-a")]


def test_the_window_exports_only_its_runs(pod: Path, tmp_path: Path) -> None:
    target = tmp_path / "pq"
    export(target, pod, extra=("--since", "2026-10-01"))
    assert [p.split("/")[0] for p in files(target)] == ["month=2026-10"]


@pytest.mark.slow
def test_an_export_killed_mid_way_leaves_no_half_file_visible(tmp_path: Path) -> None:
    """Kill -9 at random moments: every visible data file is whole (DuckDB reads it), the
    leftovers are hidden, and the next export finishes the dataset and removes them."""
    pod = tmp_path / "pod"
    generate(pod, rows=60_000, months=6, workflows=5, seed=5, end=dt.datetime(2026, 11, 1))
    target = tmp_path / "pq"
    rng = random.Random(7)
    command = [MANTIS, "runs", "export", "--parquet", target, "--data-dir", pod]
    killed = 0
    for _ in range(6):
        shutil.rmtree(target, ignore_errors=True)
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        published = rng.randint(0, 5)  # kill once this many months are done, and a bit more
        while proc.poll() is None and len(list(target.glob("month=*/*.parquet"))) < published:
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.05))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        proc.communicate()
        for path in target.glob("month=*/*"):
            assert path.suffix == ".parquet", path
            query(f"SELECT count(*) FROM read_parquet('{path}')")  # whole, or it raises
        visible = [
            p
            for p in target.rglob("*")
            if not any(part.startswith(".") for part in p.relative_to(target).parts)
        ]
        assert all(p.is_dir() or p.suffix == ".parquet" for p in visible), visible
    assert killed >= 3
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in target.iterdir() if p.name.startswith(".export-")] == []
    assert query(f"SELECT count(*) FROM read_parquet('{target}/month=*/*.parquet')") == [(60_000,)]


# --- --parquet, bad input ----------------------------------------------------------------------


def test_an_empty_dataset_has_no_runs(tmp_path: Path) -> None:
    (tmp_path / "pq").mkdir()
    result = invoke("stats", WF, "--parquet", str(tmp_path / "pq"))
    assert result.exit_code == 1
    assert f"no succeeded runs of {WF} in Parquet dataset {tmp_path / 'pq'}" in result.stderr


def test_a_missing_dataset_is_an_error(tmp_path: Path) -> None:
    result = invoke("list", "--parquet", str(tmp_path / "nowhere"))
    assert result.exit_code == 1 and "does not exist (see --parquet)" in result.stderr


@pytest.mark.parametrize("other", [["--data-dir", "/tmp"], ["--db", "postgresql:///x"]])
def test_parquet_and_another_place_is_a_usage_error(other: list[str], tmp_path: Path) -> None:
    result = invoke("stats", WF, "--parquet", str(tmp_path), *other)
    assert result.exit_code == 2 and "--parquet names a place to read" in result.stderr


@pytest.mark.parametrize("command", ["stats", "compare", "trend", "slowest", "report", "list"])
def test_source_with_parquet_is_a_usage_error(command: str, pod: Path, tmp_path: Path) -> None:
    """--source picks pods in a database; over a dataset it would answer with every pod's runs."""
    export(tmp_path / "pq", pod)
    args = [] if command == "list" else [WF]
    if command == "report":
        args += ["--output", str(tmp_path / "report.html")]
    result = invoke(command, *args, "--parquet", str(tmp_path / "pq"), "--source", "somepod")
    assert result.exit_code == 2, result.output
    assert "--source selects pods in a database: it needs --db" in result.stderr


def test_a_bad_line_beside_rows_with_extra_keys_is_skipped_and_counted_once(
    data_dir: Path, tmp_path: Path
) -> None:
    good = [month_line("2026-10", region="eu"), month_line("2026-10")]
    write_shard(data_dir, "2026-10", [good[0], b'{"not": "a row"}\n', good[1]])
    result = invoke("export", "--parquet", str(tmp_path / "pq"), "--data-dir", str(data_dir))
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable line" in result.stderr, result.stderr
    found = query(f"SELECT extra_keys FROM read_parquet('{tmp_path}/pq/month=*/*.parquet')")
    assert sorted(map(str, found)) == sorted(map(str, [({"region": '"eu"'},), (None,)]))


def test_an_extra_number_beyond_a_double_is_exported_as_written(
    data_dir: Path, tmp_path: Path
) -> None:
    """mantis never stores one; a hand-written line may (the reader takes the row: extra keys
    are not its business). The export must neither fail nor hang on it."""
    lines = [month_line("2026-10", note="x") for _ in range(2)]
    for number in (b"1e5000", b"1e100000000"):
        lines.append(month_line("2026-10")[:-2] + b',"note":' + number + b"}\n")
    write_shard(data_dir, "2026-10", lines)
    export(tmp_path / "pq", data_dir)
    found = query(
        f"SELECT extra_keys['note'] FROM read_parquet('{tmp_path}/pq/month=*/*.parquet') "
        "ORDER BY finished_at"
    )
    assert [row[0] for row in found] == ['"x"', '"x"', "1e5000", "1e100000000"]
    grouped = invoke("stats", WF, "--by", "note", "--json", "--parquet", str(tmp_path / "pq"))
    files = invoke("stats", WF, "--by", "note", "--json", "--data-dir", str(data_dir))
    assert grouped.exit_code == 0 and files.exit_code == 0, grouped.output + files.output
    assert close(json.loads(grouped.stdout), json.loads(files.stdout)), grouped.stdout


def test_extra_top_level_keys_are_kept_as_canonical_json_text(
    data_dir: Path, tmp_path: Path
) -> None:
    """Keys the page does not define: name -> canonical JSON text (keys sorted, numbers by
    value), the text `--by` groups by; NULL for a row without any."""
    values: list[object] = ["eu", 3, 1e16, {"zone": "b", "a": 2.50}, None, [1, "x"]]
    lines = [
        month_line("2026-10", region=v, **({"pod-class": "gpu"} if i else {}))
        for i, v in enumerate(values)
    ]
    lines.append(month_line("2026-10"))  # no extra key at all
    write_shard(data_dir, "2026-10", lines)
    export(tmp_path / "pq", data_dir)
    found = query(
        f"SELECT extra_keys FROM read_parquet('{tmp_path}/pq/month=*/*.parquet') "
        "ORDER BY finished_at"
    )
    assert [row[0] for row in found] == [
        {"region": '"eu"'},
        {"pod-class": '"gpu"', "region": "3"},
        {"pod-class": '"gpu"', "region": "10000000000000000"},
        {"pod-class": '"gpu"', "region": '{"a":2.5,"zone":"b"}'},
        {"pod-class": '"gpu"', "region": "null"},
        {"pod-class": '"gpu"', "region": '[1,"x"]'},
        None,
    ]
    grouped = invoke("stats", WF, "--by", "region", "--json", "--parquet", str(tmp_path / "pq"))
    files = invoke("stats", WF, "--by", "region", "--json", "--data-dir", str(data_dir))
    assert grouped.exit_code == 0, grouped.output
    assert close(json.loads(grouped.stdout), json.loads(files.stdout)), grouped.stdout


@pytest.mark.parametrize(
    "args",
    [["runs", "stats", WF, "--parquet", "{tmp}"], ["runs", "export", "--parquet", "{tmp}/pq"]],
)
def test_without_duckdb_the_error_says_what_to_install(args: list[str], pod: Path) -> None:
    argv = [a.format(tmp=pod) for a in args] + (
        ["--data-dir", str(pod)] if "export" in args else []
    )
    code = (
        "import sys; sys.modules['duckdb'] = None\n"  # as if the extra were not installed
        "from mantisd.cli import mantis\n"
        f"mantis({argv!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert "Parquet export and queries need DuckDB: pip install 'mantisd[duckdb]'" in proc.stderr


def test_duckdb_never_draws_its_progress_bar_into_the_answer(pod: Path, tmp_path: Path) -> None:
    """DuckDB draws a progress bar on stdout for queries longer than 2 s: not into ours."""
    from mantisd.stats.source_parquet import ParquetSource

    export(tmp_path / "pq", pod)
    source = ParquetSource(tmp_path / "pq")
    try:
        setting = source.conn.execute("SELECT current_setting('enable_progress_bar')")
        assert setting.fetchall() == [(False,)]
    finally:
        source.close()
