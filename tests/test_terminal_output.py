"""Row text never drives a person's terminal: the installed `mantis` on a real pseudo-terminal,
with escape sequences and a bidi override in a workflow id and a bucket name."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from tests.stats_data import line, write_shard

MANTIS = Path(sys.executable).parent / "mantis"
EVIL = "wf-\x1b[31mred\x1b]0;owned\x07-\u202eevil"
EVIL_BUCKET = "think\x1b[2J\u2066"
SHOWN = "wf-\\x1b[31mred\\x1b]0;owned\\x07-\\u202eevil"
SHOWN_BUCKET = "think\\x1b[2J\\u2066"


def on_a_terminal(*args: str) -> tuple[int, bytes]:
    """Run `mantis` with stdout and stderr on one pseudo-terminal; what the terminal got."""
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [str(MANTIS), *args], stdout=terminal, stderr=terminal, stdin=subprocess.DEVNULL
        )
        os.close(terminal)
        terminal = -1
        shown = b""
        while True:
            try:
                data = os.read(controller, 4096)
            except OSError:  # EIO: the terminal side is closed and drained
                break
            if not data:
                break
            shown += data
        code = proc.wait(timeout=60)
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    return code, shown


@pytest.fixture
def evil_dir(data_dir: Path) -> Path:
    rows = [
        line(
            run_id=f"r{k}",
            workflow_id=EVIL,
            finished_at=f"2026-05-13T18:0{k}:00Z",
            wall_time_breakdown={EVIL_BUCKET: 10.0 * k, "act": 1.0},
        )
        for k in range(1, 4)
    ]
    write_shard(data_dir, "2026-05", rows)
    return data_dir


def assert_inert(shown: bytes) -> None:
    assert b"\x1b" not in shown and b"\x07" not in shown, shown
    assert "\u202e".encode() not in shown and "\u2066".encode() not in shown, shown


@pytest.mark.parametrize(
    "command",
    [
        ["stats"],
        ["compare", "--since", "2026-05-13T18:02:00Z", "--until", "2026-05-14"],
        ["trend", "--bucket", EVIL_BUCKET, "--since", "2026-05-01", "--until", "2026-06-01"],
    ],
)
def test_tables_escape_row_text(evil_dir: Path, command: list[str]) -> None:
    name, *rest = command
    code, shown = on_a_terminal("runs", name, EVIL, *rest, "--data-dir", str(evil_dir))
    assert code == 0, shown
    assert_inert(shown)
    assert SHOWN.encode() in shown
    assert SHOWN_BUCKET.encode() in shown


def test_runs_list_escapes_workflow_ids(evil_dir: Path) -> None:
    code, shown = on_a_terminal("runs", "list", "--data-dir", str(evil_dir))
    assert code == 0, shown
    assert_inert(shown)
    assert SHOWN.encode() in shown


def test_the_no_runs_message_escapes_the_ids_it_names(evil_dir: Path) -> None:
    asked = EVIL.replace("evil", "evi1")
    code, shown = on_a_terminal("runs", "stats", asked, "--data-dir", str(evil_dir))
    assert code == 1, shown
    assert_inert(shown)
    assert b"did you mean" in shown and SHOWN.encode() in shown


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain-id_1.2/x", "plain-id_1.2/x"),
        ("Modèle/α 日本 ☃", "Modèle/α 日本 ☃"),  # scripts and symbols are not escaped
        ("a\x1b[0mb", "a\\x1b[0mb"),
        ("tab\tcr\rlf\n", "tab\\tcr\\rlf\\n"),
        ("del\x7f c1\x9b", "del\\x7f c1\\x9b"),
        ("\u202a\u202b\u202c\u202d\u202e", "\\u202a\\u202b\\u202c\\u202d\\u202e"),
        ("\u2066\u2067\u2068\u2069", "\\u2066\\u2067\\u2068\\u2069"),
    ],
)
def test_printable_escapes_what_drives_a_terminal(text: str, shown: str) -> None:
    from mantisd.text import printable

    assert printable(text) == shown


ESC = chr(27)
WORKFLOW = "default__marketplace-listings-v1"
#: A bucket and a cost_breakdown key from the rows, each holding escape sequences (built with
#: chr(27) so that the source holds no control character).
DATA_NAME = f"b{ESC}[31mred{ESC}]0;owned{chr(7)}"
SHOWN_DATA_NAME = "b\\x1b[31mred\\x1b]0;owned\\x07"
IN_WINDOW = ["--since", "2026-05-01", "--until", "2026-06-01"]


@pytest.fixture
def evil_names_dir(data_dir: Path) -> Path:
    rows = [
        line(
            run_id=f"r{k}",
            finished_at=f"2026-05-13T18:0{k}:00Z",
            wall_time_breakdown={DATA_NAME: 10.0 * k, "act": 1.0},
            cost_breakdown={DATA_NAME: 0.1 * k},
        )
        for k in range(1, 4)
    ]
    write_shard(data_dir, "2026-05", rows)
    return data_dir


@pytest.mark.parametrize(
    "command",
    [
        ["stats", "--bucket", "nope"],
        ["trend", "--bucket", "nope", *IN_WINDOW],
        ["slowest", "--bucket", "nope"],
        ["compare", "--bucket", "nope", "--since", "2026-05-13T18:02:00Z", "--until", "2026-05-14"],
        ["stats", "--breakdown", "cost", "--bucket", "nope"],
        ["trend", "--breakdown", "cost", *IN_WINDOW],
        ["slowest", "--breakdown", "cost"],
        ["slowest", "--breakdown", "cost", "--bucket", "nope"],
    ],
)
def test_usage_errors_escape_the_names_they_list(evil_names_dir: Path, command: list[str]) -> None:
    """The "known: ..." / "reported: ..." list of a usage error names buckets and cost keys
    from the rows: on a terminal they are spelled, never run."""
    name, *rest = command
    code, shown = on_a_terminal("runs", name, WORKFLOW, *rest, "--data-dir", str(evil_names_dir))
    assert code == 2, shown
    assert_inert(shown)
    assert b"--bucket" in shown and SHOWN_DATA_NAME.encode() in shown, shown
