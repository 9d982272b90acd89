"""Several layer groups' DWP bounds in one pass: each group's kernel VAE applied to that group's kernels, all at once.

Why: scored one group after another, the U-Net's 7 groups (26,640 kernels) make about 4,000 operator calls per
step, and with two threads each call over more than a few thousand numbers is also one OpenMP fork and join,
so the pass got slower, not faster, with a second thread (benchmarks/RESULTS.md, issue 25). Here the whole
pass is one chain of large operations, whatever the number of groups.

Layout: the kernels of every group are cut into blocks of `BLOCK_ROWS` rows, the last block of a group
padded with zero kernels, so that all groups' kernels form one (blocks, BLOCK_ROWS, k^d) tensor. A linear
layer is then one batched matmul (`torch.baddbmm`) against each block's own group's weight, gathered from
the groups' weights stacked; element-wise steps run once over everything; the padding rows are masked out
of the sum. The two ends of the bound are single autograd nodes (`bayesprior_dwp.fused`). It is the same
estimator as `KernelVAE.negative_elbo` group by group, given the same draws (tests/test_dwp_blockwise.py).

What changes only with the priors' buffers or frozen parameters (the whitening, the frozen decoders, the
anchors, the layout) is built once and kept until a source tensor changes (`FrozenParts`). The encoders,
fine-tuned by default, are gathered at every step; their gradients flow back through the gather to each
group's own parameters.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .fused import latent_sample_and_kl, negative_log_likelihood
from .vae import GaussianHead

#: kernels per block: at most BLOCK_ROWS - 1 padding rows per group (0.9 % of the U-Net's kernels), and
#: batched matmuls of this height run as fast per row as one large matmul on CPU
BLOCK_ROWS = 256


class BlockLayout:
    """Where each group's kernels lie among the blocks: group g fills ceil(n_g / rows) whole blocks."""

    def __init__(self, counts: Sequence[int], rows: int = BLOCK_ROWS):
        self.counts = tuple(int(n) for n in counts)
        self.rows = rows
        self.blocks = tuple(math.ceil(n / rows) for n in self.counts)
        self.padding = tuple(b * rows - n for b, n in zip(self.blocks, self.counts, strict=True))

    @property
    def n_blocks(self) -> int:
        return sum(self.blocks)

    def block_group(self, device: torch.device) -> Tensor:
        """The group of each block, (blocks,)."""
        return torch.repeat_interleave(torch.arange(len(self.counts), device=device),
                                       torch.tensor(self.blocks, device=device))

    def mask(self, device: torch.device, dtype: torch.dtype) -> Tensor:
        """1 for a kernel's row, 0 for a padding row, flattened: (blocks * rows,)."""
        mask = torch.zeros(self.n_blocks * self.rows, device=device, dtype=dtype)
        start = 0
        for n, blocks in zip(self.counts, self.blocks, strict=True):
            mask[start:start + n] = 1
            start += blocks * self.rows
        return mask

    def pack(self, pieces: Sequence[Sequence[Tensor]]) -> Tensor:
        """Each group's row pieces (n, features), in group order, as one padded (blocks, rows, features) tensor."""
        first = pieces[0][0]
        zeros = first.new_zeros(max(self.padding), first.shape[-1])
        rows = [part for group, pad in zip(pieces, self.padding, strict=True) for part in (*group, zeros[:pad])]
        return torch.cat(rows).view(self.n_blocks, self.rows, -1)


@dataclass(frozen=True, slots=True)  # not a NamedTuple: mypy does not see a NamedTuple's __call__
class _BlockLinear:
    """A linear layer whose weight (blocks, in, out) and bias (blocks, 1, out) are those of each block's group."""

    weight: Tensor
    bias: Tensor

    def __call__(self, x: Tensor) -> Tensor:
        # the bias added in place after the matmul: faster on CPU than baddbmm, which first copies it out
        return torch.bmm(x, self.weight).add_(self.bias)


class BlockHead:
    """The networks of several groups' `GaussianHead`s as one: block b goes through the network of its group.

    The heads share an architecture (linear and element-wise activation layers, `KernelVAE.batch_signature`);
    a linear layer's weights are stacked over the groups and gathered per block, an activation is shared.
    Called on (blocks, rows, in), it returns the output layer (blocks, rows, 2 * out), before the split into
    mean and log-variance (`bayesprior_dwp.fused`).
    """

    def __init__(self, heads: Sequence[GaussianHead], block_group: Tensor):
        self.log_min_variance = heads[0].log_min_variance
        self.steps: list[Callable[[Tensor], Tensor]] = []
        for layers in zip(*(head.net for head in heads), strict=True):
            if isinstance(layers[0], nn.Linear):
                weight = torch.stack([layer.weight for layer in layers]).index_select(0, block_group)
                bias = torch.stack([layer.bias for layer in layers]).index_select(0, block_group)
                self.steps.append(_BlockLinear(weight.transpose(1, 2), bias.unsqueeze(1)))
            else:  # an ELU (`KernelVAE.batch_signature`), in place: its input, a fresh matmul output, is not kept
                self.steps.append(partial(F.elu, alpha=layers[0].alpha, inplace=True))

    def __call__(self, x: Tensor) -> Tensor:
        for step in self.steps:
            x = step(x)
        return x


def _stamp(t: Tensor) -> tuple:
    # a tensor's identity for the cache: an in-place change moves its version, `.to()` gives new storage
    return (t.data_ptr(), t._version, t.device, t.dtype, tuple(t.shape))


class FrozenParts:
    """Tensors built from tensors that need no gradient, rebuilt only when one of those changes.

    `get(name, sources, build)` returns `build()`'s result, kept while every tensor of `sources` is unchanged
    (same storage, version, device, dtype and shape); if any source requires grad, it builds anew every time,
    with the graph, so trainable parameters (a fine-tuned encoder) are never frozen by mistake.
    """

    def __init__(self) -> None:
        self._kept: dict[str, tuple[tuple, Any]] = {}

    def get(self, name: str, sources: Sequence[Tensor], build: Callable[[], Any], key: tuple = ()) -> Any:
        if any(t.requires_grad for t in sources) or torch.is_inference_mode_enabled():
            return build()  # (inference tensors could not be kept for a later step with gradients)
        stamp = key + tuple(_stamp(t) for t in sources)
        kept = self._kept.get(name)
        if kept is None or kept[0] != stamp:
            with torch.no_grad():
                kept = (stamp, build())
            self._kept[name] = kept
        return kept[1]


def blockwise_negative_elbo_sum(vaes: Sequence[Any], kernels: Sequence[Sequence[Tensor]], frozen: FrozenParts,
                                anchors: Sequence[Sequence[tuple[Tensor, Tensor]]] | None = None,
                                latent_noise: Sequence[Tensor] | None = None) -> Tensor:
    """Sum over every group g and kernel w of `vaes[g].negative_elbo(w, noise, anchor)`, in one pass.

    Args:
        vaes: the groups' `KernelVAE`s, of one architecture (`KernelVAE.batch_signature`), device and dtype.
        kernels: per group, its layers' kernels, each (n, k^d).
        frozen: where the parts that need no gradient are kept between calls (one per set of `vaes`).
        anchors: per group, per layer, its kernels' latent priors (mean, log-variance), each (n, latent_dim), as
            in `kernels`; None: N(0, I).
        latent_noise: per group, the standard-normal draws of its latent samples (n_g, latent_dim); drawn if None.
    Returns:
        A scalar tensor.
    """
    layout = BlockLayout([sum(int(w.shape[0]) for w in group) for group in kernels])
    first = vaes[0]
    device, dtype, latent = first.data_mean.device, first.data_mean.dtype, first.latent_dim
    key = (layout.counts, tuple(id(vae) for vae in vaes), device, dtype)
    blocks = frozen.get("layout", [], lambda: (layout.block_group(device), layout.mask(device, dtype)), key)
    block_group, mask = blocks
    whitening = frozen.get("whitening", [t for vae in vaes for t in (vae.data_mean, vae.data_whitening)],
                           lambda: _block_whitening(vaes, block_group), key)
    log_det = frozen.get("log_det", [vae.data_log_det for vae in vaes],
                         lambda: sum(n * vae.data_log_det for n, vae in zip(layout.counts, vaes, strict=True)), key)
    encoder = frozen.get("encoder", list(_parameters(vaes, "encoder")),
                         lambda: BlockHead([vae.encoder for vae in vaes], block_group), key)
    decoder = frozen.get("decoder", list(_parameters(vaes, "decoder")),
                         lambda: BlockHead([vae.decoder for vae in vaes], block_group), key)
    latent_prior = None
    if anchors is not None:
        latent_prior = frozen.get("anchors", [t for group in anchors for pair in group for t in pair],
                                  lambda: tuple(layout.pack([[pair[i] for pair in group] for group in anchors])
                                                for i in (0, 1)), key)
    noise = (torch.randn(layout.n_blocks, layout.rows, latent, device=device, dtype=dtype) if latent_noise is None
             else layout.pack([[n] for n in latent_noise]))
    u = whitening(layout.pack(kernels))
    z, latent_kl = latent_sample_and_kl(encoder(u), noise, encoder.log_min_variance, latent_prior)
    per_kernel = latent_kl + negative_log_likelihood(u, decoder(z), decoder.log_min_variance)
    return torch.dot(per_kernel.flatten().to(mask.dtype), mask) + log_det


def _block_whitening(vaes: Sequence[Any], block_group: Tensor) -> _BlockLinear:
    # u = w L^-T - mean L^-T, as in `KernelVAE.whiten`, with each block's group's L and mean
    whitening = torch.stack([vae.data_whitening.T for vae in vaes])
    offset = -torch.stack([vae.data_mean @ vae.data_whitening.T for vae in vaes])
    return _BlockLinear(whitening.index_select(0, block_group), offset.index_select(0, block_group).unsqueeze(1))


def _parameters(vaes: Sequence[Any], head: str):
    for vae in vaes:
        yield from getattr(vae, head).parameters()

