"""L2-SP: the source network's weights as the centre of a Gaussian prior, or of a penalty.

For a layer with posterior q(w) = N(m, diag v) over its D weights and the prior N(w0, s^2 I),

    KL(q || p) = 1/2 sum_i [ (v_i + (m_i - w0_i)^2) / s^2 - 1 - log v_i + log s^2 ].

With empirical Bayes the prior variance is the one that minimises this KL, in closed form:

    s^2 = (||m - w0||^2 + sum_i v_i) / D,   and then   KL = 1/2 [ D log s^2 - sum_i log v_i ],

the per-group variance of the data-emphasised ELBO (Harvey et al.), here one per layer. The KL is at its
minimum in s^2, so its gradient in (m, v) is the one at that s^2 held fixed.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from bayesprior import GaussianPosterior, Prior, register_kl
from bayesprior.errors import ConfigError
from bayesprior.validation import positive_finite

_LOG_2PI = math.log(2 * math.pi)


class L2SPPenalty(nn.Module):
    """``||w - w_source||^2 / 2`` over every trainable parameter of the network it was made from.

    Made once, from the network holding the source weights (`bayesprior.training.methods.build_penalty`);
    ``forward(net)`` scores `net`'s current weights against them.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        trainable = {name: p for name, p in net.named_parameters() if p.requires_grad}
        self.names = list(trainable)
        for k, p in enumerate(trainable.values()):
            self.register_buffer(f"source_{k}", p.detach().clone())

    def forward(self, net: nn.Module) -> Tensor:
        params = dict(net.named_parameters())
        terms = [(params[name] - getattr(self, f"source_{k}")).square().sum() for k, name in enumerate(self.names)]
        return 0.5 * torch.stack(terms).sum()


def _positive(value: Any, name: str) -> float | None:
    if value is None:
        return None
    return positive_finite(value, f"l2sp_bayes prior: {name}")


class SourceGaussianPrior(Prior):
    """N(w_source, s^2) on every weight of each layer it is bound to (`bind` keeps the layer's weight).

    Args:
        scale: s, the prior standard deviation, the same for every layer.
        relative_scale: s = relative_scale x the RMS of the layer's source weights.
        empirical_bayes: s^2 learned per layer in closed form (module docstring); the default when
            neither scale is given.
    """

    unit = "scalar"

    def __init__(self, scale: float | None = None, relative_scale: float | None = None,
                 empirical_bayes: bool | None = None):
        super().__init__()
        self.scale = _positive(scale, "scale")
        self.relative_scale = _positive(relative_scale, "relative_scale")
        given = [n for n, v in (("scale", self.scale), ("relative_scale", self.relative_scale)) if v is not None]
        if empirical_bayes is None:
            empirical_bayes = not given
        if len(given) + bool(empirical_bayes) != 1:
            raise ConfigError("l2sp_bayes prior: give one of scale, relative_scale or empirical_bayes=true, got "
                              f"{', '.join(given + (['empirical_bayes'] if empirical_bayes else [])) or 'none'}")
        self.empirical_bayes = bool(empirical_bayes)

    def bind(self, layer_name: str, weight: Tensor) -> "LayerSourceGaussian":
        """The prior of one layer, centred at its (source) weight."""
        centre = weight.detach().clone()
        scale: float | None = None  # empirical Bayes (__init__ lets exactly one of the three through)
        if self.scale is not None:
            scale = self.scale
        elif self.relative_scale is not None:
            rms = float(centre.double().square().mean().sqrt())
            if not (rms > 0 and math.isfinite(rms)):
                raise ConfigError(f"layer {layer_name!r}: l2sp_bayes relative_scale needs source weights of finite, "
                                  f"non-zero scale (their RMS is {rms}); give scale instead")
            scale = self.relative_scale * rms
        bound = LayerSourceGaussian(centre, scale, self.config())
        bound.registry_name = self.registry_name
        return bound

    def config(self) -> dict[str, Any]:
        return {"scale": self.scale, "relative_scale": self.relative_scale, "empirical_bayes": self.empirical_bayes}

    def describe(self) -> str:
        how = ("empirical Bayes" if self.empirical_bayes else f"s={self.scale}" if self.scale is not None
               else f"s={self.relative_scale} x RMS")
        return f"{self.registry_name or 'l2sp_bayes'}({how})"


class LayerSourceGaussian(Prior):
    """N(centre, scale^2) on every weight of one layer; `scale` None: empirical Bayes (module docstring)."""

    unit = "scalar"
    # buffers (register_buffer), declared for the type checker
    centre: Tensor
    scale: Tensor

    def __init__(self, centre: Tensor, scale: float | None, options: dict[str, Any]):
        super().__init__()
        self.register_buffer("centre", centre)
        self.empirical_bayes = scale is None
        self.register_buffer("scale", torch.tensor(1.0 if scale is None else float(scale)))
        self._options = dict(options)

    def log_prob(self, w: Tensor) -> Tensor:
        if self.empirical_bayes:
            raise NotImplementedError("an empirical-Bayes l2sp_bayes prior has no fixed density; its KL is closed form")
        return (-0.5 * (_LOG_2PI + 2 * self.scale.log() + ((w - self.centre) / self.scale) ** 2)).sum()

    def sample(self, shape: torch.Size) -> Tensor:
        self.check_compatible(shape, "<sample>")
        return self.centre + self.scale * torch.randn_like(self.centre)

    def check_compatible(self, weight_shape: torch.Size, layer_name: str) -> None:
        super().check_compatible(weight_shape, layer_name)
        if tuple(weight_shape) != tuple(self.centre.shape):
            raise ConfigError(f"layer {layer_name!r}: weight {tuple(weight_shape)}, but its l2sp_bayes prior is "
                              f"centred at a source weight of shape {tuple(self.centre.shape)}")

    def config(self) -> dict[str, Any]:
        return dict(self._options)  # rebuilt through SourceGaussianPrior, then bound; the state fills the buffers

    def describe(self) -> str:
        how = "empirical Bayes" if self.empirical_bayes else f"s={float(self.scale):.3g}"
        return f"{self.registry_name or 'l2sp_bayes'}(source, {how})"


@register_kl(GaussianPosterior, LayerSourceGaussian)
def _kl_to_source_gaussian(q: GaussianPosterior, p: LayerSourceGaussian) -> Tensor:
    spread = (q.loc - p.centre).square().sum() + q.log_variance.exp().sum()  # E_q ||w - w0||^2
    n = q.loc.numel()
    if p.empirical_bayes:
        return 0.5 * (n * torch.log(spread / n) - q.log_variance.sum())
    variance = p.scale ** 2
    return 0.5 * (spread / variance - n + n * variance.log() - q.log_variance.sum())
