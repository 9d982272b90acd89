"""Built-in plugin: the log-uniform prior of sparse variational dropout (Molchanov et al., 2017).

The prior is the improper p(|w|) proportional to 1/|w|. Against a Gaussian posterior
q(w) = N(mu, sigma^2) the KL depends only on the dropout rate alpha = sigma^2 / mu^2 and has no
closed form; we use the paper's approximation (their eq. 14), accurate to about 1e-2 everywhere:

    -KL ~= k1 * sigmoid(k2 + k3 * log alpha) - 0.5 * log1p(1 / alpha) - k1,
    k1 = 0.63576, k2 = 1.87320, k3 = 1.48695.

The constant is fixed so that KL -> 0 as alpha -> infinity (the prior is improper, so the KL is
defined only up to a constant). Parametrisation: the posterior keeps (mu, log sigma^2) - the "additive
reparameterisation" Molchanov et al. recommend for low-variance gradients - and log alpha is derived as
log sigma^2 - log(mu^2 + 1e-8), clipped to [-10, 10] for numerical safety. Large log alpha (> 3)
marks a weight that can be pruned.
"""
from __future__ import annotations

import torch
from torch import Tensor

from bayesprior import GaussianPosterior, Prior, hookimpl, register_kl
from bayesprior.errors import ConfigError

K1, K2, K3 = 0.63576, 1.87320, 1.48695
LOG_ALPHA_RANGE = (-10.0, 10.0)


def log_alpha(q: GaussianPosterior) -> Tensor:
    """log(sigma^2 / mu^2) per weight, clipped to `LOG_ALPHA_RANGE`."""
    return (q.log_variance - torch.log(q.loc ** 2 + 1e-8)).clamp(*LOG_ALPHA_RANGE)


def kl_approximation(log_alpha_values: Tensor) -> Tensor:
    """Element-wise approximate KL(N(mu, alpha mu^2) || log-uniform) as a function of log alpha."""
    return K1 - K1 * torch.sigmoid(K2 + K3 * log_alpha_values) + 0.5 * torch.nn.functional.softplus(-log_alpha_values)


class LogUniformPrior(Prior):
    """Log-uniform (scale-invariant, improper) prior on every weight; see the module docstring.

    Args:
        prune_threshold: log alpha above which `sparsity` counts a weight as prunable (default 3).
    """

    unit = "scalar"

    def __init__(self, prune_threshold: float = 3.0):
        super().__init__()
        if not isinstance(prune_threshold, (int, float)):
            raise ConfigError(f"loguniform prior: prune_threshold must be a number, got {prune_threshold!r}")
        self.prune_threshold = float(prune_threshold)

    def sparsity(self, q: GaussianPosterior) -> float:
        """Fraction of weights whose log alpha exceeds the prune threshold."""
        return float((log_alpha(q) > self.prune_threshold).float().mean())

    def config(self) -> dict:
        return {"prune_threshold": self.prune_threshold}


@register_kl(GaussianPosterior, LogUniformPrior)
def _kl_gaussian_loguniform(q: GaussianPosterior, p: LogUniformPrior) -> Tensor:
    # note: log1p(1/alpha) = softplus(-log alpha), the stable form used in kl_approximation
    return kl_approximation(log_alpha(q)).sum()


@hookimpl
def register_priors(register):
    register("loguniform", LogUniformPrior, label="UNet-LogU",
             description="log-uniform prior, sparse variational dropout KL approximation (Molchanov 2017)")
