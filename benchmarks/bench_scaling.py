"""Step time and peak memory against the input size, and the KL's cost against the number of kernels.

    python benchmarks/bench_scaling.py --dwp PRIOR_FILE                       # the table of RESULTS.md
    python benchmarks/bench_scaling.py --dwp PRIOR_FILE --sizes 32 40x48x40 --steps 2
    python benchmarks/bench_scaling.py --dwp PRIOR_FILE --kl-cost             # KL alone vs kernels
    python benchmarks/bench_scaling.py --variants plain,"gaussian sample" --sizes 32   # no DWP file needed

Table: the paper's U-Net (`bench_overhead.py`'s variants: plain, Gaussian `sample`/`lrt`, DWP
`sample`/`lrt`), batch 2, one training step = zero_grad + forward + ELBO + backward + Adam step. Each
(size, variant) runs in a fresh process, so its peak memory is its own: on CPU the peak resident set
size during the steps minus the resident size just before them (model, optimiser and input already
built), on GPU `torch.cuda.max_memory_allocated`. The step time is the median of the timed steps
of that process (the processes run one after another, so read the times with the load noted).

KL cost: one DWP prior group (a VAE of the prior file) scoring n kernels, forward and backward, against
the closed-form Gaussian KL of the same 27 n weights; the per-kernel cost lets a user predict the KL's
share of the step for their own network (count its kernels: out x in per 3x3x3 conv).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_overhead import BATCH, build_network, make_variants, parse_size  # noqa: E402

VARIANTS = {"plain": "plain", "gaussian sample": "sample", "gaussian lrt": "lrt",
            "dwp sample": "dwp-sample", "dwp lrt": "dwp-lrt"}
DEFAULT_SIZES = ["32", "48", "64", "96", "40x48x40"]


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def measure_one(variant: str, size: tuple[int, int, int], steps: int, warmup: int, dwp: str | None,
                device: torch.device) -> dict:
    """Build one variant, run warm-up and timed steps, and return its step times and peak memory."""
    base = build_network("unet3d")
    (v,) = make_variants(base, [VARIANTS[variant]], "unet3d", dwp)
    v.model.to(device)
    x = torch.randn(BATCH, 1, *size, device=device)
    target = torch.randint(0, 2, (BATCH, *size), device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = _resident_bytes()
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        v.step(x, target)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - before
    else:  # ru_maxrss is in KiB on Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return {"variant": variant, "size": "x".join(map(str, size)), "median_s": statistics.median(times),
            "min_s": min(times), "peak_mib": peak / 2**20}


def kl_cost(dwp: str, counts: list[int], repeats: int = 5) -> list[dict]:
    """Forward + backward time of the DWP bound and the Gaussian KL for `counts` kernels of 3x3x3."""
    import bayesprior as bp
    from bayesprior_dwp import DeepWeightPrior
    from bayesprior_dwp.prior_file import load_prior_file

    # every group's VAE has the same size, so any one gives the cost per kernel
    prior = DeepWeightPrior.from_file(dwp, load_prior_file(dwp).groups[0])
    gaussian = bp.create_prior("gaussian")
    rows = []
    for n in counts:
        q = bp.GaussianPosterior(0.05 * torch.randn(n // 16, 16, 3, 3, 3), -10.0)
        row = {"kernels": n}
        for name, scored_by in (("dwp", prior), ("gaussian", gaussian)):
            times = []
            for _ in range(repeats + 1):
                q.zero_grad(set_to_none=True)
                start = time.perf_counter()
                scored_by.kl(q).backward()
                times.append(time.perf_counter() - start)
            row[f"{name}_ms"] = 1e3 * statistics.median(times[1:])
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dwp", default=None, metavar="PRIOR_FILE",
                        help="a DWP prior file of the U-Net's groups (for the dwp variants and --kl-cost)")
    parser.add_argument("--sizes", nargs="+", default=DEFAULT_SIZES, help="N or AxBxC (default: %(default)s)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma list from %(default)s")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per process (default 3)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--kl-cost", nargs="*", type=int, default=None, metavar="KERNELS",
                        help="time the KL alone for these numbers of kernels (default 1000 4000 16000 64000)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # "variant|size": one measurement
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.child:
        variant, size = args.child.split("|")
        print(json.dumps(measure_one(variant, parse_size(size), args.steps, args.warmup, args.dwp,
                                     torch.device(args.device))))
        return
    if args.kl_cost is not None:
        if args.dwp is None:
            parser.error("--kl-cost needs --dwp PRIOR_FILE")
        print(f"# KL forward + backward, torch {torch.__version__}, {args.threads} threads, {args.device}")
        print("| kernels | DWP bound (ms) | per kernel (us) | Gaussian closed form (ms) |\n|---:|---:|---:|---:|")
        for row in kl_cost(args.dwp, args.kl_cost or [1_000, 4_000, 16_000, 64_000]):
            print(f"| {row['kernels']:,} | {row['dwp_ms']:.1f} | {1e3 * row['dwp_ms'] / row['kernels']:.2f} | "
                  f"{row['gaussian_ms']:.1f} |", flush=True)
        return
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    memory = "max_memory_allocated" if args.device.startswith("cuda") else "peak RSS delta"
    print(f"# unet3d, batch {BATCH}, {args.steps} timed steps after {args.warmup} warm-up, one process per row; "
          f"torch {torch.__version__}, {args.threads} threads, {args.device}, {platform.machine()}")
    print(f"| input | variant | median step (s) | min step (s) | ratio to plain (median) | peak memory, {memory} (MiB) |")
    print("|---|---|---:|---:|---:|---:|")
    for size in args.sizes:
        plain = None
        for name in names:
            command = [sys.executable, __file__, "--child", f"{name}|{size}", *(["--dwp", args.dwp] if args.dwp else []),
                       "--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
                       "--device", args.device]
            child = subprocess.run(command, capture_output=True, text=True)
            if child.returncode:
                raise SystemExit(f"{name} at {size} failed:\n{child.stderr[-2000:]}")
            row = json.loads(child.stdout)
            plain = row["median_s"] if name == "plain" else plain
            ratio = f"{row['median_s'] / plain:.2f}x" if plain else "n/a"
            print(f"| {row['size']} | {name} | {row['median_s']:.3f} | {row['min_s']:.3f} | {ratio} | "
                  f"{row['peak_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
