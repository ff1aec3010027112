"""Where the log and the daemon's socket live: data-dir resolution and shard naming.

Layer 1 (stdlib only), so the daemon, the client and the CLI always agree on a path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mantisd import safe_fs

RUNS_LOG: Final = "runs_log"
REJECTED: Final = "rejected"
SHARD_RE: Final = re.compile(r"^([0-9]{4})-(0[1-9]|1[0-2])\.jsonl$")
#: A compressed month (`mantis runs archive`): `<YYYY-MM>.jsonl.zst` (what it writes) or `.gz`.
ARCHIVE_RE: Final = re.compile(r"^([0-9]{4})-(0[1-9]|1[0-2])\.jsonl\.(zst|gz)$")

#: Platform defaults (design.md), each detected from variables the platform itself sets.
BASETEN_DATA_DIR: Final = Path("/workspace/mantis-data")
MODAL_DATA_DIR: Final = Path("/data/mantis-runs")
BASETEN_MARKERS: Final = ("BASETEN_DEPLOYMENT_ID", "BASETEN_MODEL_ID", "BT_DEPLOYMENT_ID")
MODAL_MARKERS: Final = ("MODAL_TASK_ID", "MODAL_IS_REMOTE")

#: The path the packaged systemd socket unit listens on, and the service's StateDirectory:
#: where the runtime (client fallback) and `mantis runs stats` look when that daemon is there.
SYSTEM_SOCKET: Final = Path("/run/mantisd.sock")
SYSTEM_DATA_DIR: Final = Path("/var/lib/mantis")


def resolve_data_dir(
    explicit: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> Path:
    """`--data-dir`, else `$MANTIS_DATA_DIR`, else the systemd service's data dir when its
    socket exists (the daemon's `$STATE_DIRECTORY`), else the platform's default, else
    per-user."""
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit).expanduser()
    if env.get("MANTIS_DATA_DIR"):
        return Path(env["MANTIS_DATA_DIR"]).expanduser()
    if SYSTEM_SOCKET.exists():  # the packaged service writes there, whatever the platform
        return SYSTEM_DATA_DIR
    if any(env.get(name) for name in BASETEN_MARKERS):
        return BASETEN_DATA_DIR
    if any(env.get(name) for name in MODAL_MARKERS):
        return MODAL_DATA_DIR
    home = Path(env.get("HOME") or Path.home())
    return Path(env.get("XDG_DATA_HOME") or home / ".local/share") / "mantis"


def runs_log_dir(data_dir: Path) -> Path:
    return data_dir / RUNS_LOG


def rejected_dir(data_dir: Path) -> Path:
    return data_dir / RUNS_LOG / REJECTED


def shard_path(data_dir: Path, month: str) -> Path:
    """The shard of a `YYYY-MM` month."""
    return runs_log_dir(data_dir) / f"{month}.jsonl"


def list_shards(data_dir: Path) -> list[tuple[str, Path]]:
    """Every month shard as (`YYYY-MM`, path), newest month first; other entries are ignored.

    Nothing is followed (design.md, "Trust"): a shard name that is a link, a FIFO... is not a
    shard, and a `runs_log` that is not a real directory raises `safe_fs.UnsafeEntryError`.
    """
    try:
        with safe_fs.opened_dirs(data_dir, (RUNS_LOG,), create=False) as (_, runs_log):
            return shards_in(runs_log, runs_log_dir(data_dir))
    except FileNotFoundError:
        return []


def shards_in(dir_fd: int, directory: Path) -> list[tuple[str, Path]]:
    """`list_shards` of the `runs_log` directory open as `dir_fd` (named `directory`)."""
    shards = []
    with os.scandir(dir_fd) as entries:
        for entry in entries:
            match = SHARD_RE.match(entry.name)
            if match and entry.is_file(follow_symlinks=False):
                shards.append((f"{match[1]}-{match[2]}", directory / entry.name))
    shards.sort(reverse=True)
    return shards


@dataclass(frozen=True)
class LogFile:
    """One file of the log: a month's plain shard, or its archive (`compressed`)."""

    month: str
    path: Path
    compressed: bool


def log_files_in(dir_fd: int, directory: Path) -> list[LogFile]:
    """Every shard and archive of the `runs_log` directory open as `dir_fd`, newest month
    first; within a month the plain shard (rows logged after the month was archived: the
    newer ones) before its archives. Links and odd files are not log files."""
    found = []
    with os.scandir(dir_fd) as entries:
        for entry in entries:
            match = SHARD_RE.match(entry.name) or ARCHIVE_RE.match(entry.name)
            if match and entry.is_file(follow_symlinks=False):
                compressed = match.re is ARCHIVE_RE
                found.append(LogFile(f"{match[1]}-{match[2]}", directory / entry.name, compressed))
    found.sort(key=lambda f: (f.month, not f.compressed, f.path.name), reverse=True)
    return found


def list_log_files(data_dir: Path) -> list[LogFile]:
    """`log_files_in` of a data dir (empty without `runs_log/`); see `list_shards`."""
    try:
        with safe_fs.opened_dirs(data_dir, (RUNS_LOG,), create=False) as (_, runs_log):
            return log_files_in(runs_log, runs_log_dir(data_dir))
    except FileNotFoundError:
        return []


def list_months(data_dir: Path) -> list[str]:
    """The months that have a shard or an archive, newest first."""
    return sorted({f.month for f in list_log_files(data_dir)}, reverse=True)


def resolve_socket_path(
    explicit: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> Path:
    """`--socket`, else `$MANTIS_SOCKET`, else the system socket if present, else per-user."""
    env = os.environ if environ is None else environ
    if explicit:
        return Path(explicit).expanduser()
    if env.get("MANTIS_SOCKET"):
        return Path(env["MANTIS_SOCKET"]).expanduser()
    if SYSTEM_SOCKET.exists():
        return SYSTEM_SOCKET
    runtime_dir = env.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        return Path(runtime_dir) / "mantisd.sock"
    return Path(f"/tmp/mantisd-{os.getuid()}") / "mantisd.sock"
