"""The Deep Weight Prior: an implicit kernel prior p(w) = E_{p(z)} p(w | z) scored by an upper bound.

For each kernel w_k of a layer (unit ``"kernel"``), with q the layer's Gaussian posterior,

    KL(q(w_k) || p(w_k)) <= -H(q(w_k)) + E_q[ KL(r(z|w_k) || N(0, I)) - E_r log p(w_k | z) ],

whose gap is E_q KL(r(z|w_k) || p(z|w_k)), so any encoder r gives a valid bound. Per step it uses
the closed-form entropy and latent KL, ONE reparameterised weight sample and ONE reparameterised
latent sample (Atanov et al. 2019; the paper's Algorithm 1). Gradients reach the posterior through
the frozen decoder (its parameters do not require grad, but the graph is kept); the encoder is
fine-tuned on the target by default (the paper optimises both theta and psi).

The anchored DWP (``dwp_anchored``) keeps each kernel's identity: the latent prior of kernel k becomes
the fitted encoder's distribution of the source network's kernel at the same place, r(z | w_source,k)
(its standard deviation times ``anchor_scale``), instead of N(0, I). Its prior is then
p_k(w) = E_{r(z | w_source,k)} p(w | z), "kernels like this source kernel" rather than "kernels like the
bank's", and the bound keeps its form with KL(r(z|w_k) || r(z | w_source,k)) as the latent term. The
anchors are computed once, when the prior is bound to the source network's layers (`bind`), and kept as
buffers; with every anchor at mean 0 and log-variance 0 it is the plain DWP.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from bayesprior import Prior
from bayesprior.errors import ConfigError, PriorMismatchError
from bayesprior.posteriors import summed_entropy
from bayesprior.priors import PriorLayers, kernel_view
from bayesprior.validation import positive_finite

from .batched import FrozenParts, blockwise_negative_elbo_sum
from .prior_file import load_prior_file
from .vae import KernelVAE


class DeepWeightPrior(Prior):
    """A kernel prior given by a fitted `KernelVAE`.

    Args:
        vae: the group's VAE (taken over: its decoder is frozen).
        fine_tune_encoder: keep the encoder r(z|w) trainable (default True); False freezes it too.
        chunk_size: score at most this many kernels at once, recomputing each chunk in the backward
            pass (bounds activation memory); None scores all at once. A chunked prior is scored on its
            own, through `KernelVAE.negative_elbo`; unchunked ones share the fast pass of `kl_batch`.
        source: ``{"path": ..., "group": ...}`` when built from a prior file (for `config`).
        anchored: anchor each kernel's latent prior at its source kernel (module docstring).
        anchor_scale: factor on the anchors' standard deviations (1: the encoder's own).
    """

    unit = "kernel"

    def __init__(self, vae: KernelVAE, fine_tune_encoder: bool = True, chunk_size: int | None = None,
                 source: dict[str, Any] | None = None, anchored: bool = False, anchor_scale: float = 1.0):
        super().__init__()
        check_dwp_options({"fine_tune_encoder": fine_tune_encoder, "anchored": anchored, "chunk_size": chunk_size,
                           "anchor_scale": anchor_scale})
        self.vae = vae
        self.fine_tune_encoder = bool(fine_tune_encoder)
        self.chunk_size = chunk_size
        self.source = dict(source or {})
        self.anchored = bool(anchored)
        self.anchor_scale = float(anchor_scale)
        self.anchor_kernels: list[int] = []  # kernels of each bound layer, in the order they were bound
        for p in vae.decoder.parameters():
            p.requires_grad_(False)
        for p in vae.encoder.parameters():
            p.requires_grad_(self.fine_tune_encoder)

    @classmethod
    def from_file(cls, path: str | Path, group: str, fine_tune_encoder: bool = True,
                  chunk_size: int | None = None, anchored: bool = False,
                  anchor_scale: float = 1.0) -> "DeepWeightPrior":
        """The prior of `group` in the prior file at `path` (see `bayesprior_dwp.prior_file`)."""
        vae = load_prior_file(path).vae(group)
        return cls(vae, fine_tune_encoder, chunk_size, source={"path": str(path), "group": group},
                   anchored=anchored, anchor_scale=anchor_scale)

    # -- anchors
    @torch.no_grad()
    def bind(self, layer_name: str, weight: Tensor) -> "DeepWeightPrior":
        """Anchored: keep r(z | kernel) of each kernel of the layer's (source) weight as its latent prior."""
        if not self.anchored:
            return self
        self.check_compatible(weight.shape, layer_name)
        mean, log_variance = self.vae.encode(kernel_view(weight.detach().to(self.vae.data_mean)))
        k = len(self.anchor_kernels)
        self.register_buffer(f"anchor_mean_{k}", mean.clone())
        self.register_buffer(f"anchor_log_variance_{k}", log_variance + 2 * math.log(self.anchor_scale))
        self.anchor_kernels.append(int(mean.shape[0]))
        return self

    def _anchors(self, posteriors: list[Any]) -> tuple[Tensor, Tensor] | None:
        """The latent priors of the kernels of `posteriors` (the layers bound, in their order), or None."""
        layers = self._layer_anchors(posteriors)
        return None if layers is None else (torch.cat([m for m, _ in layers]), torch.cat([v for _, v in layers]))

    def _layer_anchors(self, posteriors: list[Any]) -> list[tuple[Tensor, Tensor]] | None:
        """Per layer of `posteriors`, its kernels' latent priors (mean, log-variance), or None if not anchored."""
        return self._bound_anchors(posteriors) if self.anchored else None

    def _bound_anchors(self, posteriors: list[Any]) -> list[tuple[Tensor, Tensor]]:
        """The latent priors `bind` kept for the layers of `posteriors` (an anchored prior's)."""
        kernels = [q.shape[0] * q.shape[1] for q in posteriors]
        if kernels != self.anchor_kernels:
            raise PriorMismatchError(f"anchored DWP prior {self.describe()} was bound to layers of "
                                     f"{self.anchor_kernels} kernels, in that order, but is asked to score layers of "
                                     f"{kernels}: score the layers it was bound to together (kl_layers)")
        return [(getattr(self, f"anchor_mean_{i}"), getattr(self, f"anchor_log_variance_{i}"))
                for i in range(len(kernels))]

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
        return self._bound([posterior], [weight_sample], latent_noise)

    def kl_layers(self, posteriors: list[Any], weight_samples: list[Tensor | None] | None = None) -> Tensor:
        """The bound summed over every layer of the group, with the kernels of all layers in one VAE pass.

        Same estimator as calling `kl` per layer (one weight sample per layer, one latent sample per
        kernel), but one batched encoder/decoder call per group instead of one per layer. A layer's
        entry in `weight_samples` (the forward's sample, see `Prior.kl_layers`) is scored in place of a
        fresh draw.
        """
        return self._bound(posteriors, weight_samples)

    def _bound(self, posteriors: list[Any], weight_samples: list[Tensor | None] | None,
               latent_noise: Tensor | None = None) -> Tensor:
        # the fast pass (`kl_batch`) as a batch of this group alone; a chunked prior, or one whose VAE has heads
        # of its own, goes through `KernelVAE.negative_elbo`
        if self.batch_key() is not None:
            return type(self).kl_batch([PriorLayers(self, posteriors, weight_samples)],
                                       None if latent_noise is None else [latent_noise])
        kernels = torch.cat(self._layer_kernels(posteriors, weight_samples))
        noise = torch.randn(kernels.shape[0], self.vae.latent_dim, device=kernels.device, dtype=kernels.dtype) \
            if latent_noise is None else latent_noise
        return _negative_entropy(posteriors) + self._chunked_latent_terms(kernels, noise, self._anchors(posteriors))

    def batch_key(self) -> tuple | None:
        """DWP priors whose VAEs share an architecture, device and dtype, anchored or not alike, are scored in one
        pass (`kl_batch`); a chunked prior (`chunk_size`) bounds its memory by scoring its kernels in pieces, alone."""
        signature = self.vae.batch_signature()
        if signature is None or self.chunk_size is not None:
            return None
        return ("dwp", signature, self.anchored)

    @classmethod
    def kl_batch(cls, batch: Sequence[PriorLayers], latent_noise: Sequence[Tensor] | None = None) -> Tensor:
        """The bound summed over the layers of several DWP priors (one per layer group), all groups' kernels in one
        pass (`bayesprior_dwp.batched`): the same estimator as each prior's `kl_layers`, added.

        `latent_noise` (per prior, (its kernels, latent_dim)) gives the latent samples' standard-normal draws
        (tests compare with `kl_upper_bound`); drawn if None.
        """
        # one batch holds priors of one class (`kl_of_priors`) and one `batch_key`, so all anchored or none
        priors = cast(list[DeepWeightPrior], [item.prior for item in batch])
        kernels = [p._layer_kernels(item.posteriors, item.weight_samples)
                   for p, item in zip(priors, batch, strict=True)]
        anchors = [p._bound_anchors(item.posteriors) for p, item in zip(priors, batch, strict=True)] \
            if priors[0].anchored else None
        frozen = priors[0].__dict__.setdefault("_frozen_parts", FrozenParts())
        latent_terms = blockwise_negative_elbo_sum([p.vae for p in priors], kernels, frozen, anchors, latent_noise)
        return _negative_entropy([q for item in batch for q in item.posteriors]) + latent_terms

    def _layer_kernels(self, posteriors: list[Any], weight_samples: list[Tensor | None] | None) -> list[Tensor]:
        """Each layer's weight sample as kernels (n, k^d): the one given (the forward's), else a fresh draw."""
        for q in posteriors:
            if tuple(q.shape[2:]) != self.vae.kernel_size:
                self.check_compatible(q.shape, "<layer of this group>")
        samples = weight_samples or [None] * len(posteriors)
        return [kernel_view(q.rsample() if w is None else w) for q, w in zip(posteriors, samples, strict=True)]

    def __getstate__(self) -> dict[str, Any]:
        # copies and pickles never carry the fast pass's kept tensors (rebuilt on first use)
        state = super().__getstate__()
        state.pop("_frozen_parts", None)
        return state

    def _chunked_latent_terms(self, w: Tensor, noise: Tensor, anchors: tuple[Tensor, Tensor] | None = None) -> Tensor:
        if self.chunk_size is None or w.shape[0] <= self.chunk_size:
            return self._latent_terms(w, noise, anchors)
        total = w.new_zeros(())
        pieces = [w.split(self.chunk_size), noise.split(self.chunk_size)]
        if anchors is not None:
            pieces += [a.split(self.chunk_size) for a in anchors]
        for chunk in zip(*pieces, strict=True):
            chunk_anchors = None if anchors is None else (chunk[2], chunk[3])
            if torch.is_grad_enabled():
                total = total + checkpoint(self._latent_terms, chunk[0], chunk[1], chunk_anchors, use_reentrant=False)
            else:
                total = total + self._latent_terms(chunk[0], chunk[1], chunk_anchors)
        return total

    def _latent_terms(self, w: Tensor, noise: Tensor, anchors: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Sum over kernels of KL(r(z|w) || p(z)) - log p(w | z), z = one sample of r(z|w); p(z) = N(0, I), or
        each kernel's anchor."""
        return self.vae.negative_elbo(w, noise, anchors).sum()

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
        config = {"group": self.source.get("group"), "vae": dict(self.vae.hparams),
                  "fine_tune_encoder": self.fine_tune_encoder, "chunk_size": self.chunk_size}
        if self.anchored:
            config["anchor_scale"] = self.anchor_scale
        return config


def _negative_entropy(posteriors: Sequence[Any]) -> Tensor:
    return -torch.stack([summed_entropy(q) for q in posteriors]).sum()


def check_dwp_options(options: Mapping[str, Any]) -> None:
    """The values of a DWP's options that need no prior file (`fine_tune_encoder`, `anchored`, `chunk_size`,
    `anchor_scale`), checked as the prior checks them: an experiment calls this (the registry's ``check_options``)
    when it reads its config, hours before the source stage has written the prior file.

    Raises:
        ConfigError: naming the option and its value.
    """
    chunk_size = options.get("chunk_size")
    for name in ("fine_tune_encoder", "anchored"):
        if not isinstance(options.get(name, True), bool):
            raise ConfigError(f"dwp prior: {name} must be true or false, got {options[name]!r}")
    if chunk_size is not None and not (isinstance(chunk_size, int) and not isinstance(chunk_size, bool)
                                       and chunk_size >= 1):
        raise ConfigError(f"dwp prior: chunk_size must be a positive integer or None, got {chunk_size!r}")
    positive_finite(options.get("anchor_scale", 1.0), "dwp prior: anchor_scale")


def create_anchored_dwp_prior(path: str | None = None, group: str | None = None, fine_tune_encoder: bool = True,
                              chunk_size: int | None = None, vae: dict[str, Any] | None = None,
                              anchor_scale: float = 1.0) -> DeepWeightPrior:
    """Registry factory of ``"dwp_anchored"``: as ``"dwp"``, each kernel's latent prior anchored at its source
    kernel (module docstring) when the prior is bound to the source network's layers."""
    return create_dwp_prior(path, group, fine_tune_encoder, chunk_size, vae, anchored=True, anchor_scale=anchor_scale)


def create_dwp_prior(path: str | None = None, group: str | None = None, fine_tune_encoder: bool = True,
                     chunk_size: int | None = None, vae: dict[str, Any] | None = None, anchored: bool = False,
                     anchor_scale: float = 1.0) -> DeepWeightPrior:
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
        return DeepWeightPrior.from_file(path, group, fine_tune_encoder=fine_tune_encoder, chunk_size=chunk_size,
                                         anchored=anchored, anchor_scale=anchor_scale)
    if vae is None:
        raise ConfigError("dwp prior needs path=<prior file written by `bayesprior fit-prior`>: --prior-file in "
                          "`bayesprior train` (or vae=<its hyper-parameters>, when a saved model's state fills it)")
    try:
        placeholder = KernelVAE(**vae)
    except TypeError as exc:
        raise ConfigError(f"dwp prior: vae={vae!r} is not a set of KernelVAE hyper-parameters ({exc})") from None
    return DeepWeightPrior(placeholder, fine_tune_encoder, chunk_size, source={"group": group}, anchored=anchored,
                           anchor_scale=anchor_scale)
