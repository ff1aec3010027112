"""The wall-time bucket names, importable without msgspec (the CLI's `--help` path uses them)."""

from typing import Final

#: The nine wall-time buckets of the reference page, in the page's order. Others are allowed.
BUCKETS: Final = (
    "think",
    "claude_extract",
    "settle",
    "claude_ground",
    "perceive",
    "load",
    "act",
    "claude_verify",
    "overhead",
)

#: The aggregate that `mantis runs stats` always reports last.
TOTAL: Final = "total_time_s"
