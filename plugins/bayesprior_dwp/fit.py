"""Fitting kernel VAEs to a kernel bank (the paper's Table 2 schedule).

Adam (lr 1e-3), ReduceLROnPlateau on the held-out loss (patience 15, factor 0.1), stop when the rate
has been reduced to 1e-6 or after `max_epochs` (500); beta = 1 (no KL annealing). A random share of
the kernels is held out; the model with the best held-out ELBO is kept.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from bayesprior.errors import ConfigError
from bayesprior.kernel_structure import HELDOUT_FRACTION, heldout_split
from bayesprior.kernels import KernelBank
from bayesprior.progress import Progress, progress_line
from bayesprior.validation import Check, check_settings

from .vae import KernelVAE

#: ridge of the reference covariance, relative to its mean variance (a safely invertible whitening)
REFERENCE_RIDGE = 1e-4


def fit_kernel_vae(bank: KernelBank, group: str, latent_dim: int = 6, hidden: int = 32, depth: int = 2,
                   max_epochs: int = 500, batch_size: int = 256, lr: float = 1e-3, patience: int = 15,
                   factor: float = 0.1, min_lr: float = 1e-6, heldout_fraction: float = HELDOUT_FRACTION,
                   seed: int = 0, progress: bool = True) -> tuple[KernelVAE, list[float]]:
    """Fit one `KernelVAE` to the kernels of `group` in `bank`.

    Args:
        bank: the kernel bank.
        group: the group to fit.
        latent_dim, hidden, depth: the VAE's size (see `KernelVAE`).
        max_epochs: at most this many passes over the training kernels.
        batch_size: kernels per Adam step.
        lr, patience, factor, min_lr: Adam rate and the plateau schedule; training stops once the rate
            has been reduced to `min_lr`.
        heldout_fraction: share of kernels held out to evaluate (and schedule) on.
        seed: fixes the split, the initialisation and the sampling.
        progress: report the fit (a bar on a terminal, one line per group elsewhere; `bayesprior.progress`).
    Returns:
        ``(vae, heldout_elbo)``: the VAE at its best held-out ELBO (on CPU, in eval mode), and the
        held-out ELBO per kernel (nats) before training and after each epoch.
    Raises:
        ConfigError: unknown group, too few kernels, or bad settings.
    """
    if max_epochs < 1 or batch_size < 1:
        raise ConfigError(f"max_epochs and batch_size must be >= 1, got {max_epochs!r}, {batch_size!r}")
    kernels = _group_kernels(bank, group)
    generator = torch.Generator().manual_seed(seed)
    # the split of the structure report (`bayesprior.kernel_structure`), so its scores compare
    train_index, heldout_index = heldout_split(len(kernels), heldout_fraction, generator=generator)
    heldout, train = kernels[heldout_index], kernels[train_index]

    torch.manual_seed(seed)
    vae = _vae_at_reference(bank.kernel_size, train, latent_dim, hidden, depth)
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=factor, patience=patience)
    # the same latent noise at every evaluation, so epochs are compared on equal terms
    heldout_noise = torch.randn(len(heldout), latent_dim, generator=generator)
    history = [_heldout_elbo(vae, heldout, heldout_noise)]
    best_elbo, best_state = history[0], _copy_state(vae)
    # a line per group where no bar shows (a log file): a line per epoch of every group would bury the rest
    bar = Progress(range(max_epochs), f"fit {group}", "epoch", enabled=progress, lines=False, leave=False)
    for _ in bar:
        _train_epoch(vae, optimizer, train, batch_size, generator)
        elbo = _heldout_elbo(vae, heldout, heldout_noise)
        history.append(elbo)
        if elbo > best_elbo:
            best_elbo, best_state = elbo, _copy_state(vae)
        scheduler.step(-elbo)
        rate = optimizer.param_groups[0]["lr"]
        bar.report(heldout_elbo=elbo, lr=rate)
        if rate <= min_lr * (1 + 1e-6):
            break
    bar.close()
    progress_line(f"fit {group}: {len(history) - 1} epoch(s), best held-out ELBO {best_elbo:.3f}", enabled=progress)
    if not math.isfinite(best_elbo):
        raise ConfigError(f"group {group!r}: the VAE's held-out ELBO is not finite ({best_elbo}); "
                          "the kernels may be degenerate (all equal, or of wildly different scales)")
    vae.load_state_dict(best_state)
    return vae.eval(), history


def _vae_at_reference(kernel_size: Sequence[int], train: torch.Tensor, latent_dim: int, hidden: int,
                      depth: int) -> KernelVAE:
    """A new VAE that starts as the training kernels' full-covariance Gaussian (see `KernelVAE.set_reference`)."""
    vae = KernelVAE(kernel_size, latent_dim=latent_dim, hidden=hidden, depth=depth)
    mean, covariance = reference_gaussian(train)
    vae.set_reference(mean, covariance)
    return vae


def _group_kernels(bank: KernelBank, group: str) -> torch.Tensor:
    """The kernels of `group`, flattened (n, k^d), float32; `ConfigError` for fewer than two or non-finite ones."""
    kernels = torch.from_numpy(np.ascontiguousarray(bank.flat(group), dtype=np.float32))
    if len(kernels) < 2:
        raise ConfigError(f"group {group!r} has {len(kernels)} kernel(s); a VAE needs at least 2")
    if not torch.isfinite(kernels).all():
        raise ConfigError(f"group {group!r} holds NaN or infinite kernels; harvest finite models")
    return kernels


def _heldout_elbo(vae: KernelVAE, heldout: torch.Tensor, noise: torch.Tensor) -> float:
    """The mean ELBO per held-out kernel, with the latent `noise` given (evaluated in eval mode)."""
    vae.eval()
    with torch.no_grad():
        value = -float(vae.negative_elbo(heldout, noise).mean())
    vae.train()
    return value


def _train_epoch(vae: KernelVAE, optimizer: torch.optim.Optimizer, train: torch.Tensor, batch_size: int,
                 generator: torch.Generator) -> None:
    """One pass over the training kernels in a random order, an Adam step per batch."""
    for batch in torch.randperm(len(train), generator=generator).split(batch_size):
        loss = vae.negative_elbo(train[batch]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


#: what `fit_prior_file` accepts (the options of `fit_kernel_vae`, and the groups)
FIT_OPTIONS = {
    "latent_dim": Check("int", minimum=1), "hidden": Check("int", minimum=1), "depth": Check("int", minimum=1),
    "max_epochs": Check("int", minimum=1), "batch_size": Check("int", minimum=1), "lr": Check("number", above=0),
    "patience": Check("int", minimum=0), "factor": Check("number", above=0, below=1),
    "min_lr": Check("number", above=0), "heldout_fraction": Check("number", above=0, below=1),
    "seed": Check("int"), "progress": Check("bool"), "groups": Check("strs", optional=True),
}


def check_fit_options(options: dict[str, Any]) -> None:
    """The registry's ``check_fit_options`` for ``dwp``: raise `ConfigError` naming an option `fit` would refuse."""
    check_settings(options, FIT_OPTIONS, "options")


def fit_prior(bank: KernelBank, groups: Sequence[str] | None = None, **options: Any
              ) -> dict[str, tuple[KernelVAE, list[float]]]:
    """Fit one VAE per group of `bank` (all groups by default); options go to `fit_kernel_vae`.

    Returns ``{group: (vae, heldout_elbo)}`` in bank order.
    """
    groups = list(bank.groups if groups is None else groups)
    return {g: fit_kernel_vae(bank, g, **options) for g in groups}


def reference_gaussian(kernels: torch.Tensor, ridge: float = REFERENCE_RIDGE) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of flattened kernels (n, d), with `ridge` x mean variance on the diagonal."""
    rows = kernels.double()
    mean = rows.mean(0)
    centred = rows - mean
    covariance = centred.T @ centred / max(len(rows), 1)
    d = rows.shape[1]
    level = float(covariance.diagonal().mean())
    covariance = covariance + ridge * (level if level > 0 and math.isfinite(level) else 1.0) * torch.eye(d, dtype=rows.dtype)
    return mean, covariance


def _copy_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def heldout_scores(fits: dict[str, tuple[KernelVAE, list[float]]]) -> dict[str, float]:
    """Per group, the best held-out ELBO per kernel (nats) of a fit: what the structure report compares."""
    return {g: max(history) for g, (_, history) in fits.items()}


def fit_and_score(bank_path: str, out_path: str, **options: Any) -> dict[str, float]:
    """The registry's ``fit`` for ``dwp``: `fit_prior_file`, returning the held-out ELBO per group.

    The scores are on `bayesprior.kernel_structure.heldout_split` of each group with the given
    ``heldout_fraction`` and ``seed``, so the structure report compares them with its Gaussian baselines.
    """
    return heldout_scores(fit_prior_file(bank_path, out_path, **options))


def fit_prior_file(bank_path: str, out_path: str, groups: Sequence[str] | None = None, **options: Any
                   ) -> dict[str, tuple[KernelVAE, list[float]]]:
    """Fit one VAE per group of the kernel bank at `bank_path` and write the prior file `out_path`.

    This is the ``fit`` the plugin registers with the ``dwp`` prior, so generic tools (the experiment
    runner) can learn the prior from harvested kernels without knowing about VAEs. Options go to
    `fit_kernel_vae`. Returns the fits, as `fit_prior`.
    """
    from .prior_file import save_prior_file

    bank = KernelBank.load(bank_path)
    fits = fit_prior(bank, groups=groups, **options)
    save_prior_file(out_path, fits, bank)
    return fits
