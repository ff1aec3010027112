"""mantisd, the per-pod append daemon: anyio on top of the layer-1 schema and store.

`Server(Config(...)).run()` serves rows on a Unix socket and group-commits them to the month
shards; `mantisd.daemon.cli` is the click front end.
"""
