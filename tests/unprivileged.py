"""What a child that drops privileges to `nobody` needs to import this checkout's code.

Some tests run `sys.executable` as `nobody` (`setpriv --reuid=65534 ...`), because root
ignores file modes. When the checkout and its venv lie under a directory other users cannot
traverse (a clone in root's home, mode 0700), such a child finds neither `mantisd` nor its
dependencies (`setpriv` still starts the interpreter: it keeps its capabilities until
`execve`). So, once per session, a `nobody` child tries the imports; if they fail, the import
packages (`mantisd`, `mantis_client` and every package of site-packages they import) are
copied into a world-readable temporary directory that goes on `PYTHONPATH` for every child.
When even that cannot help (the interpreter's own standard library out of reach), the
session header says why, before any test runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Mapping
from pathlib import Path

NOBODY = 65534
AS_NOBODY = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
REPO = Path(__file__).resolve().parents[1]
#: The checkout's import packages (an editable install points here).
PACKAGES = (REPO / "mantisd", REPO / "client" / "mantis_client")
#: What the demoted children import: both packages and the daemon's and CLI's dependencies.
PROBE = "import mantisd, mantis_client, mantisd.daemon.cli, mantisd.store"


def import_failure(env: Mapping[str, str]) -> str | None:
    """None when a `nobody` child with `env` imports what the tests need, else its error."""
    proc = subprocess.run(
        [*AS_NOBODY, sys.executable, "-c", PROBE],
        capture_output=True,
        text=True,
        env=dict(env),
        cwd="/",
        timeout=60,
    )
    if proc.returncode == 0:
        return None
    lines = (proc.stderr or f"exit status {proc.returncode}").strip().splitlines()
    return lines[-1] if lines else f"exit status {proc.returncode}"


def imported_from_site_packages() -> list[Path]:
    """The top-level packages and modules of site-packages that `PROBE` imports, found by
    running it (as this user) and looking at what it loaded: exactly what a child needs."""
    code = (  # what loads at start-up (the venv's .pth hooks) is not what PROBE needs
        f"import sys, json; before = set(sys.modules)\n{PROBE}\n"
        "new = [sys.modules[name] for name in set(sys.modules) - before]\n"
        "print(json.dumps([getattr(module, '__file__', None) for module in new]))"
    )
    # Without PYTHONPATH: once a copy is on it, the venv's own packages are what to copy.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/", env=env
    ).stdout
    roots = {Path(sysconfig.get_paths()[key]) for key in ("purelib", "platlib")}
    found = set()
    for file in filter(None, json.loads(out)):
        for root in roots:
            if Path(file).is_relative_to(root):
                found.add(root / Path(file).relative_to(root).parts[0])
    return sorted(found)


def importable_copy() -> Path:
    """A fresh world-readable directory holding the packages and their dependencies."""
    root = Path(tempfile.mkdtemp(prefix="mantis-importable-"))
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in [*PACKAGES, *imported_from_site_packages()]:
        if package.is_dir():
            shutil.copytree(package, root / package.name, ignore=ignore)
        else:
            shutil.copy2(package, root / package.name)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else path.stat().st_mode & 0o777 | 0o444)
    return root


class UnprivilegedImports:
    """Set up once per session: `PYTHONPATH` for `nobody` children, when they need one."""

    def __init__(self) -> None:
        self.copy: Path | None = None
        self.header: str | None = None

    def prepare(self) -> None:
        if os.geteuid() != 0 or shutil.which("setpriv") is None:
            return  # no test demotes a child then
        failure = import_failure(os.environ)
        if failure is None:
            return
        self.copy = importable_copy()
        pythonpath = os.pathsep.join(filter(None, [str(self.copy), os.environ.get("PYTHONPATH")]))
        still = import_failure({**os.environ, "PYTHONPATH": pythonpath})
        if still is None:
            os.environ["PYTHONPATH"] = pythonpath
            self.header = (
                f"children run as uid {NOBODY} cannot reach this checkout ({failure}): "
                f"they import a copy of it in {self.copy}"
            )
        else:
            self.header = (
                f"WARNING: children run as uid {NOBODY} cannot import this checkout, even "
                f"from a world-readable copy ({still}); the tests that drop privileges will "
                f"fail. Clone into a directory every user can traverse, with a Python they "
                f"can run, e.g. /srv or /opt."
            )

    def cleanup(self) -> None:
        if self.copy is not None:
            shutil.rmtree(self.copy, ignore_errors=True)
