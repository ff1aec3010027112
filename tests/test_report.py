"""`mantis runs report`: one self-contained HTML file, checked against the CLI and rendered in
a real headless Chromium (Debian's `chromium`)."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mantisd.sample import generate, workflow_ids
from mantisd.schema import BUCKETS
from tests.analysis_data import UTC, document, invoke, run, write
from tests.full_disk import mounted_tmpfs
from tests.png import distinct_colours, read_png, share_not_white

WORKFLOW = workflow_ids(3)[0]
CURRENT = ["--since", "2026-09-18", "--until", "2026-10-01"]
HOSTILE = "<script>alert(1)</script>&\"'"
CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two months; `settle` of the busiest workflow is 1.4 times as long from 2026-09-18."""
    data_dir = tmp_path_factory.mktemp("report")
    generate(
        data_dir,
        rows=8000,
        months=2,
        workflows=3,
        seed=2,
        end=dt.datetime(2026, 10, 1, tzinfo=UTC),
        slow_bucket="settle",
        slow_factor=1.4,
        slow_since=dt.datetime(2026, 9, 18, tzinfo=UTC),
        slow_workflow=WORKFLOW,
    )
    return data_dir


@pytest.fixture(scope="module")
def report_file(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("out") / "report.html"
    result = invoke("report", sample_dir, *CURRENT, "-o", str(target), workflow=WORKFLOW)
    assert result.exit_code == 0, result.output
    assert result.stderr == f"wrote {target}\n"
    return target


class Cells(HTMLParser):
    """The page's numbers (`data-value` cells), verdict rows, and every tag seen."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, dict[str, float | None]] = {}
        self.verdicts: dict[str, str] = {}
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.tags.append((tag, found))
        if "data-value" in found and found.get("data-bucket") is not None:
            value = found["data-value"]
            cell = None if value in (None, "null") else float(value)
            self.values.setdefault(str(found["data-bucket"]), {})[str(found["data-p"])] = cell
        if tag == "tr" and "data-verdict" in found:
            self.verdicts[str(found["data-bucket"])] = str(found["data-verdict"])


def parse(html: str) -> Cells:
    cells = Cells()
    cells.feed(html)
    return cells


def test_numbers_match_stats_and_compare_json(sample_dir: Path, report_file: Path) -> None:
    page = parse(report_file.read_text())
    table = next(attrs for tag, attrs in page.tags if "data-run-count" in attrs)
    run_count = str(table["data-run-count"])
    stats = invoke("stats", sample_dir, *CURRENT, "--last", run_count, "--json", workflow=WORKFLOW)
    doc = document(stats)
    assert doc["run_count"] == int(run_count) > 500
    assert page.values == doc["percentiles"]  # every bucket, every percentile, exactly
    assert list(page.values) == list(doc["percentiles"])  # in the table's order
    compared = document(invoke("compare", sample_dir, *CURRENT, "--json", workflow=WORKFLOW))
    assert page.verdicts == {b["bucket"]: b["verdict"] for b in compared["buckets"]}
    assert page.verdicts["settle"] == "regressed"


def test_the_page_fetches_nothing_and_runs_nothing(report_file: Path) -> None:
    page = parse(report_file.read_text())
    tags = {tag for tag, _ in page.tags}
    assert not tags & {"script", "link", "img", "iframe", "object", "embed"}
    assert not [attrs for _, attrs in page.tags if {"src", "href"} & set(attrs)]
    csp = next(attrs for tag, attrs in page.tags if attrs.get("http-equiv"))
    assert csp["content"] == "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    charts = [attrs for tag, attrs in page.tags if tag == "svg"]
    assert len(charts) == 2 * (len(BUCKETS) + 1)  # a histogram and a trend per bucket


@pytest.fixture
def hostile_dir(data_dir: Path) -> Path:
    """Runs of a workflow whose id, bucket name, model and error are markup."""
    breakdown = {"think": 1.0, HOSTILE: 2.0}
    lines = [
        run(
            k,
            workflow_id=HOSTILE,
            model=HOSTILE,
            plan_signature=HOSTILE,
            error=HOSTILE,
            status="failed",
            wall_time_breakdown={name: v * k for name, v in breakdown.items()},
        )
        for k in range(1, 6)
    ]
    write(data_dir, lines)
    return data_dir


def test_row_text_is_escaped(hostile_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "hostile.html"
    args = ["--since", "2026-10-01", "--until", "2026-10-02", "--status", "", "-o", str(target)]
    result = invoke("report", hostile_dir, *args, workflow=HOSTILE)
    assert result.exit_code == 0, result.output
    html = target.read_text()
    assert "<script" not in html.lower() and "</script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;&quot;&#x27;" in html
    page = parse(html)
    assert "script" not in {tag for tag, _ in page.tags}
    assert HOSTILE in page.values  # the bucket's cells carry the name, decoded by the parser
    assert [attrs["data-bucket"] for tag, attrs in page.tags if tag == "svg"].count(HOSTILE) == 2


def test_no_runs_in_the_current_window_writes_nothing(sample_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    args = ["--since", "2027-01-01", "--until", "2027-02-01", "-o", str(target)]
    result = invoke("report", sample_dir, *args, workflow=WORKFLOW)
    assert result.exit_code == 1
    assert "nothing to report" in result.stderr and not target.exists()


def test_dash_writes_to_stdout(sample_dir: Path) -> None:
    result = invoke("report", sample_dir, *CURRENT, "--bucket", "act", "-o", "-", workflow=WORKFLOW)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("<!DOCTYPE html>") and result.stdout.endswith("</html>\n")
    assert len([t for t, _ in parse(result.stdout).tags if t == "svg"]) == 4  # act, total


@pytest.fixture
def full_disk_dir() -> Iterator[Path]:
    """A directory on a 16 KiB tmpfs: a report does not fit (needs root to mount)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    with tempfile.TemporaryDirectory(prefix="mantis-report-") as tmp:
        with mounted_tmpfs(Path(tmp), "size=16k") as mountpoint:
            yield mountpoint


def test_a_failed_write_leaves_the_old_report_whole(sample_dir: Path, full_disk_dir: Path) -> None:
    target = full_disk_dir / "report.html"
    target.write_text("the previous report\n")
    result = invoke("report", sample_dir, *CURRENT, "-o", str(target), workflow=WORKFLOW)
    assert result.exit_code == 1
    assert f"Error: cannot write the report to {target}" in result.stderr
    assert "No space left on device" in result.stderr
    assert target.read_text() == "the previous report\n"
    assert sorted(p.name for p in full_disk_dir.iterdir()) == ["report.html"]  # no temporary


def test_a_missing_directory_is_an_error(sample_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "nowhere" / "report.html"
    result = invoke("report", sample_dir, *CURRENT, "-o", str(target), workflow=WORKFLOW)
    assert result.exit_code == 1 and "cannot write the report" in result.stderr


# ---------------------------------------------------------------- a real browser


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=True)


class Dom(HTMLParser):
    """Counts of elements by tag and class in Chromium's rendered DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.count: dict[str, int] = {}
        self.charts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in [tag] + [f"{tag}.{c}" for c in (found.get("class") or "").split()]:
            self.count[name] = self.count.get(name, 0) + 1
        if tag == "svg":
            self.charts.append(str(found.get("class")))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_renders_in_headless_chromium(report_file: Path, tmp_path: Path) -> None:
    url = report_file.as_uri()
    dumped = chromium("--dump-dom", url, profile=tmp_path / "profile-dom")
    dom = Dom()
    dom.feed(dumped.stdout)
    assert (
        dom.charts.count("chart histogram") == dom.charts.count("chart trend") == len(BUCKETS) + 1
    )
    assert dom.count["rect.bar"] > 20 * (len(BUCKETS) + 1)
    assert dom.count["polyline.series"] >= 3 * (len(BUCKETS) + 1)
    assert dom.count["line.marker"] == 3 * (len(BUCKETS) + 1)
    assert dom.count["rect.current-window"] == len(BUCKETS) + 1
    assert "script" not in dom.count
    console = [
        line
        for line in dumped.stderr.splitlines()
        if "CONSOLE" in line or "Uncaught" in line or "Content Security Policy" in line
    ]
    assert console == []

    png = tmp_path / "report.png"
    shot = chromium(
        f"--screenshot={png}", "--window-size=1200,1600", url, profile=tmp_path / "profile-png"
    )
    assert "Content Security Policy" not in shot.stderr
    image = read_png(png)
    assert image.shape[:2] == (1600, 1200)
    assert tuple(image[0, 0, :3]) == (255, 255, 255)  # the page's white background
    assert distinct_colours(image) > 200  # text, bars, three percentile colours, shading
    assert 0.05 < share_not_white(image) < 0.6


def test_report_help_and_bad_flags() -> None:
    runner_result = invoke("report", Path("/nonexistent"), "--every", "2d", "-o", "x.html")
    assert runner_result.exit_code == 2 and "'2d' is not one of" in runner_result.stderr
    missing = invoke("report", Path("/nonexistent"))
    assert missing.exit_code == 2 and "Missing option '-o'" in missing.stderr


def test_a_window_too_long_for_any_period_says_to_narrow_it(
    sample_dir: Path, tmp_path: Path
) -> None:
    """`--every auto` already took the longest period: "use a longer --every" alone was advice
    nobody could follow."""
    out = str(tmp_path / "r.html")
    result = invoke("report", sample_dir, "--since", "99999d", "-o", out, workflow=WORKFLOW)
    assert result.exit_code == 2, result.output
    assert "at most 1000 (narrow the window or use a longer --every)" in result.stderr


def test_the_new_commands_do_not_load_anyio(sample_dir: Path, tmp_path: Path) -> None:
    """The read side never imports the daemon's async stack (design.md, layer 4)."""
    import sys

    calls = [
        ["slowest", WORKFLOW, "--data-dir", str(sample_dir)],
        ["stats", WORKFLOW, "--data-dir", str(sample_dir), "--by", "status", "--exemplars"],
        [
            "report",
            WORKFLOW,
            "--data-dir",
            str(sample_dir),
            *CURRENT,
            "-o",
            str(tmp_path / "r.html"),
        ],
    ]
    code = (
        "import json, sys\n"
        "from mantisd.cli import mantis\n"
        f"for args in {calls!r}:\n"
        "    mantis(['runs', *args], standalone_mode=False)\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    loaded = set(json.loads(proc.stderr.splitlines()[-1]))
    assert {
        "mantisd.stats.report.page",
        "mantisd.stats.query_groups",
        "mantisd.stats.runs",
    } <= loaded
    assert not {m for m in loaded if m.split(".")[0] in {"anyio", "sniffio"}}
