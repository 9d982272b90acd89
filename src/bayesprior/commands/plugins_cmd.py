"""`bayesprior plugins`: what every plugin registered, and from which distribution."""
from __future__ import annotations

import json

import click

from ..plugins import plugin_report, registries


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def plugins_command(as_json: bool) -> None:
    """List every plugin, what it registered and the distribution it came from.

    Broken plugins are listed with their error; they never stop the others from loading.

    Example: bayesprior plugins
    """
    report = plugin_report()
    regs = registries()
    if as_json:
        click.echo(json.dumps([p.__dict__ for p in report], indent=2))
        return
    for p in report:
        origin = f"{p.distribution} {p.version}" if p.distribution else "in-process"
        click.echo(f"{p.name}  ({origin})")
        for kind, names in sorted(p.registered.items()):
            for name in names:
                desc = regs[kind].get(name).description
                click.echo(f"    {kind}: {name}" + (f" - {desc}" if desc else ""))
        if p.error:
            click.echo(f"    ERROR: {p.error}")


def register(cli: click.Group) -> None:
    cli.add_command(plugins_command)
