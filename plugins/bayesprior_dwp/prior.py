"""The Deep Weight Prior: an implicit kernel prior p(w) = E_{p(z)} p(w | z) scored by an upper bound.

For each kernel w_k of a layer (unit ``"kernel"``), with q the layer's Gaussian posterior,

    KL(q(w_k) || p(w_k)) <= -H(q(w_k)) + E_q[ KL(r(z|w_k) || N(0, I)) - E_r log p(w_k | z) ],

whose gap is E_q KL(r(z|w_k) || p(z|w_k)), so any encoder r gives a valid bound. Per step it uses
the closed-form entropy and latent KL, ONE reparameterised weight sample and ONE reparameterised
latent sample (Atanov et al. 2019; the paper's Algorithm 1). Gradients reach the posterior through
the frozen decoder (its parameters do not require grad, but the graph is kept); the encoder is
fine-tuned on the target by default (the paper optimises both theta and psi).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from bayesprior import Prior
from bayesprior.errors import ConfigError, PriorMismatchError
from bayesprior.priors import kernel_view

from .prior_file import load_prior_file
from .vae import KernelVAE


class DeepWeightPrior(Prior):
    """A kernel prior given by a fitted `KernelVAE`.

    Args:
        vae: the group's VAE (taken over: its decoder is frozen).
        fine_tune_encoder: keep the encoder r(z|w) trainable (default True); False freezes it too.
        chunk_size: score at most this many kernels at once, recomputing each chunk in the backward
            pass (bounds activation memory); None scores all at once.
        source: ``{"path": ..., "group": ...}`` when built from a prior file (for `config`).
    """

    unit = "kernel"

    def __init__(self, vae: KernelVAE, fine_tune_encoder: bool = True, chunk_size: int | None = None,
                 source: dict[str, Any] | None = None):
        super().__init__()
        if chunk_size is not None and not (isinstance(chunk_size, int) and chunk_size >= 1):
            raise ConfigError(f"dwp prior: chunk_size must be a positive integer or None, got {chunk_size!r}")
        self.vae = vae
        self.fine_tune_encoder = bool(fine_tune_encoder)
        self.chunk_size = chunk_size
        self.source = dict(source or {})
        for p in vae.decoder.parameters():
            p.requires_grad_(False)
        for p in vae.encoder.parameters():
            p.requires_grad_(self.fine_tune_encoder)

    @classmethod
    def from_file(cls, path: str | Path, group: str, fine_tune_encoder: bool = True,
                  chunk_size: int | None = None) -> "DeepWeightPrior":
        """The prior of `group` in the prior file at `path` (see `bayesprior_dwp.prior_file`)."""
        vae = load_prior_file(path).vae(group)
        return cls(vae, fine_tune_encoder, chunk_size, source={"path": str(path), "group": group})

    # -- the bound
    def kl_upper_bound(self, posterior: Any, weight_sample: Tensor,
                       latent_noise: Tensor | None = None) -> Tensor:
        """The bound summed over the layer's kernels (a scalar tensor).

        Args:
            posterior: the layer's `GaussianPosterior` (its entropy is taken in closed form).
            weight_sample: one reparameterised sample of the weight, (out, in, *kernel).
            latent_noise: standard-normal draws for the latent samples, (out * in, latent_dim); drawn
                if None (given in tests to compare chunked and unchunked evaluation).
        """
        w = kernel_view(weight_sample)
        noise = torch.randn(w.shape[0], self.vae.latent_dim, device=w.device, dtype=w.dtype) \
            if latent_noise is None else latent_noise
        return -posterior.entropy().sum() + self._chunked_latent_terms(w, noise)

    def kl_layers(self, posteriors: list[Any], weight_samples: list[Tensor | None] | None = None) -> Tensor:
        """The bound summed over every layer of the group, with the kernels of all layers in one VAE pass.

        Same estimator as calling `kl` per layer (one weight sample per layer, one latent sample per
        kernel), but one batched encoder/decoder call per group instead of one per layer. A layer's
        entry in `weight_samples` (the forward's sample, see `Prior.kl_layers`) is scored in place of a
        fresh draw.
        """
        samples = weight_samples or [None] * len(posteriors)
        for q in posteriors:
            if tuple(q.shape[2:]) != self.vae.kernel_size:
                self.check_compatible(q.shape, "<layer of this group>")
        kernels = torch.cat([kernel_view(q.rsample() if w is None else w) for q, w in zip(posteriors, samples)])
        negative_entropy = -torch.stack([q.entropy().sum() for q in posteriors]).sum()
        noise = torch.randn(kernels.shape[0], self.vae.latent_dim, device=kernels.device, dtype=kernels.dtype)
        return negative_entropy + self._chunked_latent_terms(kernels, noise)

    def _chunked_latent_terms(self, w: Tensor, noise: Tensor) -> Tensor:
        if self.chunk_size is None or w.shape[0] <= self.chunk_size:
            return self._latent_terms(w, noise)
        total = w.new_zeros(())
        for w_chunk, noise_chunk in zip(w.split(self.chunk_size), noise.split(self.chunk_size)):
            if torch.is_grad_enabled():
                total = total + checkpoint(self._latent_terms, w_chunk, noise_chunk, use_reentrant=False)
            else:
                total = total + self._latent_terms(w_chunk, noise_chunk)
        return total

    def _latent_terms(self, w: Tensor, noise: Tensor) -> Tensor:
        """Sum over kernels of KL(r(z|w) || N(0, I)) - log p(w | z), z = one sample of r(z|w)."""
        return self.vae.negative_elbo(w, noise).sum()

    # -- the rest of the Prior contract
    def sample(self, shape: torch.Size) -> Tensor:
        """Kernels drawn from the VAE, shaped as a weight (out, in, *kernel) (for posterior-mean init)."""
        shape = torch.Size(shape)
        self.check_compatible(shape, "<sample>")
        return self.vae.sample(shape[0] * shape[1]).reshape(shape)

    def check_compatible(self, weight_shape: torch.Size, layer_name: str) -> None:
        super().check_compatible(weight_shape, layer_name)
        kernel = tuple(weight_shape[2:])
        if kernel != self.vae.kernel_size:
            raise PriorMismatchError(
                f"layer {layer_name!r}: its kernel is {'x'.join(map(str, kernel))}, but the DWP prior "
                f"{self.describe()} was fitted to {'x'.join(map(str, self.vae.kernel_size))} kernels")

    def config(self) -> dict[str, Any]:
        # the VAE's hyper-parameters, not the prior file's path: a saved model's state carries the VAE's
        # weights, so the model loads anywhere, without the file (`create_dwp_prior` without `path`)
        return {"group": self.source.get("group"), "vae": dict(self.vae.hparams),
                "fine_tune_encoder": self.fine_tune_encoder, "chunk_size": self.chunk_size}


def create_dwp_prior(path: str | None = None, group: str | None = None, fine_tune_encoder: bool = True,
                     chunk_size: int | None = None, vae: dict[str, Any] | None = None) -> DeepWeightPrior:
    """Registry factory of ``"dwp"``: the prior of `group` in the prior file at `path`.

    Without `path`, `vae` (the VAE's hyper-parameters, as `DeepWeightPrior.config` records them) builds
    an untrained placeholder whose weights a saved model's state then fills.

    Raises:
        ConfigError: neither `path` nor `vae`, `group` missing with `path`, or `group` not in the file.
        CheckpointError: the file is missing or not a DWP prior file.
    """
    if path:
        if not group:
            raise ConfigError(f"dwp prior needs group=<one of the groups in {path}>")
        return DeepWeightPrior.from_file(path, group, fine_tune_encoder=fine_tune_encoder, chunk_size=chunk_size)
    if vae is None:
        raise ConfigError("dwp prior needs path=<prior file written by `bayesprior fit-prior`> (or vae=<its "
                          "hyper-parameters>, when a saved model's state fills it)")
    try:
        placeholder = KernelVAE(**vae)
    except TypeError as exc:
        raise ConfigError(f"dwp prior: vae={vae!r} is not a set of KernelVAE hyper-parameters ({exc})") from None
    return DeepWeightPrior(placeholder, fine_tune_encoder, chunk_size, source={"group": group})
