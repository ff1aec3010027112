"""The Parquet dataset's layout and columns, shared by the export and the Parquet source.

`<DIR>/month=YYYY-MM/<source_id>.parquet`: Hive-partitioned by the month of `finished_at`
(UTC), one file per source (data dir identity, `mantisd.source_id`) and month, one row per
`run_id` across the whole dataset. DuckDB, Spark, Trino and ClickHouse read it as it is
(docs/fleet-files.md). Files and directories whose names start with `.` are the export's
work in progress: no engine's glob or Hive discovery picks them up.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType
from typing import Final

from mantisd.schema import BUCKETS, TOTAL

#: Every column of a dataset file, with its type (DuckDB's names), in file order.
COLUMNS: Final = (
    ("run_id", "VARCHAR"),
    ("schema_version", "BIGINT"),
    ("tenant_id", "VARCHAR"),
    ("profile_id", "VARCHAR"),
    ("workflow_id", "VARCHAR"),
    ("plan_signature", "VARCHAR"),
    ("model", "VARCHAR"),
    ("status", "VARCHAR"),
    ("created_at", "TIMESTAMPTZ"),
    ("finished_at", "TIMESTAMPTZ"),
    (TOTAL, "DOUBLE"),
    *((bucket, "DOUBLE") for bucket in BUCKETS),
    #: Buckets beyond the nine: name -> seconds.
    ("other_buckets", "MAP(VARCHAR, DOUBLE)"),
    #: The row's `cost_breakdown` object, as JSON text.
    ("cost_breakdown", "VARCHAR"),
    ("steps_executed", "BIGINT"),
    ("viable", "BIGINT"),
    #: The row's `error` as JSON text (a quoted string or an object), NULL when it was null.
    ("error", "VARCHAR"),
    #: The row's top-level keys the page does not define: name -> its value as canonical JSON
    #: text (keys sorted, numbers by value: `mantisd.stats.canonical`); NULL when none.
    ("extra_keys", "MAP(VARCHAR, VARCHAR)"),
    ("source_id", "VARCHAR"),
    ("source_label", "VARCHAR"),
)
#: The largest value of a BIGINT column (Parquet INT64), the widest integer every engine reads.
#: The row schema bounds `schema_version`, `steps_executed` and `viable` from below only: a row
#: with one beyond this is left out of the dataset, and counted (`mantisd.export.rows`).
BIGINT_MAX: Final = 2**63 - 1
#: The Hive partition column (from the directory name, not stored in the files).
PARTITION: Final = "month"
#: The file that records a month's fingerprint (Parquet key-value metadata).
FINGERPRINT_KEY: Final = "mantis_fingerprint"


class MissingDuckDB(Exception):
    """Raised when Parquet is asked for without DuckDB installed; says what to install."""


def require_duckdb() -> ModuleType:
    """The `duckdb` module, or `MissingDuckDB` naming the extra to install."""
    try:
        import duckdb
    except ImportError:
        raise MissingDuckDB(
            "Parquet export and queries need DuckDB: pip install 'mantisd[duckdb]'"
        ) from None
    return duckdb


def month_dir(root: Path, month: str) -> Path:
    return root / f"{PARTITION}={month}"


#: The name of a data file: `<source_id>.parquet`, the id spelled as `mantisd.source_id` writes it
#: (`str` of a UUID). Any other `*.parquet` in a month directory is not the export's.
_DATA_FILE: Final = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.parquet"
)


def is_data_file(name: str) -> bool:
    """Whether `name` is the name of a file the export writes (`<source_id>.parquet`)."""
    return _DATA_FILE.fullmatch(name) is not None


def files_glob(root: Path) -> str:
    """Every data file of the dataset, as DuckDB's glob."""
    return str(root / f"{PARTITION}=*" / "*.parquet")


def sql_string(value: str | Path) -> str:
    """`value` as an SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"
