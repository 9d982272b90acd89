"""Built-in plugin: the source network's SWAG posterior as a prior (``swag``), after "Pre-Train Your Loss".

Registered as ``swag`` (factory arguments: ``path`` of a SWAG file written by ``train --swag-epochs``,
``scale`` = lambda, ``relative_floor``). Each layer's prior is the SWAG Gaussian's marginal over that
layer's weights, scaled by lambda as a whole (see `bayesprior_swag.prior`); its KL to the factorised
Gaussian posterior is in closed form (Woodbury identity and matrix determinant lemma).
"""
from __future__ import annotations

from bayesprior import hookimpl

from .prior import LayerSwagPrior, SwagPrior, check_swag_options

__all__ = ["LayerSwagPrior", "SwagPrior"]


@hookimpl
def register_priors(register):
    register("swag", SwagPrior, centred_at_source=True, source_file="swag.pt", source_setting="swag_epochs",
             label="UNet-SWAG",
             check_options=check_swag_options,
             description="the source network's SWAG Gaussian (mean, diagonal + low rank) x scale, per layer "
                         "(path=swag.pt of `train --swag-epochs`); closed-form KL")
