"""The correlated Gaussian kernel prior, its closed-form KL, and its prior file.

For a layer with posterior q(w_k) = N(m_k, diag v_k) per kernel k (d = k^3 values) and the group's
prior p(w_k) = N(mu, S) with S = L L^T,

    KL(q || p) = 1/2 sum_k [ tr(S^-1 diag v_k) + |L^-1 (m_k - mu)|^2 - d + log det S - sum_i log v_ki ].

Prior file format ``bayesprior.corrnormal-prior/1`` (plain types, read with weights_only=True)::

    {"format": ..., "bayesprior_version": ..., "command": ..., "kernel_size": [3, 3, 3], "ridge": 1e-3,
     "groups": {"enc_full": {"mean": tensor (d,), "covariance": tensor (d, d), "n_kernels": 10560}, ...},
     "provenance": {...the kernel bank's header...}}

The mean and Cholesky factor are buffers of the prior module, so a saved Bayesian model carries them and
predicts without the prior file; `config()` records only the group and kernel size.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from bayesprior import GaussianPosterior, Prior, __version__, register_kl
from bayesprior.atomic import atomic_torch_save
from bayesprior.errors import CheckpointError, ConfigError, PriorMismatchError
from bayesprior.kernels import KernelBank
from bayesprior.priors import kernel_view
from bayesprior.safe_load import load_plain
from bayesprior.validation import Check, check_settings
from bayesprior.version import command_line

PRIOR_FORMAT = "bayesprior.corrnormal-prior/1"
#: ridge added to each covariance, relative to its mean variance, so that it is safely invertible
DEFAULT_RIDGE = 1e-3
_LOG_2PI = math.log(2 * math.pi)


class CorrelatedNormalPrior(Prior):
    """N(mean, covariance) on every kernel of the layers it scores.

    Args:
        mean: (d,) mean kernel, flattened.
        covariance: (d, d) symmetric positive definite covariance.
        kernel_size: the kernels' spatial shape, e.g. (3, 3, 3) (d = its product).
        group: the layer group it was fitted to (recorded, for `config`).
    """

    unit = "kernel"
    # buffers (register_buffer), declared for the type checker
    mean: Tensor  # (k^d,)
    cholesky: Tensor  # lower Cholesky factor of the covariance, (k^d, k^d)

    def __init__(self, mean: Tensor, covariance: Tensor, kernel_size: Sequence[int], group: str | None = None):
        super().__init__()
        self.kernel_size = tuple(int(k) for k in kernel_size)
        d = math.prod(self.kernel_size)
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        covariance = torch.as_tensor(covariance, dtype=torch.float32)
        if mean.shape != (d,) or covariance.shape != (d, d):
            raise ConfigError(f"corrnormal prior: kernel {self.kernel_size} needs a mean of {d} values and a "
                              f"{d}x{d} covariance, got {tuple(mean.shape)} and {tuple(covariance.shape)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(covariance).all()):
            raise ConfigError("corrnormal prior: mean and covariance must be finite")
        cholesky, info = torch.linalg.cholesky_ex(covariance.double())
        if int(info) != 0:
            raise ConfigError("corrnormal prior: the covariance is not positive definite")
        self.group = group
        self.register_buffer("mean", mean)
        self.register_buffer("cholesky", cholesky.float())

    def log_det_covariance(self) -> Tensor:
        return 2 * self.cholesky.diagonal().log().sum()

    def log_prob(self, w: Tensor) -> Tensor:
        """Log density of a weight (out, in, *kernel), summed over its kernels."""
        rows = kernel_view(w)
        solved = torch.linalg.solve_triangular(self.cholesky, (rows - self.mean).T, upper=False)
        d = rows.shape[1]
        return -0.5 * (rows.shape[0] * (d * _LOG_2PI + self.log_det_covariance()) + (solved ** 2).sum())

    def sample(self, shape: torch.Size) -> Tensor:
        shape = torch.Size(shape)
        self.check_compatible(shape, "<sample>")
        noise = torch.randn(shape[0] * shape[1], self.mean.numel(), device=self.mean.device)
        return (self.mean + noise @ self.cholesky.T).reshape(shape)

    def check_compatible(self, weight_shape: torch.Size, layer_name: str) -> None:
        super().check_compatible(weight_shape, layer_name)
        if tuple(weight_shape[2:]) != self.kernel_size:
            raise PriorMismatchError(f"layer {layer_name!r}: its kernel is {'x'.join(map(str, weight_shape[2:]))}, "
                                     f"but the corrnormal prior was fitted to "
                                     f"{'x'.join(map(str, self.kernel_size))} kernels")

    def config(self) -> dict[str, Any]:
        return {"group": self.group, "kernel_size": list(self.kernel_size)}


@register_kl(GaussianPosterior, CorrelatedNormalPrior)
def _kl_factorised_to_correlated(q: GaussianPosterior, p: CorrelatedNormalPrior) -> Tensor:
    means = kernel_view(q.loc)
    log_variances = kernel_view(q.log_variance)
    n, d = means.shape
    eye = torch.eye(d, device=means.device, dtype=means.dtype)
    inverse_cholesky = torch.linalg.solve_triangular(p.cholesky, eye, upper=False)
    precision_diagonal = (inverse_cholesky ** 2).sum(0)  # diag(S^-1) = column norms of L^-1
    trace = (log_variances.exp() * precision_diagonal).sum()
    mahalanobis = ((means - p.mean) @ inverse_cholesky.T).pow(2).sum()
    return 0.5 * (trace + mahalanobis - n * d + n * p.log_det_covariance() - log_variances.sum())


# ----------------------------------------------------------------------------------------- the file
def fit_moments(kernels: np.ndarray, ridge: float = DEFAULT_RIDGE) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood mean and covariance of kernels (n, *kernel), plus `ridge` x mean variance on the diagonal."""
    rows = np.asarray(kernels, dtype=np.float64).reshape(len(kernels), -1)
    if len(rows) < 2:
        raise ConfigError(f"a covariance needs at least 2 kernels, got {len(rows)}")
    if not np.isfinite(rows).all():
        raise ConfigError("kernels hold NaN or infinite values")
    mean = rows.mean(axis=0)
    centred = rows - mean
    covariance = centred.T @ centred / len(rows)
    d = rows.shape[1]
    covariance += ridge * max(np.trace(covariance) / d, 1e-30) * np.eye(d)
    return mean, covariance


def check_corrnormal_fit_options(options: dict[str, Any]) -> None:
    """The registry's ``check_fit_options`` for ``corrnormal``: its own options (``ridge``, ``groups``); the
    generic ones (``max_epochs``, ``seed``, ``progress``) are accepted and ignored by the closed-form fit."""
    check_settings(options, {"ridge": Check("number", minimum=0), "groups": Check("strs", optional=True),
                             "max_epochs": Check("int", minimum=1), "seed": Check("int"), "progress": Check("bool")},
                   "options")


def fit_corrnormal_file(bank_path: str, out_path: str, groups: Sequence[str] | None = None,
                        ridge: float = DEFAULT_RIDGE, **ignored: Any) -> None:
    """Fit one N(mean, covariance) per group of the kernel bank at `bank_path`; write the prior file `out_path`.

    The registry's ``fit`` for ``corrnormal`` (generic options such as ``max_epochs`` are ignored: the fit
    is closed form). It returns no held-out scores: this prior *is* the structure report's
    full-covariance baseline.
    """
    if not (ridge >= 0 and math.isfinite(ridge)):
        raise ConfigError(f"corrnormal: ridge must be a finite number >= 0, got {ridge!r}")
    bank = KernelBank.load(bank_path)
    fits = {}
    for g in (groups or bank.groups):
        mean, covariance = fit_moments(bank.kernels[g], ridge)
        fits[g] = {"mean": torch.from_numpy(mean).float(), "covariance": torch.from_numpy(covariance).float(),
                   "n_kernels": int(len(bank.kernels[g]))}
    atomic_torch_save({"format": PRIOR_FORMAT, "bayesprior_version": __version__, "command": command_line(),
                       "kernel_size": list(bank.kernel_size), "ridge": float(ridge), "groups": fits,
                       "provenance": dict(bank.header)}, out_path)


def load_corrnormal_file(path: str | Path) -> dict[str, Any]:
    """Read a corrnormal prior file (plain types only). Raises `CheckpointError` naming the file."""
    payload = load_plain(path, "a corrnormal prior file")
    if not isinstance(payload, dict) or payload.get("format") != PRIOR_FORMAT:
        raise CheckpointError(path, f"not a corrnormal prior file (expected format {PRIOR_FORMAT!r}); "
                                    "write one with the corrnormal prior's fit (bayesprior experiment)")
    groups = payload.get("groups")
    if not isinstance(groups, dict) or not groups or not all(
            isinstance(v, dict) and {"mean", "covariance"} <= set(v) for v in groups.values()):
        raise CheckpointError(path, "corrnormal prior file holds no group means and covariances")
    return payload


def create_corrnormal_prior(path: str | None = None, group: str | None = None,
                            kernel_size: Sequence[int] | None = None) -> CorrelatedNormalPrior:
    """Registry factory of ``corrnormal``: the prior of `group` in the prior file at `path`.

    Without `path` it builds a standard-normal placeholder of `kernel_size`, whose buffers a saved
    model's state then fills (so a model file never needs the prior file).
    """
    if not group:
        raise ConfigError("corrnormal prior needs group=<a layer group of the prior file>")
    if path:
        payload = load_corrnormal_file(path)
        if group not in payload["groups"]:
            raise ConfigError(f"corrnormal prior file {path} has no group {group!r} "
                              f"(groups: {', '.join(payload['groups'])})")
        fit = payload["groups"][group]
        return CorrelatedNormalPrior(fit["mean"], fit["covariance"], payload["kernel_size"], group)
    if not kernel_size:
        raise ConfigError("corrnormal prior needs path=<prior file> (or kernel_size, when a saved state fills it)")
    d = math.prod(int(k) for k in kernel_size)
    return CorrelatedNormalPrior(torch.zeros(d), torch.eye(d), kernel_size, group)
