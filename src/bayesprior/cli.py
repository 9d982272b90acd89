"""The `bayesprior` command line. Sub-commands live in `bayesprior.commands.*`; plugins add their own.

Every command runs inside the shared error handler (`bayesprior.commands.common.reported_errors`): bad
input ends with one ``Error: ...`` line and exit code 1 (2 for a malformed option), never a traceback.
"""
from __future__ import annotations

import importlib

import click

from .commands.common import reported_errors
from .plugins import add_plugin_commands
from .version import __version__

# core command modules; each defines `register(cli)`; imported lazily so `--help` stays fast
_COMMAND_MODULES = (
    "bayesprior.commands.plugins_cmd",
    "bayesprior.commands.experiment_cmd",
    "bayesprior.commands.arch_cmd",
    "bayesprior.commands.harvest_cmd",
    "bayesprior.commands.data_cmd",
    "bayesprior.commands.train_cmd",
    "bayesprior.commands.predict_cmd",
    "bayesprior.commands.evaluate_cmd",
    "bayesprior.commands.info_cmd",
)


class _Group(click.Group):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in _COMMAND_MODULES:
            importlib.import_module(module).register(self)
        add_plugin_commands(self)

    def invoke(self, ctx: click.Context):
        with reported_errors():  # every command, plugins' included, reports our errors in one line
            return super().invoke(ctx)

    def list_commands(self, ctx):
        self._load()
        return super().list_commands(ctx)

    def get_command(self, ctx, name):
        self._load()
        return super().get_command(ctx, name)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bayesprior")
def cli() -> None:
    """Weight priors for Bayesian deep learning, and the MRI knowledge-transfer pipeline
    (Kuzina, Egorov, Burnaev 2019): synthesise or read data, train source models, harvest kernels,
    fit a Deep Weight Prior, train the target, predict, evaluate.

    Start with `bayesprior demo`; every command has --help.
    """


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
