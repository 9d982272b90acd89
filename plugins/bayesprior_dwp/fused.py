"""The two ends of the kernel VAE's bound as single autograd nodes, with their gradients written out.

Both follow `GaussianHead`'s parameterisation (an output layer `out` split into a mean and a raw log-variance,
log-variance = raw + softplus(log(min_variance) - raw)) and compute exactly the formulas of `vae.py`:

- `latent_sample_and_kl`: from the encoder's output layer, the reparameterised latent sample
  z = mu + exp(lv / 2) * noise and, per kernel, KL(N(mu, e^lv) || p(z)), p(z) = N(0, I) or a given N(m, e^v);
- `negative_log_likelihood`: from the decoder's output layer, -log N(u; mean, e^lv) summed per kernel.

Why: written with autograd's element-wise operators, these two ends are a graph of about 30 nodes whose
backward makes about 35 more passes over arrays of kernels x 6 to kernels x 54 numbers, and keeps a dozen such
arrays alive until then. Here each forward works in place where it can and keeps only its local derivatives
(two or three arrays), so each backward is four operations. The gradients are those of the formulas
(tests/test_dwp_blockwise.py compares values and gradients with `KernelVAE.negative_elbo`).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

_LOG_2PI = math.log(2 * math.pi)


def _log_variance(raw: Tensor, log_min_variance: float) -> tuple[Tensor, Tensor]:
    """log(exp(raw) + min_variance) as `GaussianHead` computes it, and its slope in raw,
    sigmoid(raw - log(min_variance))."""
    shifted = torch.rsub(raw, log_min_variance)
    log_variance = F.softplus(shifted).add_(raw)
    return log_variance, torch.sigmoid(shifted.neg_())


class _LatentSampleAndKL(torch.autograd.Function):
    # the forward keeps the local derivatives, so the backward is three operations:
    # d/d mean = grad_z + grad_kl * kl_by_mean; d/d raw = grad_z * z_by_raw + grad_kl * kl_by_raw
    @staticmethod
    def forward(ctx, out: Tensor, noise: Tensor, log_min_variance: float, prior_mean: Tensor | None,
                prior_log_variance: Tensor | None):
        latent = out.shape[-1] // 2
        mean, raw = out[..., :latent], out[..., latent:]
        log_variance, slope = _log_variance(raw, log_min_variance)
        stddev = log_variance.mul(0.5).exp_()
        z = torch.addcmul(mean, stddev, noise)
        variance = stddev * stddev
        if prior_mean is None or prior_log_variance is None:  # KL to N(0, I): 0.5 (mu^2 + var - 1 - lv)
            # (`latent_sample_and_kl` passes both or neither)
            kl = torch.addcmul(variance - log_variance, mean, mean).sum(-1).sub_(latent).mul_(0.5)
            kl_by_mean = mean.clone()
        else:  # 0.5 (v - lv - 1 + (var + (mu - m)^2) e^-v)
            prior_precision = prior_log_variance.neg().exp_()
            offset = mean - prior_mean
            terms = torch.addcmul(variance, offset, offset).mul_(prior_precision).add_(prior_log_variance)
            kl = terms.sub_(log_variance).sum(-1).sub_(latent).mul_(0.5)
            kl_by_mean = offset.mul_(prior_precision)
            variance.mul_(prior_precision)
        # d kl / d lv = (var - 1) / 2 (var e^-v with a latent prior); d z / d lv = sd noise / 2
        kl_by_raw = variance.sub_(1).mul_(slope).mul_(0.5)
        z_by_raw = stddev.mul_(noise).mul_(slope).mul_(0.5)
        ctx.save_for_backward(kl_by_mean, kl_by_raw, z_by_raw)
        return z, kl

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_z: Tensor | None, grad_kl: Tensor | None):
        kl_by_mean, kl_by_raw, z_by_raw = ctx.saved_tensors
        grad_z = torch.zeros_like(z_by_raw) if grad_z is None else grad_z
        per_kernel = (z_by_raw.new_zeros(z_by_raw.shape[:-1]) if grad_kl is None else grad_kl).unsqueeze(-1)
        grad_mean = torch.addcmul(grad_z, kl_by_mean, per_kernel)
        grad_raw = torch.mul(grad_z, z_by_raw).addcmul_(kl_by_raw, per_kernel)
        return torch.cat([grad_mean, grad_raw], -1), None, None, None, None


def latent_sample_and_kl(out: Tensor, noise: Tensor, log_min_variance: float,
                         latent_prior: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """The latent sample z (..., Z) and KL(r(z|w) || p(z)) per kernel (...,), from the encoder's output layer
    `out` (..., 2 Z) and standard-normal `noise` (..., Z); `latent_prior` (mean, log-variance), each (..., Z),
    is p(z) kernel by kernel (None: N(0, I)); it gets no gradient."""
    prior_mean, prior_log_variance = latent_prior if latent_prior is not None else (None, None)
    return _LatentSampleAndKL.apply(out, noise, log_min_variance, prior_mean, prior_log_variance)


class _NegativeLogLikelihood(torch.autograd.Function):
    # the forward keeps the local derivatives: d/du = residual / var = -d/d mean, and d/d raw
    @staticmethod
    def forward(ctx, u: Tensor, out: Tensor, log_min_variance: float):
        size = u.shape[-1]
        mean, raw = out[..., :size], out[..., size:]
        log_variance, slope = _log_variance(raw, log_min_variance)
        residual = u - mean
        by_u = residual * log_variance.neg().exp_()  # (u - mean) / var
        squares = residual.mul_(by_u)  # (u - mean)^2 / var
        nll = squares.sum(-1).add_(log_variance.sum(-1)).add_(size * _LOG_2PI).mul_(0.5)
        by_raw = squares.sub_(1).mul_(slope).mul_(-0.5)  # d/d lv = (1 - (u - mean)^2 / var) / 2
        ctx.save_for_backward(by_u, by_raw)
        return nll

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_nll: Tensor):
        by_u, by_raw = ctx.saved_tensors
        per_kernel = grad_nll.unsqueeze(-1)
        grad_u = by_u * per_kernel
        return grad_u, torch.cat([grad_u.neg(), by_raw * per_kernel], -1), None


def negative_log_likelihood(u: Tensor, out: Tensor, log_min_variance: float) -> Tensor:
    """-log N(u; mean, e^lv) summed per kernel (...,), from the decoder's output layer `out` (..., 2 D) and the
    whitened kernels `u` (..., D)."""
    return _NegativeLogLikelihood.apply(u, out, log_min_variance)
