"""The read side of `mantis runs ...`: selection, percentiles, rendering, flag types,
and for `compare`/`trend` the Mann-Whitney U test, comparisons and calendar periods.

Stdlib + msgspec + click only (never anyio). Modules are imported lazily by the commands, so
that `mantis --help` stays fast.
"""
