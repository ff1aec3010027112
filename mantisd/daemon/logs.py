"""The daemon's one logging setup: plain lines on stderr, journald priorities under systemd."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

#: syslog priorities (sd-daemon(3)) that journald reads from a `<N>` line prefix.
_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


def stderr_is_journal(environ: Mapping[str, str] | None = None) -> bool:
    """True when stderr is the journal stream systemd set up (`$JOURNAL_STREAM` = dev:ino)."""
    env = os.environ if environ is None else environ
    device, sep, inode = env.get("JOURNAL_STREAM", "").partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return f"{st.st_dev}:{st.st_ino}" == f"{device}:{inode}"


class JournalFormatter(logging.Formatter):
    """Prefix each line with `<N>` so journald records the right priority."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


def configure(level: str = "info") -> None:
    """Route the `mantisd` loggers to stderr; journald adds its own timestamps."""
    handler = logging.StreamHandler(sys.stderr)
    if stderr_is_journal():
        handler.setFormatter(JournalFormatter("%(message)s"))  # SyslogIdentifier names us
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s mantisd %(levelname)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger("mantisd")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def announce(message: str) -> None:
    """A line on stderr whatever the log level (the ready line that scripts wait for)."""
    prefix = "<5>" if stderr_is_journal() else "mantisd: "
    print(f"{prefix}{message}", file=sys.stderr, flush=True)
