"""`mantis dev generate`: sample data for demos and benchmarks (`mantis dev` is hidden)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from mantisd.buckets import BUCKETS
from mantisd.stats.durations import TimeBound, TimeBoundType


class Month(click.ParamType):  # type: ignore[type-arg]  # generic only from click 8.4
    """`YYYY-MM`, converted to the instant that month ends (the first of the next month)."""

    name = "YYYY-MM"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value
        try:
            first = dt.datetime.strptime(str(value), "%Y-%m").replace(tzinfo=dt.UTC)
        except ValueError:
            self.fail(f"{value!r} is not a month like 2026-05", param, ctx)
        return (first + dt.timedelta(days=32)).replace(day=1)


@click.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Where to write runs_log/<YYYY-MM>.jsonl (existing shards are never touched).",
)
@click.option("--rows", type=click.IntRange(min=0), default=10_000, show_default=True)
@click.option("--months", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--workflows", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--end",
    type=Month(),
    default=None,
    help="Last month to fill, whole (default: up to now).",
)
@click.option(
    "--slow-bucket",
    type=click.Choice(BUCKETS),
    default=None,
    help="Plant a regression: this bucket takes --slow-factor times as long from --slow-since.",
)
@click.option(
    "--slow-factor",
    type=click.FloatRange(min=0, min_open=True),
    default=1.3,
    show_default=True,
    help="How much slower --slow-bucket gets.",
)
@click.option(
    "--slow-since",
    type=TimeBoundType(),
    default=None,
    help="When the slowdown starts: a date/time, or a duration back from the end of the data "
    "(14d: the last two weeks). Default: from the start.",
)
@click.option(
    "--slow-workflow",
    default=None,
    metavar="WORKFLOW_ID",
    help="Slow down this workflow only (default: every workflow).",
)
def generate(
    data_dir: Path,
    rows: int,
    months: int,
    workflows: int,
    seed: int,
    end: dt.datetime | None,
    slow_bucket: str | None,
    slow_factor: float,
    slow_since: TimeBound | None,
    slow_workflow: str | None,
) -> None:
    """Write realistic sample shards: lognormal buckets, many workflows, both statuses."""
    from mantisd.sample import generate as write_sample
    from mantisd.sample import workflow_ids

    if slow_bucket is None and (slow_since is not None or slow_workflow is not None):
        raise click.UsageError("--slow-since and --slow-workflow need --slow-bucket")
    data_end = end or dt.datetime.now(dt.UTC)
    try:
        paths = write_sample(
            data_dir,
            rows=rows,
            months=months,
            workflows=workflows,
            seed=seed,
            end=end,
            slow_bucket=slow_bucket,
            slow_factor=slow_factor,
            slow_since=slow_since.resolve(data_end) if slow_since else None,
            slow_workflow=slow_workflow,
        )
    except FileExistsError as exc:
        raise click.ClickException(
            f"{exc.filename} exists; sample data goes to a fresh dir"
        ) from None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {rows} rows into {len(paths)} shard(s) under {data_dir}")
    click.echo(f"most popular workflow: {workflow_ids(1)[0]}")
    if slow_bucket is not None:
        start = f"from {slow_since.resolve(data_end):%Y-%m-%d %H:%M:%SZ}" if slow_since else ""
        whose = f"in {slow_workflow}" if slow_workflow else "in every workflow"
        click.echo(f"planted: {slow_bucket} x{slow_factor:g} {start} {whose}".replace("  ", " "))
