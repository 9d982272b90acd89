"""The kernel VAE: a latent-variable model of k x k x k convolution kernels.

    r(z | w) = N(mu_z(w), diag sigma_z^2(w))     encoder (fine-tuned on the target by default)
    p(w | z) = N(mu_w(z), diag sigma_w^2(z))     decoder (frozen on the target)
    p(z)     = N(0, I)

Why MLPs and not the paper's convolutional VAE (dwp-reference.md (c), ~960k parameters): a 3x3x3
kernel is 27 numbers, and the prior scores every kernel of the target network at every training step
(26,640 kernels for the U-Net), so the VAE's cost per kernel adds directly to the step time. The
paper's decoder spends ~1M multiply-adds per kernel, mostly on a 128-channel 3x3x3 convolution whose
input is 1x1x1 (only the centre tap is live) - a dense layer in disguise. Two hidden layers of 32
units on the flattened kernel see all 27 values at once (the receptive field of the conv stack is the
whole kernel anyway) for ~5k multiply-adds per kernel.

The decoder variance is learned per element and NOT bounded by tanh (the reference code's tanh
bound kept sigma_w >= 0.61, making p(w|z) nearly flat for raw kernels of element std ~1e-2):
``variance = exp(raw) + min_variance`` with an unbounded linear ``raw``, a smooth floor that only
stops the likelihood from diverging. Kernels are divided by a fixed `data_scale` (the bank's element
std) before the networks and the outputs are mapped back, so the networks work at unit scale while
every density is in raw kernel units (the change of variables is exact).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from bayesprior.errors import ConfigError

_LOG_2PI = math.log(2 * math.pi)


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ELU())
    return nn.Sequential(*layers)


class GaussianHead(nn.Module):
    """An MLP whose output is split into a mean and a log-variance of size `out_features`.

    The log-variance is ``log(exp(raw) + min_variance)``: unbounded above and below except for the
    smooth floor ``log(min_variance)``.
    """

    def __init__(self, in_features: int, out_features: int, hidden: int, depth: int, min_variance: float):
        super().__init__()
        self.out_features = out_features
        self.net = _mlp([in_features] + [hidden] * depth + [2 * out_features])
        self.log_min_variance = math.log(min_variance)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean, raw = self.net(x).split(self.out_features, dim=-1)
        # log(exp(raw) + min_variance), in the form that is cheapest on CPU
        return mean, raw + nn.functional.softplus(self.log_min_variance - raw)


class KernelVAE(nn.Module):
    """VAE over flattened k^d kernels; see the module docstring.

    Args:
        kernel_size: spatial shape of a kernel, e.g. (3, 3, 3).
        latent_dim: size of z (6 as in the paper).
        hidden: width of the hidden layers of encoder and decoder.
        depth: number of hidden layers of each.
        min_variance: floor of the variances, in units of `data_scale` squared.
    """

    def __init__(self, kernel_size: Sequence[int] = (3, 3, 3), latent_dim: int = 6, hidden: int = 32,
                 depth: int = 2, min_variance: float = 1e-6):
        super().__init__()
        kernel_size = tuple(int(k) for k in kernel_size)
        for name, value in (("latent_dim", latent_dim), ("hidden", hidden), ("depth", depth)):
            if not (isinstance(value, int) and value >= 1):
                raise ConfigError(f"KernelVAE: {name} must be a positive integer, got {value!r}")
        if not kernel_size or any(k < 1 for k in kernel_size):
            raise ConfigError(f"KernelVAE: kernel_size must be positive sizes, got {kernel_size!r}")
        if not (min_variance > 0):
            raise ConfigError(f"KernelVAE: min_variance must be > 0, got {min_variance!r}")
        self.kernel_size = kernel_size
        self.n_elements = math.prod(kernel_size)
        self.latent_dim = latent_dim
        self.hparams = {"kernel_size": list(kernel_size), "latent_dim": latent_dim, "hidden": hidden,
                        "depth": depth, "min_variance": float(min_variance)}
        self.encoder = GaussianHead(self.n_elements, latent_dim, hidden, depth, min_variance)
        self.decoder = GaussianHead(latent_dim, self.n_elements, hidden, depth, min_variance)
        self.register_buffer("data_scale", torch.tensor(1.0))

    def encode(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """r(z | w) for flattened kernels w (n, k^d): mean and log-variance, each (n, latent_dim)."""
        return self.encoder(w / self.data_scale)

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """p(w | z) in raw kernel units: mean and log-variance, each (n, k^d)."""
        mean, log_variance = self.decoder(z)
        return mean * self.data_scale, log_variance + 2 * self.data_scale.log()

    def negative_elbo(self, w: Tensor, noise: Tensor | None = None) -> Tensor:
        """Per-kernel negative ELBO (beta = 1, one latent sample), in nats: (n,).

        `noise` (n, latent_dim) is the standard-normal draw of the latent sample (drawn if None).
        """
        mu_z, lv_z = self.encode(w)
        noise = torch.randn_like(mu_z) if noise is None else noise
        z = mu_z + (0.5 * lv_z).exp() * noise
        mean, lv_w = self.decode(z)
        return gaussian_kl_to_standard(mu_z, lv_z).sum(-1) - gaussian_log_prob(w, mean, lv_w).sum(-1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """`n` kernels drawn from p(w) = E_z p(w | z): (n, *kernel_size)."""
        device = self.data_scale.device
        z = torch.randn(n, self.latent_dim, device=device, generator=generator)
        mean, lv = self.decode(z)
        w = mean + (0.5 * lv).exp() * torch.randn(mean.shape, device=device, generator=generator)
        return w.reshape((n,) + self.kernel_size)


def gaussian_log_prob(x: Tensor, mean: Tensor, log_variance: Tensor) -> Tensor:
    """Element-wise log N(x; mean, exp(log_variance))."""
    return -0.5 * (_LOG_2PI + log_variance + (x - mean) ** 2 * torch.exp(-log_variance))


def gaussian_kl_to_standard(mean: Tensor, log_variance: Tensor) -> Tensor:
    """Element-wise KL(N(mean, exp(log_variance)) || N(0, 1))."""
    return 0.5 * (mean ** 2 + log_variance.exp() - 1.0 - log_variance)
