"""Several data dirs, archived months and Parquet answer as the files do: the parity suite.

The same three pods, the same rows and the same commands as the PostgreSQL parity suite
(`tests.test_stats_db.PARITY`): the reference is one data dir holding every pod's lines,
each month in `finished_at` order (so that its log order is the "newest by finished_at" the
other sources follow). Each source must print the same thing (JSON numbers to 1e-9
relative, as engines may differ from the files' arithmetic in the last bit):

- the three pods' data dirs given as three `--data-dir`;
- the reference data dir with every month archived (`mantis runs archive`): the log order;
- the three pods' data dirs, archived;
- the Parquet dataset exported from the three pods (`--parquet`, DuckDB).

The docs' DuckDB and ClickHouse (chdb) queries run on the same dataset and must give the
numbers `stats` gives.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from mantisd.archive import archive_log
from mantisd.cli import mantis
from mantisd.paths import list_log_files
from tests.parity import (
    WF,
    assert_answers_as_files,
    assert_same,
    custom_lines,
    generate_pods,
    merge,
)
from tests.stats_data import write_shard
from tests.test_analysis_db import ANALYSIS, analysis_pods
from tests.test_analysis_db import PARITY as ANALYSIS_PARITY
from tests.test_stats_db import PARITY

DOCS = Path(__file__).resolve().parents[1] / "docs" / "fleet-files.md"
#: After every month of the data (2026-09 to 2026-11): all of them are closed.
LATER = dt.datetime(2027, 1, 15, tzinfo=dt.UTC)


def archived(source: Path, target: Path) -> Path:
    """A copy of `source` with every month compressed."""
    shutil.copytree(source, target)
    results = list(archive_log(target, keep_months=1, now=LATER))
    assert results and {r.action for r in results} == {"archived"}
    assert all(f.compressed for f in list_log_files(target))
    return target


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each pod's data dir, the merged reference, and every other source's flags."""
    pods = generate_pods(tmp_path_factory, rows=4000)
    write_shard(pods["pod-c"], "2026-11", custom_lines())
    merged = merge(tmp_path_factory.mktemp("merged"), list(pods.values()))
    base = tmp_path_factory.mktemp("archived")
    archived_pods = [archived(pod, base / name) for name, pod in pods.items()]
    dataset = tmp_path_factory.mktemp("parquet")
    export = invoke("export", "--parquet", str(dataset), *dirs(pods.values()))
    assert export.exit_code == 0, export.output
    return {
        "pods": pods,
        "merged": merged,
        "dataset": dataset,
        "sources": {
            "several dirs": dirs(pods.values()),
            "archived": ["--data-dir", str(archived(merged, base / "merged"))],
            "several archived dirs": dirs(archived_pods),
            "parquet": ["--parquet", str(dataset)],
        },
    }


def dirs(paths: Any) -> list[str]:
    return [arg for path in paths for arg in ("--data-dir", str(path))]


def invoke(*args: str) -> Result:
    return CliRunner(env={"MANTIS_DATA_DIR": None}).invoke(mantis, ["runs", *args])


SOURCES = ["several dirs", "archived", "several archived dirs", "parquet"]
#: Beyond the PostgreSQL suite's: the commands that list the selected runs themselves.
RUN_LISTS = [
    ["stats", WF, "--exemplars", "--last", "500"],
    ["stats", WF, "--format", "csv", "--last", "50"],
]


@pytest.mark.parametrize("args", PARITY + RUN_LISTS, ids=[" ".join(a) for a in PARITY + RUN_LISTS])
@pytest.mark.parametrize("source", SOURCES)
def test_every_source_answers_as_the_files_do(
    fleet: dict[str, Any], source: str, args: list[str]
) -> None:
    assert_answers_as_files(args, fleet["merged"], *fleet["sources"][source])


@pytest.mark.parametrize("source", ["several dirs", "several archived dirs"])
def test_grouping_across_dirs_answers_as_the_merged_log(fleet: dict[str, Any], source: str) -> None:
    args = ["stats", WF, "--by", "model", "--last", "500", "--json"]
    files = invoke(*args, "--data-dir", str(fleet["merged"]))
    assert files.exit_code == 0, files.output
    assert_same(files, invoke(*args, *fleet["sources"][source]))


# --- the analysis features (issue 14): the PostgreSQL suite's cases, on the same rows ---------

#: The sources the analysis cases run against (several dirs: see the report of this change).
ANALYSIS_SOURCES = ["parquet"]


@pytest.fixture(scope="module")
def analysis_fleet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The rows of `tests.test_analysis_db`: the merged reference and every other source."""
    pods = analysis_pods(tmp_path_factory, prefix="analysis-")
    dataset = tmp_path_factory.mktemp("analysis-parquet")
    export = invoke("export", "--parquet", str(dataset), *dirs(pods.values()))
    assert export.exit_code == 0, export.output
    return {
        "merged": merge(tmp_path_factory.mktemp("analysis-merged"), list(pods.values())),
        "sources": {"several dirs": dirs(pods.values()), "parquet": ["--parquet", str(dataset)]},
    }


def shift_month(day: str) -> str:
    """The first day of the month after `day`'s (`YYYY-MM-DD`)."""
    year, month = int(day[:4]), int(day[5:7])
    return f"{year + month // 12:04d}-{month % 12 + 1:02d}-01"


def test_a_dataset_exported_before_extra_keys_is_refused_for_them_and_read_for_the_rest(
    analysis_fleet: dict[str, Any], tmp_path: Path
) -> None:
    """Files without the `extra_keys` column (an older export) would put every run under
    `(none)`: grouping by an extra key says to export again; the rest is answered."""
    import duckdb

    dataset = Path(analysis_fleet["sources"]["parquet"][1])
    old = tmp_path / "old"
    shutil.copytree(dataset, old)
    (path, *_) = sorted(old.glob("month=*/*.parquet"))
    conn = duckdb.connect()
    conn.execute(
        f"COPY (SELECT * EXCLUDE (extra_keys) FROM read_parquet('{path}')) TO '{path}.new' "
        "(FORMAT parquet)"
    )
    conn.close()
    Path(f"{path}.new").replace(path)
    grouped = invoke("stats", ANALYSIS, "--by", "region", "--parquet", str(old))
    assert grouped.exit_code == 2, grouped.output
    named = str(path.relative_to(old))
    assert f"--by region: {named} in {old} was exported by a mantis that did not keep" in (
        grouped.stderr
    )
    assert "export those months again" in grouped.stderr
    # A window without that file's month is answered (it may be a month no log holds now).
    later = shift_month(path.parent.name.removeprefix("month=") + "-01")
    window = ["stats", ANALYSIS, "--by", "region", "--since", later, "--json"]
    answer = invoke(*window, "--parquet", str(old))
    assert answer.exit_code == 0 and json.loads(answer.stdout)["groups"], answer.output
    assert_same(invoke(*window, "--parquet", str(dataset)), invoke(*window, "--parquet", str(old)))
    plain = ["stats", ANALYSIS, "--by", "model", "--status", "", "--json"]
    assert_same(invoke(*plain, "--parquet", str(dataset)), invoke(*plain, "--parquet", str(old)))


@pytest.mark.parametrize("args", ANALYSIS_PARITY, ids=[" ".join(a) for a in ANALYSIS_PARITY])
@pytest.mark.parametrize("source", ANALYSIS_SOURCES)
def test_every_source_answers_the_analysis_as_the_files_do(
    analysis_fleet: dict[str, Any], source: str, args: list[str]
) -> None:
    assert_answers_as_files(args, analysis_fleet["merged"], *analysis_fleet["sources"][source])


# --- the docs' queries, on the same dataset ---------------------------------------------------


def docs_query(engine: str) -> str:
    """The SQL block that follows `<!-- query: ENGINE -->` in docs/fleet-files.md."""
    match = re.search(rf"<!-- query: {engine} -->\s*```sql\n(.*?)```", DOCS.read_text(), re.S)
    assert match, f"no {engine} query in {DOCS.name}"
    return match[1]


def expected(fleet: dict[str, Any]) -> dict[str, Any]:
    """What `stats` says for the docs' question: the last 100 succeeded runs of WF."""
    result = invoke("stats", WF, "--last", "100", "--json", "--data-dir", str(fleet["merged"]))
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def assert_numbers(got: dict[str, list[float]], run_count: int, want: dict[str, Any]) -> None:
    assert run_count == want["run_count"]
    assert set(got) == set(want["percentiles"])
    for bucket, values in got.items():
        wanted = [want["percentiles"][bucket][p] for p in ("p50", "p95", "p99")]
        # `stats --json` rounds to the microsecond; the engines give the full double
        assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(values, wanted, strict=True))


def test_the_docs_duckdb_query_gives_the_numbers_stats_gives(fleet: dict[str, Any]) -> None:
    import duckdb

    sql = docs_query("duckdb").replace("/data/mantis-parquet", str(fleet["dataset"]))
    conn = duckdb.connect()
    rows = conn.execute(sql).fetchall()
    names = [d[0] for d in conn.description]
    got = {name: list(value) for name, value in zip(names, rows[0], strict=True) if name != "runs"}
    assert_numbers(got, rows[0][names.index("runs")], expected(fleet))


def test_the_docs_clickhouse_query_gives_the_numbers_stats_gives(fleet: dict[str, Any]) -> None:
    """ClickHouse's own engine, in-process (chdb), on the exported dataset."""
    import chdb

    sql = docs_query("clickhouse").replace("/data/mantis-parquet", str(fleet["dataset"]))
    document = json.loads(str(chdb.query(sql, "JSON")))
    (row,) = document["data"]
    got = {name: [float(v) for v in value] for name, value in row.items() if name != "runs"}
    assert_numbers(got, int(row["runs"]), expected(fleet))


@pytest.mark.parametrize("engine", ["spark", "trino"])
def test_the_docs_other_engines_ask_the_same_question(engine: str) -> None:
    """Spark and Trino are not run here: their queries must at least use their exact type-7
    percentile function over the same selection (no approximate one)."""
    sql = docs_query(engine)
    exact = {"spark": "percentile(", "trino": None}[engine]
    if exact:
        assert exact in sql and "percentile_approx" not in sql
    else:
        assert "approx_percentile" not in sql
    for needle in ("workflow_id = 'default__marketplace-listings-v1'", "'succeeded'", "100"):
        assert needle in sql
    assert re.search(r"ORDER BY finished_at DESC, run_id DESC", sql)
