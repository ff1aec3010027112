"""A real PostgreSQL for the tests and benchmarks: a throwaway cluster on a Unix socket.

    with running_postgres() as server:
        url = server.create_database()

`initdb` into a temporary directory, as `nobody` when we are root (PostgreSQL refuses to run
as root), listening on no TCP port, only on a socket in that directory. Debian's
`postgresql` package provides the binaries (`.ci/run` installs it). Fixtures: `pg_server`
(one cluster per test session) and `pg_url` (a fresh database per test); import them into a
test module to use them.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

NOBODY = 65534
SUPERUSER = "mantis"
_databases = itertools.count()


def postgres_bin() -> Path:
    """The newest installed server's bin directory (Debian keeps them off the PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql")


class PgServer:
    """A cluster in `root` (`data/`, `sock/`, `log`), run by `nobody` when we are root."""

    def __init__(self, root: Path, *, durable: bool = False) -> None:
        self.root = root
        self.data = root / "data"
        self.socket_dir = root / "sock"
        self.log = root / "log"
        self.bin = postgres_bin()
        self.durable = durable

    def _as_owner(self, *argv: str | Path) -> list[str]:
        prefix = []
        if os.geteuid() == 0:
            prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        return [*prefix, *map(str, argv)]

    def _run(self, *argv: str | Path) -> None:
        result = subprocess.run(self._as_owner(*argv), capture_output=True, text=True, timeout=120)
        if result.returncode:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{argv[0]} failed: {result.stdout}{result.stderr}\n{log}")

    def init(self) -> None:
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            for path in (self.root, self.socket_dir):
                os.chown(path, NOBODY, NOBODY)
        self._run(
            self.bin / "initdb",
            "-D",
            self.data,
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )

    def _options(self) -> str:
        options = f"-c listen_addresses='' -c unix_socket_directories={self.socket_dir}"
        if not self.durable:  # tests: no crash of the machine to survive, only of processes
            options += " -c fsync=off -c full_page_writes=off"
        return options

    def start(self) -> None:
        self._run(
            self.bin / "pg_ctl",
            "-D",
            self.data,
            "-l",
            self.log,
            "-w",
            "-o",
            self._options(),
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(self.bin / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        self._run(
            self.bin / "pg_ctl",
            "-D",
            self.data,
            "-l",
            self.log,
            "-m",
            mode,
            "-w",
            "-o",
            self._options(),
            "restart",
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql:///{database}?host={self.socket_dir}&user={SUPERUSER}"

    def create_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(_databases)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}".encode())
        return self.url(name)


@contextmanager
def running_postgres(*, durable: bool = False) -> Iterator[PgServer]:
    """A started cluster in a fresh temporary directory; stopped and removed on exit."""
    root = Path(tempfile.mkdtemp(prefix="mantis-pg-", dir="/tmp"))
    root.chmod(0o755)  # the server's user must reach its socket and data dirs
    server = PgServer(root, durable=durable)
    try:
        server.init()
        server.start()
        yield server
    finally:
        try:
            server.stop("immediate")
        except RuntimeError:
            pass  # never started, or already stopped by the test
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL for the whole test session."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """The URL of a fresh, empty database on the session's server."""
    return pg_server.create_database()
