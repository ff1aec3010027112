"""Connecting to the fleet's PostgreSQL: where the URL comes from, how it is named in messages.

The URL is a libpq connection string or URI (`postgresql://user@host/db`,
`postgresql:///db?host=/run/postgresql` for a Unix socket, `service=fleet`); passwords belong
in `~/.pgpass` or `PGPASSWORD`, never on a command line. Messages name the database by its
name and host, never with the password.
"""

from __future__ import annotations

from typing import Final

#: Where `mantis runs ship` finds the URL when `--to` is not given.
DATABASE_URL_ENV: Final = "MANTIS_DATABASE_URL"
INSTALL_HINT: Final = "pip install 'mantisd[postgres]'"


class FleetError(Exception):
    """Raised for a problem the operator must fix (no driver, a schema this version does not
    know, an unknown source); the message says what to do. Never retried."""


def require_driver() -> None:
    """Import psycopg, or FleetError with the install command when it is missing (only the
    commands that talk to a database call this)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise FleetError(f"PostgreSQL support needs psycopg 3: {INSTALL_HINT}") from None


def name_of(url: str) -> str:
    """`database mantis on /run/postgresql` (no password): how messages name a URL."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:  # an unparsable URL is never echoed: it may hold a password
        return "the database (unparsable URL)"
    database = params.get("dbname") or params.get("user") or "(default)"
    host = params.get("host") or "the default socket"
    port = f":{params['port']}" if params.get("port") else ""
    return f"database {database} on {host}{port}"


def first_line(exc: BaseException, url: str | None = None) -> str:
    """An error's first line (psycopg's messages run over several lines), never showing the
    password of `url`, the URL the error came from: libpq quotes an unparsable URL's text,
    password and all, so for one of those only that it cannot be parsed is said."""
    text = str(exc).strip() or type(exc).__name__
    line = text.splitlines()[0]
    if url is None:
        return line
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        password = conninfo_to_dict(url).get("password")
    except psycopg.Error:
        return "the URL cannot be parsed (its text is not shown: it may hold a password)"
    if password:
        line = line.replace(str(password), "***")
    return line
