"""`bayesprior arch`: list the registered architectures, or print one's layer table with its groups."""
from __future__ import annotations

import json

import click
import torch
from torch import nn

from ..grouping import describe_layers, group_by_kernel_size, group_by_resolution, weight_layers
from ..plugins import architecture_groups, architecture_registry, build_architecture
from ..tables import format_table
from .common import Integers, KeyValue

GROUPINGS = ("plugin", "resolution", "kernel")


def _example_input(model: nn.Module, spatial: tuple[int, ...]) -> torch.Tensor:
    channels = getattr(model, "in_channels", None)
    if not channels:  # not declared by the network: its first weight layer's, else one
        layers = weight_layers(model)
        channels = getattr(layers[0][1], "in_channels", 1) if layers else 1
    return torch.zeros((1, int(channels)) + spatial)


@click.command("arch")
@click.argument("name", required=False)
@click.option("--input-shape", type=Integers(minimum=1), default="32,32,32", show_default=True,
              help="Spatial shape of the dummy input used by --grouping resolution, e.g. 40,48,40.")
@click.option("--grouping", type=click.Choice(GROUPINGS), default="plugin", show_default=True,
              help="plugin: the groups the architecture declares (resolution if it declares none); "
                   "resolution: bayesprior.grouping.group_by_resolution; kernel: group_by_kernel_size.")
@click.option("-c", "--config", "config_items", type=KeyValue(), multiple=True, metavar="KEY=VALUE",
              help="Builder option; VALUE is read as JSON when it parses (e.g. -c 'widths=[8,16,16,32]').")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def arch_command(name: str | None, input_shape: tuple[int, ...], grouping: str,
                 config_items: tuple[tuple[str, object], ...], as_json: bool) -> None:
    """List the registered architectures, or print the layer table of NAME.

    The table has one row per layer with a weight: module name, type, kernel size, group, number of
    spatial kernels and number of parameters, then the groups with their kernel counts, and totals.

    Examples:

        bayesprior arch

        bayesprior arch unet3d

        bayesprior arch unet3d --grouping resolution --input-shape 40,48,40
    """
    if name is None:
        entries = architecture_registry().entries()
        if as_json:
            click.echo(json.dumps([{"name": e.name, "plugin": e.plugin, "description": e.description}
                                   for e in entries], indent=2))
            return
        if not entries:
            click.echo("no architectures registered")
        for e in entries:
            click.echo(f"{e.name}  ({e.plugin})" + (f" - {e.description}" if e.description else ""))
        return
    try:
        model = build_architecture(name, **dict(config_items))
    except TypeError as exc:  # a builder given an option it does not take
        raise click.ClickException(f"architecture {name!r}: {exc}") from None
    groups, source = _groups(model, name, grouping, input_shape)
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
    click.echo(format_table(rows, [("name", "layer"), "type", "kernel", "group", "kernels", ("parameters", "params")]))
    if group_rows:
        click.echo("")
        click.echo(format_table(group_rows, ["group", "layers", "kernels"]))
    click.echo("")
    click.echo(f"total: {totals['parameters']:,} parameters in {totals['layers']} layers; "
               f"{totals['grouped_layers']} grouped layers in {totals['groups']} groups holding "
               f"{totals['grouped_kernels']:,} kernels")


def _groups(model, name: str, grouping: str, spatial: tuple[int, ...]) -> tuple[dict[str, list[str]], str]:
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
