"""Named sets of a Bayesian method's settings (``train --recipe``): what a run gets for the settings its command
line leaves out.

- ``benchmark`` (the default): the settings the CPU benchmark chose on validation cases for its three priors
  (``benchmarks/transfer_cpu.toml``, ``[target_training.per_method.dwp]``; the tuning grid and its rule in
  ``benchmarks/RESULTS.md``): KL weight 0.001, posterior means that start at the source network (``--source``),
  log-variance -14, one weight sample per forward (``sample``). Its DWP logs showed the KL at about 10-40
  times the data term, against 200-fold and more with the paper's settings.
- ``paper``: the original DWP's: KL weight 1, local reparameterisation (``lrt``), log-variance -10, posterior
  means from samples of the prior (``--init-from-prior``). On the paper's U-Net a learned prior's KL is then
  about 3.3e5 nats against a data term of about 40, so the prior, not the data, decides the weights.

Options given on the command line (``--kl-weight``, ``--forward-mode``, ``--log-variance-init``) override the
recipe's values. `TrainConfig`'s own defaults (the paper's) are unchanged, so that settings recorded by earlier
runs and experiments keep their meaning.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    """A named set of Bayesian settings.

    Attributes:
        name: ``benchmark`` or ``paper``.
        kl_weight, forward_mode, log_variance_init: the `TrainConfig` settings it gives.
        start: where the posterior means should start: ``"source"`` (``--source``) or ``"prior"``
            (``--init-from-prior``); said to the user, never chosen for them.
        description: one line for ``--help``.
    """

    name: str
    kl_weight: float
    forward_mode: str
    log_variance_init: float
    start: str
    description: str

    def settings(self) -> dict[str, float | str]:
        """The `TrainConfig` settings of the recipe."""
        return {"kl_weight": self.kl_weight, "forward_mode": self.forward_mode,
                "log_variance_init": self.log_variance_init}


RECIPES = {recipe.name: recipe for recipe in (
    Recipe("benchmark", kl_weight=0.001, forward_mode="sample", log_variance_init=-14.0, start="source",
           description="KL weight 0.001, sample forward, log-variance -14, means from --source (chosen on "
                       "validation cases, benchmarks/transfer_cpu.toml)"),
    Recipe("paper", kl_weight=1.0, forward_mode="lrt", log_variance_init=-10.0, start="prior",
           description="KL weight 1, lrt forward, log-variance -10, means from prior samples (the original DWP)"),
)}
DEFAULT_RECIPE = "benchmark"


def recipe(name: str) -> Recipe:
    """The recipe called `name`. Raises `ConfigError` naming the known ones."""
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r} (known: {', '.join(RECIPES)})")
    return RECIPES[name]
