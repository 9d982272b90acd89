"""The hooks a bayesprior plugin may implement, and the markers that declare them.

A plugin marks its functions with `hookimpl` (also exported as `bayesprior.hookimpl`). Every hook that
registers things takes a ``register`` callback, so one plugin can register several things and the core
keeps the registries (`bayesprior.plugins`).
"""
from __future__ import annotations

from typing import Any, Callable

import pluggy

PROJECT = "bayesprior"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class HookSpecs:
    """The hooks a plugin may implement. Each is called once, when the registries are first needed."""

    @hookspec
    def register_priors(self, register: Callable[..., None]) -> None:
        """Register prior factories.

        Call ``register(name, factory, fit=None, per_group=False, check_fit_options=None, check_options=None,
        centred_at_source=False, source_file=None, source_setting=None, label=None, description="")``
        once per prior.
        ``factory(**config)`` must return a `bayesprior.priors.Prior`; ``config`` is JSON-serialisable, so a
        saved model can rebuild its priors by name.

        - ``fit`` (learned priors): ``fit(bank_path, out_path, *, max_epochs, seed, progress, **options)``
          learns the prior from a kernel bank and writes a prior file; the factory then takes that file as
          ``path`` (the experiment runner and ``bayesprior train --prior-file`` pass it). ``options`` are the
          prior's own settings (e.g. a VAE's ``latent_dim``). It may return ``{group: held-out
          log-likelihood (or a lower bound of it) per kernel, in nats}`` on
          `bayesprior.kernel_structure.heldout_split` with its ``seed`` (and ``heldout_fraction`` if given),
          which the structure report compares with its Gaussian baselines; or None.
        - ``per_group=True``: one prior instance per layer group; the factory then takes the group's name
          as ``group`` (a DWP prior loads that group's VAE).
        - ``check_fit_options(options)`` (optional, with ``fit``): raises `bayesprior.errors.ConfigError`
          naming an option that ``fit`` would refuse, so an experiment checks them before any data are made.
        - ``check_options(options)`` (optional): raises `bayesprior.errors.ConfigError` naming an option value
          the factory would refuse, without the prior's file (a file the source stage has not written yet when an
          experiment reads its config); a prior that reads no file is judged by making it.
        - ``centred_at_source=True``: the prior is centred at the network it wraps (`Prior.bind` keeps each
          layer's weight), so training with it needs a source model, whose weights the layers hold then.
        - ``source_file="name.pt"``: the prior's ``path`` is the file of that name that the source run wrote
          beside its ``model.pt`` (an experiment passes it; e.g. SWAG moments, ``train --swag-epochs``), and
          ``source_setting="swag_epochs"`` the training setting that makes a source run write it (an experiment
          asks for it in ``[source_training]``; without one, the file must come with ``[source] models``).

        Return nothing.
        """

    @hookspec
    def register_methods(self, register: Callable[..., None]) -> None:
        """Register training methods of a plain (deterministic) network beyond ``ri``, ``pr`` and ``prf``.

        Call ``register(name, penalty, default_weight=1.0, description="")`` once per method. The
        method starts from the source model and trains every layer; ``penalty(net)`` is called once, with
        the network holding the source weights, and returns an ``nn.Module`` whose ``forward(net)`` gives
        the penalty added, times the run's ``penalty_weight`` (``default_weight`` unless set), to every
        step's data loss (e.g. L2-SP's ``||w - w_source||^2 / 2``). A run records the weight it trained with,
        the default written out, so a later ``default_weight`` does not resume or reuse earlier runs. Return
        nothing.
        """

    @hookspec
    def register_architectures(self, register: Callable[..., None]) -> None:
        """Register network architectures.

        Call ``register(name, builder, groups=None, finetune_layers=None, min_input_size=None,
        description="")``: ``builder(**config)`` returns an ``nn.Module``; ``groups(model)`` (optional)
        returns the architecture's named layer groups as ``{group name: [module names]}``;
        ``finetune_layers`` (optional) is a list of module-name globs that stay trainable in frozen
        fine-tuning (the first and last blocks); ``min_input_size`` (optional, an int or one per axis) is
        the smallest spatial input the network accepts (prediction pads up to it, training refuses less).
        Return nothing.
        """

    @hookspec
    def register_dataset_layouts(self, register: Callable[..., None]) -> None:
        """Register readers of dataset folders.

        Call ``register(name, reader, detect=None, files=None, label_files=None, description="")``:
        ``reader(folder, **options)`` returns the cases of the folder (see `bayesprior.data`);
        ``detect(folder) -> bool`` (optional) says whether a folder looks like this layout, for automatic
        detection. Optional, and what lets `train --cases`, `predict` and `evaluate` use the layout without
        reading every case: ``files(folder, channel=None, subset="train")`` lists the cases as
        `bayesprior.data.CaseFiles` without reading them, and ``label_files(folder)`` returns the label files
        by case id. Return nothing.
        """

    @hookspec
    def register_commands(self, cli: Any) -> None:
        """Add sub-commands to the ``bayesprior`` command line; ``cli`` is its `click.Group`.

        Called when the command line is built. Return nothing.
        """
