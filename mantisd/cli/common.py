"""What `mantis runs stats`, `compare` and `trend` share: flags, the data dir, progress, notes.

Only click and the flag types are imported at module level (`mantis --help` stays fast); the
query machinery is imported inside the helpers, when a command runs.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from mantisd.stats.durations import TimeBound, TimeBoundType, check_window

if TYPE_CHECKING:
    from mantisd.reader import ScanReport
    from mantisd.stats.query import Selection, StatsQuery

F = TypeVar("F", bound=Callable[..., Any])
STATUSES = ("succeeded", "failed", "")
#: Progress goes to a terminal only, and only when there is more than this many shards to read.
PROGRESS_MIN_SHARDS = 2
TIME_HELP = "a duration ago (7d, 24h, 30m, 2w) or a date/time (2026-10-01, RFC 3339; no zone: UTC)"


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
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Data directory (default: $MANTIS_DATA_DIR, else the platform's default).",
    )(f)


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
    simply holds no runs (the usual "no runs" answer, with the JSON still printed)."""
    from mantisd.paths import resolve_data_dir

    root = resolve_data_dir(data_dir)
    if not root.is_dir():
        raise click.ClickException(f"data dir {root} does not exist (see --data-dir)")
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


def select_with_progress(root: Path, query: StatsQuery) -> Selection:
    """`select`, with progress on a terminal; an unreadable log is exit 1."""
    from mantisd.stats.query import select

    on_shard, done = progress()
    try:
        return select(root, query, on_shard=on_shard)
    except OSError as exc:
        raise click.ClickException(f"cannot read the run log: {exc}") from None
    finally:
        done()


def select_many_with_progress(root: Path, *queries: StatsQuery) -> list[Selection]:
    """`select_many` (every window's shards in one pool), as `select_with_progress`."""
    from mantisd.stats.query import select_many

    on_shard, done = progress()
    try:
        return select_many(root, queries, on_shard=on_shard)
    except OSError as exc:
        raise click.ClickException(f"cannot read the run log: {exc}") from None
    finally:
        done()


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
            f"by any selected run (known: {', '.join(sorted(set(BUCKETS) | seen))})",
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
        click.echo(f"note: reported by fewer runs{where}: {', '.join(partial)}", err=True)


def runs_of(workflow_id: str, status: str | None, count: int = 2) -> str:
    """`succeeded runs of X` / `run of X`: the phrase of headers and messages."""
    noun = "run" if count == 1 else "runs"
    return f"{status + ' ' if status else ''}{noun} of {workflow_id}"
