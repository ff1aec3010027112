"""The world-readable copy that children demoted to `nobody` import when they cannot reach the
checkout (a clone in root's 0700 home): it must hold everything they import."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unprivileged import AS_NOBODY, PROBE, importable_copy, imported_from_site_packages


@pytest.fixture(scope="module")
def copy() -> Iterator[Path]:
    root = importable_copy()
    yield root
    shutil.rmtree(root)


def test_the_copy_alone_imports_everything_a_demoted_child_needs(copy: Path) -> None:
    """`-S`: no site-packages, no editable install; only the copy on PYTHONPATH."""
    prefix = AS_NOBODY if os.geteuid() == 0 and shutil.which("setpriv") else ()
    code = f"{PROBE}, msgspec, anyio, click; print(mantisd.__file__, mantis_client.__file__)"
    proc = subprocess.run(
        [*prefix, sys.executable, "-S", "-c", code],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(copy)},
        cwd="/",
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        str(copy / "mantisd" / "__init__.py"),
        str(copy / "mantis_client" / "__init__.py"),
    ]


def test_the_copy_is_readable_by_everyone(copy: Path) -> None:
    for path in [copy, *copy.rglob("*")]:
        mode = path.stat().st_mode
        assert mode & stat.S_IROTH, path
        if path.is_dir():
            assert mode & stat.S_IXOTH, path


def test_only_what_the_children_import_is_copied() -> None:
    names = {path.name for path in imported_from_site_packages()}
    assert {"anyio", "msgspec", "click"} <= names
    assert not names & {"pytest", "scipy", "mypy", "ruff", "duckdb", "mantisd", "mantis_client"}
