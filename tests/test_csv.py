"""`--format csv` on `stats`, `compare` and `trend`: the JSON's numbers in one tidy table."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

import pytest

from mantisd.sample import generate, workflow_ids
from mantisd.stats.render_csv import text
from tests.analysis_data import UTC, document, invoke, run, write

WORKFLOW = workflow_ids(3)[0]
WINDOWS = ["--since", "2026-09-15", "--until", "2026-10-01"]


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data_dir = tmp_path_factory.mktemp("csv")
    generate(
        data_dir,
        rows=6000,
        months=2,
        workflows=3,
        seed=11,
        end=dt.datetime(2026, 10, 1, tzinfo=UTC),
        slow_bucket="load",
        slow_factor=1.5,
        slow_since=dt.datetime(2026, 9, 15, tzinfo=UTC),
    )
    return data_dir


def rows(output: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(output)))


def number(cell: str) -> float | None:
    return None if cell == "" else float(cell)


def test_stats_csv_matches_the_json(sample_dir: Path) -> None:
    args = ["--status", "", "--exemplars", "--last", "500"]
    result = invoke("stats", sample_dir, *args, "--format", "csv", workflow=WORKFLOW)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        "workflow_id,run_count,bucket,n,p50,p95,p99,p95_run_id,p99_run_id"
    )
    doc = document(invoke("stats", sample_dir, *args, "--json", workflow=WORKFLOW))
    table = rows(result.stdout)
    assert [r["bucket"] for r in table] == list(doc["percentiles"])
    for r in table:
        assert r["workflow_id"] == WORKFLOW and int(r["run_count"]) == doc["run_count"] == 500
        assert {p: number(r[p]) for p in ("p50", "p95", "p99")} == doc["percentiles"][r["bucket"]]
        assert r["p95_run_id"] == doc["exemplars"][r["bucket"]]["p95"]["run_id"]
        assert int(r["n"]) == 500


def test_grouped_stats_csv_has_a_column_per_field(sample_dir: Path) -> None:
    args = ["--status", "", "--by", "status", "--by", "model", "--bucket", "act"]
    table = rows(invoke("stats", sample_dir, *args, "--format", "csv", workflow=WORKFLOW).stdout)
    doc = document(invoke("stats", sample_dir, *args, "--json", workflow=WORKFLOW))
    assert list(table[0]) == ["workflow_id", "status", "model", "run_count", "bucket", "n"] + [
        "p50",
        "p95",
        "p99",
    ]
    assert [([r["status"], r["model"]], r["bucket"]) for r in table] == [
        (g["key"], bucket) for g in doc["groups"] for bucket in g["percentiles"]
    ]


def test_compare_csv_matches_the_json(sample_dir: Path) -> None:
    result = invoke("compare", sample_dir, *WINDOWS, "--format", "csv", workflow=WORKFLOW)
    assert result.exit_code == 0, result.output
    doc = document(invoke("compare", sample_dir, *WINDOWS, "--json", workflow=WORKFLOW))
    table = rows(result.stdout)
    assert list(table[0]) == [
        "workflow_id",
        "bucket",
        "n_base",
        "n_cur",
        "p50_base",
        "p50_cur",
        "p50_change",
        "p95_base",
        "p95_cur",
        "p95_change",
        "p_value",
        "p_adjusted",
        "verdict",
    ]
    assert len(table) == len(doc["buckets"])
    for r, b in zip(table, doc["buckets"], strict=True):
        assert r["bucket"] == b["bucket"] and r["verdict"] == b["verdict"]
        assert number(r["p50_cur"]) == b["current"]["p50"]
        assert number(r["p50_change"]) == b["p50_change"]
        assert number(r["p_value"]) == b["p_value"] and number(r["p_adjusted"]) == b["p_adjusted"]
    assert table[0]["bucket"] == "load" and table[0]["verdict"] == "regressed"


def test_trend_csv_matches_the_json(sample_dir: Path) -> None:
    args = ["--since", "2026-09-01", "--until", "2026-10-01", "--every", "1w", "--bucket", "load"]
    table = rows(invoke("trend", sample_dir, *args, "--format", "csv", workflow=WORKFLOW).stdout)
    doc = document(invoke("trend", sample_dir, *args, "--json", workflow=WORKFLOW))
    assert [(r["start"], int(r["n"]), number(r["p50"]), r["partial"] == "true") for r in table] == [
        (p["start"], p["n"], p["p50"], p["partial"]) for p in doc["periods"]
    ]
    assert {r["bucket"] for r in table} == {"load"}


def test_formula_like_text_is_neutralised(data_dir: Path) -> None:
    write(data_dir, [run(1, model='=HYPERLINK("http://x")'), run(2, model="-2+3"), run(3)])
    table = rows(invoke("stats", data_dir, "--by", "model", "--format", "csv").stdout)
    assert {r["model"] for r in table} == {
        '\'=HYPERLINK("http://x")',
        "'-2+3",
        "Hcompany/Holo3-35B-A3B",
    }
    assert text("+1") == "'+1" and text("@a") == "'@a" and text("plain") == "plain"


ESC = chr(27)


@pytest.mark.parametrize(
    "command",
    [
        ["stats", "--by", "model", "--exemplars", "--status", ""],
        ["compare", "--by", "model", "--since", "2026-10-01T00:03:00Z", "--until", "2026-10-02"],
        ["trend", "--bucket", f"t{ESC}[2J", "--since", "2026-10-01", "--until", "2026-10-02"],
    ],
)
def test_control_characters_in_text_cells_are_spelled(data_dir: Path, command: list[str]) -> None:
    """Workflow ids, bucket names, group keys and run ids reach the file escaped: `cat` on it
    drives no terminal, and a bidi override hides no text."""
    workflow = f"wf-{ESC}]0;owned{chr(7)}"
    lines = [
        run(
            k,
            run_id=f"run{ESC}[1m-{k}",
            workflow_id=workflow,
            model=f"m{ESC}[31m\u202e",
            wall_time_breakdown={f"t{ESC}[2J": float(k), "act": 1.0},
        )
        for k in range(1, 7)
    ]
    write(data_dir, lines)
    name, *args = command
    result = invoke(name, data_dir, *args, "--format", "csv", workflow=workflow)
    assert result.exit_code == 0, result.output
    assert ESC not in result.stdout and chr(7) not in result.stdout, result.stdout
    assert "\u202e" not in result.stdout, result.stdout
    table = rows(result.stdout)
    assert {r["workflow_id"] for r in table} == {"wf-\\x1b]0;owned\\x07"}
    assert "t\\x1b[2J" in {r["bucket"] for r in table}
    if "--by" in args:
        assert {r["model"] for r in table} == {"m\\x1b[31m\\u202e"}
    if "--exemplars" in args:
        exemplars = {r["p95_run_id"] for r in table}
        assert exemplars and exemplars <= {f"run\\x1b[1m-{k}" for k in range(1, 7)}
    assert text(f"={ESC}[2J") == "'=\\x1b[2J" and text(f"a{ESC}") == "a\\x1b"


def test_json_and_csv_together_is_a_usage_error(data_dir: Path) -> None:
    for command in ("stats", "compare", "trend"):
        result = invoke(command, data_dir, "--json", "--format", "csv")
        assert result.exit_code == 2, (command, result.output)
        assert "--json and --format csv ask for two formats" in result.stderr


def test_no_runs_prints_the_header_and_exits_1(data_dir: Path) -> None:
    write(data_dir, [run(1)])
    result = invoke("stats", data_dir, "--status", "failed", "--format", "csv")
    assert result.exit_code == 1
    assert result.stdout == "workflow_id,run_count,bucket,n,p50,p95,p99\n"
