"""The two ends of the kernel VAE's bound as single autograd nodes, with their gradients written out.

Both follow `GaussianHead`'s parameterisation (an output layer `out` split into a mean and a raw log-variance,
log-variance = raw + softplus(log(min_variance) - raw)) and compute exactly the formulas of `vae.py`:

- `latent_sample_and_kl`: from the encoder's output layer, the reparameterised latent sample
  z = mu + exp(lv / 2) * noise and, per kernel, KL(N(mu, e^lv) || p(z)), p(z) = N(0, I) or a given N(m, e^v);
- `negative_log_likelihood`: from the decoder's output layer, -log N(u; mean, e^lv) summed per kernel.

Why: written with autograd's element-wise operators, these two ends made about 60 passes over arrays of
kernels x 6 to kernels x 54 numbers per step, forward and backward, most of them small operations of their
own; as two nodes that keep only what their gradients need, about 25. The gradients are those of the formulas
(tests/test_dwp_blockwise.py compares values and gradients with `KernelVAE.negative_elbo`).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

_LOG_2PI = math.log(2 * math.pi)


def _log_variance(raw: Tensor, log_min_variance: float) -> tuple[Tensor, Tensor]:
    """log(exp(raw) + min_variance) as `GaussianHead` computes it, and log(min_variance) - raw (for the slope)."""
    shifted = torch.rsub(raw, log_min_variance)
    return F.softplus(shifted).add_(raw), shifted


def _log_variance_slope(shifted: Tensor) -> Tensor:
    """d log-variance / d raw = sigmoid(raw - log(min_variance)), from `shifted` = log(min_variance) - raw
    (overwritten)."""
    return torch.sigmoid(shifted.neg_())


class _LatentSampleAndKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, out: Tensor, noise: Tensor, log_min_variance: float, prior_mean: Tensor | None,
                prior_log_variance: Tensor | None):
        latent = out.shape[-1] // 2
        mean, raw = out[..., :latent], out[..., latent:]
        log_variance, shifted = _log_variance(raw, log_min_variance)
        stddev = log_variance.mul(0.5).exp_()
        z = torch.addcmul(mean, stddev, noise)
        variance = stddev * stddev
        if prior_mean is None:  # KL to N(0, I): 0.5 (mu^2 + var - 1 - lv)
            terms = torch.addcmul(variance.sub_(log_variance), mean, mean)
            kl = terms.sum(-1).sub_(latent).mul_(0.5)
            prior_precision = None
        else:  # 0.5 (v - lv - 1 + (var + (mu - m)^2) e^-v)
            prior_precision = prior_log_variance.neg().exp_()
            offset = mean - prior_mean
            terms = torch.addcmul(variance, offset, offset).mul_(prior_precision).add_(prior_log_variance).sub_(log_variance)
            kl = terms.sum(-1).sub_(latent).mul_(0.5)
        ctx.save_for_backward(out, noise, stddev, shifted, prior_mean, prior_precision)
        ctx.anchored = prior_mean is not None
        return z, kl

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_z: Tensor | None, grad_kl: Tensor | None):
        out, noise, stddev, shifted, prior_mean, prior_precision = ctx.saved_tensors
        latent = out.shape[-1] // 2
        mean = out[..., :latent]
        grad_z = torch.zeros_like(stddev) if grad_z is None else grad_z
        grad_kl = stddev.new_zeros(stddev.shape[:-1]) if grad_kl is None else grad_kl
        per_kernel = grad_kl.unsqueeze(-1)
        grad = torch.empty_like(out)
        # d/d mean: dz/dmean = 1; dKL/dmean = mu, or (mu - m) e^-v
        if ctx.anchored:
            kl_slope = (mean - prior_mean).mul_(prior_precision)
        else:
            kl_slope = mean
        torch.addcmul(grad_z, kl_slope, per_kernel, out=grad[..., :latent])
        # d/d log-variance: dz/dlv = sd noise / 2; dKL/dlv = (var - 1) / 2, or (var e^-v - 1) / 2
        variance = stddev * stddev
        if ctx.anchored:
            variance.mul_(prior_precision)
        grad_log_variance = variance.sub_(1).mul_(per_kernel).addcmul_(grad_z * noise, stddev).mul_(0.5)
        torch.mul(grad_log_variance, _log_variance_slope(shifted), out=grad[..., latent:])
        return grad, None, None, None, None


def latent_sample_and_kl(out: Tensor, noise: Tensor, log_min_variance: float,
                         latent_prior: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """The latent sample z (..., Z) and KL(r(z|w) || p(z)) per kernel (...,), from the encoder's output layer
    `out` (..., 2 Z) and standard-normal `noise` (..., Z); `latent_prior` (mean, log-variance), each (..., Z),
    is p(z) kernel by kernel (None: N(0, I)); it gets no gradient."""
    prior_mean, prior_log_variance = latent_prior if latent_prior is not None else (None, None)
    return _LatentSampleAndKL.apply(out, noise, log_min_variance, prior_mean, prior_log_variance)


class _NegativeLogLikelihood(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: Tensor, out: Tensor, log_min_variance: float):
        size = u.shape[-1]
        mean, raw = out[..., :size], out[..., size:]
        log_variance, shifted = _log_variance(raw, log_min_variance)
        residual = u - mean
        scaled = residual * log_variance.neg().exp_()  # (u - mean) / var
        terms = residual.mul_(scaled).add_(log_variance)  # (u - mean)^2 / var + lv
        nll = terms.sum(-1).add_(size * _LOG_2PI).mul_(0.5)
        ctx.save_for_backward(scaled, terms, log_variance, shifted)
        return nll

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_nll: Tensor):
        scaled, terms, log_variance, shifted = ctx.saved_tensors
        size = scaled.shape[-1]
        per_kernel = grad_nll.unsqueeze(-1)
        grad_u = scaled * per_kernel  # d/du = (u - mean) / var
        grad_out = torch.empty(scaled.shape[:-1] + (2 * size,), dtype=scaled.dtype, device=scaled.device)
        torch.neg(grad_u, out=grad_out[..., :size])
        # d/d lv = (1 - (u - mean)^2 / var) / 2; `terms` holds (u - mean)^2 / var + lv
        grad_log_variance = torch.sub(log_variance, terms).add_(1).mul_(per_kernel).mul_(0.5)
        torch.mul(grad_log_variance, _log_variance_slope(shifted), out=grad_out[..., size:])
        return grad_u, grad_out, None


def negative_log_likelihood(u: Tensor, out: Tensor, log_min_variance: float) -> Tensor:
    """-log N(u; mean, e^lv) summed per kernel (...,), from the decoder's output layer `out` (..., 2 D) and the
    whitened kernels `u` (..., D)."""
    return _NegativeLogLikelihood.apply(u, out, log_min_variance)
