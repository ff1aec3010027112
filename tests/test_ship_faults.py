"""The shipper under faults, for real: kill -9 anywhere, a database that restarts or stops
mid-ship, and `--follow` behind a live daemon. Every run must end up in PostgreSQL exactly
once, and nothing may be marked shipped that was not committed."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mantisd.paths import list_shards
from tests.daemon_process import running_daemon, wait_for
from tests.fleet import (
    MANTIS,
    count,
    execute,
    follow,
    line_ids,
    month_line,
    month_lines,
    rows,
    run_ids,
    stop,
    valid_ids,
)
from tests.pg import PgServer, running_postgres
from tests.rows import make_row
from tests.stats_data import write_shard

pytestmark = pytest.mark.slow


def log_contents(data_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for _, path in list_shards(data_dir)}


@pytest.fixture
def private_server() -> Iterator[PgServer]:
    """A server of this test's own, which it may stop and restart."""
    with running_postgres() as server:
        yield server


def test_kill_9_at_random_points_then_resume(pg_url: str, data_dir: Path) -> None:
    """Kill the shipper at random instants (also while the log grows); after every kill the
    committed cursors cover only committed rows; in the end every run is there exactly once,
    and every bad line is dead-lettered exactly once."""
    seed = random.randrange(1 << 30)
    chance = random.Random(seed)
    for month in ("2026-08", "2026-09", "2026-10"):
        lines = month_lines(month, 4000)
        for at in range(500, 4000, 997):
            lines.insert(at, b'{"torn row\n')
        write_shard(data_dir, month, lines)
    deadline = time.monotonic() + 60
    kills = interrupted = 0
    # 12 kills, and more (up to 40) until at least 3 of them landed mid-ship: on a loaded
    # machine a kill often lands before the first batch or after the last.
    while time.monotonic() < deadline and (kills < 12 or interrupted < 3) and kills < 40:
        before = max(count(pg_url), 0)
        proc = subprocess.Popen(
            [
                str(MANTIS),
                "runs",
                "ship",
                "--to",
                pg_url,
                "--data-dir",
                str(data_dir),
                "--batch-rows",
                "100",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if kills % 2:  # half the kills land anywhere from start-up on ...
            time.sleep(chance.uniform(0.05, 1.2))
        else:  # ... half once batches are committing, in the middle of the shipping
            with contextlib.suppress(TimeoutError):
                wait_for(lambda b=before: count(pg_url) > b, timeout=30, interval=0.005)  # type: ignore[misc]
            time.sleep(chance.uniform(0, 0.3))
        proc.kill()  # SIGKILL: no handler, no cleanup, at whatever instant it was
        proc.wait()
        kills += 1
        content = log_contents(data_dir)
        everything = {i for c in content.values() for i in valid_ids(c)}
        shipped = set(run_ids(pg_url)) if count(pg_url) >= 0 else set()
        interrupted += 0 < len(shipped) - before and len(shipped) < len(everything)
        cursors = rows(pg_url, "SELECT shard, byte_offset FROM mantis.cursors") if shipped else []
        for shard, offset in cursors:
            missing = set(valid_ids(content[shard][:offset])) - shipped
            assert not missing, f"seed {seed}: {shard} marked shipped to {offset}, not committed"
        assert shipped <= everything, f"seed {seed}"
        for month in ("2026-09", "2026-10"):  # the log keeps growing: work for the next run
            write_shard(data_dir, month, month_lines(month, 750))
    assert interrupted >= 3, f"seed {seed}: only {interrupted} kills landed mid-ship"
    final = subprocess.run(
        [str(MANTIS), "runs", "ship", "--to", pg_url, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert final.returncode == 0, final.stderr
    content = log_contents(data_dir)
    expected = sorted(i for c in content.values() for i in valid_ids(c))
    assert run_ids(pg_url) == expected, f"seed {seed}, {kills} kills"
    bad = sum(c.count(b'{"torn row\n') for c in content.values())
    assert rows(pg_url, "SELECT count(*) FROM mantis.dead_letters") == [(bad,)]
    offsets = dict(rows(pg_url, "SELECT shard, byte_offset FROM mantis.cursors"))
    assert offsets == {name: len(c) for name, c in content.items()}


STALL = """
CREATE FUNCTION public.stall() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.run_id = 'stall-here' THEN PERFORM pg_sleep(60); END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER stall BEFORE INSERT ON mantis.runs FOR EACH ROW EXECUTE FUNCTION public.stall();
"""


def test_kill_9_inside_a_batch_commits_nothing_of_it(pg_url: str, data_dir: Path) -> None:
    """The second batch's transaction is held open by the server (a trigger sleeps on one of
    its rows) while the shipper is killed: neither its rows nor its cursor may be there."""
    from click.testing import CliRunner

    from mantisd.cli import mantis

    assert CliRunner().invoke(mantis, ["db", "init", "--db", pg_url]).exit_code == 0
    execute(pg_url, STALL)
    first, second = month_lines("2026-10", 10), month_lines("2026-10", 9)
    second.insert(4, month_line("2026-10", run_id="stall-here"))
    write_shard(data_dir, "2026-10", first + second)
    proc = subprocess.Popen(
        [
            str(MANTIS),
            "runs",
            "ship",
            "--to",
            pg_url,
            "--data-dir",
            str(data_dir),
            "--batch-rows",
            "10",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stalled = "SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
    wait_for(lambda: bool(rows(pg_url, stalled)), timeout=30)
    proc.kill()
    proc.wait()
    execute(pg_url, f"SELECT pg_terminate_backend(pid) FROM ({stalled}) s")
    wait_for(lambda: not rows(pg_url, stalled), timeout=30)
    assert run_ids(pg_url) == line_ids(first)
    ((offset,),) = rows(pg_url, "SELECT byte_offset FROM mantis.cursors")
    assert offset == len(b"".join(first))
    execute(pg_url, "DROP TRIGGER stall ON mantis.runs")
    resumed = subprocess.run(
        [str(MANTIS), "runs", "ship", "--to", pg_url, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert run_ids(pg_url) == line_ids(first + second)


def test_database_stopped_mid_ship_fails_one_shot_then_resumes(
    private_server: PgServer, data_dir: Path
) -> None:
    url = private_server.create_database()
    lines = month_lines("2026-10", 20000)
    write_shard(data_dir, "2026-10", lines)
    proc = subprocess.Popen(
        [
            str(MANTIS),
            "runs",
            "ship",
            "--to",
            url,
            "--data-dir",
            str(data_dir),
            "--batch-rows",
            "200",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: count(url) > 0, timeout=60)
    private_server.stop("immediate")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "cannot ship to database" in err and "run again to resume" in err
    assert "2026-10.jsonl" in out  # what was committed before is said
    private_server.start()
    committed = count(url)
    assert 0 < committed < len(lines)
    again = subprocess.run(
        [str(MANTIS), "runs", "ship", "--to", url, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert run_ids(url) == sorted(valid_ids(b"".join(lines)))


def test_follow_waits_out_a_database_restart_and_a_stop(
    private_server: PgServer, data_dir: Path
) -> None:
    url = private_server.create_database()
    write_shard(data_dir, "2026-10", month_lines("2026-10", 500))
    shipper = follow(url, data_dir)
    try:
        wait_for(lambda: count(url) == 500, timeout=60)
        private_server.restart("immediate")  # a crash and recovery under the shipper
        write_shard(data_dir, "2026-10", month_lines("2026-10", 300))
        wait_for(lambda: count(url) == 800, timeout=90)
        private_server.stop("fast")  # a longer outage: rows keep coming meanwhile
        write_shard(data_dir, "2026-11", month_lines("2026-11", 200))
        time.sleep(1.5)  # several failed attempts, backing off
        private_server.start()
        wait_for(lambda: count(url) == 1000, timeout=90)
    finally:
        code, out, err = stop(shipper)
    assert code == 0, err
    assert "database unavailable" in err and "database reachable again" in err
    assert "total" in out
    content = log_contents(data_dir)
    assert run_ids(url) == sorted(i for c in content.values() for i in valid_ids(c))


def test_follow_ships_the_rows_a_daemon_writes(
    pg_url: str, data_dir: Path, short_tmp: Path
) -> None:
    sent: list[str] = []
    with running_daemon(short_tmp / "d.sock", data_dir) as daemon:
        shipper = follow(pg_url, data_dir)
        try:
            for _ in range(3):
                batch = [make_row() for _ in range(40)]
                assert daemon.send_rows(batch) == [{"ok": True}] * 40
                sent += [row["run_id"] for row in batch]
                expected = len(sent)
                wait_for(lambda: count(pg_url) == expected, timeout=30)  # noqa: B023
        finally:
            code, out, err = stop(shipper)
    assert code == 0, err
    assert run_ids(pg_url) == sorted(sent)
    assert out.splitlines()[-1].split()[1:] == ["120", "0", "0"]  # total: loaded, dups, dead
    assert os.path.exists(data_dir / "source.json")


def test_follow_makes_a_dropped_month_again_rather_than_refuse_its_rows(
    pg_url: str, data_dir: Path
) -> None:
    """Retention dropped October's partition while a shipper ran: a late October row still
    lands (the partition is made again), it is not dead-lettered."""
    write_shard(data_dir, "2026-10", month_lines("2026-10", 3))
    write_shard(data_dir, "2026-11", month_lines("2026-11", 1))
    shipper = follow(pg_url, data_dir)
    try:
        wait_for(lambda: count(pg_url) == 4, timeout=60)
        execute(pg_url, "DROP TABLE mantis.runs_2026_10")
        late = month_lines("2026-10", 1)
        write_shard(data_dir, "2026-10", late)
        wait_for(lambda: count(pg_url) == 2, timeout=60)
    finally:
        code, _, err = stop(shipper)
    assert code == 0, err
    assert set(line_ids(late)) <= set(run_ids(pg_url))
    assert rows(pg_url, "SELECT count(*) FROM mantis.dead_letters") == [(0,)]
