"""`mantis dev ...`: developer helpers (sample data for demos and benchmarks)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click


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


@click.group(hidden=True)
def dev() -> None:
    """Developer helpers: sample data."""


@dev.command()
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
def generate(
    data_dir: Path, rows: int, months: int, workflows: int, seed: int, end: dt.datetime | None
) -> None:
    """Write realistic sample shards: lognormal buckets, many workflows, both statuses."""
    from mantisd.sample import generate as write_sample
    from mantisd.sample import workflow_ids

    try:
        paths = write_sample(
            data_dir, rows=rows, months=months, workflows=workflows, seed=seed, end=end
        )
    except FileExistsError as exc:
        raise click.ClickException(
            f"{exc.filename} exists; sample data goes to a fresh dir"
        ) from None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {rows} rows into {len(paths)} shard(s) under {data_dir}")
    click.echo(f"most popular workflow: {workflow_ids(1)[0]}")
