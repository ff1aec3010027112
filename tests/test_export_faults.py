"""`mantis runs export --parquet DIR` meeting what it must survive: numbers the row schema
accepts beyond a Parquet integer, files in the dataset that are not the export's, a damaged
archive. Nothing stored is replaced by less, errors name the month's file, never a traceback
(real files, a real DuckDB)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import duckdb
from click.testing import CliRunner, Result

from mantisd.cli import mantis
from mantisd.export.parquet import PARTIAL
from mantisd.source_id import ensure_source
from tests.fleet import archive, month_line, month_lines
from tests.parity import close
from tests.stats_data import write_shard

WF = "default__marketplace-listings-v1"


def invoke(*args: str) -> Result:
    return CliRunner(env={"MANTIS_DATA_DIR": None}).invoke(mantis, ["runs", *args])


def export(target: Path, data_dir: Path) -> Result:
    return invoke("export", "--parquet", str(target), "--data-dir", str(data_dir))


def count(path: Path) -> int:
    (row,) = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchall()
    return int(row[0])


def stamp(path: Path) -> str:
    (row,) = (
        duckdb.connect()
        .execute(
            "SELECT value::VARCHAR FROM parquet_kv_metadata(?) WHERE key::VARCHAR = ?",
            [str(path), "mantis_fingerprint"],
        )
        .fetchall()
    )
    return str(row[0])


def state(path: Path) -> tuple[int, int, bytes]:
    """What must not change about a file kept as it was: inode, mtime, bytes."""
    info = path.stat()
    return info.st_ino, info.st_mtime_ns, path.read_bytes()


# --- numbers the row schema accepts ------------------------------------------------------------


def test_a_schema_version_beyond_32_bits_is_exported(data_dir: Path, tmp_path: Path) -> None:
    big = 2**31
    write_shard(data_dir, "2026-09", [month_line("2026-09", schema_version=big)])
    write_shard(data_dir, "2026-10", month_lines("2026-10", 2))
    result = export(tmp_path / "pq", data_dir)
    assert result.exit_code == 0, result.output
    found = duckdb.connect().execute(
        f"SELECT schema_version FROM read_parquet('{tmp_path}/pq/month=*/*.parquet') "
        "ORDER BY finished_at"
    )
    assert found.fetchall() == [(big,), (1,), (1,)]
    answer = invoke("list", "--parquet", str(tmp_path / "pq"))
    assert answer.exit_code == 0 and WF in answer.stdout, answer.output


def test_runs_with_numbers_beyond_a_bigint_are_left_out_and_counted(
    data_dir: Path, tmp_path: Path
) -> None:
    """The schema bounds `steps_executed`, `viable` and `schema_version` from below only; a run
    beyond a BIGINT is left out with a warning saying how many; the rest of the month (its
    largest BIGINT included) and the other months are exported."""
    largest = 2**63 - 1
    lines = [
        month_line("2026-09", steps_executed=largest, viable=largest, schema_version=largest),
        month_line("2026-09", steps_executed=2**63),
        month_line("2026-09", viable=10**40),
        month_line("2026-09", schema_version=2**64),
        *month_lines("2026-09", 3),
    ]
    october = month_lines("2026-10", 2)
    write_shard(data_dir, "2026-09", lines)
    write_shard(data_dir, "2026-10", october)
    target = tmp_path / "pq"
    result = export(target, data_dir)
    assert result.exit_code == 0, result.output
    source_id = ensure_source(data_dir).source_id
    assert (
        f"warning: month=2026-09/{source_id}.parquet (vm): left out 3 run(s) whose "
        "schema_version, steps_executed or viable is beyond 9223372036854775807"
    ) in result.stderr
    assert "2026-10" not in result.stderr
    assert f"wrote month=2026-09/{source_id}.parquet (vm): 4 run(s)" in result.stdout
    assert count(target / "month=2026-10" / f"{source_id}.parquet") == 2
    found = duckdb.connect().execute(
        f"SELECT max(steps_executed), max(viable), max(schema_version) FROM "
        f"read_parquet('{target}/month=2026-09/*.parquet')"
    )
    assert found.fetchall() == [(largest, largest, largest)]
    # The Parquet source answers as the files holding the runs the dataset holds.
    kept = tmp_path / "kept"
    write_shard(kept, "2026-09", [lines[0], *lines[4:]])
    write_shard(kept, "2026-10", october)
    from_parquet = invoke("stats", WF, "--json", "--parquet", str(target))
    from_files = invoke("stats", WF, "--json", "--data-dir", str(kept))
    assert from_parquet.exit_code == 0 and from_files.exit_code == 0, from_parquet.output
    assert close(json.loads(from_parquet.stdout), json.loads(from_files.stdout))


# --- files in the dataset that are not the export's ------------------------------------------


def test_files_in_a_month_that_are_not_the_exports_are_not_read(
    data_dir: Path, tmp_path: Path
) -> None:
    """An empty `notes.parquet`, a Parquet file of another shape, a source id in capitals: not
    the export's names, so not read as another source's runs (and left as they are)."""
    write_shard(data_dir, "2026-09", month_lines("2026-09", 3))
    month = tmp_path / "pq" / "month=2026-09"
    month.mkdir(parents=True)
    (month / "notes.parquet").write_bytes(b"")
    duckdb.connect().execute(f"COPY (SELECT 42 AS answer) TO '{month / 'mine.parquet'}'")
    shouting = month / f"{str(uuid.uuid4()).upper()}.parquet"
    shouting.write_bytes(b"not parquet at all")
    result = export(tmp_path / "pq", data_dir)
    assert result.exit_code == 0, result.output
    source_id = ensure_source(data_dir).source_id
    assert count(month / f"{source_id}.parquet") == 3
    assert (month / "notes.parquet").read_bytes() == b""
    assert shouting.read_bytes() == b"not parquet at all"


def test_a_file_duckdb_cannot_read_fails_its_month_only(data_dir: Path, tmp_path: Path) -> None:
    """A corrupt file under another source's name: DuckDB's error names it, the month's own
    file is kept as it was, the other months are exported, the command fails at the end."""
    write_shard(data_dir, "2026-09", month_lines("2026-09", 3))
    write_shard(data_dir, "2026-10", month_lines("2026-10", 2))
    target = tmp_path / "pq"
    assert export(target, data_dir).exit_code == 0
    source_id = ensure_source(data_dir).source_id
    own = target / "month=2026-09" / f"{source_id}.parquet"
    before = state(own)
    corrupt = target / "month=2026-09" / f"{uuid.uuid4()}.parquet"
    corrupt.write_bytes(b"PAR1 cut short")
    write_shard(data_dir, "2026-09", [month_line("2026-09")])  # both months changed
    write_shard(data_dir, "2026-10", [month_line("2026-10")])
    result = export(target, data_dir)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)  # a ClickException's exit, no traceback
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert error.startswith(f"error: month=2026-09/{source_id}.parquet (vm): not written: DuckDB:")
    assert str(corrupt) in error and "kept as it was" in error
    assert "\n" not in error and "LINE 1" not in result.stderr  # not the SQL
    assert "Error: 1 file(s) not exported whole: see above" in result.stderr
    assert state(own) == before
    assert f"wrote month=2026-10/{source_id}.parquet (vm): 3 run(s)" in result.stdout
    assert count(target / "month=2026-10" / f"{source_id}.parquet") == 3


# --- a damaged archive -------------------------------------------------------------------------


def damage(data_dir: Path, month: str) -> Path:
    """Flip bytes inside the archive's second frame (bit rot): the first stays readable."""
    path = data_dir / "runs_log" / f"{month}.jsonl.zst"
    data = bytearray(path.read_bytes())
    for i in range(200, 264):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def test_a_damaged_archive_never_replaces_the_file_exported_before(
    data_dir: Path, tmp_path: Path
) -> None:
    """The dataset may be the only good copy: the month's file stays as it was, stderr names
    it and the damage, the other months are still exported, the command fails."""
    write_shard(data_dir, "2026-01", month_lines("2026-01", 5000))
    write_shard(data_dir, "2026-03", month_lines("2026-03", 2))
    target = tmp_path / "pq"
    assert export(target, data_dir).exit_code == 0
    source_id = ensure_source(data_dir).source_id
    january = target / "month=2026-01" / f"{source_id}.parquet"
    before = state(january)
    archive(data_dir, "2026-03")
    assert (data_dir / "runs_log" / "2026-01.jsonl.zst").is_file()
    damage(data_dir, "2026-01")
    write_shard(data_dir, "2026-03", [month_line("2026-03")])
    for _ in range(2):  # and again: not rewritten by the next export either
        result = export(target, data_dir)
        assert result.exit_code == 1, result.output
        assert isinstance(result.exception, SystemExit)
        (error,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert error.startswith(
            f"error: month=2026-01/{source_id}.parquet (vm): not rewritten: reading the month "
            "met a damaged archive (2026-01.jsonl.zst: "
        )
        assert "the file exported before is kept as it was" in error
        assert "Error: 1 file(s) not exported whole: see above" in result.stderr
        assert state(january) == before
        assert count(january) == 5000
    assert count(target / "month=2026-03" / f"{source_id}.parquet") == 3


def test_a_damaged_archive_without_a_file_before_exports_its_readable_part(
    data_dir: Path, tmp_path: Path
) -> None:
    """No earlier file: the readable part is written, stamped so that every export reads the
    month again (and fails) until the archive is restored; then the whole month is written."""
    write_shard(data_dir, "2026-01", month_lines("2026-01", 5000))
    archive(data_dir, "2026-03")
    good = (data_dir / "runs_log" / "2026-01.jsonl.zst").read_bytes()
    damaged = damage(data_dir, "2026-01")
    target = tmp_path / "pq"
    source_id = ensure_source(data_dir).source_id
    january = target / "month=2026-01" / f"{source_id}.parquet"
    first = export(target, data_dir)
    assert first.exit_code == 1, first.output
    assert (
        f"error: month=2026-01/{source_id}.parquet (vm): written from the readable part only: "
        "reading the month met a damaged archive (2026-01.jsonl.zst: "
    ) in first.stderr
    assert 0 < count(january) < 5000 and stamp(january).startswith(PARTIAL)
    before = state(january)
    second = export(target, data_dir)
    assert second.exit_code == 1, second.output
    assert "the file exported before (the readable part only) is kept as it was" in second.stderr
    assert state(january) == before
    damaged.write_bytes(good)  # restored from a copy
    third = export(target, data_dir)
    assert third.exit_code == 0, third.output
    assert count(january) == 5000 and not stamp(january).startswith(PARTIAL)
