"""Built-in plugin: the Gaussian prior N(loc, scale^2) on every weight, with a closed-form KL."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from bayesprior import GaussianPosterior, Prior, hookimpl, register_kl
from bayesprior.errors import ConfigError
from bayesprior.validation import positive_finite

_LOG_2PI = math.log(2 * math.pi)


class GaussianPrior(Prior):
    """p(w) = prod_i N(w_i | loc, scale^2), one scalar per weight.

    Args:
        loc: prior mean (default 0).
        scale: prior standard deviation (default 1); a standard deviation, not a variance.
    """

    unit = "scalar"
    # buffers (register_buffer), declared for the type checker
    loc: Tensor
    scale: Tensor

    def __init__(self, loc: float = 0.0, scale: float = 1.0):
        super().__init__()
        scale = positive_finite(scale, "gaussian prior: scale")
        if isinstance(loc, bool) or not (isinstance(loc, (int, float)) and math.isfinite(loc)):
            raise ConfigError(f"gaussian prior: loc must be a finite number, got {loc!r}")
        self._config = {"loc": float(loc), "scale": scale}
        self.register_buffer("loc", torch.tensor(float(loc)))
        self.register_buffer("scale", torch.tensor(scale))

    def log_prob(self, w: Tensor) -> Tensor:
        return (-0.5 * (_LOG_2PI + 2 * self.scale.log() + ((w - self.loc) / self.scale) ** 2)).sum()

    def sample(self, shape: torch.Size) -> Tensor:
        return self.loc + self.scale * torch.randn(shape, device=self.loc.device)

    def config(self) -> dict:
        return dict(self._config)


@register_kl(GaussianPosterior, GaussianPrior)
def _kl_gaussian_gaussian(q: GaussianPosterior, p: GaussianPrior) -> Tensor:
    # KL(N(m, v) || N(m0, s0^2)) = log s0 - log(v)/2 + (v + (m - m0)^2) / (2 s0^2) - 1/2, summed over
    # the tensor: written as three sums, so forward and backward make few weight-sized temporaries
    squared_distance = (q.loc - p.loc).square().sum()
    summed = (q.log_variance.exp().sum() + squared_distance) / (2 * p.scale ** 2) - 0.5 * q.log_variance.sum()
    return summed + q.loc.numel() * (p.scale.log() - 0.5)


@hookimpl
def register_priors(register):
    register("gaussian", GaussianPrior, label="UNet-Gaussian",
             description="N(loc, scale^2) on every weight; closed-form KL")
