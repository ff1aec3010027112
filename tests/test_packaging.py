"""The distribution is complete: the wheel carries `py.typed`, the license and the systemd
units; `mantisd` behaves like `mantis` (`-h`, `--version`, `python -m`), shows the environment
variable behind every option and names it when its value is bad; `mantisd units` and
`mantisd install-units` hand out the shipped units."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mantisd import __version__
from mantisd.daemon.cli import cli
from mantisd.daemon.options import envvar_name
from mantisd.daemon.units import UNITS

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHIPPED_UNITS = REPO / "mantisd" / "systemd"


def run(*argv: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`argv` from `/` (not the checkout: `-c` and `-m` put the working directory on
    sys.path), without this environment's MANTIS* variables, with `env` added."""
    return subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
        env={k: v for k, v in os.environ.items() if not k.startswith("MANTIS")} | env,
    )


# --- the wheel ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built by pip from a copy of the sources (the checkout gets no build/ dir)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(REPO / "mantisd", src / "mantisd", ignore=ignore)
    shutil.copytree(REPO / "client", src / "client", ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    proc = run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, src)
    assert proc.returncode == 0, proc.stderr
    (built,) = out.glob("mantisd-*.whl")
    return built


@pytest.fixture(scope="module")
def unpacked(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("unpacked")
    with zipfile.ZipFile(wheel) as z:
        z.extractall(root)
    return root


def test_wheel_has_py_typed_in_both_packages(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "mantisd/py.typed" in names
    assert "mantis_client/py.typed" in names


def test_wheel_ships_the_units_as_in_the_repository(unpacked: Path) -> None:
    shipped = {p.name: p.read_bytes() for p in (unpacked / "mantisd" / "systemd").iterdir()}
    assert shipped == {p.name: p.read_bytes() for p in SHIPPED_UNITS.iterdir()}
    assert set(shipped) == set(UNITS)


def test_wheel_carries_the_license_it_declares(unpacked: Path) -> None:
    (dist_info,) = unpacked.glob("mantisd-*.dist-info")
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]
    assert declared == "Apache-2.0"
    metadata = (dist_info / "METADATA").read_text()
    assert "License-Expression: Apache-2.0" in metadata
    (license_file,) = dist_info.rglob("LICENSE")
    assert license_file.read_bytes() == (REPO / "LICENSE").read_bytes()
    text = license_file.read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the whole license, not a stub


def test_installed_mantisd_prints_its_units_without_a_checkout(unpacked: Path) -> None:
    """The wheel's own files (first on sys.path), run from elsewhere: no git checkout needed."""
    env = {"PYTHONPATH": str(unpacked)}
    where = run(sys.executable, "-c", "import mantisd; print(mantisd.__file__)", **env)
    assert where.stdout.strip() == str(unpacked / "mantisd" / "__init__.py")
    proc = run(sys.executable, "-m", "mantisd", "units", "mantisd.service", **env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (SHIPPED_UNITS / "mantisd.service").read_text()


def test_systemd_directory_is_the_shipped_units() -> None:
    """`systemd/` (the documented place in a checkout) is the package's copy, not a second one."""
    assert (REPO / "systemd").resolve() == SHIPPED_UNITS


# --- mantisd behaves like mantis ------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [BIN / "mantisd", "--version"],
        [sys.executable, "-m", "mantisd", "--version"],
        [sys.executable, "-m", "mantisd.daemon", "--version"],
    ],
    ids=["script", "python -m mantisd", "python -m mantisd.daemon"],
)
def test_version(argv: list[str | Path]) -> None:
    proc = run(*argv)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"mantisd, version {__version__}\n"
    assert run(BIN / "mantis", "--version").stdout == f"mantis, version {__version__}\n"


@pytest.mark.parametrize("args", [["-h"], ["status", "-h"], ["units", "-h"]])
def test_short_help(args: list[str]) -> None:
    short = run(BIN / "mantisd", *args)
    assert short.returncode == 0, short.stderr
    assert short.stdout.startswith("Usage: mantisd")
    assert short.stdout == run(BIN / "mantisd", *args[:-1], "--help").stdout


def all_options() -> Iterator[tuple[click.Context, click.Option]]:
    """Every option of `mantisd` and its subcommands that takes a value, with its context."""
    root = click.Context(cli, info_name="mantisd", **cli.context_settings)
    commands: list[tuple[click.Context, click.Command]] = [(root, cli)]
    for name in cli.list_commands(root):
        sub = cli.get_command(root, name)
        assert sub is not None
        commands.append((click.Context(sub, info_name=name, parent=root), sub))
    for ctx, command in commands:
        for param in command.params:
            if isinstance(param, click.Option) and param.expose_value:
                yield ctx, param


def test_help_shows_the_variable_behind_every_option() -> None:
    options = list(all_options())
    assert len(options) >= 15
    for ctx, option in options:
        help_text = " ".join(ctx.command.get_help(ctx).split())
        name = envvar_name(option, ctx)
        assert name, option.name
        assert f"env var: {name}" in help_text, (ctx.command_path, option.name)


def test_daemon_options_read_mantisd_variables_and_paths_the_shared_ones() -> None:
    names = {option.name: envvar_name(option, ctx) for ctx, option in all_options()}
    assert names["socket_path"] == "MANTIS_SOCKET"
    assert names["data_dir"] == "MANTIS_DATA_DIR"
    assert names["queue_size"] == "MANTISD_QUEUE_SIZE"
    assert names["log_level"] == "MANTISD_LOG_LEVEL"


def test_socket_help_is_complete() -> None:
    help_text = " ".join(run(BIN / "mantisd", "--help").stdout.split())
    assert (
        "Unix socket to listen on. Default: /run/mantisd.sock if it exists, else "
        "$XDG_RUNTIME_DIR/mantisd.sock, else /tmp/mantisd-$UID/mantisd.sock. Ignored when "
        "systemd passes a socket (LISTEN_FDS)."
    ) in help_text


@pytest.mark.parametrize(
    ("args", "env", "variable"),
    [
        ([], {"MANTISD_QUEUE_SIZE": "abc"}, "MANTISD_QUEUE_SIZE"),
        ([], {"MANTISD_LOG_LEVEL": "loud"}, "MANTISD_LOG_LEVEL"),
        ([], {"MANTIS_DATA_DIR": "/etc/passwd"}, "MANTIS_DATA_DIR"),
        ([], {"MANTIS_SOCKET": "/"}, "MANTIS_SOCKET"),
        (["status"], {"MANTISD_STATUS_TIMEOUT": "soon"}, "MANTISD_STATUS_TIMEOUT"),
    ],
)
def test_a_bad_value_from_the_environment_names_the_variable(
    args: list[str], env: dict[str, str], variable: str
) -> None:
    proc = run(BIN / "mantisd", *args, **env)
    assert proc.returncode == 2
    assert f"Error: Invalid value for environment variable {variable}: " in proc.stderr
    assert "'--" not in proc.stderr.splitlines()[-1]  # not a flag the operator never typed


def test_a_bad_flag_still_names_the_flag() -> None:
    proc = run(BIN / "mantisd", "--queue-size", "abc", MANTISD_QUEUE_SIZE="abc")
    assert proc.returncode == 2
    assert "Error: Invalid value for '--queue-size': 'abc'" in proc.stderr


# --- mantisd units / install-units ------------------------------------------------------------


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_units_lists_each_file_and_where_it_goes(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["units"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == list(UNITS)
    width = max(map(len, UNITS))  # names in one column, as wide as the longest
    assert f"{'mantisd.service':<{width}}  /etc/systemd/system/mantisd.service" in lines
    assert f"{'mantis-archive.timer':<{width}}  /etc/systemd/system/mantis-archive.timer" in lines


@pytest.mark.parametrize("name", list(UNITS))
def test_units_prints_one_verbatim(runner: CliRunner, name: str) -> None:
    result = runner.invoke(cli, ["units", name])
    assert result.exit_code == 0, result.output
    assert result.stdout == (SHIPPED_UNITS / name).read_text()


def test_units_refuses_an_unknown_name(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["units", "mantisd.timer"])
    assert result.exit_code == 2
    assert "'mantisd.timer' is not one of" in result.stderr


def test_install_units_writes_every_file(runner: CliRunner, tmp_path: Path) -> None:
    target = tmp_path / "etc" / "units"
    result = runner.invoke(cli, ["install-units", str(target)])
    assert result.exit_code == 0, result.output
    assert result.stdout == "".join(f"wrote {target / name}\n" for name in UNITS)
    for name in UNITS:
        assert (target / name).read_bytes() == (SHIPPED_UNITS / name).read_bytes()
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o644
    assert sorted(p.name for p in target.iterdir()) == sorted(UNITS)  # no temporary files left
    again = runner.invoke(cli, ["install-units", str(target)])
    assert again.stdout == "".join(f"unchanged {target / name}\n" for name in UNITS)


def test_install_units_keeps_an_edited_file_unless_forced(
    runner: CliRunner, tmp_path: Path
) -> None:
    runner.invoke(cli, ["install-units", str(tmp_path)])
    edited = tmp_path / "mantisd.service"
    edited.write_text("# edited by the operator\n")
    refused = runner.invoke(cli, ["install-units", str(tmp_path)])
    assert refused.exit_code == 1
    assert "mantisd.service in" in refused.stderr and "--force" in refused.stderr
    assert edited.read_text() == "# edited by the operator\n"
    forced = runner.invoke(cli, ["install-units", str(tmp_path), "--force"])
    assert forced.exit_code == 0, forced.output
    assert f"wrote {edited}\n" in forced.stdout
    assert f"unchanged {tmp_path / 'mantisd.socket'}\n" in forced.stdout
    assert edited.read_bytes() == (SHIPPED_UNITS / "mantisd.service").read_bytes()


def test_install_units_never_writes_through_a_link(runner: CliRunner, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = tmp_path / "units"
    target.mkdir()
    (target / "mantisd.socket").symlink_to(victim)
    refused = runner.invoke(cli, ["install-units", str(target)])
    assert refused.exit_code == 1
    assert "mantisd.socket in" in refused.stderr
    forced = runner.invoke(cli, ["install-units", str(target), "--force"])
    assert forced.exit_code == 0, forced.output
    assert victim.read_text() == "precious\n"
    assert not (target / "mantisd.socket").is_symlink()
    assert (target / "mantisd.socket").read_bytes() == (
        SHIPPED_UNITS / "mantisd.socket"
    ).read_bytes()


def test_install_units_into_something_that_is_not_a_directory(
    runner: CliRunner, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("")
    result = runner.invoke(cli, ["install-units", str(tmp_path / "file" / "units")])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: cannot use {tmp_path / 'file' / 'units'}: ")
