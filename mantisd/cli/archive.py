"""`mantis runs archive`: compress closed months, merge late rows, apply retention.

Thin over `mantisd.archive`; every month it touches is printed as soon as it is done, so an
operator (or the journal, under `mantis-archive.timer`) sees what was compressed and what was
removed.
"""

from __future__ import annotations

from pathlib import Path

import click

from mantisd.cli.common import UnreadableLog, log_root

#: `mantisd.compressed.LEVEL`, repeated so that `mantis --help` imports no archive machinery.
LEVEL = 9


def _size(count: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000  # type: ignore[assignment]
    raise AssertionError  # pragma: no cover


def _files(files: list[tuple[str, int]]) -> str:
    return ", ".join(f"{name} ({_size(size)})" for name, size in files)


@click.command("archive")
@click.option(
    "--data-dir",
    "data_dirs",
    multiple=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Data directory (repeatable; default: $MANTIS_DATA_DIR, else the platform's default).",
)
@click.option(
    "--keep-months",
    type=click.IntRange(min=1),
    required=True,
    metavar="N",
    help="Leave the newest N months (the current one included) as plain shards; compress "
    "every older month that has one.",
)
@click.option(
    "--delete-older-than",
    type=click.IntRange(min=1),
    metavar="MONTHS",
    help="Delete every file of the months older than the newest MONTHS (the current one "
    "included): the retention horizon. Each removed file is named.",
)
@click.option(
    "--level",
    type=click.IntRange(1, 22),
    default=LEVEL,
    show_default=True,
    help="zstd compression level: higher is smaller and decompresses faster, but compresses "
    "slower (each month is compressed once, and again when late rows are merged).",
)
@click.option("--dry-run", is_flag=True, help="Say what would be done; change nothing.")
def archive(
    data_dirs: tuple[Path, ...],
    keep_months: int,
    delete_older_than: int | None,
    level: int,
    dry_run: bool,
) -> None:
    """Compress closed months into <YYYY-MM>.jsonl.zst, atomically and durably, while the
    daemon and clients keep appending; merge late rows into their month's archive. Every
    reader reads archives as it reads shards."""
    from mantisd.archive import ArchiveError, archive_log

    problems = 0
    for data_dir in data_dirs or (None,):
        root = log_root(data_dir)  # it exists, and is not a runs_log/ given by mistake
        done = 0
        try:
            for result in archive_log(
                root,
                keep_months=keep_months,
                delete_older_than=delete_older_than,
                dry_run=dry_run,
                level=level,
            ):
                done += 1
                line = f"{result.action} {result.month}"
                if result.action.endswith("skipped"):
                    problems += 1
                    click.echo(f"{line}: {result.note}", err=True)
                    continue
                if "delete" in result.action:
                    line += f" (older than the newest {delete_older_than} months)"
                line += f": {_files(result.removed)}"
                if result.archive is not None:
                    name, size = result.archive
                    line += f" -> {name} ({_size(size)}, {result.lines} line(s) added)"
                click.echo(line)
        except ArchiveError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            raise UnreadableLog(exc) from None
        if not done:
            click.echo(f"nothing to do in {root}")
    if problems:
        raise click.ClickException(f"{problems} month(s) skipped: see above")
