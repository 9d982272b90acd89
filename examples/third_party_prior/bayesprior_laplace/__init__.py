"""A third-party bayesprior plugin: the Laplace prior p(w) = exp(-|w - loc| / scale) / (2 scale).

It defines only `log_prob`, so bayesprior estimates KL(q || p) by Monte Carlo at one reparameterised
weight sample (log q(w) - log p(w)); no closed form is needed.
"""
from __future__ import annotations

import math

import torch

from bayesprior import Prior, hookimpl


class LaplacePrior(Prior):
    unit = "scalar"

    def __init__(self, loc: float = 0.0, scale: float = 1.0):
        super().__init__()
        if scale <= 0:
            raise ValueError(f"laplace prior: scale must be positive, got {scale}")
        self.loc, self.scale = float(loc), float(scale)

    def log_prob(self, w: torch.Tensor) -> torch.Tensor:
        return (-(w - self.loc).abs() / self.scale - math.log(2 * self.scale)).sum()

    def config(self) -> dict:
        return {"loc": self.loc, "scale": self.scale}


@hookimpl
def register_priors(register):
    register("laplace", LaplacePrior, label="UNet-Laplace",
             description="Laplace(loc, scale) on every weight; Monte-Carlo KL")
