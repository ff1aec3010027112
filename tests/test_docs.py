"""The README and docs/ show only what really happens.

- Every ```` ```console ```` block of `docs/*.md` is run: each `$ command` (a `\\` at the end
  of a line continues it) against the sample data its page generates (`mantis dev generate`
  in a ```` ```sh ```` block, run here into a temporary directory), and its output must be
  the block's lines exactly. A line ending in `(stderr)` or `(stderr; exit status N)` is
  expected on stderr, and N is the exit status (else 0).
- The README's hello-world loop runs for real: `mantisd` on its defaults (a fresh HOME and
  XDG_RUNTIME_DIR, nothing else in the environment), the README's `hello.py`, then
  `mantis runs stats`, all as the README shows them.
- The CLI reference (`docs/cli.md`) is what `mantis dev docs` generates from today's `--help`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from mantisd.cli.reference import MARKER, PAGE, regenerate
from mantisd.paths import SYSTEM_SOCKET
from tests.daemon_process import running_daemon

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
#: The venv's `bin/`: `mantis`, `mantisd` and `python` as a newcomer's `.venv/bin/` holds them.
BIN = Path(sys.executable).parent
STDERR = re.compile(r"\s+\(stderr(?:; exit status (\d+))?\)$")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


@dataclass
class Example:
    """One `$ command` of a console block and what it must print."""

    where: str
    command: str
    stdout: list[str]
    stderr: list[str]
    status: int = 0


def fenced(text: str, language: str) -> Iterator[tuple[int, str]]:
    """(line number, body) of each fenced block of `language`."""
    for match in FENCE.finditer(text):
        if match[1] == language:
            yield text.count("\n", 0, match.start()) + 2, match[2]


def commands(body: str) -> Iterator[tuple[int, str]]:
    """Each command of a block, continuation lines joined, with its offset in the block."""
    lines = body.splitlines()
    i = 0
    while i < len(lines):
        start, command = i, lines[i]
        while command.endswith("\\"):
            i += 1
            command = command[:-1] + lines[i].strip()
        yield start, command
        i += 1


def examples(path: Path) -> list[Example]:
    found = []
    for line_no, body in fenced(path.read_text(), "console"):
        current: Example | None = None
        for offset, line in commands(body):
            if line.startswith("$ "):
                where = f"{path.name}:{line_no + offset}"
                current = Example(where, line[2:], [], [])
                found.append(current)
                continue
            assert current is not None, f"{path.name}:{line_no}: output before any `$ `"
            marked = STDERR.search(line)
            if marked:
                current.stderr.append(line[: marked.start()])
                current.status = int(marked[1] or current.status)
            else:
                current.stdout.append(line)
    return found


def sample_data_commands(path: Path) -> list[str]:
    """The page's `mantis dev generate ...` commands (in its sh blocks)."""
    return [
        command
        for _, body in fenced(path.read_text(), "sh")
        for _, command in commands(body)
        if command.startswith("mantis dev generate")
    ]


def data_dir_of(command: str) -> str:
    words = shlex.split(command)
    return words[words.index("--data-dir") + 1]


def run_example(
    example: Example, *, env: Mapping[str, str], cwd: Path, paths: Mapping[str, Path]
) -> None:
    """Run the example's command in bash (documented paths swapped for real ones) and compare
    its output, with the real paths swapped back, to the documented one."""
    command = example.command.replace(".venv/bin/", f"{BIN}/")
    for shown, real in paths.items():
        command = command.replace(shown, str(real))
    proc = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        capture_output=True,
        text=True,
        env=dict(env),
        cwd=cwd,
        timeout=300,
    )

    def shown(text: str) -> list[str]:
        for documented, real in paths.items():
            text = text.replace(str(real), documented)
        return [line.rstrip() for line in text.splitlines()]

    assert shown(proc.stdout) == [line.rstrip() for line in example.stdout], example.where
    assert shown(proc.stderr) == example.stderr, example.where
    assert proc.returncode == example.status, f"{example.where}: {proc.stderr}"


def docs_env() -> dict[str, str]:
    """This environment with the venv's commands first and no mantis settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MANTIS")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


# --- docs/: every console block --------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every data dir the docs generate, generated once, by the docs' own commands."""
    dirs: dict[str, Path] = {}
    for path in DOCS:
        for command in sample_data_commands(path):
            shown = data_dir_of(command)
            assert shown not in dirs, f"{path.name}: {shown} is generated twice"
            dirs[shown] = tmp_path_factory.mktemp("docs") / Path(shown).name
            real = command.replace(shown, str(dirs[shown]))
            subprocess.run(["bash", "-c", real], env=docs_env(), check=True, capture_output=True)
    return dirs


DOC_EXAMPLES = [example for path in DOCS for example in examples(path)]


def test_the_docs_have_checked_examples() -> None:
    """The examples below are found (a broken parser would check nothing and pass)."""
    pages = {example.where.partition(":")[0] for example in DOC_EXAMPLES}
    assert {"queries.md", "operations.md"} <= pages
    assert any(e.status == 3 for e in DOC_EXAMPLES)  # the --fail-on-regression example


@pytest.mark.slow
@pytest.mark.parametrize("example", DOC_EXAMPLES, ids=[e.where for e in DOC_EXAMPLES])
def test_docs_example(example: Example, sample_dirs: dict[str, Path], tmp_path: Path) -> None:
    run_example(example, env=docs_env(), cwd=tmp_path, paths=sample_dirs)


# --- README: the hello-world loop, for real ---------------------------------------------------


def readme_daemon_command() -> str:
    """The README's "Run it" command's last step: the daemon, on its defaults."""
    (line,) = [
        line.strip()
        for line in README.read_text().splitlines()
        if "pip install -q -e ." in line and "mantisd" in line
    ]
    return line.split("&&")[-1].strip()


def test_readme_starts_the_daemon_on_its_defaults() -> None:
    """No --data-dir, no --socket: the README's daemon writes where the client and mantis look."""
    assert readme_daemon_command() == ".venv/bin/mantisd"


def test_readme_hello_world_loop(tmp_path: Path, short_tmp: Path) -> None:
    assert not SYSTEM_SOCKET.exists(), f"{SYSTEM_SOCKET} exists: the defaults would use it"
    home, runtime, work = tmp_path / "home", short_tmp / "run", tmp_path / "work"
    for d in (home, runtime, work):
        d.mkdir(mode=0o700)
    # A newcomer's session: a HOME and a runtime dir, no MANTIS_* and no platform variables.
    env = {"PATH": f"{BIN}{os.pathsep}/usr/bin:/bin", "HOME": str(home)}
    env |= {"XDG_RUNTIME_DIR": str(runtime), "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    (code,) = [body for _, body in fenced(README.read_text(), "python") if "# hello.py" in body]
    (work / "hello.py").write_text(code)
    daemon = readme_daemon_command().replace(".venv/bin/", f"{BIN}/")
    data_dir = home / ".local/share/mantis"
    argv = ["env", "-i", *(f"{k}={v}" for k, v in env.items()), *shlex.split(daemon)]
    with running_daemon(runtime / "mantisd.sock", data_dir, command=argv) as d:
        assert f"ready on {runtime / 'mantisd.sock'} (data dir {data_dir}," in d.stderr
        readme_examples = examples(README)
        assert [e.command.split()[:2] for e in readme_examples] == [
            [".venv/bin/python", "hello.py"],
            [".venv/bin/mantis", "runs"],
        ]
        for example in readme_examples:
            run_example(example, env=env, cwd=work, paths={})
        assert d.status()["rows_written"] == 1  # delivered by the daemon, not written directly
    (shard,) = (data_dir / "runs_log").glob("*.jsonl")
    assert b'"run_id":"hello-0001"' in shard.read_bytes()


# --- the CLI reference --------------------------------------------------------------------


def test_cli_reference_is_generated_from_the_commands_help() -> None:
    page = (REPO / PAGE).read_text()
    assert regenerate(page) == page, "docs/cli.md has drifted: run `mantis dev docs`"


def test_cli_reference_covers_every_command() -> None:
    page = (REPO / PAGE).read_text()
    for command in [
        "mantis",
        "mantis runs list",
        "mantis runs stats",
        "mantis runs compare",
        "mantis runs trend",
        "mantisd",
        "mantisd status",
        "mantisd units",
        "mantisd install-units",
    ]:
        assert f"### `{command}`\n" in page
    assert "### `mantis dev" not in page.partition(MARKER)[2]  # hidden commands stay out


# --- operations: the container entrypoint, for real ------------------------------------------

#: Stands in for `python -m my_runtime`: appends one run, says how, and exits 0 on SIGTERM.
RUNTIME = (
    "python -c 'import signal, sys, time; from mantis_client import append; "
    'from tests.rows import make_row; print(append(make_row(run_id="entry-1")).outcome.value, '
    "flush=True); signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); time.sleep(120)'"
)


def test_operations_entrypoint_stops_the_runtime_then_drains_the_daemon(
    tmp_path: Path, short_tmp: Path
) -> None:
    (script,) = [
        body
        for _, body in fenced((REPO / "docs" / "operations.md").read_text(), "sh")
        if "# entrypoint.sh" in body
    ]
    assert 'python -m my_runtime "$@"' in script
    entrypoint = tmp_path / "entrypoint.sh"
    entrypoint.write_text(script.replace('python -m my_runtime "$@"', RUNTIME))
    home, runtime_dir = tmp_path / "home", short_tmp / "run"
    for d in (home, runtime_dir):
        d.mkdir(mode=0o700)
    env = {"PATH": f"{BIN}{os.pathsep}/usr/bin:/bin", "HOME": str(home)}
    env |= {"XDG_RUNTIME_DIR": str(runtime_dir), "PYTHONPATH": os.pathsep.join([str(REPO)])}
    proc = subprocess.Popen(
        ["sh", str(entrypoint)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        ready = proc.stderr.readline()
        assert "mantisd: ready on" in ready, ready
        outcome = proc.stdout.readline().strip()
        assert outcome in ("delivered", "written_directly")  # the latter: before it was ready
        proc.terminate()  # what the platform sends to the container's entrypoint
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "SIGTERM received" in stderr and "stopped:" in stderr  # the daemon drained, after
    assert not (runtime_dir / "mantisd.sock").exists()
    (shard,) = (home / ".local/share/mantis/runs_log").glob("*.jsonl")
    assert b'"run_id":"entry-1"' in shard.read_bytes()


# --- links between the pages ----------------------------------------------------------------

LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to `-`."""
    headings = re.findall(r"^#+ (.+)$", path.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_relative_links_reach_a_file_and_a_heading(page: Path) -> None:
    text = FENCE.sub("", page.read_text())  # code blocks hold no links
    for target in LINK.findall(text):
        if "://" in target:
            continue
        file, _, anchor = target.partition("#")
        linked = (page.parent / file).resolve() if file else page
        assert linked.exists(), f"{page.name}: {target}"
        if anchor:
            assert anchor in anchors(linked), f"{page.name}: {target}"
