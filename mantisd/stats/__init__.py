"""The read side of `mantis runs ...`: selection, percentiles, rendering, flag types.

Stdlib + msgspec + click only (never anyio). Modules are imported lazily by the commands, so
that `mantis --help` stays fast.
"""
