"""Layering, checked in a fresh interpreter: what an import pulls into `sys.modules`.

The runtime imports `mantis_client` on every pod, and `mantis runs stats` must start fast:
neither may drag in anyio (nor the client click).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def modules_after_import(module: str) -> set[str]:
    """Top-level package names in `sys.modules` after `import module` in a new interpreter."""
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    return {name.partition(".")[0] for name in run_python(code)}


#: Imports `mantis` and every one of its commands (each group loads its own when asked).
LOAD_EVERY_COMMAND = """
import click
from mantisd.cli import mantis
def load(group, ctx):
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        if isinstance(command, click.Group):
            load(command, click.Context(command, parent=ctx, info_name=name))
load(mantis, click.Context(mantis, info_name="mantis"))
"""


def modules_after_loading_the_cli() -> set[str]:
    """Top-level package names in `sys.modules` once every `mantis` command is imported."""
    code = LOAD_EVERY_COMMAND + "import json, sys; print(json.dumps(sorted(sys.modules)))"
    return {name.partition(".")[0] for name in run_python(code)}


def run_python(code: str) -> list[str]:
    """Run `code` in a fresh interpreter and decode the JSON list it prints."""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result: list[str] = json.loads(proc.stdout)
    return result


def test_mantis_client_imports_neither_anyio_nor_click() -> None:
    loaded = modules_after_import("mantis_client")
    assert "mantis_client" in loaded
    assert not loaded & {"anyio", "click", "sniffio", "trio"}
    # A sync-only runtime does not pay for asyncio either (it is imported when a coroutine runs).
    assert "asyncio" not in loaded


def test_mantis_client_loads_only_layer_one_of_mantisd() -> None:
    code = (
        "import json, sys, mantis_client;"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('mantisd'))))"
    )
    assert set(run_python(code)) <= {
        "mantisd",
        "mantisd.buckets",
        "mantisd.paths",
        "mantisd.safe_fs",
        "mantisd.schema",
        "mantisd.store",
    }


def test_mantis_cli_does_not_import_anyio() -> None:
    loaded = modules_after_loading_the_cli()
    assert "mantisd" in loaded and "click" in loaded
    assert "anyio" not in loaded


def test_mantis_help_imports_no_command_module() -> None:
    """`mantis --help` lists the groups from the command tree alone (`mantisd.cli.lazy`)."""
    code = (
        "import json, sys\n"
        "from mantisd.cli import mantis\n"
        "try:\n"
        "    mantis(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('mantisd.cli'))),"
        " file=sys.__stderr__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "Commands:" in proc.stdout and "runs" in proc.stdout
    assert json.loads(proc.stderr.splitlines()[-1]) == ["mantisd.cli", "mantisd.cli.lazy"]


def test_every_lazy_command_loads_as_the_command_it_is_named() -> None:
    names = run_python(
        LOAD_EVERY_COMMAND + "import json\n"
        "def walk(group, path):\n"
        "    for name, command in sorted(group.commands.items()):\n"
        "        yield ' '.join([*path, name])\n"
        "        if isinstance(command, click.Group):\n"
        "            yield from walk(command, [*path, name])\n"
        "print(json.dumps(list(walk(mantis, []))))\n"
    )
    assert {"runs stats", "runs export", "db status", "dev generate", "dev docs"} <= set(names)
    assert len(names) == 3 + 9 + 2 + 2


def test_a_lazy_entry_naming_another_command_is_refused() -> None:
    import click

    from mantisd.cli.lazy import LazyGroup

    group = LazyGroup("g", lazy_commands={"wrong": "mantisd.cli.stats:stats"})
    with pytest.raises(TypeError, match="mantisd.cli.stats:stats is not the command 'wrong'"):
        group.get_command(click.Context(group), "wrong")


def test_mantis_without_a_database_never_imports_psycopg(tmp_path: Path) -> None:
    """`--db`/`ship` are optional (`mantisd[postgres]`): the file commands run without it."""
    from tests.stats_data import write_golden

    write_golden(tmp_path)
    code = (
        "import json, sys\n"
        "from mantisd.cli import mantis\n"
        "for args in (['stats', 'default__golden-v1'], ['compare', 'default__golden-v1'],\n"
        "             ['trend', 'default__golden-v1'], ['list']):\n"
        "    try:\n"
        f"        mantis(['runs', *args, '--data-dir', {str(tmp_path)!r}])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.__stderr__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    loaded = {name.partition(".")[0] for name in json.loads(proc.stderr.splitlines()[-1])}
    assert "mantisd" in loaded and "click" in loaded
    assert not loaded & {"psycopg", "psycopg_binary", "psycopg_c", "anyio"}


@pytest.mark.parametrize("module", ["mantis_client", "mantisd.daemon.cli", "mantisd.cli"])
def test_numpy_is_never_imported_by_the_client_the_daemon_or_the_cli(module: str) -> None:
    """numpy is the stats cache's (`mantisd.stats.cached_query`), imported when a query
    uses it: the runtime's client, the daemon and `mantis --help` never load it."""
    assert "numpy" not in modules_after_import(module)
    if module == "mantisd.cli":
        assert "numpy" not in modules_after_loading_the_cli()


@pytest.mark.parametrize(("cache", "loaded"), [(None, False), ("always", True)])
def test_numpy_is_imported_only_for_queries_the_cache_answers(
    tmp_path: Path, cache: str | None, loaded: bool
) -> None:
    """The default `stats`, `compare` and `trend` of a small log never pay for numpy; with
    the cache in use they do (it is imported then, not before)."""
    from tests.stats_data import write_golden

    write_golden(tmp_path)
    code = (
        "import json, sys\n"
        "from mantisd.cli import mantis\n"
        "for args in (['stats', 'default__golden-v1'], ['compare', 'default__golden-v1'],\n"
        "             ['trend', 'default__golden-v1']):\n"
        "    try:\n"
        f"        mantis(['runs', *args, '--data-dir', {str(tmp_path)!r}])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.__stderr__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MANTIS_CACHE"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    if cache:
        env["MANTIS_CACHE"] = cache
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    modules = {name.partition(".")[0] for name in json.loads(proc.stderr.splitlines()[-1])}
    assert ("numpy" in modules) is loaded
