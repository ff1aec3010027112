"""The fleet's live central store: each pod's run log shipped into one PostgreSQL.

`mantis runs ship` tails a data dir's month shards and loads every new complete line into one
table of runs (exactly once in effect, see `shipper`); `mantisd.stats.source_postgres` answers
`stats`/`compare`/`trend` from it. Needs psycopg 3 (`pip install 'mantisd[postgres]'`): only
`--db`/`--to` paths import this package, never the file-only CLI.
"""
