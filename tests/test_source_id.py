"""A data dir's identity (`source.json`): written once, durably, never through a link."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from mantisd.source_id import (
    MAX_LABEL,
    SOURCE_FILE,
    SourceIdError,
    check_label,
    ensure_source,
    read_source,
)
from tests.full_disk import mounted_tmpfs


def test_identity_is_created_once_and_then_only_read(data_dir: Path) -> None:
    assert read_source(data_dir) is None
    first = ensure_source(data_dir, label="pod-a")
    stored = (data_dir / SOURCE_FILE).read_bytes()
    assert json.loads(stored) == {"source_id": str(first.source_id), "label": "pod-a"}
    assert uuid.UUID(str(first.source_id)).version == 4
    again = ensure_source(data_dir, label="pod-b")  # a label never rewrites the file
    assert again == first == read_source(data_dir)
    assert (data_dir / SOURCE_FILE).read_bytes() == stored
    assert sorted(p.name for p in data_dir.iterdir()) == [SOURCE_FILE]  # no temporary left


def test_default_label_is_the_host_name(data_dir: Path) -> None:
    assert ensure_source(data_dir).label == socket.gethostname()


def _create(data_dir: str, barrier: multiprocessing.synchronize.Barrier, out: Path) -> None:
    barrier.wait()
    out.write_text(str(ensure_source(Path(data_dir)).source_id))


def test_racing_creators_agree_on_one_identity(data_dir: Path, tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(8)
    outs = [tmp_path / f"out{i}" for i in range(8)]
    children = [context.Process(target=_create, args=(str(data_dir), barrier, out)) for out in outs]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    ids = {out.read_text() for out in outs}
    assert ids == {str(read_source(data_dir).source_id)}  # type: ignore[union-attr]
    assert sorted(p.name for p in data_dir.iterdir()) == [SOURCE_FILE]


@pytest.mark.parametrize("dangling", [False, True])
def test_a_link_in_its_place_is_refused_never_followed(
    data_dir: Path, tmp_path: Path, dangling: bool
) -> None:
    target = tmp_path / "elsewhere.json"
    planted = b'{"source_id": "6f1c2d3e-0000-4000-8000-000000000000", "label": "evil"}'
    if not dangling:
        target.write_bytes(planted)
    (data_dir / SOURCE_FILE).symlink_to(target)
    with pytest.raises(SourceIdError, match="symbolic link: not followed"):
        ensure_source(data_dir)
    assert (target.read_bytes() == planted) if not dangling else not target.exists()


def test_a_fifo_in_its_place_is_refused_without_blocking(data_dir: Path) -> None:
    os.mkfifo(data_dir / SOURCE_FILE)
    with pytest.raises(SourceIdError, match="not a regular file"):
        ensure_source(data_dir)


def test_a_damaged_file_is_an_error_and_never_rewritten(data_dir: Path) -> None:
    (data_dir / SOURCE_FILE).write_bytes(b'{"source_id": "not-a-uuid"')
    with pytest.raises(SourceIdError, match=re.escape(str(data_dir / SOURCE_FILE))):
        ensure_source(data_dir)
    assert (data_dir / SOURCE_FILE).read_bytes() == b'{"source_id": "not-a-uuid"'


def test_a_hand_edited_file_is_named_without_its_control_characters(data_dir: Path) -> None:
    """msgspec's message quotes an unknown key as written: an escape sequence in it would reach
    the operator's terminal."""
    key = chr(27) + "]0;pwned" + chr(7)
    (data_dir / SOURCE_FILE).write_text(
        json.dumps({"source_id": str(uuid.uuid4()), "label": "pod", key: 1})
    )
    with pytest.raises(SourceIdError) as caught:
        ensure_source(data_dir)
    assert chr(27) not in str(caught.value) and chr(7) not in str(caught.value)
    assert "is damaged" in str(caught.value)


def test_a_missing_data_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SourceIdError, match="cannot open data dir"):
        ensure_source(tmp_path / "nowhere")


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory nobody may write into: a read-only tmpfs as root (root ignores modes)."""
    path = tmp_path / "ro"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    with mounted_tmpfs(path, "ro,size=1m"):
        yield path


def test_an_unwritable_data_dir_is_a_clear_error(read_only_dir: Path) -> None:
    with pytest.raises(SourceIdError, match=f"cannot create {read_only_dir / SOURCE_FILE}"):
        ensure_source(read_only_dir)


def test_written_to_an_exclusive_temp_file_synced_then_linked_then_directory_synced(
    data_dir: Path, tmp_path: Path
) -> None:
    """Traced for real: the bytes are durable before the name appears, and the name after;
    a link (never a rename) puts it in place, so an existing identity is never replaced."""
    trace = tmp_path / "trace"
    code = (
        f"import pathlib, mantisd.source_id as s; s.ensure_source(pathlib.Path({str(data_dir)!r}))"
    )
    calls = "openat,fsync,link,linkat,unlink,unlinkat,rename,renameat,renameat2"
    strace = ["strace", "-f", "-qq", "-e", f"trace={calls}", "-o", str(trace)]
    subprocess.run([*strace, sys.executable, "-c", code], check=True)
    steps = []
    for line in trace.read_text().splitlines():
        call = line.split(maxsplit=1)[1].partition("(")[0]
        if call == "openat" and "O_EXCL" in line:
            assert "O_NOFOLLOW" in line and ".tmp" in line, line
            steps.append("create temp")
        elif call != "openat":
            steps.append(call)
    assert steps == ["create temp", "fsync", "linkat", "unlinkat", "fsync"], steps


@pytest.mark.parametrize("label", ["", "x" * (MAX_LABEL + 1), "pod\nb", "pod\x1b[31m"])
def test_bad_labels_are_refused(label: str) -> None:
    with pytest.raises(ValueError, match="label"):
        check_label(label)


def test_a_label_with_control_characters_in_the_file_is_refused(data_dir: Path) -> None:
    """Anyone who can write the data dir can write `source.json`: its label reaches the
    database and operators' terminals, so it is checked on read as on write."""
    forged = {"source_id": str(uuid.uuid4()), "label": "pod\x1b]0;owned\x07"}
    (data_dir / SOURCE_FILE).write_text(json.dumps(forged))
    with pytest.raises(SourceIdError, match="control characters"):
        ensure_source(data_dir)
