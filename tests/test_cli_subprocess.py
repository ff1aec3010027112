"""The installed `mantis` console script, run for real: output, imports, progress on a tty."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from tests.stats_data import GOLDEN, golden_run, write_golden, write_shard

MANTIS = Path(sys.executable).parent / "mantis"


def run_mantis(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MANTIS), *args], capture_output=True, text=True, timeout=60, check=False, **kwargs
    )


def test_console_script_prints_the_table(data_dir: Path) -> None:
    write_golden(data_dir)
    proc = run_mantis("runs", "stats", GOLDEN, "--data-dir", str(data_dir))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"Across last 5 succeeded runs of {GOLDEN}:"
    assert lines[4].startswith("claude_extract         90.0s")
    assert lines[-1] == "total_time_s          240.0s     384.0s     396.8s"
    assert proc.stderr == ""


def test_console_script_exit_statuses(data_dir: Path) -> None:
    write_golden(data_dir)
    none = run_mantis("runs", "stats", "nobody", "--json", "--data-dir", str(data_dir))
    assert none.returncode == 1
    assert json.loads(none.stdout)["run_count"] == 0
    assert none.stderr.startswith("Error: no succeeded runs of nobody")
    usage = run_mantis("runs", "stats", GOLDEN, "--since", "soon", "--data-dir", str(data_dir))
    assert usage.returncode == 2 and "Usage:" in usage.stderr


def loaded_modules(code: str) -> set[str]:
    """Modules in `sys.modules` after running `code` in a fresh interpreter."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)), file=sys.stderr)"
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    return set(json.loads(proc.stderr.splitlines()[-1]))


def test_importing_the_cli_loads_neither_anyio_nor_the_stats_machinery() -> None:
    loaded = loaded_modules("import mantisd.cli")
    assert "click" in loaded
    assert not {m for m in loaded if m.split(".")[0] in {"anyio", "sniffio", "msgspec"}}
    assert not {m for m in loaded if m.startswith(("mantisd.stats.query", "mantisd.reader"))}


def test_running_stats_does_not_load_anyio(data_dir: Path) -> None:
    write_golden(data_dir)
    code = (
        "from mantisd.cli import mantis\n"
        f"mantis(['runs', 'stats', {GOLDEN!r}, '--data-dir', {str(data_dir)!r}],"
        " standalone_mode=False)"
    )
    loaded = loaded_modules(code)
    assert "mantisd.stats.query" in loaded
    assert not {m for m in loaded if m.split(".")[0] in {"anyio", "sniffio"}}


def many_shards(data_dir: Path) -> None:
    for month in ("2026-01", "2026-02", "2026-03", "2026-04"):
        write_shard(data_dir, month, [golden_run(1, run_id=f"run-{month}")])


def test_progress_on_a_terminal(data_dir: Path) -> None:
    many_shards(data_dir)
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.run(
            [str(MANTIS), "runs", "stats", GOLDEN, "--last", "1000", "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE,
            stderr=terminal,
            timeout=60,
            check=False,
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
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    assert proc.returncode == 0
    assert b"\rreading 2026-04 (1/4 shards)..." in shown
    assert b"(4/4 shards)" in shown
    assert shown.endswith(b"\r\x1b[K")  # the line is cleared before the table shows
    assert proc.stdout.startswith(b"Across last 4 succeeded runs")


@pytest.mark.parametrize("args", [(), ("--json",)])
def test_no_progress_when_stderr_is_not_a_terminal(data_dir: Path, args: tuple[str, ...]) -> None:
    many_shards(data_dir)
    proc = run_mantis("runs", "stats", GOLDEN, "--last", "1000", "--data-dir", str(data_dir), *args)
    assert proc.returncode == 0
    assert proc.stderr == ""
