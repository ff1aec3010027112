"""`mantisd units` and `mantisd install-units DIR`: the systemd units that ship in the wheel.

An operator who ran `pip install` has no git checkout: the unit files live inside the
package (`mantisd/systemd/`, package data) and these commands print or copy them.
"""

from __future__ import annotations

import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Final

import click

from mantisd.daemon.options import EnvCommand

#: Where each kind of shipped file goes on a host, by the end of its name, in install order
#: (docs/operations.md, "Install and enable"): `{stem}` is the name without that ending.
DESTINATIONS: Final = (
    (".socket", "/etc/systemd/system/{stem}.socket"),
    (".service", "/etc/systemd/system/{stem}.service"),
    (".timer", "/etc/systemd/system/{stem}.timer"),
    (".sysusers.conf", "/usr/lib/sysusers.d/{stem}.conf"),
    (".tmpfiles.conf", "/usr/lib/tmpfiles.d/{stem}.conf"),
    (".env.example", "/etc/mantisd/{stem}.env (optional settings)"),
)


def _shipped() -> dict[str, str]:
    """Every file of the package's `systemd/` directory -> where it goes, in install order."""
    names = [f.name for f in resources.files("mantisd").joinpath("systemd").iterdir()]
    found = []
    for order, (ending, destination) in enumerate(DESTINATIONS):
        for name in sorted(n for n in names if n.endswith(ending)):
            found.append((order, name, destination.format(stem=name.removesuffix(ending))))
    return {name: destination for _, name, destination in sorted(found)}


#: Each shipped file and where it goes on a host.
UNITS: Final = _shipped()


def unit_text(name: str) -> str:
    """The shipped file `name` (one of `UNITS`), as installed with the package."""
    return resources.files("mantisd").joinpath("systemd", name).read_text(encoding="utf-8")


@click.command(cls=EnvCommand)
@click.argument("name", required=False, type=click.Choice(list(UNITS)))
def units(name: str | None) -> None:
    """Print the systemd unit NAME, or list the shipped units and where each goes.

    mantisd units mantisd.service > /etc/systemd/system/mantisd.service
    """
    if name is not None:
        click.echo(unit_text(name), nl=False)
        return
    width = max(map(len, UNITS))
    for unit, destination in UNITS.items():
        click.echo(f"{unit:<{width}}  {destination}")


@click.command("install-units", cls=EnvCommand)
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace files that differ from the shipped ones.")
def install_units(directory: Path, force: bool) -> None:
    """Write the shipped systemd units into DIRECTORY (created if missing), mode 0644.

    A file already there with the same content is left alone; one that differs is an error
    unless --force. Each file is written beside its final name and renamed into place, so a
    symbolic link at that name is replaced, never followed.
    """
    texts = {unit: unit_text(unit).encode() for unit in UNITS}
    try:
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        differing = [unit for unit in UNITS if _differs(directory / unit, texts[unit])]
    except OSError as exc:
        raise click.ClickException(f"cannot use {directory}: {exc}") from None
    if differing and not force:
        raise click.ClickException(
            f"{', '.join(differing)} in {directory} differ from the shipped units "
            "(--force replaces them)"
        )
    for unit, text in texts.items():
        target = directory / unit
        if unit in differing or not os.path.lexists(target):
            try:
                _write_replacing(target, text)
            except OSError as exc:
                raise click.ClickException(f"cannot write {target}: {exc}") from None
            click.echo(f"wrote {target}")
        else:
            click.echo(f"unchanged {target}")


def _differs(path: Path, text: bytes) -> bool:
    """True when `path` exists (as anything) and is not a regular file holding `text`."""
    if not os.path.lexists(path):
        return False
    return path.is_symlink() or not path.is_file() or path.read_bytes() != text


def _write_replacing(target: Path, text: bytes) -> None:
    """Write `text` to a new file beside `target`, fsync it, rename it over `target`."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), 0o644)
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
