"""What `mantis runs stats`, `compare` and `trend` share: flags, the data dir, progress, notes.

Only click and the flag types are imported at module level (`mantis --help` stays fast); the
query machinery is imported inside the helpers, when a command runs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from mantisd.stats.durations import TimeBound, TimeBoundType, check_window
from mantisd.text import printable

if TYPE_CHECKING:
    from mantisd.reader import ScanReport
    from mantisd.stats.query import Selection, StatsQuery
    from mantisd.stats.source import LogSource

F = TypeVar("F", bound=Callable[..., Any])
STATUSES = ("succeeded", "failed", "")
#: Progress goes to a terminal only, and only when there is more than this many shards to read.
PROGRESS_MIN_SHARDS = 2
TIME_HELP = "a duration ago (7d, 24h, 30m, 2w) or a date/time (2026-10-01, RFC 3339; no zone: UTC)"
#: Exit status when the log exists but cannot be read (a shard or directory we may not open, an
#: I/O error): not the "no runs" exit 1, so a script never mistakes a broken log for an empty one.
EXIT_UNREADABLE = 4


class UnreadableLog(click.ClickException):
    """The run log (or the data dir) exists but cannot be read: exit status 4."""

    exit_code = EXIT_UNREADABLE

    def __init__(self, exc: OSError) -> None:
        super().__init__(f"cannot read the run log: {exc}")


def status_option(f: F) -> F:
    return click.option(
        "--status",
        type=click.Choice(STATUSES),
        default="succeeded",
        show_default=True,
        help="Terminal status to keep; '' keeps every status.",
    )(f)


def buckets_option(f: F) -> F:
    return click.option(
        "--bucket",
        "buckets",
        multiple=True,
        metavar="NAME",
        help="Restrict to these wall-time buckets (repeatable); total_time_s is always shown.",
    )(f)


def json_option(f: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print a JSON object instead of the table."
    )(f)


def data_dir_option(f: F) -> F:
    return click.option(
        "--data-dir",
        # readable=False: an unreadable data dir is the log's exit status 4, not a usage error
        type=click.Path(file_okay=False, readable=False, path_type=Path),
        default=None,
        help="Data directory (default: $MANTIS_DATA_DIR, else the platform's default).",
    )(f)


def data_dirs_option(f: F) -> F:
    """`--data-dir`, repeatable: several pods' data dirs read as one log."""
    return click.option(
        "--data-dir",
        multiple=True,
        # readable=False: an unreadable data dir is the log's exit status 4, not a usage error
        type=click.Path(file_okay=False, readable=False, path_type=Path),
        help="Data directory (default: $MANTIS_DATA_DIR, else the platform's default). "
        "Repeatable: several pods' data dirs are read as one log, one row per run_id, and "
        "last N is then the newest by finished_at.",
    )(f)


def parquet_option(f: F) -> F:
    """`--parquet DIR`: answer from the dataset `mantis runs export` writes, through DuckDB."""
    return click.option(
        "--parquet",
        type=click.Path(file_okay=False, readable=False, path_type=Path),
        metavar="DIR",
        help="Answer from a Parquet dataset written by mantis runs export, through DuckDB "
        "(pip install 'mantisd[duckdb]'). Last N: newest by finished_at.",
    )(f)


def verdict_options(f: F) -> F:
    """`--alpha`, `--min-effect` and `--correction`: how `compare` (and the report's compare
    section) calls a bucket regressed."""
    from mantisd.stats.effect import RelativeEffect

    options = [
        click.option(
            "--alpha",
            type=click.FloatRange(0, 1, min_open=True, max_open=True),
            default=0.05,
            show_default=True,
            help="Significance level of the two-sided Mann-Whitney U test.",
        ),
        click.option(
            "--min-effect",
            type=RelativeEffect(),
            default="5%",
            show_default=True,
            help="Smallest p50 change called a regression or improvement (5% or 0.05).",
        ),
        click.option(
            "--correction",
            type=click.Choice(["holm", "none"]),
            default="holm",
            show_default=True,
            help="Multiple-test correction across the buckets (and groups) of the comparison: "
            "Holm-Bonferroni keeps the chance of any false verdict under alpha; none tests "
            "each bucket alone.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def time_option(
    flag: str, what: str, *, default: str | None = None, shown: str | None = None
) -> Callable[[F], F]:
    """A `--since`-like flag; `what` names the edge; `shown`: the default as described."""
    return click.option(
        flag,
        type=TimeBoundType(),
        default=default,
        show_default=True if default is not None else shown or False,
        help=f"{what}: {TIME_HELP}.",
    )


def resolve_window(
    since: TimeBound | None,
    until: TimeBound | None,
    now: dt.datetime,
    *,
    since_flag: str = "--since",
    until_flag: str = "--until",
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """The window's edges as instants; a usage error (exit 2) when it is empty."""
    low = since.resolve(now) if since else None
    high = until.resolve(now) if until else None
    check_window(low, high, since_flag=since_flag, until_flag=until_flag)
    return low, high


def log_root(data_dir: Path | None) -> Path:
    """The data dir to read, checked: it must exist (else exit 1). Without `runs_log/` yet it
    simply holds no runs (the usual "no runs" answer, with the JSON still printed).

    A `runs_log/` directory given as the data dir is a usage error that names its parent; a
    data dir we may not look into is `UnreadableLog` (exit 4).
    """
    from mantisd.paths import ARCHIVE_RE, RUNS_LOG, SHARD_RE, resolve_data_dir

    root = resolve_data_dir(data_dir)
    try:
        if not root.is_dir():
            raise click.ClickException(f"data dir {root} does not exist (see --data-dir)")
        if not (root / RUNS_LOG).exists() and (
            root.name == RUNS_LOG
            or any(SHARD_RE.match(name) or ARCHIVE_RE.match(name) for name in os.listdir(root))
        ):
            raise click.UsageError(
                f"{root} is a {RUNS_LOG}/ directory (it holds the month shards); the data dir "
                f"is its parent: --data-dir {root.parent}"
            )
    except OSError as exc:
        raise UnreadableLog(exc) from None
    return root


def progress() -> tuple[Callable[[int, int, str], None] | None, Callable[[], None]]:
    """(`on_shard` callback, `done`): a `\\r` progress line per shard when stderr is a terminal.

    The line appears only when there are more than `PROGRESS_MIN_SHARDS` shards to read, and
    `done()` erases it.
    """
    if not sys.stderr.isatty():
        return None, lambda: None
    shown = False

    def on_shard(index: int, count: int, month: str) -> None:
        nonlocal shown
        if count > PROGRESS_MIN_SHARDS:
            click.echo(f"\rreading {month} ({index + 1}/{count} shards)...", err=True, nl=False)
            shown = True

    def done() -> None:
        if shown:
            click.echo("\r\033[K", err=True, nl=False)

    return on_shard, done


def select_with_progress(
    root: LogSource, query: StatsQuery, *, percentiles: bool = False
) -> Selection:
    """`select` of the source (a data dir: its files), with progress on a terminal; see
    `readable` for failures. `percentiles`: the source may answer with percentiles only."""
    from mantisd.stats.source import as_source

    on_shard, done = progress()
    try:
        with readable():
            return as_source(root).select(query, on_shard=on_shard, percentiles=percentiles)
    finally:
        done()


def select_many_with_progress(root: LogSource, *queries: StatsQuery) -> list[Selection]:
    """`select_many` (every window's shards in one pool), as `select_with_progress`."""
    from mantisd.stats.source import as_source

    on_shard, done = progress()
    try:
        with readable():
            return as_source(root).select_many(queries, on_shard=on_shard)
    finally:
        done()


class SourceUnreadable(click.ClickException):
    """The database (or another source) cannot answer: exit status 4, as an unreadable log."""

    exit_code = EXIT_UNREADABLE


@contextlib.contextmanager
def readable() -> Iterator[None]:
    """A source's failures as the CLI's: an unreadable log or database exits 4
    (`UnreadableLog`, `SourceUnreadable`), a query the source cannot answer is a usage error."""
    from mantisd.stats.source import SourceError, UnsupportedQuery

    try:
        yield
    except OSError as exc:
        raise UnreadableLog(exc) from None
    except UnsupportedQuery as exc:
        raise click.UsageError(str(exc)) from None
    except SourceError as exc:
        raise SourceUnreadable(str(exc)) from None


def db_options(f: F) -> F:
    """`--db URL` and `--source ID|LABEL`: answer from the fleet's PostgreSQL."""
    f = click.option(
        "--source",
        "sources",
        multiple=True,
        metavar="ID|LABEL",
        help="With --db: only the runs shipped from this source (a source_id or a label; "
        "repeatable).",
    )(f)
    return click.option(
        "--db",
        metavar="URL",
        help="Answer from PostgreSQL (runs shipped by mantis runs ship, every pod) instead of "
        "a data dir: a libpq URL (postgresql://user@host/db). Last N: newest by finished_at.",
    )(f)


def open_source(
    data_dir: Path | Sequence[Path] | None,
    db: str | None,
    sources: Sequence[str],
    parquet: Path | None = None,
) -> LogSource:
    """The data dir (`log_root`); several data dirs (read as one log); with `--parquet` the
    dataset through DuckDB; or with `--db` the PostgreSQL source. A database or dataset is
    closed when the command ends; psycopg and duckdb are imported only for them."""
    dirs = [] if data_dir is None else [data_dir] if isinstance(data_dir, Path) else list(data_dir)
    if parquet is not None:
        if dirs or db is not None:
            raise click.UsageError("--parquet names a place to read: give no --data-dir or --db")
        if sources:
            raise click.UsageError("--source selects pods in a database: it needs --db")
        return open_parquet(parquet)
    if db is None:
        if sources:
            raise click.UsageError("--source selects pods in a database: it needs --db")
        if len(dirs) > 1:
            from mantisd.stats.source_files import DataDirs

            return DataDirs([log_root(d) for d in dirs])
        return log_root(dirs[0] if dirs else None)
    if dirs:
        raise click.UsageError("--data-dir and --db name two places to read: give one")
    from mantisd.fleet.database import FleetError, name_of, require_driver

    try:
        require_driver()
    except FleetError as exc:
        raise click.ClickException(str(exc)) from None
    import psycopg

    from mantisd.fleet.database import first_line
    from mantisd.stats.source_postgres import PostgresSource, UnknownSource

    try:
        source = PostgresSource(db, sources)
    except UnknownSource as exc:
        raise click.BadParameter(str(exc), param_hint="'--source'") from None
    except FleetError as exc:
        raise click.ClickException(str(exc)) from None
    except psycopg.Error as exc:
        raise SourceUnreadable(f"cannot query {name_of(db)}: {first_line(exc, db)}") from None
    click.get_current_context().call_on_close(source.close)
    return source


def open_parquet(root: Path) -> LogSource:
    """The Parquet dataset at `root` (closed when the command ends)."""
    from mantisd.export.dataset import MissingDuckDB

    if not root.is_dir():
        raise click.ClickException(f"Parquet dataset {root} does not exist (see --parquet)")
    try:
        from mantisd.stats.source_parquet import ParquetSource

        source = ParquetSource(root)
    except MissingDuckDB as exc:
        raise click.ClickException(str(exc)) from None
    click.get_current_context().call_on_close(source.close)
    return source


def runs_location(root: LogSource) -> str:
    """Where the runs are, for "no runs" messages: the `runs_log/` directory, a database."""
    from mantisd.stats.source import where

    return where(root)


def warn_skipped(report: ScanReport) -> None:
    """`warning: skipped 3 unreadable line(s); dropped 1 duplicate run_id(s)` on stderr."""
    summary = report.summary()
    if summary:
        click.echo(f"warning: {summary}", err=True)


def buckets_to_show(asked: Sequence[str], reported: Collection[str]) -> list[str]:
    """`--bucket`'s names, checked; by default the page's nine in order, then others by name.

    An unknown bucket is a usage error: a name neither one of the nine nor reported by any
    selected run (bucket names are free, so this is known only after reading).
    """
    from mantisd.schema import BUCKETS, TOTAL

    seen = set(reported) - {TOTAL}
    unknown = [b for b in asked if b not in BUCKETS and b not in seen and b != TOTAL]
    if unknown:
        raise click.BadParameter(
            f"{', '.join(map(repr, unknown))}: neither one of the nine buckets nor reported "
            f"by any selected run (known: {printable(', '.join(sorted(set(BUCKETS) | seen)))})",
            ctx=click.get_current_context(),
            param_hint="'--bucket'",
        )
    return list(asked) or [b for b in BUCKETS if b in seen] + sorted(seen - set(BUCKETS))


def note_partial_buckets(selection: Selection, buckets: Sequence[str], *, where: str = "") -> None:
    """Say on stderr which buckets fewer runs reported (their percentiles cover those only)."""
    partial = [
        f"{b} ({selection.count(b)} of {selection.run_count})"
        for b in buckets
        if 0 < selection.count(b) < selection.run_count
    ]
    if partial:
        shown = printable(", ".join(partial))
        click.echo(f"note: reported by fewer runs{where}: {shown}", err=True)


def runs_of(workflow_id: str, status: str | None, count: int = 2) -> str:
    """`succeeded runs of X` / `run of X`: the phrase of headers and messages."""
    noun = "run" if count == 1 else "runs"
    return f"{status + ' ' if status else ''}{noun} of {printable(workflow_id)}"


def unknown_workflow(root: LogSource, workflow_id: str) -> str:
    """For the "no runs" message: `; the log has no workflow X: did you mean A or B?` when no
    run of `workflow_id` is in the log but others are, else "". Reads the whole log, so only
    on that failure path."""
    from mantisd.reader import ScanReport
    from mantisd.stats.source import as_source
    from mantisd.stats.workflows import nearest

    with readable():
        known = [s.workflow_id for s in as_source(root).workflows(ScanReport())]
    if not known or workflow_id in known:
        return ""
    close = nearest(workflow_id, known)
    shown = printable(workflow_id)
    if not close:
        return f"; the log has no workflow {shown} (`mantis runs list` shows its workflows)"
    close = [printable(c) for c in close]
    choices = close[0] if len(close) == 1 else f"{', '.join(close[:-1])} or {close[-1]}"
    return f"; the log has no workflow {shown}: did you mean {choices}?"


#: Periods a trend (or a report's trend) may have: a table, or a chart, still worth reading.
MAX_PERIODS = 1000


def check_period_count(
    bounds: Sequence[dt.datetime], every: object, low: dt.datetime, high: dt.datetime
) -> None:
    """A usage error when the period `bounds` (edges) make more than `MAX_PERIODS` periods."""
    from mantisd.stats.durations import format_instant

    if len(bounds) - 1 > MAX_PERIODS:
        raise click.UsageError(
            f"{len(bounds) - 1} periods of {every} from {format_instant(low)} to "
            f"{format_instant(high)}: at most {MAX_PERIODS} (narrow the window or use a "
            "longer --every)"
        )
