"""`--db`: `--by`, `--exemplars`, `--breakdown cost`, `slowest`, `--format csv` and `report`
answered from PostgreSQL, the same as from files (the parity suite of `tests.test_stats_db`,
extended to the analysis features).

Three pods: generated runs (one model, plan and four cost components per workflow) and, in
November, hand-made runs of `ANALYSIS` that carry what a database stores differently from a
line: an extra key whose value is an object (JSONB reorders its keys), a number written as
`1e16` (JSONB keeps the decimal `10000000000000000`), a string that reads as that object's
JSON (one group with it), errors that are objects, other bucket names, cost entries that are
not numbers or do not fit a float. The file side is one data dir holding every pod's lines,
each month in `finished_at` order (a database's "last N" order).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from mantisd.schema import BUCKETS
from tests.fleet import rows, ship
from tests.parity import WF, assert_answers_as_files, assert_same, generate_pods, invoke, merge
from tests.pg import PgServer
from tests.rows import utc
from tests.stats_data import line, write_shard
from tests.test_report import parse

ANALYSIS = "default__fleet-analysis-v1"
#: Run k of `ANALYSIS` finishes k minutes after this instant, on pod k % 3.
NOVEMBER = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
RUNS = 96
#: An object key in an order JSONB does not keep (it puts shorter keys first).
OBJECT = {"a_long_key": 1, "zone": "b"}
#: How it shows as a group key, from every source: keys sorted, compact.
OBJECT_TEXT = '{"a_long_key":1,"zone":"b"}'
#: `region` of run k: k % 8 picks one; 1 is a missing key.
REGIONS: list[Any] = [
    "eu",
    None,
    None,
    3,
    OBJECT,
    {"zone": "b", "a_long_key": 1.0},  # the same value, keys in another order
    OBJECT_TEXT,  # a string: the same group key as the object
    1e16,
]
ERROR = {"step": 7, "kind": "timeout", "detail": {"url": "https://example.test", "code": 504}}


def analysis_run(k: int) -> bytes:
    """Hand-made run k of `ANALYSIS`: every value distinct, so that no rank is a tie."""
    finished = NOVEMBER + dt.timedelta(minutes=k)
    breakdown = {
        b: round(1.0 + i + ((k * 37 + i * 11) % 97) / 10, 3) for i, b in enumerate(BUCKETS)
    }
    if k % 5 == 1:
        del breakdown["settle"]
    if k % 3 == 2:
        breakdown |= {"warmup": 0.5 + k / 7, "zz": 2.0 + k / 9}
    cost: dict[str, Any] = {"usd": 0.001 * (k % 23) + k / 1e5, "input_tokens": 1000 + 37 * k}
    cost["gpu_s"] = round(3.0 + (k * 13 % 41) / 4, 3)
    if k % 4 == 0:
        cost["note"] = "cached"
    if k % 6 == 0:
        cost["flag"] = True
    if k == 5:
        cost["huge"] = 10**400  # an integer no float holds: ignored, as from the files
    if k in (10, 11):  # the largest integer a float holds, then the smallest it does not
        cost["edge"] = 2**1024 - 2**970 - (k == 10)
    failed = k % 7 == 0
    fields: dict[str, Any] = {
        "workflow_id": ANALYSIS,
        "run_id": f"an-{k:04d}",
        "finished_at": utc(finished),
        "created_at": utc(finished - dt.timedelta(minutes=3)),
        "model": ["A", "B", None, "A"][k % 4],
        "plan_signature": None if k % 5 == 0 else f"plan-{k % 2}",
        "status": "failed" if failed else "succeeded",
        "total_time_s": round(sum(breakdown.values()) + k / 100, 3),
        "wall_time_breakdown": breakdown,
        "cost_breakdown": cost,
        "error": (ERROR | {"step": k} if k % 2 else "page did not settle") if failed else None,
    }
    if k % 8 != 1:
        fields["region"] = REGIONS[k % 8]
    if k % 3:
        fields["pod-class"] = "gpu" if k % 3 == 1 else "cpu"
    return line(**fields)


def analysis_pods(tmp_path_factory: pytest.TempPathFactory, prefix: str = "") -> dict[str, Path]:
    """The parity pods, each with a third of the November runs of `analysis_run`."""
    pods = generate_pods(tmp_path_factory, rows=3000, prefix=prefix)
    for index, pod in enumerate(pods.values()):
        write_shard(pod, "2026-11", [analysis_run(k) for k in range(index, RUNS, 3)])
    return pods


@pytest.fixture(scope="module")
def fleet(
    pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, dict[str, Path], Path]:
    """(database URL, each pod's data dir, the merged data dir)."""
    url = pg_server.create_database()
    pods = analysis_pods(tmp_path_factory)
    for name, pod in pods.items():
        result = ship(url, pod, "--label", name)
        assert result.returncode == 0, result.stderr
    assert rows(url, "SELECT count(*) FROM mantis.dead_letters") == [(0,)]
    return url, pods, merge(tmp_path_factory.mktemp("merged"), list(pods.values()))


CURRENT = ["--since", "2026-10-18", "--until", "2026-11-01"]
#: `ANALYSIS`: runs 0-47 are the baseline, 48-95 the current window.
HALVES = [
    "--since",
    "2026-11-02T00:48:00Z",
    "--until",
    "2026-11-03",
    "--baseline-since",
    "2026-11-02",
]
EVERY = ["--status", ""]
PARITY = [
    # --by: a column, an extra key (objects, numbers, the (none) group), both, --last per group
    ["stats", WF, "--by", "status", *EVERY, "--last", "500"],
    ["stats", WF, "--by", "model", "--by", "status", *EVERY, "--json"],
    ["stats", ANALYSIS, "--by", "region", *EVERY, "--json"],
    ["stats", ANALYSIS, "--by", "region", *EVERY, "--last", "3", "--json"],
    ["stats", ANALYSIS, "--by", "region", "--by", "pod-class", *EVERY, "--last", "4", "--json"],
    ["stats", ANALYSIS, "--by", "model", "--by", "region", *EVERY],
    ["stats", ANALYSIS, "--by", "plan_signature", "--bucket", "warmup"],
    ["compare", WF, *CURRENT, "--by", "status", *EVERY],
    ["compare", WF, *CURRENT, "--by", "model", "--last", "300", "--json"],
    ["compare", ANALYSIS, *HALVES, "--by", "region", *EVERY, "--json"],
    ["compare", ANALYSIS, *HALVES, "--by", "model", "--by", "pod-class", *EVERY],
    ["compare", ANALYSIS, *HALVES, "--by", "region", "--last", "4", *EVERY, "--json"],
    # --exemplars
    ["stats", WF, "--exemplars"],
    ["stats", WF, "--exemplars", "--last", "1000", "--json"],
    ["stats", ANALYSIS, "--by", "region", "--exemplars", *EVERY, "--json"],
    ["stats", ANALYSIS, "--exemplars", *EVERY],
    # --breakdown cost
    ["stats", WF, "--breakdown", "cost", "--json"],
    ["stats", ANALYSIS, "--breakdown", "cost", *EVERY],
    ["stats", ANALYSIS, "--breakdown", "cost", "--by", "model", "--exemplars", *EVERY, "--json"],
    ["stats", ANALYSIS, "--breakdown", "cost", "--by", "region", "--last", "3", *EVERY, "--json"],
    ["compare", WF, *CURRENT, "--breakdown", "cost"],
    ["compare", WF, *CURRENT, "--breakdown", "cost", "--bucket", "usd", "--json"],
    ["compare", ANALYSIS, *HALVES, "--breakdown", "cost", "--by", "region", *EVERY],
    ["trend", WF, "--breakdown", "cost", "--bucket", "usd", "--until", "2026-11-01", "--json"],
    ["trend", WF, "--breakdown", "cost", "--bucket", "gpu_s", "--every", "1d", *CURRENT],
    ["trend", ANALYSIS, "--breakdown", "cost", "--bucket", "usd", "--every", "1d", *EVERY],
    # slowest
    ["slowest", WF],
    ["slowest", WF, "--json", "-n", "5", "--last", "2000"],
    ["slowest", WF, "--bucket", "settle", "--status", "failed"],
    ["slowest", ANALYSIS, *EVERY, "-n", "30"],
    ["slowest", ANALYSIS, *EVERY, "-n", "96", "--json"],
    ["slowest", ANALYSIS, *EVERY, "--bucket", "warmup", "--last", "20", "--json"],
    ["slowest", ANALYSIS, "--breakdown", "cost", "--bucket", "usd", *EVERY],
    ["slowest", ANALYSIS, "--breakdown", "cost", "--bucket", "gpu_s", *EVERY, "--json"],
    ["slowest", WF, "--breakdown", "cost", "--bucket", "input_tokens", "--since", "2026-10-20"],
    ["slowest", "default__nobody-v1", "--json"],
    # --format csv
    ["stats", WF, "--format", "csv"],
    ["stats", WF, "--by", "status", *EVERY, "--exemplars", "--format", "csv"],
    ["stats", ANALYSIS, "--by", "region", "--by", "model", *EVERY, "--format", "csv"],
    ["stats", ANALYSIS, "--breakdown", "cost", *EVERY, "--format", "csv"],
    ["compare", WF, *CURRENT, "--format", "csv"],
    ["compare", ANALYSIS, *HALVES, "--by", "region", *EVERY, "--format", "csv"],
    ["trend", WF, "--bucket", "settle", "--until", "2026-11-01", "--format", "csv"],
    [
        "trend",
        WF,
        "--breakdown",
        "cost",
        "--bucket",
        "usd",
        "--until",
        "2026-11-01",
        "--format",
        "csv",
    ],
]


@pytest.mark.parametrize("args", PARITY, ids=[" ".join(a) for a in PARITY])
def test_the_database_answers_as_the_files_do(
    fleet: tuple[str, dict[str, Path], Path], args: list[str]
) -> None:
    url, _, merged = fleet
    assert_answers_as_files(args, merged, "--db", url)


PER_SOURCE = [
    ["stats", WF, "--by", "status", *EVERY, "--json"],
    ["stats", ANALYSIS, "--by", "region", *EVERY, "--last", "2", "--exemplars", "--json"],
    ["compare", WF, *CURRENT, "--breakdown", "cost", "--json"],
    ["slowest", ANALYSIS, *EVERY, "--json"],
    ["trend", WF, "--breakdown", "cost", "--bucket", "usd", "--until", "2026-11-01", "--json"],
]


@pytest.mark.parametrize("args", PER_SOURCE, ids=[" ".join(a) for a in PER_SOURCE])
def test_a_source_answers_as_its_own_data_dir(
    fleet: tuple[str, dict[str, Path], Path], args: list[str]
) -> None:
    url, pods, _ = fleet
    files = invoke(*args, "--data-dir", str(pods["pod-b"]))
    assert files.exit_code == 0, files.output
    assert_same(files, invoke(*args, "--db", url, "--source", "pod-b"))


BAD_BUCKETS = [
    ["stats", ANALYSIS, "--breakdown", "cost", "--bucket", "nonesuch"],
    ["slowest", ANALYSIS, "--bucket", "nonesuch"],
    ["slowest", ANALYSIS, "--breakdown", "cost"],
    ["trend", ANALYSIS, "--breakdown", "cost", "--bucket", "nonesuch", *EVERY],
]


@pytest.mark.parametrize("args", BAD_BUCKETS, ids=[" ".join(a) for a in BAD_BUCKETS])
def test_a_bucket_no_run_reports_is_the_same_usage_error(
    fleet: tuple[str, dict[str, Path], Path], args: list[str]
) -> None:
    """Known only after reading: the message lists what the selected runs report."""
    url, _, merged = fleet
    files = invoke(*args, "--data-dir", str(merged))
    database = invoke(*args, "--db", url)
    assert (files.exit_code, database.exit_code) == (2, 2)
    assert "reported" in files.stderr and database.stderr == files.stderr


def test_the_fixture_holds_what_jsonb_stores_differently(
    fleet: tuple[str, dict[str, Path], Path],
) -> None:
    """The premise of the suite: PostgreSQL hands these values back in another text."""
    url, _, _ = fleet
    stored = dict(
        rows(
            url,
            "SELECT run_id, extra ->> 'region' FROM mantis.runs WHERE run_id IN "
            "('an-0004', 'an-0007')",
        )
    )
    assert stored == {"an-0004": '{"zone": "b", "a_long_key": 1}', "an-0007": "10000000000000000"}
    (error,) = rows(url, "SELECT error::text FROM mantis.runs WHERE run_id = 'an-0007'")[0]
    assert error.startswith('{"kind"')  # the line has "step" first


def test_groups_by_an_object_key_are_one_group_per_value(
    fleet: tuple[str, dict[str, Path], Path],
) -> None:
    """The object in two key orders and the string of its JSON are one group, from both
    sources; `--last` caps that group as a whole (newest runs of all three forms)."""
    url, _, merged = fleet
    args = ["stats", ANALYSIS, "--by", "region", *EVERY, "--last", "5", "--json"]
    for where in (["--data-dir", str(merged)], ["--db", url]):
        groups = {
            g["key"]: g["run_count"] for g in json.loads(invoke(*args, *where).stdout)["groups"]
        }
        assert groups == {
            OBJECT_TEXT: 5,
            None: 5,
            "eu": 5,
            "3": 5,
            "10000000000000000": 5,
        }
    exemplars = ["stats", ANALYSIS, "--by", "region", *EVERY, "--last", "5", "--exemplars"]
    database = invoke(*exemplars, "--json", "--db", url)
    (group,) = [g for g in json.loads(database.stdout)["groups"] if g["key"] == OBJECT_TEXT]
    newest = {f"an-{k:04d}" for k in range(RUNS) if k % 8 in (4, 5, 6)}
    newest = set(sorted(newest)[-5:])
    found = {e["run_id"] for per in group["exemplars"].values() for e in per.values()}
    assert found <= newest


def test_slowest_shows_object_errors_in_one_form(
    fleet: tuple[str, dict[str, Path], Path],
) -> None:
    url, _, _ = fleet
    result = invoke("slowest", ANALYSIS, "--status", "failed", "-n", "20", "--db", url)
    assert result.exit_code == 0, result.output
    shown = re.findall(r"error: (\{.*)", result.stdout)
    assert shown and all(e.startswith('{"detail":{"code":504,') for e in shown)


# --- last N in a database: the newest by finished_at, in each group ----------------------------


def test_last_n_per_group_is_the_newest_by_finished_at(pg_url: str, data_dir: Path) -> None:
    """Model A's run finished last is logged first: the log's last N and the database's
    newest N differ, each as documented."""
    late, early = NOVEMBER + dt.timedelta(hours=2), NOVEMBER + dt.timedelta(hours=1)
    lines = [
        line(workflow_id=ANALYSIS, model="A", finished_at=utc(late), total_time_s=111.0),
        line(workflow_id=ANALYSIS, model="A", finished_at=utc(early), total_time_s=222.0),
        line(workflow_id=ANALYSIS, model="B", finished_at=utc(early), total_time_s=333.0),
    ]
    write_shard(data_dir, "2026-11", lines)
    assert ship(pg_url, data_dir).returncode == 0
    args = ["stats", ANALYSIS, "--by", "model", "--last", "1", "--json"]

    def totals(result: Result) -> dict[str, float]:
        groups = json.loads(result.stdout)["groups"]
        return {g["key"]: g["percentiles"]["total_time_s"]["p50"] for g in groups}

    assert totals(invoke(*args, "--data-dir", str(data_dir))) == {"A": 222.0, "B": 333.0}
    assert totals(invoke(*args, "--db", pg_url)) == {"A": 111.0, "B": 333.0}
    slowest = json.loads(
        invoke("slowest", ANALYSIS, "--last", "1", "--json", "--db", pg_url).stdout
    )
    assert [run["value"] for run in slowest["runs"]] == [111.0]


# --- the report -------------------------------------------------------------------------------


def _body(html: str) -> str:
    """The page without what differs between two runs of the command: the time it was
    generated and the commands' `--db` (the footer)."""
    html = re.sub(r"Generated [^<]*", "Generated", html)
    return re.sub(r"<footer>.*</footer>", "", html, flags=re.S)


def test_the_report_from_the_database_is_the_report_from_the_files(
    fleet: tuple[str, dict[str, Path], Path],
) -> None:
    url, _, merged = fleet
    args = ["report", WF, *CURRENT, "-o", "-"]
    files = invoke(*args, "--data-dir", str(merged))
    database = invoke(*args, "--db", url)
    assert (files.exit_code, database.exit_code) == (0, 0), database.output
    assert database.stderr == files.stderr
    numbers = parse(files.stdout)
    assert len(numbers.values) == 10 and numbers.verdicts["settle"] == "regressed"
    assert parse(database.stdout).values == numbers.values
    assert parse(database.stdout).verdicts == numbers.verdicts
    assert _body(database.stdout) == _body(files.stdout)


def test_the_report_names_the_database_without_its_password(
    fleet: tuple[str, dict[str, Path], Path],
) -> None:
    url, _, _ = fleet
    with_password = url + "&password=hunter2"  # the test server trusts every local connection
    result = invoke("report", WF, *CURRENT, "-o", "-", "--db", with_password, "--source", "pod-a")
    assert result.exit_code == 0, result.output
    commands = re.search(r"<footer>.*</footer>", result.stdout, re.S)
    assert commands and "hunter2" not in result.stdout
    assert commands[0].count("--db ") == 4 and commands[0].count("--source pod-a") == 4


def test_no_runs_from_the_database_names_it(fleet: tuple[str, dict[str, Path], Path]) -> None:
    url, _, _ = fleet
    for command in (["slowest", WF], ["report", WF, "-o", "-"]):
        result = invoke(*command, "--since", "2026-11-20", "--until", "2026-11-25", "--db", url)
        assert result.exit_code == 1
        assert "in database t" in result.stderr, result.stderr
