"""A real root daemon over a data dir a group can write: planted links are never followed.

The links are planted while the daemon runs, before the row that would have gone through
them is sent (design.md, "Trust").
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from mantisd.paths import shard_path
from mantisd.safe_fs import ASIDE_TAG
from tests.daemon_process import all_run_ids, running_daemon, wait_for
from tests.rows import RowFactory

OK = {"ok": True}
SCRIPT = b"#!/bin/sh\necho nightly maintenance\n"


def test_links_planted_under_a_running_daemon_are_moved_aside(
    short_tmp: Path, data_dir: Path, tmp_path: Path, row_factory: RowFactory
) -> None:
    outside = tmp_path / "root-only"
    outside.mkdir(mode=0o700)
    script = outside / "maintenance.sh"
    script.write_bytes(SCRIPT)
    script.chmod(0o700)
    before = script.stat()
    with running_daemon(short_tmp / "m.sock", data_dir) as daemon:
        first = row_factory()
        assert daemon.send_rows([first]) == [OK]
        shard = shard_path(data_dir, first["finished_at"][:7])
        archived = shard.with_name("archived.jsonl")
        shard.rename(archived)  # what a group member may do: the directory is theirs too
        shard.symlink_to(script)
        (data_dir / "runs_log" / "rejected").symlink_to(outside)

        rows = [row_factory() for _ in range(3)]
        replies = daemon.send_rows([rows[0], b'{"not": "a row"}', *rows[1:]])

        assert replies[0] == OK and replies[2:] == [OK, OK]
        assert replies[1]["kind"] == "invalid"
        assert script.read_bytes() == SCRIPT, "nothing was written through the link"
        after = script.stat()
        assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
        assert stat.S_ISREG(os.lstat(shard).st_mode)
        assert [json.loads(x)["run_id"] for x in shard.read_bytes().splitlines()] == [
            r["run_id"] for r in rows
        ]
        assert all_run_ids(data_dir) == [r["run_id"] for r in [*rows, first]]  # + archived
        (aside,) = shard.parent.glob(f"{shard.name}{ASIDE_TAG}*")
        assert aside.is_symlink() and aside.readlink() == script

        rejected = data_dir / "runs_log" / "rejected"
        written = rejected / "rejected.jsonl"
        wait_for(written.exists)  # the rejected log is flushed every 0.1 s
        assert stat.S_ISDIR(os.lstat(rejected).st_mode)
        (entry,) = [json.loads(x) for x in written.read_bytes().splitlines()]
        assert entry["line"] == '{"not": "a row"}'
        assert sorted(p.name for p in outside.iterdir()) == ["maintenance.sh"]
        assert len(list(rejected.parent.glob(f"rejected{ASIDE_TAG}*"))) == 1

        status = daemon.status()
        assert status["unsafe_moved_aside"] == 2
        assert status["rows_written"] == 4 and status["storage_errors"] == 0
    logged = [x for x in daemon.stderr.splitlines() if "moved aside" in x]
    assert len(logged) == 2 and all(" ERROR: " in x for x in logged), daemon.stderr
