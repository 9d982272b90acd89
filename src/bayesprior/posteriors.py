"""Variational posteriors q(w) over one weight tensor: the `Posterior` protocol and the factorised Gaussian."""
from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from .errors import ConfigError

_LOG_2PI = math.log(2 * math.pi)


@runtime_checkable
class Posterior(Protocol):
    """What a prior may ask of the posterior q(w) of one weight tensor (as `torch.distributions` names it).

    `entropy` and `log_prob` are element-wise; priors sum them as they need.
    """

    @property
    def mean(self) -> Tensor:
        """The posterior mean, shaped as the weight."""

    @property
    def shape(self) -> torch.Size:
        """The shape of the weight."""

    def rsample(self) -> Tensor:
        """One reparameterised sample of the whole weight (gradients reach q's parameters)."""

    def entropy(self) -> Tensor:
        """Element-wise differential entropy."""

    def log_prob(self, w: Tensor) -> Tensor:
        """Element-wise log density of `w`."""


def summed_entropy(posterior: Posterior) -> Tensor:
    """The entropy of the whole tensor, a scalar: the posterior's ``entropy_sum()`` where it has one (one
    reduction, as `GaussianPosterior`), else ``entropy().sum()``; the protocol asks for `entropy` only."""
    entropy_sum = getattr(posterior, "entropy_sum", None)
    return entropy_sum() if entropy_sum is not None else posterior.entropy().sum()


class _Reparameterise(torch.autograd.Function):
    """w = loc + exp(log_variance / 2) * noise, with a backward that can run more than once.

    The noise and the standard deviation are kept as plain attributes rather than saved tensors, which
    autograd would free after the first backward: a layer's weight sample feeds the forward and the KL
    (`BayesianLayer.take_weight_sample`), and taking their gradients separately must not fail.
    """

    @staticmethod
    def forward(ctx, loc: Tensor, log_variance: Tensor, noise: Tensor) -> Tensor:
        # the noise is the caller's fresh draw, so it may be scaled in place
        ctx.noise_times_stddev = noise.mul_(log_variance.mul(0.5).exp_())
        return loc + noise

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        # d w / d log_variance = noise * stddev / 2
        return grad, torch.mul(grad, ctx.noise_times_stddev).mul_(0.5), None


class GaussianPosterior(nn.Module):
    """Fully factorised Gaussian q(w) = prod_i N(w_i | loc_i, exp(log_variance_i)).

    The mean starts at `weight` (so wrapping a pre-trained layer starts at its weights) and the
    log-variance at the constant `log_variance_init` (-10 by default, as the original DWP).
    `entropy` and `log_prob` are element-wise; priors sum them as they need.
    """

    def __init__(self, weight: Tensor, log_variance_init: float = -10.0):
        super().__init__()
        if not math.isfinite(log_variance_init):
            raise ConfigError(f"log_variance_init must be finite, got {log_variance_init!r}")
        self.loc = nn.Parameter(weight.detach().clone())
        self.log_variance = nn.Parameter(torch.full_like(weight.detach(), float(log_variance_init)))

    @property
    def mean(self) -> Tensor:
        return self.loc

    @property
    def variance(self) -> Tensor:
        return self.log_variance.exp()

    @property
    def stddev(self) -> Tensor:
        return (0.5 * self.log_variance).exp()

    @property
    def shape(self) -> torch.Size:
        return self.loc.shape

    def rsample(self) -> Tensor:
        """One reparameterised sample of the whole tensor (gradients reach loc and log_variance).

        Its graph may be walked by several backward passes (see `_Reparameterise`), so one sample can
        serve both the data term and the KL even when their gradients are taken one after the other.
        """
        return _Reparameterise.apply(self.loc, self.log_variance, torch.randn_like(self.loc))

    def rsample_n(self, n: int) -> Tensor:
        """`n` independent reparameterised samples, stacked: (n, *shape)."""
        noise = torch.randn((n, *self.loc.shape), device=self.loc.device, dtype=self.loc.dtype)
        return _Reparameterise.apply(self.loc, self.log_variance, noise)

    def entropy(self) -> Tensor:
        """Element-wise differential entropy 0.5 * (log(2*pi) + 1 + log_variance)."""
        return 0.5 * (_LOG_2PI + 1.0 + self.log_variance)

    def entropy_sum(self) -> Tensor:
        """The entropy of the whole tensor, 0.5 * (n (log(2*pi) + 1) + sum(log_variance)): one reduction, whose
        gradient needs no tensor of its own (the DWP bound takes it at every step for every layer)."""
        return self.log_variance.sum().add(self.log_variance.numel() * (_LOG_2PI + 1.0)).mul(0.5)

    def log_prob(self, w: Tensor) -> Tensor:
        """Element-wise log density of `w`."""
        return -0.5 * (_LOG_2PI + self.log_variance + (w - self.loc) ** 2 / self.variance)

    def distribution(self) -> torch.distributions.Normal:
        """The same q as a `torch.distributions.Normal` (for checks and interoperability)."""
        return torch.distributions.Normal(self.loc, self.stddev)

    def extra_repr(self) -> str:
        return f"shape={tuple(self.loc.shape)}"
