"""mantis_client: fire-and-forget `append(row)` to mantisd, with a direct-write fallback.

    from mantis_client import append, Outcome
    result = append(row)            # never raises, returns within ~timeout + one write
    if result.outcome is Outcome.DROPPED: ...

Rows go only to a daemon socket that passes the trust checks of `mantis_client.trust` (its
directory and its listener belong to root, to us, or to `expect_uid=` / `$MANTIS_DAEMON_UID`);
any other socket gets nothing and the row is written directly, the outcome's detail says why.

Imports only the stdlib and layer 1 of `mantisd` (schema, paths, store): never anyio or click.
"""

from mantis_client.api import append, append_async, default_client
from mantis_client.client import DEFAULT_TIMEOUT, MAX_TIMEOUT, Client
from mantis_client.outcome import AppendResult, Outcome

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_TIMEOUT",
    "AppendResult",
    "Client",
    "Outcome",
    "append",
    "append_async",
    "default_client",
]
