"""`mantisd`: run the daemon (every setting an option and an env var), or `mantisd status`."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

import anyio
import click
import msgspec

from mantisd import __version__
from mantisd.daemon import logs
from mantisd.daemon.config import Config
from mantisd.daemon.listen import ListenError
from mantisd.daemon.options import EnvGroup
from mantisd.daemon.units import install_units, units
from mantisd.paths import resolve_data_dir, resolve_socket_path
from mantisd.schema import MAX_LINE_BYTES

_DEFAULTS = Config(data_dir=Path("."))


class OctalMode(click.ParamType[int]):
    """A file mode written in octal, as chmod takes it (`0660`, `660`)."""

    name = "mode"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            mode = int(str(value), 8)
        except ValueError:
            self.fail(f"{value!r} is not an octal file mode", param, ctx)
        if not 0 <= mode <= 0o777:
            self.fail(f"{value!r} is not a file mode between 000 and 777", param, ctx)
        return mode


def _data_dir(explicit: Path | None) -> Path:
    """`--data-dir` / `$MANTIS_DATA_DIR`, else systemd's `$STATE_DIRECTORY`, else the default."""
    if explicit is None and not os.environ.get("MANTIS_DATA_DIR"):
        state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        if state:
            return Path(state)
    return resolve_data_dir(explicit)


def _socket(explicit: Path | None) -> Path:
    """The path to bind when systemd passed no socket (its socket, if any, always wins)."""
    return resolve_socket_path(explicit)


@click.group(
    cls=EnvGroup,
    invoke_without_command=True,
    context_settings={
        "auto_envvar_prefix": "MANTISD",
        "show_default": True,
        "help_option_names": ["-h", "--help"],
    },
)
@click.version_option(__version__, prog_name="mantisd")
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="MANTIS_SOCKET",
    help="Unix socket to listen on. Default: /run/mantisd.sock if it exists, else "
    "$XDG_RUNTIME_DIR/mantisd.sock, else /tmp/mantisd-$UID/mantisd.sock. Ignored when systemd "
    "passes a socket (LISTEN_FDS).",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="MANTIS_DATA_DIR",
    help="Where runs_log/ lives. Default: $STATE_DIRECTORY under systemd, else the platform "
    "default (Baseten, Modal) or ~/.local/share/mantis.",
)
@click.option("--socket-mode", type=OctalMode(), default="0660", help="Socket file mode.")
@click.option(
    "--max-line-bytes",
    type=click.IntRange(min=256, max=MAX_LINE_BYTES - 1),
    default=_DEFAULTS.max_line_bytes,
    help="Longest request line; longer gets a `limit` reply and the connection is closed. "
    "At most the longest line a reader reads (8 MiB).",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=_DEFAULTS.max_connections,
    help="Connections served at once; more get an `unavailable` reply.",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0.1),
    default=_DEFAULTS.idle_timeout,
    help="Seconds a connection may send nothing (or read no replies) before it is closed.",
)
@click.option(
    "--queue-size",
    type=click.IntRange(min=1),
    default=_DEFAULTS.queue_size,
    help="Rows waiting for the writer; a full queue makes readers wait (backpressure).",
)
@click.option(
    "--queue-max-bytes",
    type=click.IntRange(min=64 * 1024),
    default=_DEFAULTS.queue_max_bytes,
    help="Bytes of rows (their stored lines) waiting for the writer; a full queue makes "
    "readers wait (backpressure).",
)
@click.option(
    "--batch-max-rows",
    type=click.IntRange(min=1),
    default=_DEFAULTS.batch_max_rows,
    help="Most rows written and fsync'ed in one group commit.",
)
@click.option(
    "--batch-max-bytes",
    type=click.IntRange(min=64 * 1024),
    default=_DEFAULTS.batch_max_bytes,
    help="Most bytes written and fsync'ed in one group commit.",
)
@click.option(
    "--lock-timeout",
    type=click.FloatRange(min=0.1),
    default=_DEFAULTS.lock_timeout,
    help="Seconds the writer waits for a shard locked by another process before answering "
    "its rows with a storage error (logged and shown in status meanwhile).",
)
@click.option(
    "--max-inflight",
    type=click.IntRange(min=1),
    default=_DEFAULTS.max_inflight_per_connection,
    help="Unanswered rows per connection before its reader waits for the client to read.",
)
@click.option(
    "--allow-uid",
    type=int,
    multiple=True,
    help="Only peers with this uid (or an --allow-gid gid) may connect. Repeatable.",
)
@click.option("--allow-gid", type=int, multiple=True, help="Allow peers whose gid is this.")
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=0),
    default=_DEFAULTS.drain_timeout,
    help="Seconds to write out queued rows on SIGTERM/SIGINT.",
)
@click.option(
    "--rejected-max-bytes",
    type=click.IntRange(min=4096),
    default=_DEFAULTS.rejected_max_bytes,
    help="Size budget of runs_log/rejected/ (current file + one rotated).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
)
@click.pass_context
def cli(
    ctx: click.Context,
    socket_path: Path | None,
    data_dir: Path | None,
    socket_mode: int,
    max_line_bytes: int,
    max_connections: int,
    idle_timeout: float,
    queue_size: int,
    queue_max_bytes: int,
    batch_max_rows: int,
    batch_max_bytes: int,
    lock_timeout: float,
    max_inflight: int,
    allow_uid: tuple[int, ...],
    allow_gid: tuple[int, ...],
    drain_timeout: float,
    rejected_max_bytes: int,
    log_level: str,
) -> None:
    """Run mantisd: accept run rows on a Unix socket and append them durably to the shards."""
    if ctx.invoked_subcommand is not None:
        return
    logs.configure(log_level)
    config = Config(
        data_dir=_data_dir(data_dir),
        socket=_socket(socket_path),
        socket_mode=socket_mode,
        max_line_bytes=max_line_bytes,
        max_connections=max_connections,
        idle_timeout=idle_timeout,
        queue_size=queue_size,
        queue_max_bytes=queue_max_bytes,
        batch_max_rows=batch_max_rows,
        batch_max_bytes=batch_max_bytes,
        lock_timeout=lock_timeout,
        max_inflight_per_connection=max_inflight,
        allow_uids=frozenset(allow_uid),
        allow_gids=frozenset(allow_gid),
        drain_timeout=drain_timeout,
        rejected_max_bytes=rejected_max_bytes,
    )
    run(config)


def run(config: Config) -> None:
    """Serve until SIGTERM/SIGINT; a socket we cannot listen on is a clean error (exit 1)."""
    from mantisd.daemon.server import Server

    try:
        anyio.run(Server(config).run)
    except ListenError as exc:
        raise click.ClickException(str(exc)) from None


@cli.command()
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="MANTIS_SOCKET",
    help="The daemon's socket.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the counters as JSON.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=5.0, help="Seconds to wait.")
def status(socket_path: Path | None, as_json: bool, timeout: float) -> None:
    """Print the running daemon's counters."""
    path = resolve_socket_path(socket_path)
    try:
        reply = _request(path, b'{"op":"status"}\n', timeout)
    except OSError as exc:
        raise click.ClickException(f"cannot reach mantisd on {path}: {exc}") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise click.ClickException(f"{path} did not answer like mantisd: {exc}") from None
    if not reply.get("ok") or not isinstance(reply.get("status"), dict):
        raise click.ClickException(f"mantisd on {path}: {reply.get('error', reply)}")
    counters: dict[str, Any] = reply["status"]
    if as_json:
        click.echo(msgspec.json.encode(counters).decode())
        return
    click.echo(f"mantisd on {path}")
    width = max(len(key) for key in counters)
    for key, value in counters.items():
        click.echo(f"  {key:<{width}}  {'-' if value is None else value}")


def _request(path: Path, line: bytes, timeout: float) -> dict[str, Any]:
    """One request, one reply line, with the stdlib (status needs no event loop)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(line)
        with sock.makefile("rb") as f:
            reply_line = f.readline()
    if not reply_line:
        raise OSError("connection closed without a reply")
    reply: dict[str, Any] = msgspec.json.decode(reply_line, type=dict[str, Any])
    return reply


cli.add_command(units)
cli.add_command(install_units)


def main(prog_name: str | None = None) -> None:
    cli.main(prog_name=prog_name or "mantisd")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())  # type: ignore[func-returns-value]
