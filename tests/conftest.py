"""Shared fixtures: temporary data dirs, short socket paths, and a valid-row factory."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pg import pg_server, pg_url  # noqa: F401 - a real PostgreSQL (session, database)
from tests.rows import RowFactory, make_row
from tests.unprivileged import UnprivilegedImports

_unprivileged = UnprivilegedImports()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty data directory (`$MANTIS_DATA_DIR`)."""
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short directory for AF_UNIX socket paths (limited to ~108 bytes)."""
    with tempfile.TemporaryDirectory(prefix="mt-", dir="/tmp") as d:
        yield Path(d)


@pytest.fixture
def traversable_dir() -> Iterator[Path]:
    """A directory any user can traverse (pytest's tmp_path is private to its owner), for
    tests that run a child as an unprivileged user."""
    path = Path(tempfile.mkdtemp(prefix="mantis-"))
    path.chmod(0o755)
    yield path
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            Path(root, name).chmod(0o700)
    shutil.rmtree(path)


@pytest.fixture
def row_factory() -> RowFactory:
    return make_row


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI (`CI=true`) a skip is a failure: `.ci/run` installs every tool the tests drive
    (strace, setpriv, systemd's offline tools) and runs as root, so nothing may be skipped."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") == "true" and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped in CI: {report.longrepr}"


def pytest_configure(config: pytest.Config) -> None:
    """Before any test: make this checkout importable by children demoted to `nobody`, and
    send the stats cache (`$XDG_CACHE_HOME/mantis/`) to a directory of the session's own,
    never into the real home."""
    _unprivileged.prepare()
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="mantis-test-cache-")


def pytest_report_header(config: pytest.Config) -> str | None:
    return _unprivileged.header


def pytest_unconfigure(config: pytest.Config) -> None:
    _unprivileged.cleanup()
    shutil.rmtree(os.environ["XDG_CACHE_HOME"], ignore_errors=True)
