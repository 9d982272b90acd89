"""Issue 25's probe: does torch.compile make the DWP's KL pass cheaper? The U-Net under the DWP (7 kernel groups,
26,640 kernels), `bm.kl()` forward + backward, with the groups' bound computed three ways on the same block layout:

- fused eager: the library's pass (`bayesprior_dwp.batched`, its two ends single autograd nodes);
- plain eager: the same formulas written with autograd's element-wise operators (what compile starts from);
- compiled: that plain function through `torch.compile` (inductor: it fuses the element-wise steps, forward and
  backward, around the batched matmuls).

    python benchmarks/probe_dwp_kl_compile.py --dwp PRIOR_FILE --threads 1

Prints the compile time and, over 3 interleaved rounds of 15 timed passes each (2 untimed before each), the median
and minimum wall time of a pass. A probe, not a library path: the unanchored bound only.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional as F

import bayesprior_dwp.batched as batched
import bayesprior_dwp.prior as dwp_prior

sys.path.insert(0, str(Path(__file__).parent))
from bench_overhead import build_network, make_variants  # noqa: E402

_LOG_2PI = math.log(2 * math.pi)
SMALL_INPUT = (1, 1, 16, 8, 8)  # as profile_dwp_kl.py: the forward before the KL only draws the weight sample


def _head(x: Tensor, linears: list[tuple[Tensor, Tensor]], alpha: float, log_min_variance: float):
    for i, (weight, bias) in enumerate(linears):
        x = torch.bmm(x, weight) + bias
        if i < len(linears) - 1:
            x = F.elu(x, alpha)
    size = x.shape[-1] // 2
    raw = x[..., size:]
    return x[..., :size], raw + F.softplus(log_min_variance - raw)


def plain_bound(packed: Tensor, whitening: tuple[Tensor, Tensor], encoder: list[tuple[Tensor, Tensor]],
                decoder: list[tuple[Tensor, Tensor]], alphas: tuple[float, float], noise: Tensor, mask: Tensor,
                log_det: Tensor, log_min_variances: tuple[float, float]) -> Tensor:
    """`KernelVAE.negative_elbo`'s formulas over the block layout, summed over the real rows."""
    u = torch.bmm(packed, whitening[0]) + whitening[1]
    mean_z, lv_z = _head(u, encoder, alphas[0], log_min_variances[0])
    z = mean_z + torch.exp(0.5 * lv_z) * noise
    latent_kl = 0.5 * (mean_z * mean_z + torch.exp(lv_z) - 1.0 - lv_z).sum(-1)
    mean_u, lv_u = _head(z, decoder, alphas[1], log_min_variances[1])
    residual = u - mean_u
    nll = 0.5 * (residual * residual * torch.exp(-lv_u) + lv_u + _LOG_2PI).sum(-1)
    return torch.dot((latent_kl + nll).flatten(), mask) + log_det


def via(bound: Callable[..., Tensor]):
    """A stand-in for `blockwise_negative_elbo_sum` that builds the library's block layout and calls `bound`."""
    def blockwise(vaes, kernels, frozen, anchors=None, latent_noise=None):
        if anchors is not None:
            raise SystemExit("the probe covers the unanchored DWP only")
        layout = batched.BlockLayout([sum(int(w.shape[0]) for w in group) for group in kernels])
        device, dtype, latent = vaes[0].data_mean.device, vaes[0].data_mean.dtype, vaes[0].latent_dim
        key = (layout.counts, tuple(id(vae) for vae in vaes), device, dtype)
        block_group, mask = frozen.get("layout", [], lambda: (layout.block_group(device),
                                                              layout.mask(device, dtype)), key)
        whitening = frozen.get("whitening", [t for vae in vaes for t in (vae.data_mean, vae.data_whitening)],
                               lambda: batched._block_whitening(vaes, block_group), key)
        log_det = sum(n * vae.data_log_det for n, vae in zip(layout.counts, vaes, strict=True))
        heads = [frozen.get(name, list(batched._parameters(vaes, name)),
                            lambda name=name: batched.BlockHead([getattr(vae, name) for vae in vaes], block_group),
                            key) for name in ("encoder", "decoder")]
        linears = [[(s.weight, s.bias) for s in head.steps if isinstance(s, batched._BlockLinear)] for head in heads]
        alphas = tuple(next(s.keywords["alpha"] for s in head.steps if not isinstance(s, batched._BlockLinear))
                       for head in heads)
        noise = torch.randn(layout.n_blocks, layout.rows, latent, device=device, dtype=dtype)
        return bound(layout.pack(kernels), (whitening.weight, whitening.bias), linears[0], linears[1], alphas, noise,
                     mask, torch.as_tensor(log_det), tuple(head.log_min_variance for head in heads))
    return blockwise


def kl_pass_times(model, x: Tensor, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        model(x)
        start = time.perf_counter()
        model.kl().backward()
        times.append(time.perf_counter() - start)
    return times


def same_value(model, x: Tensor, variants: list[tuple[str, Callable]]) -> str:
    """The pass's value under each variant from the same random state: they must agree (same estimator)."""
    values = []
    for _, blockwise in variants:
        dwp_prior.blockwise_negative_elbo_sum = blockwise
        torch.manual_seed(0)
        model(x)
        values.append(float(model.kl().detach()))
    return ", ".join(f"{name} {value:.6g}" for (name, _), value in zip(variants, values, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dwp", required=True, metavar="PRIOR_FILE", help="a DWP prior file of the U-Net's groups")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = make_variants(build_network("unet3d"), ["dwp-sample"], "unet3d", args.dwp)[0].model
    x = torch.randn(SMALL_INPUT)
    fused = dwp_prior.blockwise_negative_elbo_sum
    compiled = via(torch.compile(plain_bound, dynamic=False))
    start = time.perf_counter()
    dwp_prior.blockwise_negative_elbo_sum = compiled
    kl_pass_times(model, x, 2)
    print(f"# torch {torch.__version__}, {args.threads} thread(s); compile and 2 passes: "
          f"{time.perf_counter() - start:.1f} s", flush=True)
    variants = [("fused eager", fused), ("plain eager", via(plain_bound)), ("compiled", compiled)]
    print(f"# KL from one random state: {same_value(model, x, variants)}", flush=True)
    for round_ in range(3):
        for name, blockwise in variants:
            dwp_prior.blockwise_negative_elbo_sum = blockwise
            kl_pass_times(model, x, 2)
            times = kl_pass_times(model, x, 15)
            print(f"round {round_ + 1}: {name:12s} median {1e3 * statistics.median(times):6.1f} ms, "
                  f"min {1e3 * min(times):6.1f} ms", flush=True)


if __name__ == "__main__":
    main()
