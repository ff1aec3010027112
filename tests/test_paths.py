"""Data-dir and socket resolution, shard naming and listing (`mantisd.paths`)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mantisd import paths
from mantisd.paths import (
    BASETEN_DATA_DIR,
    MODAL_DATA_DIR,
    list_shards,
    rejected_dir,
    resolve_data_dir,
    resolve_socket_path,
    shard_path,
)

#: Every source `resolve_data_dir` looks at, most specific first.
DATA_DIR_ENV = {
    "MANTIS_DATA_DIR": "/env/mantis",
    "BASETEN_DEPLOYMENT_ID": "dep-1",
    "MODAL_TASK_ID": "ta-1",
    "XDG_DATA_HOME": "/xdg/data",
    "HOME": "/home/op",
}


def test_explicit_data_dir_beats_everything() -> None:
    assert resolve_data_dir("/explicit", environ=DATA_DIR_ENV) == Path("/explicit")
    assert resolve_data_dir(Path("/explicit"), environ=DATA_DIR_ENV) == Path("/explicit")


@pytest.mark.parametrize(
    ("removed", "expected"),
    [
        ((), Path("/env/mantis")),
        (("MANTIS_DATA_DIR",), BASETEN_DATA_DIR),
        (("MANTIS_DATA_DIR", "BASETEN_DEPLOYMENT_ID"), MODAL_DATA_DIR),
        (("MANTIS_DATA_DIR", "BASETEN_DEPLOYMENT_ID", "MODAL_TASK_ID"), Path("/xdg/data/mantis")),
        (
            ("MANTIS_DATA_DIR", "BASETEN_DEPLOYMENT_ID", "MODAL_TASK_ID", "XDG_DATA_HOME"),
            Path("/home/op/.local/share/mantis"),
        ),
    ],
)
def test_data_dir_precedence(removed: tuple[str, ...], expected: Path) -> None:
    """MANTIS_DATA_DIR > Baseten > Modal > XDG_DATA_HOME > ~/.local/share/mantis."""
    environ = {k: v for k, v in DATA_DIR_ENV.items() if k not in removed}
    assert resolve_data_dir(None, environ=environ) == expected


@pytest.mark.parametrize("marker", paths.BASETEN_MARKERS)
def test_every_baseten_marker_is_detected(marker: str) -> None:
    assert resolve_data_dir(environ={marker: "x", "HOME": "/h"}) == BASETEN_DATA_DIR


@pytest.mark.parametrize("marker", paths.MODAL_MARKERS)
def test_every_modal_marker_is_detected(marker: str) -> None:
    assert resolve_data_dir(environ={marker: "1", "HOME": "/h"}) == MODAL_DATA_DIR


def test_empty_variables_count_as_unset() -> None:
    environ = {"MANTIS_DATA_DIR": "", "BASETEN_DEPLOYMENT_ID": "", "HOME": "/home/op"}
    assert resolve_data_dir("", environ=environ) == Path("/home/op/.local/share/mantis")


def test_data_dir_expands_user() -> None:
    assert resolve_data_dir("~/runs", environ={}) == Path.home() / "runs"
    assert resolve_data_dir(environ={"MANTIS_DATA_DIR": "~/m"}) == Path.home() / "m"


def test_data_dir_reads_the_real_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MANTIS_DATA_DIR", "/from/os/environ")
    assert resolve_data_dir() == Path("/from/os/environ")


@pytest.fixture
def system_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the packaged socket path into `tmp_path`, so both of its states can be tested."""
    sock = tmp_path / "run" / "mantisd.sock"
    sock.parent.mkdir()
    monkeypatch.setattr(paths, "SYSTEM_SOCKET", sock)
    return sock


def test_socket_precedence(system_socket: Path) -> None:
    """--socket > MANTIS_SOCKET > the system socket if present > XDG_RUNTIME_DIR > /tmp."""
    environ = {"MANTIS_SOCKET": "/env/m.sock", "XDG_RUNTIME_DIR": "/run/user/7"}
    assert resolve_socket_path("/explicit.sock", environ=environ) == Path("/explicit.sock")
    assert resolve_socket_path(environ=environ) == Path("/env/m.sock")
    del environ["MANTIS_SOCKET"]
    assert resolve_socket_path(environ=environ) == Path("/run/user/7/mantisd.sock")
    system_socket.touch()
    assert resolve_socket_path(environ=environ) == system_socket
    assert resolve_socket_path(environ={"MANTIS_SOCKET": "/env/m.sock"}) == Path("/env/m.sock")
    system_socket.unlink()
    expected = Path(f"/tmp/mantisd-{os.getuid()}/mantisd.sock")
    assert resolve_socket_path(environ={}) == expected


def test_data_dir_follows_the_system_daemon_when_its_socket_exists(system_socket: Path) -> None:
    """A runtime on a systemd host writes its fallback rows where the service keeps shards."""
    environ = {"HOME": "/home/op"}
    assert resolve_data_dir(environ=environ) == Path("/home/op/.local/share/mantis")
    system_socket.touch()
    assert resolve_data_dir(environ=environ) == paths.SYSTEM_DATA_DIR
    assert resolve_data_dir(environ={"MANTIS_DATA_DIR": "/d"}) == Path("/d")
    # Before the platform's default, as the service's own $STATE_DIRECTORY is (daemon/cli.py).
    assert resolve_data_dir(environ={"MODAL_TASK_ID": "t"}) == paths.SYSTEM_DATA_DIR


def test_shard_and_rejected_locations(tmp_path: Path) -> None:
    assert shard_path(tmp_path, "2026-05") == tmp_path / "runs_log" / "2026-05.jsonl"
    assert rejected_dir(tmp_path) == tmp_path / "runs_log" / "rejected"


def test_list_shards_newest_first_and_ignores_other_files(data_dir: Path) -> None:
    log = data_dir / "runs_log"
    log.mkdir()
    for month in ("2025-12", "2026-02", "2024-07", "2026-01"):
        (log / f"{month}.jsonl").write_bytes(b"")
    noise = [
        "2026-03.jsonl.gz",
        "2026-03.jsonl.tmp",
        "2026-3.jsonl",
        "2026-13.jsonl",
        "2026-00.jsonl",
        "x2026-03.jsonl",
        "2026-03.json",
        "README",
        "\u0662\u0660\u0662\u0666-03.jsonl",  # Arabic-Indic digits are not a year
    ]
    for name in noise:
        (log / name).write_bytes(b"")
    (log / "2026-04.jsonl").mkdir()  # a directory named like a shard is not a shard
    (log / "rejected").mkdir()
    (log / "rejected" / "2026-05.jsonl").write_bytes(b"")
    assert list_shards(data_dir) == [
        ("2026-02", log / "2026-02.jsonl"),
        ("2026-01", log / "2026-01.jsonl"),
        ("2025-12", log / "2025-12.jsonl"),
        ("2024-07", log / "2024-07.jsonl"),
    ]


def test_list_shards_without_a_log_dir(data_dir: Path) -> None:
    assert list_shards(data_dir) == []
    assert list_shards(data_dir / "missing") == []
