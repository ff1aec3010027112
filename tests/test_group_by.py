"""`--by FIELD` on `stats` and `compare`: groups, their order, `--last` per group, JSON shape."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import pytest

from mantisd.reader import ScanReport
from mantisd.sample import generate, workflow_ids
from mantisd.schema import BUCKETS
from mantisd.stats.query import StatsQuery, select
from mantisd.stats.query_groups import select_groups
from tests.analysis_data import START, UTC, WORKFLOW, document, invoke, run, write
from tests.rows import utc
from tests.stats_data import line


@pytest.fixture
def models_dir(data_dir: Path) -> Path:
    """Model A: runs 1-4; model B: runs 5-6; no model: run 7."""
    lines = [run(k, model="A") for k in range(1, 5)]
    lines += [run(k, model="B") for k in (5, 6)] + [run(7, model=None)]
    write(data_dir, lines)
    return data_dir


def test_stats_by_model_json_is_the_issue_shape(models_dir: Path) -> None:
    result = invoke("stats", models_dir, "--by", "model", "--json", "--bucket", "act")
    assert result.exit_code == 0, result.output
    doc = document(result)
    assert list(doc) == ["workflow_id", "by", "groups"]
    assert doc["workflow_id"] == WORKFLOW and doc["by"] == ["model"]
    # busiest first; the row without a model is the null group
    assert [(g["key"], g["run_count"]) for g in doc["groups"]] == [("A", 4), ("B", 2), (None, 1)]
    a = doc["groups"][0]
    assert list(a) == ["key", "run_count", "percentiles"]
    # totals 10, 20, 30, 40: p50 between ranks 1 and 2, p95 = 30 + 0.85 * 10, p99 = 30 + 0.97 * 10
    assert a["percentiles"] == {
        "act": {"p50": 2.5, "p95": 3.85, "p99": 3.97},
        "total_time_s": {"p50": 25.0, "p95": 38.5, "p99": 39.7},
    }
    assert doc["groups"][2]["percentiles"]["total_time_s"] == {
        "p50": 70.0,
        "p95": 70.0,
        "p99": 70.0,
    }


def test_last_counts_in_each_group(data_dir: Path) -> None:
    """Model A's runs are the newest; B's are a month older, in another shard."""
    write(data_dir, [run(k, model="A") for k in range(10, 15)])
    september = START - dt.timedelta(days=30)
    write(data_dir, [run(k, model="B", month_start=september) for k in (1, 2, 3)], "2026-09")
    plain = document(invoke("stats", data_dir, "--last", "2", "--json"))
    assert plain["run_count"] == 2 and plain["percentiles"]["total_time_s"]["p50"] == 135.0
    grouped = document(invoke("stats", data_dir, "--last", "2", "--by", "model", "--json"))
    totals = {
        g["key"]: (g["run_count"], g["percentiles"]["total_time_s"]) for g in grouped["groups"]
    }
    assert totals == {
        "A": (2, {"p50": 135.0, "p95": 139.5, "p99": 139.9}),  # runs 13 and 14, the newest
        "B": (2, {"p50": 25.0, "p95": 29.5, "p99": 29.9}),  # runs 2 and 3
    }


def test_extra_keys_group_too_and_missing_ones_form_the_none_group(data_dir: Path) -> None:
    write(
        data_dir,
        [
            run(1, region="eu", **{"pod-class": "gpu"}),
            run(2, region="eu"),
            run(3, region="us", **{"pod-class": "gpu"}),
            run(4, region=None),  # null: no value, like a missing key
            run(5),
            run(6, region=3),  # not a string: keyed by its JSON text
        ],
    )
    doc = document(invoke("stats", data_dir, "--by", "region", "--json"))
    assert [(g["key"], g["run_count"]) for g in doc["groups"]] == [
        ("eu", 2),
        (None, 2),
        ("3", 1),
        ("us", 1),
    ]
    crossed = document(invoke("stats", data_dir, "--by", "region", "--by", "pod-class", "--json"))
    assert crossed["by"] == ["region", "pod-class"]
    keys = [g["key"] for g in crossed["groups"]]
    assert keys[0] == [None, None] and ["eu", "gpu"] in keys and ["eu", None] in keys
    assert len(keys) == 5


def test_table_has_a_block_per_group_within_100_columns(models_dir: Path) -> None:
    result = invoke("stats", models_dir, "--by", "model", "--by", "status")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"Across last 100 succeeded runs of {WORKFLOW} per model, status: 3 groups, 7 runs"
    )
    titles = [text for text in lines if " = " in text]
    assert titles == [
        "model = A, status = succeeded  (4 runs)",
        "model = B, status = succeeded  (2 runs)",
        "model = (none), status = succeeded  (1 run)",
    ]
    assert max(map(len, lines)) <= 100
    first = lines.index(titles[0])
    assert lines[first + 1].split() == ["bucket", "p50", "p95", "p99"]
    assert lines[first + 13].split() == ["total_time_s", "25.0s", "38.5s", "39.7s"]


def test_exemplars_per_group(models_dir: Path) -> None:
    doc = document(invoke("stats", models_dir, "--by", "model", "--exemplars", "--json"))
    a = doc["groups"][0]
    assert list(a) == ["key", "run_count", "percentiles", "exemplars"]
    # A's totals are 10..40: p95 38.5 and p99 39.7 are both nearest run 4 (40)
    assert a["exemplars"]["total_time_s"] == {
        "p95": {"run_id": "run-0004", "value": 40.0},
        "p99": {"run_id": "run-0004", "value": 40.0},
    }
    assert doc["groups"][1]["exemplars"]["think"]["p95"] == {"run_id": "run-0006", "value": 6.0}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--by", "run_id"], "'run_id' cannot group runs: group by model, plan_signature"),
        (["--by", "total_time_s"], "'total_time_s' cannot group runs"),
        (["--by", "model", "--by", "model"], "'model' given more than once"),
        (["--by", ""], "an empty field name cannot group runs"),
        (["--by", 'a"b'], "'a\"b' cannot group runs: a key name with a quote or a backslash"),
        (["--by", "a\\b"], "cannot group runs: a key name with a quote or a backslash"),
    ],
)
@pytest.mark.parametrize("command", ["stats", "compare"])
def test_bad_fields_are_usage_errors(
    models_dir: Path, command: str, args: list[str], message: str
) -> None:
    result = invoke(command, models_dir, *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "--by" in result.stderr


def test_no_runs_prints_the_empty_document_and_exits_1(models_dir: Path) -> None:
    result = invoke("stats", models_dir, "--by", "model", "--json", "--status", "failed")
    assert result.exit_code == 1
    assert document(result) == {"workflow_id": WORKFLOW, "by": ["model"], "groups": []}
    assert "no failed runs of" in result.stderr


def test_a_run_logged_twice_counts_once_in_its_newest_group(data_dir: Path) -> None:
    write(data_dir, [run(1, model="A"), run(2, model="A")])
    september = START - dt.timedelta(days=30)
    write(data_dir, [run(1, model="B", month_start=september)], "2026-09")  # same run_id
    result = invoke("stats", data_dir, "--by", "model", "--json")
    assert [(g["key"], g["run_count"]) for g in document(result)["groups"]] == [("A", 2)]
    assert "dropped 1 duplicate run_id(s)" in result.stderr


def test_select_groups_without_by_is_select(tmp_path: Path) -> None:
    """The grouped reader (every shard, cap per group) and the early-stopping `select` agree."""
    generate(
        tmp_path, rows=6000, months=3, workflows=3, seed=3, end=dt.datetime(2026, 10, 1, tzinfo=UTC)
    )
    workflow = workflow_ids(3)[1]
    for last in (50, 1500):
        query = StatsQuery(workflow, last=last, status=None)
        alone = select(tmp_path, query)
        groups = select_groups(tmp_path, query, workers=2)
        (only,) = groups.selections.values()
        assert list(groups.selections) == [()]
        assert only.run_count == alone.run_count == last
        for bucket in [*BUCKETS, "total_time_s"]:
            assert only.values(bucket) == alone.values(bucket)
    grouped = select_groups(tmp_path, StatsQuery(workflow, last=10, status=None, by=("status",)))
    assert {key: s.run_count for key, s in grouped.selections.items()} == {
        ("succeeded",): 10,
        ("failed",): 10,
    }
    assert isinstance(grouped.report, ScanReport) and grouped.report.shards_read == 3


def test_select_refuses_a_grouped_query(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="select_groups"):
        select(data_dir, StatsQuery(WORKFLOW, by=("model",)))


# ---------------------------------------------------------------- compare --by

BASELINE_START = dt.datetime(2026, 9, 1, tzinfo=UTC)
CURRENT_START = dt.datetime(2026, 9, 15, tzinfo=UTC)
WINDOWS = ["--since", "2026-09-15", "--until", "2026-09-29"]


def lognormal_run(rng: random.Random, n: int, finished: dt.datetime, **fields: Any) -> bytes:
    breakdown = {b: round(rng.lognormvariate(2.0, 0.3), 3) for b in BUCKETS}
    factor = fields.pop("settle_factor", 1.0)
    breakdown["settle"] = round(breakdown["settle"] * factor, 3)
    row: dict[str, Any] = {
        "run_id": f"cmp-{n:05d}",
        "workflow_id": WORKFLOW,
        "finished_at": utc(finished),
        "created_at": utc(finished - dt.timedelta(seconds=60)),
        "total_time_s": round(sum(breakdown.values()) + 1.0, 3),
        "wall_time_breakdown": breakdown,
    }
    return line(**(row | fields))


@pytest.fixture(scope="module")
def per_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Models A and B, 120 runs each per window; A's settle is 1.5 times as long in the current
    window, B is flat."""
    data_dir = tmp_path_factory.mktemp("per-model")
    rng = random.Random(14)
    lines = []
    n = 0
    for start in (BASELINE_START, CURRENT_START):
        for i in range(240):
            n += 1
            finished = start + dt.timedelta(minutes=80 * i)
            model = "A" if i % 2 else "B"
            slow = 1.5 if model == "A" and start == CURRENT_START else 1.0
            lines.append(lognormal_run(rng, n, finished, model=model, settle_factor=slow))
    write(data_dir, lines, "2026-09")
    return data_dir


def test_compare_by_model_says_which_model_regressed(per_model_dir: Path) -> None:
    result = invoke("compare", per_model_dir, *WINDOWS, "--by", "model", "--json")
    assert result.exit_code == 0, result.output
    doc = document(result)
    assert doc["by"] == ["model"] and doc["correction"] == "holm"
    assert list(doc)[-2:] == ["by", "groups"] and "buckets" not in doc
    flagged = {
        (g["key"], b["bucket"]): b["verdict"]
        for g in doc["groups"]
        for b in g["buckets"]
        if b["verdict"] != "~"
    }
    # settle is an eighth of the total, so A's total moved too; nothing of B's did
    assert flagged == {("A", "settle"): "regressed", ("A", "total_time_s"): "regressed"}
    for group in doc["groups"]:
        assert list(group) == ["key", "baseline", "current", "buckets"]
        assert group["baseline"] == {"run_count": 120} and group["current"] == {"run_count": 120}
        assert group["buckets"][-1]["bucket"] == "total_time_s"
    gate = invoke("compare", per_model_dir, *WINDOWS, "--by", "model", "--fail-on-regression")
    assert gate.exit_code == 3
    assert gate.stderr.startswith("regressed: settle (+") and "for model = A" in gate.stderr


def test_compare_by_model_table(per_model_dir: Path) -> None:
    result = invoke("compare", per_model_dir, *WINDOWS, "--by", "model")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"Succeeded runs of {WORKFLOW} per model, 2 groups, 20 tests:"
    assert "Holm-adjusted" in lines[3]
    a = lines.index("model = A  (baseline 120 runs, current 120 runs)")
    assert lines[a + 1].split()[:3] == ["bucket", "p50", "base"]  # no n columns in blocks
    assert lines[a + 3].split()[0] == "settle" and lines[a + 3].split()[-1] == "regressed"
    assert "model = B  (baseline 120 runs, current 120 runs)" in lines
    assert max(len(text) for text in lines[4:]) <= 100


def test_compare_by_a_group_missing_from_one_window(per_model_dir: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    lines = (per_model_dir / "runs_log" / "2026-09.jsonl").read_bytes().splitlines(keepends=True)
    extra: dict[str, Any] = {"model": "C", "run_id": "only-current"}
    lines.append(run(9, month_start=CURRENT_START, **extra))
    write(data_dir, lines, "2026-09")
    doc = document(invoke("compare", data_dir, *WINDOWS, "--by", "model", "--json"))
    c = next(g for g in doc["groups"] if g["key"] == "C")
    assert c["baseline"] == {"run_count": 0} and {b["verdict"] for b in c["buckets"]} == {"n/a"}
    assert doc["groups"][-1]["key"] == "C"  # least busy last
