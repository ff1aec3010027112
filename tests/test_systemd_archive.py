"""`mantis-archive.service` and its timer, checked with systemd's own tools and against the
real archiver.

Offline: `systemd-analyze verify` and `security --offline=yes` (exposure at most 1, as the
daemon's: it needs no network at all). Live: the unit's ExecStart=, traced with strace under
the kernel's W^X refusal (PR_SET_MDWE), archives a real data dir: every system call it makes
is in the unit's SystemCallFilter=, and it opens no socket but AF_UNIX.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mantisd.paths import list_log_files
from tests.fleet import month_lines
from tests.stats_data import write_shard
from tests.test_systemd import (
    _MDWE,
    MAX_EXPOSURE,
    exposure,
    unit_settings,
    unit_syscall_allow_list,
)

UNITS = Path(__file__).resolve().parents[1] / "mantisd" / "systemd"
SERVICE = UNITS / "mantis-archive.service"
TIMER = UNITS / "mantis-archive.timer"
INSTALLED_MANTIS = "/opt/mantisd/.venv/bin/mantis"
CHECKOUT_MANTIS = Path(sys.executable).with_name("mantis")


@pytest.fixture
def units(tmp_path: Path) -> Path:
    """Copies of the service (ExecStart: this checkout's `mantis`) and of the timer."""
    text = SERVICE.read_text()
    assert INSTALLED_MANTIS in text
    (tmp_path / SERVICE.name).write_text(text.replace(INSTALLED_MANTIS, str(CHECKOUT_MANTIS)))
    (tmp_path / TIMER.name).write_text(TIMER.read_text())
    return tmp_path


def test_units_pass_systemd_analyze_verify(units: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(units / TIMER.name), str(units / SERVICE.name)],
        capture_output=True,
        text=True,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_service_exposure_is_at_most_one(units: Path) -> None:
    score = exposure(units / SERVICE.name)
    print(f"systemd-analyze security --offline=yes mantis-archive.service: {score}")
    assert score <= MAX_EXPOSURE


@pytest.mark.parametrize(
    ("unit", "key", "value"),
    [
        (SERVICE, "Service.Type", "oneshot"),
        (SERVICE, "Service.User", "mantis"),
        (SERVICE, "Service.Group", "mantis-clients"),
        (SERVICE, "Service.ReadWritePaths", "/var/lib/mantis"),
        (SERVICE, "Service.ProtectSystem", "strict"),
        (SERVICE, "Service.PrivateNetwork", "yes"),
        (SERVICE, "Service.NoNewPrivileges", "yes"),
        (SERVICE, "Service.CapabilityBoundingSet", ""),
        (SERVICE, "Service.MemoryDenyWriteExecute", "yes"),
        (SERVICE, "Service.SystemCallFilter", "@system-service"),
        (SERVICE, "Service.SystemCallFilter", "~@privileged @resources"),
        (TIMER, "Timer.OnCalendar", "daily"),
        (TIMER, "Timer.Persistent", "true"),
        (TIMER, "Timer.Unit", "mantis-archive.service"),
        (TIMER, "Install.WantedBy", "timers.target"),
    ],
)
def test_units_carry_the_required_settings(unit: Path, key: str, value: str) -> None:
    assert value in unit_settings(unit).get(key, []), f"{key}={value} missing"


def test_the_unit_ships_in_the_wheel() -> None:
    """pyproject's package data takes every file of mantisd/systemd/."""
    text = (UNITS.parents[1] / "pyproject.toml").read_text()
    assert '"systemd/*"' in text and SERVICE.parent.name == "systemd"


@pytest.mark.slow
def test_archiver_runs_within_the_units_syscall_filter_and_without_wx_memory(
    data_dir: Path, tmp_path: Path
) -> None:
    (line,) = unit_settings(SERVICE)["Service.ExecStart"]
    argv = shlex.split(line)
    assert argv[0] == INSTALLED_MANTIS
    argv = [str(CHECKOUT_MANTIS), *argv[1:]]
    argv[argv.index("--data-dir") + 1] = str(data_dir)
    for month in ("2025-01", "2025-02"):
        write_shard(data_dir, month, month_lines(month, 200))
    trace = tmp_path / "trace"
    wrapper = [sys.executable, "-c", _MDWE, "strace", "-f", "-qq", "-o", str(trace)]
    result = subprocess.run(
        [*wrapper, *argv], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}
    )
    assert result.returncode == 0, result.stderr
    assert [f.path.name for f in list_log_files(data_dir)] == [
        "2025-02.jsonl.zst",
        "2025-01.jsonl.zst",
    ]
    made, families = set(), set()
    for text in trace.read_text().splitlines():
        match = re.match(r"\d+ +(?:<\.\.\. )?(\w+)[( ]", text)
        if match and match[1] not in ("exited", "killed", "execve"):
            made.add(match[1])
        families |= set(re.findall(r" socket(?:pair)?\((AF_\w+)", text))
    assert {"flock", "fdatasync", "fsync", "unlinkat"} <= made
    assert made & {"rename", "renameat", "renameat2"} and families <= {"AF_UNIX"}
    outside = made - unit_syscall_allow_list(SERVICE)
    assert outside == set(), f"calls the unit's SystemCallFilter= would refuse: {outside}"
