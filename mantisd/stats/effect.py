"""`--min-effect 5%` or `0.05`: a click parameter type for a relative change."""

from __future__ import annotations

import math
import re
from typing import Any

import click

_NUMBER = re.compile(r"^\d+(?:\.\d*)?$|^\.\d+$")


class RelativeEffect(click.ParamType):  # type: ignore[type-arg]  # generic only from click 8.4
    """A non-negative fraction: `5%` (any percentage) or `0.05` (a bare number, at most 1).

    A bare number above 1 is refused rather than guessed: `5` could mean 5% or 500%.
    """

    name = "effect"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        text = str(value).strip()
        percent = text.endswith("%")
        number = text[:-1].strip() if percent else text
        if not _NUMBER.match(number) or not math.isfinite(float(number)):
            self.fail(
                f"{value!r} is not a relative effect like 5% or 0.05 (a non-negative "
                "percentage, or a fraction from 0 to 1)",
                param,
                ctx,
            )
        if percent:
            return float(number) / 100
        if float(number) > 1:
            self.fail(
                f"{value!r} is ambiguous: write {number}% for {number} percent, or a fraction "
                "from 0 to 1 (0.05 is 5%)",
                param,
                ctx,
            )
        return float(number)
