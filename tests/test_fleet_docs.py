"""docs/fleet-postgres.md's walkthrough, run for real against a real PostgreSQL.

Between its `<!-- walkthrough` and `<!-- /walkthrough -->` markers, every ```bash block is
run in order (the documented URL and `/tmp/fleet` swapped for the test's), and every
```text block that follows one must be its output, exactly, once what must vary is masked:
source ids, shipment times, and the database's name and host.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mantisd.fleet.database import name_of

PAGE = Path(__file__).resolve().parents[1] / "docs" / "fleet-postgres.md"
DOC_URL = "postgresql://mantis@db.example/fleet"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
SHIPPED_AT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", re.MULTILINE)


def walkthrough() -> list[tuple[str, str]]:
    """(language, body) of every fenced block between the markers, in order."""
    text = PAGE.read_text()
    start = text.index("<!-- walkthrough")
    end = text.index("<!-- /walkthrough -->")
    return [(m[1], m[2]) for m in BLOCK.finditer(text[start:end])]


def masked(text: str) -> str:
    return SHIPPED_AT.sub("<time>", UUID.sub("<uuid>", text))


@pytest.mark.slow
def test_the_walkthrough_runs_as_documented(pg_url: str, tmp_path: Path) -> None:
    blocks = walkthrough()
    assert sum(language == "text" for language, _ in blocks) >= 5
    fleet = tmp_path / "fleet"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MANTIS")},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MANTIS_DATABASE_URL": pg_url,
    }
    output = None
    for language, body in blocks:
        if language == "bash":
            script = body.replace(DOC_URL, pg_url).replace("/tmp/fleet", str(fleet))
            proc = subprocess.run(
                ["bash", "-e", "-c", script],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert proc.returncode == 0, f"{body}\n{proc.stderr}"
            output = proc.stdout.replace(name_of(pg_url), name_of(DOC_URL))
            output = output.replace(str(fleet), "/tmp/fleet")
        elif language == "text" and output is not None:
            assert masked(output) == masked(body), body.splitlines()[0]
            output = None
