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
stops the likelihood from diverging.

Whitening: the networks see kernels whitened by the group's full-covariance Gaussian,
``u = L^-1 (w - mean)`` with ``L L^T`` the kernels' covariance (`set_reference`), and p(w|z) is
N(mean + L m(z), L diag(s^2(z)) L^T) in raw units (the change of variables is exact: log p(w|z) =
log N(u; m, diag s^2) - log|det L|). The last layers of both networks start at zero, so a fresh VAE
*is* the full-covariance Gaussian (its ELBO equals that Gaussian's log-likelihood) and training can
only add non-Gaussian structure on top of it (benchmarks/RESULTS.md, "Structure report").
"""
from __future__ import annotations

import math
from itertools import pairwise
from typing import Sequence, cast

import torch
from torch import Tensor, nn

from bayesprior.errors import ConfigError

_LOG_2PI = math.log(2 * math.pi)


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(pairwise(sizes)):
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

    # buffers (register_buffer), declared for the type checker: the whitening reference N(mean, L L^T)
    data_mean: Tensor
    data_cholesky: Tensor  # L
    data_whitening: Tensor  # L^-1
    data_log_det: Tensor  # log|det L|

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
        for head in (self.encoder, self.decoder):  # start as the reference Gaussian (module docstring)
            output_layer = cast(nn.Linear, head.net[-1])  # `_mlp` ends every network with a linear layer
            nn.init.zeros_(output_layer.weight)
            nn.init.zeros_(output_layer.bias)
        d = self.n_elements
        self.register_buffer("data_mean", torch.zeros(d))
        self.register_buffer("data_cholesky", torch.eye(d))
        self.register_buffer("data_whitening", torch.eye(d))  # L^-1, kept so whitening is one matmul
        self.register_buffer("data_log_det", torch.zeros(()))  # log|det L|

    def set_reference(self, mean: Tensor, covariance: Tensor) -> None:
        """Whiten by N(mean, covariance) (the group's full-covariance Gaussian); see the module docstring."""
        mean = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        covariance = torch.as_tensor(covariance, dtype=torch.float64)
        cholesky, info = torch.linalg.cholesky_ex(covariance)
        if int(info) != 0 or mean.shape != (self.n_elements,):
            raise ConfigError(f"KernelVAE: the reference needs a mean of {self.n_elements} values and a positive "
                              f"definite {self.n_elements}x{self.n_elements} covariance")
        eye = torch.eye(self.n_elements, dtype=torch.float64)
        with torch.no_grad():
            self.data_mean.copy_(mean)
            self.data_cholesky.copy_(cholesky)
            self.data_whitening.copy_(torch.linalg.solve_triangular(cholesky, eye, upper=False))
            self.data_log_det.fill_(float(cholesky.diagonal().log().sum()))

    def batch_signature(self) -> tuple | None:
        """What VAEs must share to be evaluated as one (`bayesprior_dwp.batched`): hyper-parameters, device and dtype;
        None if the encoder or decoder is not this class's own `GaussianHead` of linear and ELU layers."""
        heads = (self.encoder, self.decoder)
        standard = all(type(head) is GaussianHead and all(type(m) in (nn.Linear, nn.ELU) for m in head.net)
                       for head in heads)
        if not standard:
            return None
        alphas = tuple(m.alpha for head in heads for m in head.net if type(m) is nn.ELU)
        return (tuple(sorted((k, str(v)) for k, v in self.hparams.items())), alphas, self.data_mean.device,
                self.data_mean.dtype)

    def whiten(self, w: Tensor) -> Tensor:
        """u = L^-1 (w - mean) for flattened kernels (n, k^d)."""
        whitening = self.data_whitening.T
        # one addmm, u = w L^-T - mean L^-T: no kernel-sized temporary for w - mean
        return torch.addmm(-(self.data_mean @ whitening), w, whitening)

    def encode(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """r(z | w) for flattened kernels w (n, k^d): mean and log-variance, each (n, latent_dim)."""
        return self.encoder(self.whiten(w))

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """p(u | z) of the *whitened* kernel u: mean and log-variance, each (n, k^d)."""
        return self.decoder(z)

    def log_likelihood(self, w: Tensor, z: Tensor) -> Tensor:
        """log p(w | z) in raw kernel units, per kernel: (n,)."""
        return self._whitened_log_likelihood(self.whiten(w), z)

    def _whitened_log_likelihood(self, u: Tensor, z: Tensor) -> Tensor:
        mean, log_variance = self.decoder(z)
        return gaussian_log_prob(u, mean, log_variance).sum(-1) - self.data_log_det

    def negative_elbo(self, w: Tensor, noise: Tensor | None = None,
                      latent_prior: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Per-kernel negative ELBO (beta = 1, one latent sample), in nats: (n,).

        `noise` (n, latent_dim) is the standard-normal draw of the latent sample (drawn if None).
        `latent_prior` (mean, log-variance), each (n, latent_dim), replaces p(z) = N(0, I) kernel by kernel
        (the anchored DWP's r(z | source kernel)); None is N(0, I).
        The kernels are whitened once, for the encoder and the likelihood alike.
        """
        u = self.whiten(w)
        mu_z, lv_z = self.encoder(u)
        noise = torch.randn_like(mu_z) if noise is None else noise
        z = torch.addcmul(mu_z, (0.5 * lv_z).exp(), noise)
        latent_kl = (gaussian_kl_to_standard(mu_z, lv_z) if latent_prior is None
                     else gaussian_kl(mu_z, lv_z, *latent_prior))
        return latent_kl.sum(-1) - self._whitened_log_likelihood(u, z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """`n` kernels drawn from p(w) = E_z p(w | z): (n, *kernel_size)."""
        device = self.data_mean.device
        z = torch.randn(n, self.latent_dim, device=device, generator=generator)
        mean, lv = self.decode(z)
        u = mean + (0.5 * lv).exp() * torch.randn(mean.shape, device=device, generator=generator)
        return (self.data_mean + u @ self.data_cholesky.T).reshape((n,) + self.kernel_size)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # prior files written before whitening held one scalar `data_scale`: whitening by scale * I
        if "data_scale" in state_dict and "data_cholesky" not in state_dict:
            state_dict = dict(state_dict)
            scale = float(state_dict.pop("data_scale"))
            d = self.n_elements
            state_dict.update({"data_mean": torch.zeros(d), "data_cholesky": scale * torch.eye(d),
                               "data_whitening": torch.eye(d) / scale,
                               "data_log_det": torch.tensor(d * math.log(scale))})
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def gaussian_log_prob(x: Tensor, mean: Tensor, log_variance: Tensor) -> Tensor:
    """Element-wise log N(x; mean, exp(log_variance))."""
    return -0.5 * (_LOG_2PI + log_variance + (x - mean) ** 2 * torch.exp(-log_variance))


def gaussian_kl_to_standard(mean: Tensor, log_variance: Tensor) -> Tensor:
    """Element-wise KL(N(mean, exp(log_variance)) || N(0, 1))."""
    return 0.5 * (mean ** 2 + log_variance.exp() - 1.0 - log_variance)


def gaussian_kl(mean: Tensor, log_variance: Tensor, prior_mean: Tensor, prior_log_variance: Tensor) -> Tensor:
    """Element-wise KL(N(mean, exp(log_variance)) || N(prior_mean, exp(prior_log_variance)))."""
    return 0.5 * (prior_log_variance - log_variance - 1.0
                  + (log_variance.exp() + (mean - prior_mean) ** 2) * torch.exp(-prior_log_variance))
