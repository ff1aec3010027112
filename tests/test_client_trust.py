"""Which daemon sockets the client hands rows to (design.md, "Trust"), against real squatters.

A squatter is another user listening where the client looks for mantisd: the issue's attack is
`/tmp/mantisd-$UID` made first by someone else, who answers `{"ok":true}` and keeps the rows.
Each squatter here is a real process, a stdlib listener that drops to its user and reports
every byte it was sent; the daemon cases run the real `mantisd` as `nobody`, bound by itself or
behind `systemd-socket-activate`. Every case becomes other users, so every case needs root.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mantis_client import Client, Outcome, append
from mantisd.paths import SYSTEM_SOCKET
from tests.daemon_process import running_daemon, wait_for
from tests.rows import RowFactory
from tests.test_client import run_ids_on_disk

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become other users")

NOBODY = 65534
AS_NOBODY = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")

# argv: socket path, uid to become, the step before which it becomes that uid ("bind": the
# socket file and SO_PEERCRED are the user's; "listen": root binds, the user listens, so only
# SO_PEERCRED is the user's), and optionally a directory the user creates first.
_LISTENER = r"""
import os, socket, sys, threading
path, uid, drop_before = sys.argv[1], int(sys.argv[2]), sys.argv[3]
os.umask(0)  # a squatter lets everyone connect
def become():
    os.setgroups([]); os.setgid(uid); os.setuid(uid)
if drop_before == "bind":
    become()
if len(sys.argv) > 4:
    os.mkdir(sys.argv[4], 0o755)
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.bind(path)
if drop_before == "listen":
    become()
sock.listen()
print("ready", flush=True)
def serve(conn):
    with conn:
        while data := conn.recv(65536):
            print(data.hex(), flush=True)
            conn.sendall(b'{"ok":true}\n' * data.count(b"\n"))
while True:
    threading.Thread(target=serve, args=(sock.accept()[0],), daemon=True).start()
"""


class Listener:
    """A running `_LISTENER`: `received()` stops it and returns every byte it was sent."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def received(self) -> bytes:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=30)
        return b"".join(bytes.fromhex(line) for line in out.split())


@contextmanager
def listening(
    path: Path, uid: int, *, drop_before: str = "bind", mkdir: Path | None = None
) -> Iterator[Listener]:
    argv = [sys.executable, "-c", _LISTENER, str(path), str(uid), drop_before]
    proc = subprocess.Popen(
        argv + ([str(mkdir)] if mkdir else []),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n", proc.communicate(timeout=30)
        yield Listener(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)


@pytest.fixture
def open_tmp(short_tmp: Path) -> Path:
    """`short_tmp`, traversable by the unprivileged listeners and clients."""
    short_tmp.chmod(0o755)
    return short_tmp


def owned_dir(path: Path, uid: int, mode: int = 0o755) -> Path:
    path.mkdir()
    os.chown(path, uid, uid)
    path.chmod(mode)
    return path


def assert_written_directly(result: Any, data_dir: Path, row: dict[str, Any], why: str) -> None:
    assert result.outcome is Outcome.WRITTEN_DIRECTLY, result
    assert result.detail.startswith("untrusted socket "), result.detail
    assert why in result.detail, result.detail
    assert run_ids_on_disk(data_dir) == [row["run_id"]]


# --- the attack, end to end -----------------------------------------------------------

_APPEND_AS_CHILD = """
import json, sys
from mantis_client import append
result = append(json.loads(sys.argv[1]), **json.loads(sys.argv[2]))
print(json.dumps([result.outcome.value, result.detail]))
"""


def append_as(uid: int, row: dict[str, Any], data_dir: Path, **kwargs: Any) -> tuple[str, str]:
    """`append(row, **kwargs)` in a fresh interpreter run as `uid`, with no socket configured
    (no `MANTIS_SOCKET`, no `XDG_RUNTIME_DIR`): what `sudo -u`, cron and containers get."""
    proc = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", sys.executable]
        + ["-c", _APPEND_AS_CHILD, json.dumps(row), json.dumps(kwargs)],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(data_dir),
            "MANTIS_DATA_DIR": str(data_dir),
            **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"},
        },
    )
    assert proc.returncode == 0, proc.stderr
    outcome, detail = json.loads(proc.stdout)
    return outcome, detail


@pytest.fixture
def client_uid(open_tmp: Path) -> Iterator[int]:
    """A uid of nobody in particular for a client process, and its fresh default socket dir."""
    uid = 200_000 + os.getpid() % 100_000
    default_dir = Path(f"/tmp/mantisd-{uid}")
    assert not default_dir.exists()
    yield uid
    shutil.rmtree(default_dir, ignore_errors=True)


def test_a_squatter_on_the_default_socket_gets_nothing_and_the_row_is_written(
    client_uid: int, open_tmp: Path, row_factory: RowFactory
) -> None:
    """`nobody` makes the client's `/tmp/mantisd-$UID` first and answers `{"ok":true}`."""
    assert not SYSTEM_SOCKET.exists()  # else the client would (rightly) use that one
    default_dir = Path(f"/tmp/mantisd-{client_uid}")
    data_dir = owned_dir(open_tmp / "data", client_uid)
    row = row_factory()
    with listening(default_dir / "mantisd.sock", NOBODY, mkdir=default_dir) as squatter:
        assert default_dir.stat().st_uid == NOBODY
        outcome, detail = append_as(client_uid, row, data_dir)
        received = squatter.received()
    assert received == b""
    assert outcome == "written_directly"
    assert detail == (
        f"untrusted socket {default_dir}/mantisd.sock: directory {default_dir} belongs to "
        f"uid {NOBODY}, not to root, us (uid {client_uid}) or an expected uid"
    )
    assert run_ids_on_disk(data_dir) == [row["run_id"]]


# --- the socket's directory -------------------------------------------------------------------


def test_a_directory_another_user_owns_is_not_trusted(
    open_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    socket_dir = owned_dir(open_tmp / "theirs", NOBODY)
    row = row_factory()
    with listening(socket_dir / "d.sock", NOBODY) as squatter:
        result = append(row, socket_path=socket_dir / "d.sock", data_dir=data_dir)
        assert squatter.received() == b""
    assert_written_directly(result, data_dir, row, f"belongs to uid {NOBODY}")


@pytest.mark.parametrize("mode", [0o777, 0o1777], ids=["world-writable", "sticky"])
def test_a_directory_others_may_write_is_not_trusted(
    mode: int, open_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    """Even root's and even sticky (like /tmp itself): anyone may have made the socket first."""
    socket_dir = owned_dir(open_tmp / "shared", 0, mode)
    row = row_factory()
    with listening(socket_dir / "d.sock", 0) as listener:
        result = append(row, socket_path=socket_dir / "d.sock", data_dir=data_dir)
        assert listener.received() == b""
    assert_written_directly(result, data_dir, row, f"writable by others (mode {mode:o})")


def test_a_symlinked_directory_is_not_trusted(
    open_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    real_dir = owned_dir(open_tmp / "real", 0)
    (open_tmp / "link").symlink_to(real_dir)
    row = row_factory()
    with listening(real_dir / "d.sock", 0) as listener:
        result = append(row, socket_path=open_tmp / "link" / "d.sock", data_dir=data_dir)
        assert listener.received() == b""
    assert_written_directly(result, data_dir, row, f"{open_tmp / 'link'} is a symbolic link")


def test_a_socket_path_that_is_a_symlink_is_not_trusted(
    open_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    socket_dir = owned_dir(open_tmp / "ours", 0)
    (socket_dir / "link.sock").symlink_to(socket_dir / "d.sock")
    row = row_factory()
    with listening(socket_dir / "d.sock", 0) as listener:
        result = append(row, socket_path=socket_dir / "link.sock", data_dir=data_dir)
        assert listener.received() == b""
    assert_written_directly(result, data_dir, row, "not a socket (a symbolic link)")


def test_a_group_writable_directory_of_a_trusted_owner_is_trusted(
    open_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    """The documented choice: group write is allowed (a group member who replaces the socket
    still fails the listener check, so the worst it can do is make us write directly)."""
    socket_dir = owned_dir(open_tmp / "group", 0, 0o2775)
    row = row_factory()
    with listening(socket_dir / "d.sock", 0) as listener:
        result = append(row, socket_path=socket_dir / "d.sock", data_dir=data_dir)
        assert listener.received().count(row["run_id"].encode()) == 1
    assert result.outcome is Outcome.DELIVERED, result


# --- the listening peer -----------------------------------------------------------------------


def test_a_listener_of_another_uid_in_a_trusted_directory_is_not_trusted(
    open_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    """Root's directory and root's socket file, but `nobody` listens: connected, never sent."""
    socket_dir = owned_dir(open_tmp / "ours", 0)
    row = row_factory()
    with listening(socket_dir / "d.sock", NOBODY, drop_before="listen") as squatter:
        assert (socket_dir / "d.sock").lstat().st_uid == 0
        with Client(socket_path=socket_dir / "d.sock", data_dir=data_dir) as client:
            result = client.append(row)
        assert squatter.received() == b""
    assert_written_directly(
        result,
        data_dir,
        row,
        f"listener uid {NOBODY} is not root, us (uid 0) or an expected uid",
    )


@pytest.mark.parametrize("how", ["option", "environment"])
def test_the_expected_uid_is_trusted(
    how: str,
    open_tmp: Path,
    data_dir: Path,
    row_factory: RowFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    socket_dir = owned_dir(open_tmp / "ours", 0)
    kwargs: dict[str, Any] = {"socket_path": socket_dir / "d.sock", "data_dir": data_dir}
    if how == "option":
        kwargs["expect_uid"] = NOBODY
    else:
        monkeypatch.setenv("MANTIS_DAEMON_UID", str(NOBODY))
    rows = [row_factory(), row_factory()]
    with listening(socket_dir / "d.sock", NOBODY, drop_before="listen") as listener:
        with Client(**kwargs) as client:
            results = [client.append(rows[0]), append(rows[1], **kwargs)]
        received = listener.received()
    assert [r.outcome for r in results] == [Outcome.DELIVERED] * 2, results
    assert [json.loads(line)["run_id"] for line in received.splitlines()] == [
        r["run_id"] for r in rows
    ]


def test_a_directory_of_the_expected_uid_is_trusted(
    open_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    """Whom we trust with the rows may also own the directory they arrive through."""
    socket_dir = owned_dir(open_tmp / "theirs", NOBODY)
    row = row_factory()
    with listening(socket_dir / "d.sock", NOBODY) as listener:
        result = append(
            row, socket_path=socket_dir / "d.sock", data_dir=data_dir, expect_uid=NOBODY
        )
        assert listener.received().count(row["run_id"].encode()) == 1
    assert result.outcome is Outcome.DELIVERED, result


def test_an_unusable_daemon_uid_variable_is_named_in_the_detail(
    open_tmp: Path, data_dir: Path, row_factory: RowFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MANTIS_DAEMON_UID", "mantis")
    socket_dir = owned_dir(open_tmp / "ours", 0)
    row = row_factory()
    with listening(socket_dir / "d.sock", NOBODY, drop_before="listen") as squatter:
        result = append(row, socket_path=socket_dir / "d.sock", data_dir=data_dir)
        assert squatter.received() == b""
    assert_written_directly(
        result, data_dir, row, "MANTIS_DAEMON_UID='mantis' ignored: not a numeric uid"
    )


@pytest.mark.parametrize("bad", [-1, 2**32 - 1, True, "65534"])
def test_an_unusable_expect_uid_is_a_clear_error(bad: Any, short_tmp: Path, data_dir: Path) -> None:
    with pytest.raises(ValueError, match="expect_uid: expected a uid"):
        Client(socket_path=short_tmp / "d.sock", data_dir=data_dir, expect_uid=bad)


# --- the real daemon --------------------------------------------------------------------------


def test_a_daemon_run_by_the_same_user_is_trusted(
    open_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    """`mantisd` as `nobody` in its own directory: `nobody`'s runtime delivers to it; root's
    writes directly, unless told to expect `nobody`."""
    socket_dir = owned_dir(open_tmp / "sock", NOBODY)
    daemon_data = owned_dir(open_tmp / "daemon-data", NOBODY)
    nobody_data = owned_dir(open_tmp / "nobody-data", NOBODY)
    rows = [row_factory() for _ in range(3)]
    socket_path = socket_dir / "mantisd.sock"
    with running_daemon(socket_path, daemon_data, wrapper=AS_NOBODY) as daemon:
        same_user = append_as(NOBODY, rows[0], nobody_data, socket_path=str(socket_path))
        other_user = append(rows[1], socket_path=socket_path, data_dir=data_dir)
        expected = append(rows[2], socket_path=socket_path, data_dir=data_dir, expect_uid=NOBODY)
        assert daemon.status()["rows_written"] == 2
    assert same_user == ("delivered", "")
    assert expected.outcome is Outcome.DELIVERED, expected
    assert_written_directly(other_user, data_dir, rows[1], f"belongs to uid {NOBODY}")
    assert sorted(run_ids_on_disk(daemon_data)) == sorted([rows[0]["run_id"], rows[2]["run_id"]])
    assert run_ids_on_disk(nobody_data) == []


def test_the_systemd_socket_is_trusted_by_a_runtime_of_another_user(
    client_uid: int, open_tmp: Path, row_factory: RowFactory
) -> None:
    """As packaged: root (pid 1, here `systemd-socket-activate`) makes and listens on the
    socket in a root directory, the daemon runs as its own user, the runtime as a third."""
    run_dir = owned_dir(open_tmp / "run", 0)
    socket_path = run_dir / "mantisd.sock"
    daemon_data = owned_dir(open_tmp / "daemon-data", NOBODY)
    client_data = owned_dir(open_tmp / "client-data", client_uid)
    activate = ["systemd-socket-activate", "--fdname=mantisd", "-l", str(socket_path)]
    activate += ["-E", f"PATH={os.environ['PATH']}", "-E", f"MANTIS_DATA_DIR={daemon_data}"]
    proc = subprocess.Popen(
        [*activate, *AS_NOBODY, sys.executable, "-m", "mantisd.daemon"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: _is_listening(socket_path), timeout=30)
        socket_path.chmod(0o666)  # SocketMode=0660 with the runtime in SocketGroup=, as packaged
        row = row_factory()
        outcome = append_as(
            client_uid, row, client_data, socket_path=str(socket_path), timeout=30.0
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert outcome == ("delivered", ""), stderr.decode()
    assert run_ids_on_disk(daemon_data) == [row["run_id"]]
    assert run_ids_on_disk(client_data) == []


def _is_listening(path: Path) -> bool:
    """Whether the activator listens yet (it binds, then listens); the probe starts mantisd."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return False
    return True


def test_append_with_an_unusable_expect_uid_says_why_it_dropped_the_row(
    short_tmp: Path, data_dir: Path, row_factory: RowFactory
) -> None:
    result = append(
        row_factory(), socket_path=short_tmp / "d.sock", data_dir=data_dir, expect_uid=-1
    )
    assert result.outcome is Outcome.DROPPED
    assert result.detail == "cannot set up the client: expect_uid: expected a uid, got -1"
