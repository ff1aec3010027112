"""`mantis runs report`: one self-contained HTML file a person opens, or attaches to a ticket.

No script at all and no fetch: charts are inline SVG drawn here, styles are inline, and a
Content-Security-Policy forbids anything else, so the file works from `file://` and cannot run
code even if a row's text were to slip through (every row-derived string is HTML-escaped).
The numbers come from the CLI's own computations (`select`, `bucket_stats`, `compare_buckets`,
`select_periods`, `iter_runs`), so the page agrees with `stats --json` to the last digit.
"""
