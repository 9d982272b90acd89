"""The SWAG prior: N(mu, lambda * Sigma) per layer, Sigma the SWAG covariance of the source network.

From a SWAG file (`bayesprior.training.swag`: per weight its mean mu, diagonal variance sigma^2 and K
deviations D), one layer's prior is the marginal of the SWAG Gaussian over its P weights,

    Sigma = 1/2 diag(sigma^2 + floor) + 1/2 D^T D / (K - 1)        (Maddox et al. 2019),

scaled as a whole by lambda (``scale``): both parts grow as lambda. ("Pre-Train Your Loss" multiplies the
low-rank factor by lambda, so that part grows as lambda^2 while the diagonal grows as lambda.) `floor` is
``relative_floor`` x the layer's mean SWAG variance, so that no weight is held exactly. Write
A = lambda/2 diag(sigma^2 + floor) and U = sqrt(lambda / (2 (K - 1))) D^T (P x K), Sigma = A + U U^T. With
C = I_K + U^T A^-1 U (Woodbury, determinant lemma):

    Sigma^-1 = A^-1 - A^-1 U C^-1 U^T A^-1,        log|Sigma| = sum log a + log|C|,

and for the posterior q = N(m, diag v), r = m - mu:

    KL(q || p) = 1/2 [ sum v/a - tr(C^-1 U^T diag(v/a^2) U) + sum r^2/a - b^T C^-1 b - P
                       + sum log a + log|C| - sum log v ],   b = U^T (r/a),

O(P K) per layer. Layers are independent of each other (the product of the per-layer marginals).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from bayesprior import GaussianPosterior, Prior, register_kl
from bayesprior.errors import CheckpointError, ConfigError
from bayesprior.training.swag import read_swag_file
from bayesprior.validation import positive_finite

_LOG_2PI = math.log(2 * math.pi)
DEFAULT_RELATIVE_FLOOR = 1e-3


def check_swag_options(options: Mapping[str, Any]) -> None:
    """The values of `scale` and `relative_floor`, checked as the prior checks them: an experiment calls this (the
    registry's ``check_options``) when it reads its config, before the source run has written the SWAG file.

    Raises:
        ConfigError: naming the option and its value.
    """
    for name, default in (("scale", 1.0), ("relative_floor", DEFAULT_RELATIVE_FLOOR)):
        positive_finite(options.get(name, default), f"swag prior: {name}")


class SwagPrior(Prior):
    """The SWAG prior of a network; `bind` gives each layer its marginal (a `LayerSwagPrior`).

    Args:
        path: a SWAG file (``swag.pt``). Without it (a saved model being loaded) each layer gets a
            placeholder of `rank` deviations that the saved state fills.
        scale: lambda, the factor on the whole SWAG covariance (1: the source posterior as SWAG found it).
        relative_floor: added to each weight's SWAG variance, times the layer's mean SWAG variance.
        rank: K, only needed without `path`.
    """

    unit = "scalar"

    def __init__(self, path: str | None = None, scale: float = 1.0,
                 relative_floor: float = DEFAULT_RELATIVE_FLOOR, rank: int | None = None):
        super().__init__()
        check_swag_options({"scale": scale, "relative_floor": relative_floor})
        self.scale, self.relative_floor = float(scale), float(relative_floor)
        self.path = path
        swag = read_swag_file(path) if path else None
        self.params = None if swag is None else swag["params"]
        rank = rank if swag is None else int(swag["rank"])
        if not (isinstance(rank, int) and rank >= 2):
            raise ConfigError("swag prior needs its SWAG file: path=<swag.pt written by `bayesprior train "
                              "--swag-epochs`> (`train --prior-file`), or rank when a saved model's state fills it")
        self.rank = rank

    def bind(self, layer_name: str, weight: Tensor) -> "LayerSwagPrior":
        key = f"{layer_name}.weight"
        shape = tuple(weight.shape)
        if self.params is None:  # placeholder: a saved model's state fills it
            entry = {"mean": torch.zeros(shape), "variance": torch.ones(shape),
                     "deviations": torch.zeros((self.rank, *shape))}
        elif key not in self.params:
            raise ConfigError(f"layer {layer_name!r}: the SWAG file {self.path} has no weight {key!r} (it holds "
                              f"{len(self.params)} weights, e.g. {next(iter(self.params))!r}); was it collected "
                              "on this architecture?")
        else:
            entry = self.params[key]
            if tuple(entry["mean"].shape) != shape:
                raise ConfigError(f"layer {layer_name!r}: weight {shape}, but the SWAG file {self.path} holds "
                                  f"{tuple(entry['mean'].shape)} for it")
        bound = LayerSwagPrior(entry["mean"], entry["variance"], entry["deviations"], self.scale,
                               self.relative_floor, self.config())
        if self.params is not None:  # factored once here, so that a degenerate file fails naming itself, not mid-run
            try:
                bound.log_det_covariance()
            except torch.linalg.LinAlgError:
                raise CheckpointError(str(self.path), f"SWAG entry {key!r}: its covariance is not positive definite even "
                                                 f"in float64 (deviations up to {float(entry['deviations'].abs().max()):.3g}, "
                                                 f"variances up to {float(entry['variance'].max()):.3g}); "
                                                 "collect it again") from None
        bound.registry_name = self.registry_name
        return bound

    def config(self) -> dict[str, Any]:
        return {"scale": self.scale, "relative_floor": self.relative_floor, "rank": self.rank}


class LayerSwagPrior(Prior):
    """N(mean, A + U U^T) over one layer's weights (module docstring), from its SWAG moments."""

    unit = "scalar"
    # buffers (register_buffer), declared for the type checker
    mean: Tensor
    diagonal: Tensor  # A, flattened (P,)
    factor: Tensor  # U^T, (K, P)

    def __init__(self, mean: Tensor, variance: Tensor, deviations: Tensor, scale: float, relative_floor: float,
                 options: dict[str, Any]):
        super().__init__()
        mean = mean.detach().float()
        rank = deviations.shape[0]
        variance = variance.detach().double().reshape(-1)
        floor = relative_floor * float(variance.mean()) if float(variance.mean()) > 0 else relative_floor
        self.register_buffer("mean", mean.clone())
        self.register_buffer("diagonal", (0.5 * scale * (variance + floor)).float())
        self.register_buffer("factor", (math.sqrt(scale / (2 * (rank - 1))) * deviations.detach().reshape(rank, -1))
                             .float())  # U^T, (K, P)
        self._options = dict(options)

    def _core(self) -> tuple[Tensor, Tensor]:
        """C = I + U^T A^-1 U and its Cholesky factor, in float64 (K x K)."""
        a_inverse = self.diagonal.double().reciprocal()
        u = self.factor.double()
        core = torch.eye(u.shape[0], dtype=u.dtype, device=u.device) + (u * a_inverse) @ u.T
        return core, torch.linalg.cholesky(core)

    def log_det_covariance(self) -> Tensor:
        _, chol = self._core()
        return self.diagonal.double().log().sum() + 2 * chol.diagonal().log().sum()

    def log_prob(self, w: Tensor) -> Tensor:
        r = (w.double() - self.mean.double()).reshape(-1)
        a_inverse = self.diagonal.double().reciprocal()
        _, chol = self._core()
        b = self.factor.double() @ (r * a_inverse)
        solved = torch.cholesky_solve(b.unsqueeze(1), chol).squeeze(1)
        quadratic = (r * r * a_inverse).sum() - (b * solved).sum()
        return (-0.5 * (r.numel() * _LOG_2PI + self.log_det_covariance() + quadratic)).to(w.dtype)

    def sample(self, shape: torch.Size) -> Tensor:
        self.check_compatible(shape, "<sample>")
        noise = torch.randn_like(self.diagonal) * self.diagonal.sqrt()
        low_rank = torch.randn(self.factor.shape[0], device=self.factor.device) @ self.factor
        return self.mean + (noise + low_rank).reshape(self.mean.shape)

    def check_compatible(self, weight_shape: torch.Size, layer_name: str) -> None:
        super().check_compatible(weight_shape, layer_name)
        if tuple(weight_shape) != tuple(self.mean.shape):
            raise ConfigError(f"layer {layer_name!r}: weight {tuple(weight_shape)}, but its SWAG prior holds "
                              f"{tuple(self.mean.shape)}")

    def config(self) -> dict[str, Any]:
        return dict(self._options)

    def describe(self) -> str:
        return f"{self.registry_name or 'swag'}(scale={self._options.get('scale')}, rank={self.factor.shape[0]})"


@register_kl(GaussianPosterior, LayerSwagPrior)
def _kl_to_swag(q: GaussianPosterior, p: LayerSwagPrior) -> Tensor:
    # float64 for the K x K algebra: the sums run over up to ~10^5 weights of very different sizes
    m, log_v = q.loc.double().reshape(-1), q.log_variance.double().reshape(-1)
    v = log_v.exp()
    a_inverse = p.diagonal.double().reciprocal()
    u = p.factor.double()
    core, chol = p._core()
    r = m - p.mean.double().reshape(-1)
    b = u @ (r * a_inverse)
    weighted = (u * (v * a_inverse * a_inverse)) @ u.T  # U^T diag(v/a^2) U
    trace = (v * a_inverse).sum() - torch.cholesky_solve(weighted, chol).diagonal().sum()
    mahalanobis = (r * r * a_inverse).sum() - (b * torch.cholesky_solve(b.unsqueeze(1), chol).squeeze(1)).sum()
    log_det = p.diagonal.double().log().sum() + 2 * chol.diagonal().log().sum()
    kl = 0.5 * (trace + mahalanobis - m.numel() + log_det - log_v.sum())
    return kl.to(q.loc.dtype)
