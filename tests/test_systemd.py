"""mantisd under systemd, proven with systemd's own tools on this machine (no systemd as PID 1).

Offline: `systemd-analyze verify` and `security --offline=yes` on the shipped units, and the
sysusers/tmpfiles files applied for real. Live: the real daemon started by
`systemd-socket-activate` (which execs it in place: its pid is the `Popen` pid), notified on a
test-bound `NOTIFY_SOCKET` that reads each sender's pid from `SCM_CREDENTIALS`.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec
import pytest

from mantisd import store
from mantisd.paths import list_shards, shard_path
from tests.rows import make_row

REPO = Path(__file__).resolve().parents[1]
UNITS = REPO / "mantisd" / "systemd"  # shipped in the wheel; systemd/ links here
SERVICE = UNITS / "mantisd.service"
SOCKET = UNITS / "mantisd.socket"
SYSUSERS = UNITS / "mantisd.sysusers.conf"
TMPFILES = UNITS / "mantisd.tmpfiles.conf"
#: Where the units expect the installed daemon, and this checkout's stand-in for `verify`.
INSTALLED_MANTISD = "/opt/mantisd/.venv/bin/mantisd"
CHECKOUT_MANTISD = Path(sys.executable).with_name("mantisd")
MAX_EXPOSURE = 1.0
#: A short watchdog period (µs) so that the live tests see many pings: one every 0.1 s.
WATCHDOG_USEC = 200_000
WATCHDOG_S = WATCHDOG_USEC / 1e6
#: Variables of this test process that must not leak into an activated daemon.
_SD_PREFIXES = ("LISTEN_", "NOTIFY_SOCKET", "WATCHDOG_", "JOURNAL_STREAM", "MANTIS")


def run(*args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, check=check)


# --- The unit files, offline --------------------------------------------------------------


def unit_settings(path: Path) -> dict[str, list[str]]:
    """`Section.Key` -> every value assigned to it, in order (systemd allows repeated keys)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return settings


@pytest.fixture
def units(tmp_path: Path) -> Path:
    """A copy of both units whose ExecStart is this checkout's `mantisd` (verify needs one)."""
    text = SERVICE.read_text()
    assert INSTALLED_MANTISD in text
    (tmp_path / SERVICE.name).write_text(text.replace(INSTALLED_MANTISD, str(CHECKOUT_MANTISD)))
    shutil.copy(SOCKET, tmp_path / SOCKET.name)
    return tmp_path


def test_units_pass_systemd_analyze_verify(units: Path) -> None:
    assert CHECKOUT_MANTISD.exists()
    result = run(
        "systemd-analyze", "verify", units / SOCKET.name, units / SERVICE.name, check=False
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def exposure(unit: Path) -> float:
    """The "Overall exposure level" that `systemd-analyze security --offline=yes` gives."""
    result = run("systemd-analyze", "security", "--offline=yes", unit, check=False)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match[1])


def test_service_exposure_is_at_most_one(units: Path) -> None:
    score = exposure(units / SERVICE.name)
    print(f"systemd-analyze security --offline=yes mantisd.service: {score}")
    assert score <= MAX_EXPOSURE


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("Unit.Requires", "mantisd.socket"),
        ("Service.Type", "notify"),
        ("Service.NotifyAccess", "main"),
        ("Service.ExecStart", INSTALLED_MANTISD),
        ("Service.EnvironmentFile", "-/etc/mantisd/mantisd.env"),
        ("Service.SyslogIdentifier", "mantisd"),
        ("Service.Restart", "on-failure"),
        ("Service.User", "mantis"),
        ("Service.Group", "mantis-clients"),
        ("Service.StateDirectory", "mantis"),
        ("Service.UMask", "0077"),
        ("Service.ProtectSystem", "strict"),
        ("Service.ProtectHome", "yes"),
        ("Service.PrivateTmp", "yes"),
        ("Service.PrivateDevices", "yes"),
        ("Service.PrivateNetwork", "yes"),
        ("Service.IPAddressDeny", "any"),
        ("Service.RestrictAddressFamilies", "AF_UNIX"),
        ("Service.CapabilityBoundingSet", ""),
        ("Service.NoNewPrivileges", "yes"),
        ("Service.ProtectKernelTunables", "yes"),
        ("Service.ProtectKernelModules", "yes"),
        ("Service.ProtectKernelLogs", "yes"),
        ("Service.ProtectControlGroups", "yes"),
        ("Service.ProtectClock", "yes"),
        ("Service.ProtectHostname", "yes"),
        ("Service.ProtectProc", "invisible"),
        ("Service.ProcSubset", "pid"),
        ("Service.RestrictNamespaces", "yes"),
        ("Service.RestrictRealtime", "yes"),
        ("Service.RestrictSUIDSGID", "yes"),
        ("Service.LockPersonality", "yes"),
        ("Service.MemoryDenyWriteExecute", "yes"),
        ("Service.RemoveIPC", "yes"),
        ("Service.SystemCallArchitectures", "native"),
        ("Service.SystemCallFilter", "@system-service"),
        ("Service.SystemCallFilter", "~@privileged @resources"),
        ("Socket.ListenStream", "/run/mantisd.sock"),
        ("Socket.SocketGroup", "mantis-clients"),
        ("Socket.SocketMode", "0660"),
        ("Socket.FileDescriptorName", "mantisd"),
        ("Install.WantedBy", "sockets.target"),
    ],
)
def test_units_carry_the_required_settings(key: str, value: str) -> None:
    settings = unit_settings(SERVICE) | unit_settings(SOCKET)
    assert value in settings.get(key, []), f"{key}={value} missing"


def test_watchdog_and_stop_timeouts_are_set() -> None:
    settings = unit_settings(SERVICE)
    for key in ("Service.WatchdogSec", "Service.TimeoutStopSec"):
        assert re.fullmatch(r"\d+s", settings[key][-1]), key


def test_socket_path_is_the_clients_default_and_outside_runtime_directory() -> None:
    from mantisd.paths import SYSTEM_SOCKET

    assert unit_settings(SOCKET)["Socket.ListenStream"] == [str(SYSTEM_SOCKET)]
    assert "Service.RuntimeDirectory" not in unit_settings(SERVICE)


def read_db(path: Path) -> dict[str, list[str]]:
    """/etc/passwd or /etc/group as name -> fields."""
    return {line.split(":")[0]: line.split(":") for line in path.read_text().splitlines()}


def test_sysusers_creates_the_user_and_the_client_group(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    run("systemd-sysusers", f"--root={tmp_path}", SYSUSERS)
    users, groups = read_db(tmp_path / "etc/passwd"), read_db(tmp_path / "etc/group")
    assert users["mantis"][3] == groups["mantis-clients"][2]  # primary group: the clients'
    assert users["mantis"][5] == "/var/lib/mantis"
    assert users["mantis"][6].endswith("nologin")


# --- The shared data dir: default ACL instead of umask ------------------------------------

DAEMON_UID, CLIENTS_GID, RUNTIME_UID = 64_000, 64_100, 64_001


def as_user(uid: int, gid: int, groups: list[int], umask: int, path: Path, line: bytes) -> None:
    """`store.append(path, line)` in a forked child running as uid/gid with this umask."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover (child)
        code = 1
        try:
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            os.umask(umask)
            store.append(path, line)
            code = 0
        except BaseException as exc:
            os.write(2, f"as uid {uid}: {exc!r}\n".encode())
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"uid {uid} could not append to {path}"


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root (CI runs as root)")
def test_tmpfiles_acl_lets_daemon_and_fallback_share_shards(short_tmp: Path) -> None:
    """UMask=0077 in the unit, a runtime umask of 022: both still append to each other's shards.

    The shipped tmpfiles line, with this test's directory and numeric ids for the names.
    """
    short_tmp.chmod(0o755)
    data_dir = short_tmp / "mantis"
    conf = TMPFILES.read_text()
    for old, new in [
        ("/var/lib/mantis", str(data_dir)),
        ("mantis mantis-clients", f"{DAEMON_UID} {CLIENTS_GID}"),
        ("group:mantis-clients:", f"group:{CLIENTS_GID}:"),
    ]:
        assert old in conf
        conf = conf.replace(old, new)
    (short_tmp / "mantisd.conf").write_text(conf)
    run("systemd-tmpfiles", "--create", short_tmp / "mantisd.conf")
    assert data_dir.stat().st_gid == CLIENTS_GID

    daemon = (DAEMON_UID, CLIENTS_GID, [], 0o077)
    runtime = (RUNTIME_UID, RUNTIME_UID, [CLIENTS_GID], 0o022)
    january, february = shard_path(data_dir, "2026-01"), shard_path(data_dir, "2026-02")
    as_user(*daemon, january, b'{"by":"daemon"}\n')  # creates runs_log/ too
    as_user(*runtime, january, b'{"by":"fallback"}\n')
    as_user(*runtime, february, b'{"by":"fallback"}\n')
    as_user(*daemon, february, b'{"by":"daemon"}\n')
    for path in (january, february):
        assert path.stat().st_mode & 0o777 == 0o660  # group rw via the ACL mask, other nothing
        assert len(path.read_bytes().splitlines()) == 2


# --- Live: the daemon under systemd-socket-activate ----------------------------------------


@dataclasses.dataclass(frozen=True)
class Notification:
    pid: int
    fields: dict[str, str]


class NotifySocket:
    """A test-bound `$NOTIFY_SOCKET` (SOCK_DGRAM, SO_PASSCRED): each message with its sender."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(path))
        self.received: list[Notification] = []

    def receive(self, timeout: float) -> Notification | None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data, ancdata, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except TimeoutError:
            return None
        pid = -1
        for level, kind, payload in ancdata:
            if (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS):
                pid = struct.unpack("iII", payload[:12])[0]
        fields = dict(line.partition("=")[::2] for line in data.decode().splitlines())
        message = Notification(pid, fields)
        self.received.append(message)
        return message

    def wait_for(self, key: str, *, pid: int | None = None, timeout: float = 30.0) -> Notification:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message and key in message.fields and pid in (None, message.pid):
                return message
        raise AssertionError(f"no {key} from pid {pid} within {timeout}s: {self.received}")

    def collect(self, seconds: float) -> list[Notification]:
        """Every message received in the next `seconds`."""
        got: list[Notification] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            message = self.receive(left)
            if message:
                got.append(message)
        return got

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(short_tmp: Path) -> Iterator[NotifySocket]:
    listener = NotifySocket(short_tmp / "notify")
    yield listener
    listener.close()


def clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(_SD_PREFIXES)}


@contextlib.contextmanager
def activated(
    daemon_env: Mapping[str, str],
    *,
    log: Path,
    listen: Path | None = None,
    inherit_fd: int | None = None,
    watchdog_pid: bool = False,
    wrapper: tuple[str, ...] = (),
) -> Iterator[subprocess.Popen[bytes]]:
    """`systemd-socket-activate ... python -m mantisd.daemon`; killed on exit if still running.

    `listen`: systemd-socket-activate binds this path itself (`-l`). `inherit_fd`: it receives
    this already listening socket through `LISTEN_FDS`, as from systemd, which keeps the
    socket across daemon restarts. It execs the daemon on the first connection, so the
    daemon's pid is bash's `$$`: `watchdog_pid` sets `WATCHDOG_PID` to it, as systemd does.
    """
    command = ["systemd-socket-activate", "--fdname=mantisd"]
    if listen is not None:
        command += ["-l", str(listen)]
    for name, value in {"PATH": os.environ["PATH"], **daemon_env}.items():
        command += ["-E", f"{name}={value}"]
    handover = ""
    if watchdog_pid:
        command += ["-E", "WATCHDOG_PID"]  # no value: passed on from the activator's environment
        handover += "export WATCHDOG_PID=$$; "
    pass_fds: tuple[int, ...] = ()
    if inherit_fd is not None:
        pass_fds = (inherit_fd,)
        handover += f"exec 3<&{inherit_fd} {inherit_fd}<&-; export LISTEN_PID=$$ LISTEN_FDS=1; "
    command += [sys.executable, "-m", "mantisd.daemon"]
    if handover:
        command = ["bash", "-c", handover + 'exec "$@"', "bash", *command]  # dash: fds 0-9 only
    with log.open("ab") as stderr:
        proc = subprocess.Popen(
            [*wrapper, *command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=clean_environ(),
            pass_fds=pass_fds,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stop(proc: subprocess.Popen[bytes], log: Path) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"mantisd did not stop on SIGTERM:\n{log.read_text()}") from None


def wait_listening(path: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until systemd-socket-activate listens (it binds, then listens: connect until accepted)."""
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, log.read_text()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
                return  # this first connection is what makes it exec the daemon
            except (FileNotFoundError, ConnectionRefusedError):
                assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.01)


def exchange(path: Path, requests: list[dict[str, Any]], *, timeout: float = 30.0) -> list[Any]:
    """Send request lines on one connection (pipelined), return one decoded reply per line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(b"".join(msgspec.json.encode(r) + b"\n" for r in requests))
        with sock.makefile("rb") as replies:
            return [json.loads(replies.readline()) for _ in requests]


def run_ids_on_disk(data_dir: Path) -> list[str]:
    return [
        json.loads(line)["run_id"]
        for _, path in list_shards(data_dir)
        for line in path.read_bytes().splitlines()
    ]


def daemon_env(data_dir: Path, notify: NotifySocket, **extra: str) -> dict[str, str]:
    return {
        "MANTIS_DATA_DIR": str(data_dir),
        "NOTIFY_SOCKET": str(notify.path),
        "WATCHDOG_USEC": str(WATCHDOG_USEC),
        **extra,
    }


def test_socket_activation_end_to_end(
    short_tmp: Path, data_dir: Path, notify: NotifySocket
) -> None:
    sock, log = short_tmp / "mantisd.sock", short_tmp / "mantisd.log"
    rows = [make_row() for _ in range(5)]
    env = daemon_env(data_dir, notify)
    with activated(env, log=log, listen=sock, watchdog_pid=True) as proc:
        wait_listening(sock, proc, log)
        assert exchange(sock, rows) == [{"ok": True}] * len(rows)
        assert notify.wait_for("READY").pid == proc.pid
        assert notify.wait_for("WATCHDOG").pid == proc.pid

        status = run(CHECKOUT_MANTISD, "status", "--socket", sock, "--json")
        assert json.loads(status.stdout)["rows_written"] == len(rows)
        assert sorted(run_ids_on_disk(data_dir)) == sorted(r["run_id"] for r in rows)

        assert stop(proc, log) == 0, log.read_text()
        assert notify.wait_for("STOPPING", timeout=5).pid == proc.pid
    assert {m.pid for m in notify.received} == {proc.pid}  # nothing from any other process


def test_no_watchdog_pings_when_watchdog_pid_is_another_process(
    short_tmp: Path, data_dir: Path, notify: NotifySocket
) -> None:
    sock, log = short_tmp / "mantisd.sock", short_tmp / "mantisd.log"
    with activated(daemon_env(data_dir, notify, WATCHDOG_PID="1"), log=log, listen=sock) as proc:
        wait_listening(sock, proc, log)
        assert exchange(sock, [{"op": "status"}])[0]["ok"]
        notify.wait_for("READY", pid=proc.pid)
        assert [m for m in notify.collect(5 * WATCHDOG_S) if "WATCHDOG" in m.fields] == []
        assert stop(proc, log) == 0


@pytest.mark.parametrize("journal", [True, False], ids=["journal", "terminal"])
def test_priority_prefixes_only_when_stderr_is_the_journal(
    short_tmp: Path, data_dir: Path, notify: NotifySocket, journal: bool
) -> None:
    """systemd sets JOURNAL_STREAM to stderr's dev:ino; here stderr is a file standing in."""
    sock, log = short_tmp / "mantisd.sock", short_tmp / "mantisd.log"
    log.touch()
    st = log.stat()
    stream = f"{st.st_dev}:{st.st_ino}" if journal else f"{st.st_dev}:{st.st_ino + 1}"
    env = daemon_env(data_dir, notify, JOURNAL_STREAM=stream)
    with activated(env, log=log, listen=sock) as proc:
        wait_listening(sock, proc, log)
        assert exchange(sock, [{"op": "status"}])[0]["ok"]
        assert stop(proc, log) == 0
    text = log.read_text()
    daemon_lines = text.split("Execing ", 1)[1].splitlines()[1:]  # after the activator's own
    assert daemon_lines, text
    prefixed = [bool(re.match(r"<[0-7]>", line)) for line in daemon_lines]
    assert prefixed == [journal] * len(daemon_lines), text
    # SyslogIdentifier=mantisd names the journal's lines: no second `mantisd: ` in the text
    named = [line for line in daemon_lines if re.match(r"(<[0-7]>)?mantisd[: ]", line)]
    assert bool(named) is not journal, text


@pytest.mark.slow
def test_watchdog_pings_stop_while_the_writer_is_stuck(
    short_tmp: Path, data_dir: Path, notify: NotifySocket
) -> None:
    """A writer blocked in flock() (a peer holding the shard's lock) withholds WATCHDOG=1.

    The daemon stays alive and answers status; only the writer is stuck. (A FIFO as the shard
    would not block it: the store opens with O_RDWR, which never waits for a FIFO reader.)
    """
    sock, log = short_tmp / "mantisd.sock", short_tmp / "mantisd.log"
    first, second = make_row(), make_row()
    with activated(daemon_env(data_dir, notify), log=log, listen=sock) as proc:
        wait_listening(sock, proc, log)
        assert exchange(sock, [first]) == [{"ok": True}]
        notify.wait_for("WATCHDOG", pid=proc.pid)
        shard = shard_path(data_dir, first["finished_at"][:7])
        with shard.open("rb") as held, socket.socket(socket.AF_UNIX) as blocked:
            fcntl.flock(held, fcntl.LOCK_EX)
            blocked.connect(str(sock))
            blocked.sendall(msgspec.json.encode(second) + b"\n")
            deadline = time.monotonic() + 30
            while not exchange(sock, [{"op": "status"}])[0]["status"]["writer_busy"]:
                assert time.monotonic() < deadline, "the writer never picked up the row"
                time.sleep(0.01)
            notify.collect(5 * WATCHDOG_S)  # pings sent before the writer counted as stuck
            quiet = notify.collect(10 * WATCHDOG_S)
            assert [m for m in quiet if "WATCHDOG" in m.fields] == []
            assert proc.poll() is None
            assert exchange(sock, [{"op": "status"}])[0]["ok"]  # alive and answering
            fcntl.flock(held, fcntl.LOCK_UN)
            blocked.settimeout(30)
            with blocked.makefile("rb") as replies:
                assert json.loads(replies.readline()) == {"ok": True}
        assert notify.wait_for("WATCHDOG", pid=proc.pid, timeout=10)  # progress: pings again
        assert stop(proc, log) == 0, log.read_text()
    assert sorted(run_ids_on_disk(data_dir)) == sorted([first["run_id"], second["run_id"]])


#: A runtime process: appends rows through mantis_client until the stop file appears, and
#: prints each run_id with its outcome.
_WORKER = """
import json, sys, time
from pathlib import Path
import mantis_client
from tests.rows import make_row
sock, data_dir, stop_file, name = sys.argv[1:]
n = 0
while not Path(stop_file).exists():
    run_id = f"{name}-{n:06d}"
    result = mantis_client.append(
        make_row(run_id=run_id), timeout=1.0, socket_path=sock, data_dir=data_dir
    )
    print(json.dumps({"run_id": run_id, "outcome": result.outcome.value}), flush=True)
    n += 1
    time.sleep(0.002)
"""


@pytest.mark.slow
def test_restart_under_load_loses_no_row(
    short_tmp: Path, data_dir: Path, notify: NotifySocket
) -> None:
    """SIGTERM the daemon while runtimes append, start a new one on the same socket.

    The test holds the listening socket as systemd does (so connections queue in its backlog
    between the two daemons); the clients' direct writes fill the gap.
    """
    sock_path, log, stop_file = short_tmp / "mantisd.sock", short_tmp / "m.log", short_tmp / "stop"
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(str(sock_path))
    listening.listen(128)
    env = daemon_env(data_dir, notify)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(sock_path), str(data_dir), str(stop_file), name],
            cwd=REPO,
            stdout=subprocess.PIPE,
            env=clean_environ(),
        )
        for name in ("w1", "w2", "w3")
    ]
    try:
        with activated(env, log=log, inherit_fd=listening.fileno()) as first:
            ready = notify.wait_for("READY", pid=first.pid)
            time.sleep(0.5)
            assert stop(first, log) == 0, log.read_text()
        time.sleep(0.5)  # no daemon: connections wait in the backlog, clients time out
        with activated(env, log=log, inherit_fd=listening.fileno()) as second:
            notify.wait_for("READY", pid=second.pid)
            time.sleep(0.5)
            stop_file.touch()
            outputs = [w.communicate(timeout=60)[0] for w in workers]
            assert stop(second, log) == 0, log.read_text()
    finally:
        stop_file.touch()
        listening.close()
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
            if w.stdout:
                w.stdout.close()
    assert ready.pid == first.pid != second.pid
    results = [json.loads(line) for out in outputs for line in out.splitlines()]
    outcomes = collections.Counter(r["outcome"] for r in results)
    on_disk = collections.Counter(run_ids_on_disk(data_dir))
    print(f"outcomes {dict(outcomes)}; {sum(on_disk.values()) - len(on_disk)} duplicate lines")
    assert set(outcomes) <= {"delivered", "written_directly"}
    assert outcomes["delivered"] > 0
    assert set(on_disk) == {r["run_id"] for r in results}  # each row once after dedup


# --- Live: the syscalls the daemon makes fit the unit's filter -----------------------------


def syscall_groups() -> dict[str, list[str]]:
    """`systemd-analyze syscall-filter`: each @group with its members (calls and @groups)."""
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in run("systemd-analyze", "syscall-filter").stdout.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if not line[0].isspace():
            current = groups.setdefault(entry, [])
        elif current is not None:
            current.append(entry)
    return groups


def expand(group: str, groups: dict[str, list[str]]) -> set[str]:
    calls: set[str] = set()
    for member in groups[group]:
        calls |= expand(member, groups) if member.startswith("@") else {member}
    return calls


def unit_syscall_allow_list(unit: Path = SERVICE) -> set[str]:
    """What `SystemCallFilter=` in `unit` leaves: allowed groups minus the `~` groups."""
    groups = syscall_groups()
    allowed: set[str] = set()
    for value in unit_settings(unit)["Service.SystemCallFilter"]:
        deny = value.startswith("~")
        names = set()
        for name in value.lstrip("~").split():
            names |= expand(name, groups) if name.startswith("@") else {name}
        allowed = allowed - names if deny else allowed | names
    return allowed


#: Sets PR_SET_MDWE (MemoryDenyWriteExecute's kernel twin, inherited across exec), then execs.
_MDWE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1
if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) or libc.prctl(PR_GET_MDWE, 0, 0, 0, 0) != 1:
    sys.exit(f"PR_SET_MDWE failed: {os.strerror(ctypes.get_errno())}")
os.execvp(sys.argv[1], sys.argv[1:])
"""  # noqa: E501


@pytest.mark.slow
def test_daemon_runs_within_the_units_syscall_filter_and_without_wx_memory(
    short_tmp: Path, data_dir: Path, notify: NotifySocket
) -> None:
    """Serve, status, SIGTERM under strace and PR_SET_MDWE: no call outside the filter.

    Without systemd as PID 1 the unit's seccomp filter cannot be loaded here; strace lists
    every call the daemon makes instead, checked against the same groups systemd expands.
    """
    sock, log, trace = short_tmp / "mantisd.sock", short_tmp / "m.log", short_tmp / "trace"
    strace = ("strace", "-f", "-qq", "-o", str(trace))
    wrapper = (sys.executable, "-c", _MDWE, *strace)
    rows = [make_row() for _ in range(3)]
    with activated(daemon_env(data_dir, notify), log=log, listen=sock, wrapper=wrapper) as proc:
        wait_listening(sock, proc, log)
        assert exchange(sock, rows) == [{"ok": True}] * 3
        assert exchange(sock, [{"op": "status"}])[0]["ok"]
        daemon_pid = notify.wait_for("READY").pid
        os.kill(daemon_pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()  # strace exits as its tracee did
    lines = trace.read_text().splitlines()
    exec_daemon = f'execve("{sys.executable}"'  # the activator execs the daemon in place
    start = next(i for i, line in enumerate(lines) if exec_daemon in line)
    made = set()
    for line in lines[start:]:
        match = re.match(r"\d+ +(?:<\.\.\. )?(\w+)[( ]", line)
        if match and match[1] not in ("exited", "killed"):
            made.add(match[1])
    assert "fsync" in made
    families = set(re.findall(r"^\d+ +socket(?:pair)?\((AF_\w+)", "\n".join(lines[start:]), re.M))
    assert families == {"AF_UNIX"}  # RestrictAddressFamilies=AF_UNIX
    outside = made - unit_syscall_allow_list()
    assert outside == set(), f"calls the unit's SystemCallFilter= would refuse: {outside}"
