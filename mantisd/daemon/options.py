"""Click classes for `mantisd`: every setting is a flag and an environment variable, and both
are visible and named.

`--help` shows the variable behind each option (`[env var: MANTISD_QUEUE_SIZE]`), and a bad
value that came from the environment is reported under the variable's name, not under a flag
the operator never typed (the value usually sits in a unit's `EnvironmentFile=`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click
from click.core import ParameterSource


def envvar_name(option: click.Option, ctx: click.Context) -> str | None:
    """The variable `option` reads: its own `envvar` (the one set, if several), else the
    context's `auto_envvar_prefix` one, as click resolves it."""
    if isinstance(option.envvar, str):
        names = [option.envvar]
    else:
        names = list(option.envvar or ())
    if not names and option.allow_from_autoenv and ctx.auto_envvar_prefix and option.name:
        names = [f"{ctx.auto_envvar_prefix}_{option.name.upper()}"]
    return next((name for name in names if os.environ.get(name)), names[0] if names else None)


@contextmanager
def env_named_errors(ctx: click.Context) -> Iterator[None]:
    """Re-word a `BadParameter` whose value came from the environment to name the variable."""
    try:
        yield
    except click.BadParameter as exc:
        option = exc.param
        if (
            isinstance(option, click.Option)
            and option.name
            and ctx.get_parameter_source(option.name) is ParameterSource.ENVIRONMENT
        ):
            exc.param_hint = f"environment variable {envvar_name(option, ctx)}"
        raise


def show_envvars(params: Sequence[click.Parameter]) -> None:
    """Turn on `show_envvar` for every option that takes a value (not `--help`/`--version`)."""
    for param in params:
        if isinstance(param, click.Option) and param.expose_value:
            param.show_envvar = True


class EnvCommand(click.Command):
    """A command whose options show their environment variables and name them in errors."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        show_envvars(self.params)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        with env_named_errors(ctx):
            return super().parse_args(ctx, args)


class EnvGroup(click.Group):
    """`EnvCommand`'s behaviour for a group; its `@group.command()`s are `EnvCommand`s."""

    command_class = EnvCommand

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        show_envvars(self.params)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        with env_named_errors(ctx):
            return super().parse_args(ctx, args)
