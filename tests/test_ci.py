"""CI and the README agree: the README's test command is the one `.ci/run` runs, and the pins
it installs with cover every dependency the tests need (a new dependency without a pin would
install whatever release is newest on the day, the failure the pins exist to prevent)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_test_command() -> str:
    commands = [
        line.strip()
        for line in (ROOT / "README.md").read_text().splitlines()
        if "-m pytest" in line and "pip install" in line
    ]
    assert len(commands) == 1, f"the README should give one test command, found {commands}"
    return commands[0].strip("`$ ")


def pinned() -> dict[str, str]:
    pins = {}
    for line in (ROOT / ".ci/constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line!r}"
            pins[canonical(name)] = version
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return canonical(match[0])


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    command = readme_test_command()
    assert "-c .ci/constraints.txt" in command
    assert command in (ROOT / ".ci/run").read_text()


def test_every_runtime_and_test_dependency_is_pinned() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["test"]
    missing = sorted({requirement_name(r) for r in wanted} - set(pinned()))
    assert not missing, f"run .ci/lock: no pin in .ci/constraints.txt for {missing}"


def test_ci_also_runs_the_suite_on_the_newest_releases() -> None:
    script = (ROOT / ".ci/run").read_text()
    newest = script[script.index("newest releases (no pins)") :]
    assert "pip install -q -U -e '.[test]'" in newest
    assert "constraints" not in newest.split("pip freeze")[0]
    assert "-m pytest" in newest
