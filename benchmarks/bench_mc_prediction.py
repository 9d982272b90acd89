"""Monte-Carlo prediction with S weight samples: S forwards one after another vs several samples per forward.

    python benchmarks/bench_mc_prediction.py                       # S = 10, one 40x48x40 volume
    python benchmarks/bench_mc_prediction.py --size 64 --stacks 1 5 10 --repeats 5

The paper's U-Net with a Gaussian posterior on every conv (`bayesianize`, log-variance -10), in eval
mode; one timed call = `BayesianModel.predict(x, samples=S, transform=softmax,
samples_per_forward=k)` for each k of `--stacks` (k = 1 is ten sequential passes for S = 10). The
calls are interleaved over rounds, order rotated, after one warm-up round; the table gives the median
time of each and its ratio to k = 1 (median of per-round ratios).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

import bayesprior as bp

sys.path.insert(0, str(Path(__file__).parent))
from bench_overhead import parse_size  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=(40, 48, 40))
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--stacks", type=int, nargs="+", default=[1, 5, 10], help="samples per forward (first is the baseline)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bm = bp.bayesianize(bp.build_architecture("unet3d"), {torch.nn.Conv3d: "gaussian"}).eval()
    x = torch.randn(1, 1, *args.size)
    times: dict[int, list[float]] = {k: [] for k in args.stacks}
    for round_index in range(args.repeats + 1):
        shift = round_index % len(args.stacks)
        for k in args.stacks[shift:] + args.stacks[:shift]:
            start = time.perf_counter()
            bm.predict(x, samples=args.samples, transform=lambda y: y.softmax(1), samples_per_forward=k)
            if round_index:
                times[k].append(time.perf_counter() - start)
    base = times[args.stacks[0]]
    print(f"# unet3d, one {'x'.join(map(str, args.size))} volume, S = {args.samples}, {args.repeats} rounds after "
          f"1 warm-up; torch {torch.__version__}, {args.threads} threads")
    print("| samples per forward | forwards | median time (s) | ratio to the first row |\n|---:|---:|---:|---:|")
    for k in args.stacks:
        ratio = statistics.median(t / b for t, b in zip(times[k], base, strict=True))
        print(f"| {k} | {-(-args.samples // k)} | {statistics.median(times[k]):.3f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
