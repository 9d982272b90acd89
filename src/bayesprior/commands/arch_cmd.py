"""`bayesprior arch`: list the registered architectures, or print one's layer table with its groups."""
from __future__ import annotations

import json
from typing import Any

import click

from ..errors import BayespriorError

GROUPINGS = ("plugin", "resolution", "kernel")


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        shape = ()
    if not shape or any(s <= 0 for s in shape):
        raise click.BadParameter(f"expected positive integers like 40,48,40, got {text!r}",
                                 param_hint="--input-shape")
    return shape


def _parse_config(items: tuple[str, ...]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--config")
        try:
            config[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            config[key.strip()] = raw  # a bare word is a string
    return config


def _example_input(model, spatial: tuple[int, ...]):
    import torch

    from ..grouping import weight_layers

    layers = weight_layers(model)
    channels = getattr(model, "in_channels", None) or (getattr(layers[0][1], "in_channels", 1) if layers else 1)
    return torch.zeros((1, int(channels)) + spatial)


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> list[str]:
    cells = [[f"{r[key]:,}" if isinstance(r[key], int) else str(r[key]) for key, _ in columns] for r in rows]
    widths = [max([len(title)] + [len(row[i]) for row in cells]) for i, (_, title) in enumerate(columns)]
    numeric = [bool(rows) and isinstance(rows[0][key], int) for key, _ in columns]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line([title for _, title in columns]), line(["-" * w for w in widths])]
    out += [line(row) for row in cells]
    return out


@click.command("arch")
@click.argument("name", required=False)
@click.option("--input-shape", default="32,32,32", show_default=True,
              help="Spatial shape of the dummy input used by --grouping resolution, e.g. 40,48,40.")
@click.option("--grouping", type=click.Choice(GROUPINGS), default="plugin", show_default=True,
              help="plugin: the groups the architecture declares (resolution if it declares none); "
                   "resolution: bayesprior.grouping.group_by_resolution; kernel: group_by_kernel_size.")
@click.option("-c", "--config", "config_items", multiple=True, metavar="KEY=VALUE",
              help="Builder option; VALUE is read as JSON when it parses (e.g. -c 'widths=[8,16,16,32]').")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def arch_command(name: str | None, input_shape: str, grouping: str, config_items: tuple[str, ...],
                 as_json: bool) -> None:
    """List the registered architectures, or print the layer table of NAME.

    The table has one row per layer with a weight: module name, type, kernel size, group, number of
    spatial kernels and number of parameters, then the groups with their kernel counts, and totals.

    Examples:

        bayesprior arch

        bayesprior arch unet3d

        bayesprior arch unet3d --grouping resolution --input-shape 40,48,40
    """
    from ..plugins import architecture_registry, build_architecture

    try:
        registry = architecture_registry()
        if name is None:
            entries = registry.entries()
            if as_json:
                click.echo(json.dumps([{"name": e.name, "plugin": e.plugin, "description": e.description}
                                       for e in entries], indent=2))
                return
            if not entries:
                click.echo("no architectures registered")
            for e in entries:
                click.echo(f"{e.name}  ({e.plugin})" + (f" - {e.description}" if e.description else ""))
            return
        spatial = _parse_shape(input_shape)
        model = build_architecture(name, **_parse_config(config_items))
        groups, source = _groups(model, name, grouping, spatial)
    except BayespriorError as exc:
        raise click.ClickException(str(exc)) from None
    except TypeError as exc:  # a builder given an option it does not take
        raise click.ClickException(f"architecture {name!r}: {exc}") from None

    from ..grouping import describe_layers

    rows = describe_layers(model, groups)
    group_rows = [{"group": g, "layers": len(members),
                   "kernels": sum(r["kernels"] for r in rows if r["name"] in set(members))}
                  for g, members in groups.items()]
    totals = {"parameters": sum(p.numel() for p in model.parameters()),
              "layers": len(rows),
              "grouped_layers": sum(g["layers"] for g in group_rows),
              "groups": len(group_rows),
              "grouped_kernels": sum(g["kernels"] for g in group_rows)}
    if as_json:
        click.echo(json.dumps({"architecture": name, "grouping": source, "layers": rows,
                               "groups": group_rows, "totals": totals}, indent=2))
        return
    click.echo(f"{name}: layers and their groups ({source})")
    click.echo("\n".join(_table(rows, [("name", "layer"), ("type", "type"), ("kernel", "kernel"),
                                        ("group", "group"), ("kernels", "kernels"), ("parameters", "params")])))
    if group_rows:
        click.echo("")
        click.echo("\n".join(_table(group_rows, [("group", "group"), ("layers", "layers"), ("kernels", "kernels")])))
    click.echo("")
    click.echo(f"total: {totals['parameters']:,} parameters in {totals['layers']} layers; "
               f"{totals['grouped_layers']} grouped layers in {totals['groups']} groups holding "
               f"{totals['grouped_kernels']:,} kernels")


def _groups(model, name: str, grouping: str, spatial: tuple[int, ...]) -> tuple[dict[str, list[str]], str]:
    from ..grouping import group_by_kernel_size, group_by_resolution
    from ..plugins import architecture_groups

    if grouping == "plugin":
        groups = architecture_groups(name, model)
        if groups:
            return groups, f"groups declared by the {name} plugin"
    if grouping == "kernel":
        return group_by_kernel_size(model), "grouped by kernel size"
    example = _example_input(model, spatial)
    return (group_by_resolution(model, example),
            f"grouped by input resolution on a {'x'.join(map(str, spatial))} input")


def register(cli: click.Group) -> None:
    cli.add_command(arch_command)
