"""`mantis-ship.service`, checked with systemd's own tools and against the real shipper.

Offline: `systemd-analyze verify` and `security --offline=yes` (its exposure as low as a
networked client's gets: everything but the network is taken away). Live: the shipper, as the
unit's ExecStart= runs it, traced with strace under the kernel's W^X refusal (PR_SET_MDWE)
while it ships into a real PostgreSQL and follows until SIGTERM: every system call it makes
is in the unit's SystemCallFilter=, every socket family in its RestrictAddressFamilies=.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fleet import month_lines, run_ids
from tests.stats_data import write_shard
from tests.test_systemd import (
    _MDWE,
    MAX_EXPOSURE,
    exposure,
    unit_settings,
    unit_syscall_allow_list,
)

UNIT = Path(__file__).resolve().parents[1] / "mantisd" / "systemd" / "mantis-ship.service"
INSTALLED_MANTIS = "/opt/mantisd/.venv/bin/mantis"
CHECKOUT_MANTIS = Path(sys.executable).with_name("mantis")


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    """A copy of the unit whose ExecStart is this checkout's `mantis` (verify needs one)."""
    text = UNIT.read_text()
    assert INSTALLED_MANTIS in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(INSTALLED_MANTIS, str(CHECKOUT_MANTIS)))
    return copy


def test_unit_passes_systemd_analyze_verify(unit: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_unit_exposure_is_at_most_one(unit: Path) -> None:
    score = exposure(unit)
    print(f"systemd-analyze security --offline=yes mantis-ship.service: {score}")
    assert score <= MAX_EXPOSURE


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("Service.User", "mantis"),
        ("Service.Group", "mantis-clients"),
        ("Service.ReadWritePaths", "/var/lib/mantis"),
        ("Service.EnvironmentFile", "/etc/mantisd/mantis-ship.env"),
        ("Service.Restart", "on-failure"),
        ("Service.ProtectSystem", "strict"),
        ("Service.NoNewPrivileges", "yes"),
        ("Service.CapabilityBoundingSet", ""),
        ("Service.PrivateUsers", "yes"),
        ("Service.IPAddressDeny", "any"),
        ("Service.RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("Service.MemoryDenyWriteExecute", "yes"),
        ("Service.SystemCallFilter", "@system-service"),
        ("Service.SystemCallFilter", "~@privileged @resources"),
    ],
)
def test_unit_carries_the_required_settings(key: str, value: str) -> None:
    assert value in unit_settings(UNIT).get(key, []), f"{key}={value} missing"


def exec_start() -> list[str]:
    """The unit's command line, run from this checkout."""
    (line,) = unit_settings(UNIT)["Service.ExecStart"]
    argv = shlex.split(line)
    assert argv[0] == INSTALLED_MANTIS
    return [str(CHECKOUT_MANTIS), *argv[1:]]


@pytest.mark.slow
def test_shipper_runs_within_the_units_syscall_filter_and_without_wx_memory(
    pg_url: str, data_dir: Path, tmp_path: Path
) -> None:
    argv = exec_start()
    argv[argv.index("--data-dir") + 1] = str(data_dir)
    lines = month_lines("2026-10", 300)
    write_shard(data_dir, "2026-10", lines)
    trace = tmp_path / "trace"
    wrapper = [sys.executable, "-c", _MDWE, "strace", "-f", "-qq", "-o", str(trace)]
    proc = subprocess.Popen(
        [*wrapper, *argv],
        env={"MANTIS_DATABASE_URL": pg_url, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while len(run_ids(pg_url) if _has_schema(pg_url) else []) < 300:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    write_shard(data_dir, "2026-10", month_lines("2026-10", 10))  # and one more while following
    while len(run_ids(pg_url)) < 310:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    (shipper,) = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    os.kill(int(shipper), signal.SIGTERM)  # the shipper itself (strace's child)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    made, families = set(), set()
    for text in trace.read_text().splitlines():
        match = re.match(r"\d+ +(?:<\.\.\. )?(\w+)[( ]", text)
        if match and match[1] not in ("exited", "killed", "execve"):
            made.add(match[1])
        families |= set(re.findall(r" socket(?:pair)?\((AF_\w+)", text))
    assert {"flock", "pread64", "sendto"} <= made  # it did read shards and talk to the server
    assert families <= {"AF_UNIX", "AF_INET", "AF_INET6"}
    outside = made - unit_syscall_allow_list(UNIT)
    assert outside == set(), f"calls the unit's SystemCallFilter= would refuse: {outside}"


def _has_schema(url: str) -> bool:
    from tests.fleet import rows

    return bool(rows(url, "SELECT to_regclass('mantis.runs') IS NOT NULL")[0][0])
