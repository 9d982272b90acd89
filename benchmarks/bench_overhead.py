"""Overhead of a Bayesian training step: plain network vs bayesprior (Gaussian prior, `lrt` and `sample`)
vs the same network converted by bayesian-torch's `dnn_to_bnn`.

    python benchmarks/bench_overhead.py                      # 21-conv residual 3D net, 32^3 and 64^3
    python benchmarks/bench_overhead.py --sizes 32 --repeats 9
    python benchmarks/bench_overhead.py --arch unet3d        # the paper's U-Net, 40x48x40 and 64^3

One timed step = zero_grad + forward + loss (+ KL) + backward + Adam step, batch 2. The variants are
interleaved (one step of each per round, the order rotated every round) after warm-up rounds, so a
machine shared with other jobs slows all of them alike; the table gives the median and minimum step
times, the median over rounds of the per-round ratio to plain, and the ratio of minimum step times
(contention only ever slows a step, so the minimum is the best estimate of the uncontended cost).

bayesian-torch is optional (`pip install --no-deps bayesian-torch`: its torchvision dependency would
replace the pinned torch); without it its row is skipped.
"""
from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
from typing import Callable

import torch
from torch import nn

import bayesprior as bp

N_TRAIN = 20  # dataset size for the ELBO scaling (N/B) * NLL + KL; only sets the balance, not the cost
BATCH = 2


# ----------------------------------------------------------------------------------------- networks
class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.norm1 = nn.BatchNorm3d(channels)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)
        self.norm2 = nn.BatchNorm3d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(x + self.norm2(self.conv2(y)))


class ResidualNet3d(nn.Module):
    """21 Conv3d layers: a stem, 3 blocks at 16 channels, a stride-2 conv, 6 blocks at 32 channels, a 1x1 head."""

    def __init__(self, in_channels: int = 1, classes: int = 2, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv3d(in_channels, width, 3, padding=1), nn.BatchNorm3d(width), nn.ReLU())
        self.stage1 = nn.Sequential(*[ResidualBlock(width) for _ in range(3)])
        self.down = nn.Sequential(nn.Conv3d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm3d(2 * width),
                                  nn.ReLU())
        self.stage2 = nn.Sequential(*[ResidualBlock(2 * width) for _ in range(6)])
        self.head = nn.Conv3d(2 * width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage2(self.down(self.stage1(self.stem(x)))))


def build_network(arch: str) -> nn.Module:
    if arch == "resnet":
        return ResidualNet3d()
    from bayesprior.plugins import architecture_registry

    if arch not in architecture_registry():
        sys.exit(f"architecture {arch!r} is not registered (known: {architecture_registry().names()})")
    return bp.build_architecture(arch)


def count_convs(model: nn.Module) -> int:
    return sum(isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)) for m in model.modules())


# ----------------------------------------------------------------------------------------- variants
class Variant:
    """One network and its optimiser; `step(x, target)` runs one training step."""

    def __init__(self, name: str, model: nn.Module, loss_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]):
        self.name = name
        self.model = model.train()
        self.loss_fn = loss_fn
        self.optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step(self, x: torch.Tensor, target: torch.Tensor) -> None:
        self.optimiser.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model, x, target)
        loss.backward()
        self.optimiser.step()


def _nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # mean per case of the voxel-summed cross-entropy, as the ELBO wants it
    return nn.functional.cross_entropy(logits, target, reduction="sum") / logits.shape[0]


def make_variants(base: nn.Module, names: list[str], arch: str = "resnet", dwp: str | None = None) -> list[Variant]:
    variants = []
    for name in names:
        net = copy.deepcopy(base)
        if name == "plain":
            variants.append(Variant(name, net, lambda m, x, t: _nll(m(x), t) * N_TRAIN))
        elif name in ("lrt", "sample"):
            bm = bp.bayesianize(net, {(nn.Conv3d, nn.ConvTranspose3d): "gaussian"}, mode=name)
            variants.append(Variant(f"bayesprior gaussian {name}", bm,
                                    lambda m, x, t: m.elbo_loss(_nll(m(x), t), n_train=N_TRAIN).loss))
        elif name == "bayesian-torch":
            try:
                from bayesian_torch.models.dnn_to_bnn import dnn_to_bnn, get_kl_loss
            except ImportError:
                print("bayesian-torch is not installed; skipping its row", file=sys.stderr)
                continue
            dnn_to_bnn(net, {"prior_mu": 0.0, "prior_sigma": 1.0, "posterior_mu_init": 0.0,
                             "posterior_rho_init": -3.0, "type": "Reparameterization",
                             "moped_enable": False, "moped_delta": 0.5})
            variants.append(Variant("bayesian-torch dnn_to_bnn", net,
                                    lambda m, x, t, _kl=get_kl_loss: _nll(m(x), t) * N_TRAIN + _kl(m)))
        elif name in ("dwp-lrt", "dwp-sample"):
            if dwp is None:
                raise SystemExit(f"variant {name!r} needs --dwp PRIOR_FILE (from `bayesprior fit-prior`)")
            from bayesprior.plugins import architecture_groups
            from bayesprior.training.methods import prior_rules

            # the architecture's kernel groups, each scored by its own VAE, exactly as `train --method dwp`
            groups = architecture_groups(arch, net)
            bm = bp.bayesianize(net, prior_rules("dwp", groups, dwp, {}), groups=groups, mode=name.split("-")[1])
            variants.append(Variant(f"bayesprior dwp {name.split('-')[1]}", bm,
                                    lambda m, x, t: m.elbo_loss(_nll(m(x), t), n_train=N_TRAIN).loss))
        else:
            raise SystemExit(f"unknown variant {name!r}")
    return variants


# ----------------------------------------------------------------------------------------- timing
def parse_size(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.lower().split("x")]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"a size is N or AxBxC, got {text!r}")
    return tuple(parts)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def time_size(base: nn.Module, names: list[str], size: tuple[int, int, int], repeats: int, warmup: int,
              device: torch.device, arch: str = "resnet", dwp: str | None = None, clock: str = "wall") -> list[dict]:
    variants = make_variants(base, names, arch, dwp)
    for v in variants:
        v.model.to(device)
    in_channels = next(m for m in base.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))).in_channels
    x = torch.randn(BATCH, in_channels, *size, device=device)
    with torch.no_grad():
        out_shape = copy.deepcopy(base).to(device).eval()(x).shape
    target = torch.randint(0, out_shape[1], (out_shape[0],) + tuple(out_shape[2:]), device=device)
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    for round_index in range(warmup + repeats):
        shift = round_index % len(variants)
        for v in variants[shift:] + variants[:shift]:  # rotate the order: no variant always runs first
            _sync(device)
            start = CLOCKS[clock]()
            v.step(x, target)
            _sync(device)
            if round_index >= warmup:
                times[v.name].append(CLOCKS[clock]() - start)
        print(f"  {'x'.join(map(str, size))} round {round_index + 1}/{warmup + repeats}"
              f"{' (warm-up)' if round_index < warmup else ''}", file=sys.stderr, flush=True)
    plain = times.get(variants[0].name)
    rows = []
    for v in variants:
        ts = times[v.name]
        ratios = [t / p for t, p in zip(ts, plain, strict=True)] if plain else []
        rows.append({"variant": v.name, "size": "x".join(map(str, size)), "median_s": statistics.median(ts),
                     "min_s": min(ts), "ratio": statistics.median(ratios) if ratios else float("nan"),
                     "ratio_of_mins": min(ts) / min(plain) if plain else float("nan")})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet", help="'resnet' (built in here) or a registered architecture, e.g. unet3d")
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=None,
                        help="input sizes, N or AxBxC (default 32 64; 40x48x40 64 for --arch unet3d)")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per size (default 7)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds per size (default 2)")
    parser.add_argument("--variants", default="plain,lrt,sample,bayesian-torch",
                        help="comma list from plain,lrt,sample,bayesian-torch,dwp-lrt,dwp-sample; plain first "
                             "(ratios are to it)")
    parser.add_argument("--dwp", default=None, metavar="PRIOR_FILE",
                        help="a DWP prior file fitted for --arch (for the dwp-lrt / dwp-sample variants)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall (default) or cpu: this process's CPU time, which other jobs' time slices do not "
                             "lengthen (with --threads 1 on a busy machine; with more threads it counts their waits)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = args.sizes or ([(40, 48, 40), (64, 64, 64)] if args.arch != "resnet" else [(32,) * 3, (64,) * 3])
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    base = build_network(args.arch)
    print(f"# {args.arch}: {count_convs(base)} conv layers, {sum(p.numel() for p in base.parameters())} "
          f"parameters; batch {BATCH}; {args.repeats} timed rounds after {args.warmup} warm-up; "
          f"torch {torch.__version__}, {args.threads} threads, {args.device}, "
          f"{platform.processor() or platform.machine()}{'; times are CPU times' if args.clock == 'cpu' else ''}")
    print("| input | variant | median step (s) | min step (s) | ratio to plain: median of per-round ratios "
          "| ratio to plain: of min steps |")
    print("|---|---|---:|---:|---:|---:|")
    for size in sizes:
        for row in time_size(base, names, size, args.repeats, args.warmup, device, args.arch, args.dwp, args.clock):
            print(f"| {row['size']} | {row['variant']} | {row['median_s']:.3f} | {row['min_s']:.3f} | "
                  f"{row['ratio']:.2f}x | {row['ratio_of_mins']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
