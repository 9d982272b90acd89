"""Where the DWP KL's time goes: the paper's U-Net under the DWP (7 kernel groups, 26,640 kernels), `bm.kl()`
forward + backward, timed and profiled with torch.profiler at each thread count.

    python benchmarks/profile_dwp_kl.py --dwp PRIOR_FILE --threads 1 2
    python benchmarks/profile_dwp_kl.py --dwp PRIOR_FILE --threads 2 --table 25    # the 25 costliest ops

As in a `sample`-mode training step, the KL scores the weight sample of the forward before it (a forward
of a small input, 16x8x8, outside the timed region). Per thread count it prints the median and minimum
process CPU time and wall time of the KL pass, the number of top-level operator calls in one pass (and how
many of them touch more than 32,768 numbers, torch's grain for splitting an element-wise operation over
threads: with two threads each of those is one fork and join), and the profiler's table of operators by
self CPU time over `--profiled` passes. The prior's quality does not change the cost, so any prior file
with the U-Net's groups will do. On a machine shared with other jobs read the CPU times, and the operator
counts, not the wall times.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from bench_overhead import build_network, make_variants  # noqa: E402

SMALL_INPUT = (1, 1, 16, 8, 8)  # the U-Net's smallest input: at 1/8 resolution one axis keeps 2 voxels
GRAIN = 32768  # at::internal::GRAIN_SIZE
#: operators that only make a view (or an empty tensor): never split over threads, not counted
VIEWS = {"aten::" + name for name in ("alias", "as_strided", "detach", "empty", "empty_like", "empty_strided",
                                      "expand", "flatten", "narrow", "permute", "reshape", "select", "slice",
                                      "split", "squeeze", "t", "transpose", "unbind", "unsqueeze", "view")}


def kl_pass(model, x: torch.Tensor) -> tuple[float, float]:
    """One `sample` forward (untimed), then the KL's forward + backward: its (CPU, wall) seconds."""
    model.zero_grad(set_to_none=True)
    model(x)
    cpu, wall = time.process_time(), time.perf_counter()
    model.kl().backward()
    return time.process_time() - cpu, time.perf_counter() - wall


def operator_counts(prof) -> tuple[int, int]:
    """Top-level aten calls of a profile (not inside another aten call, not views), and those with a large input."""
    top = [e for e in prof.events() if e.name.startswith("aten::") and e.name not in VIEWS
           and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))]

    def large(event) -> bool:
        return any(isinstance(s, list) and s and all(isinstance(d, int) for d in s) and math.prod(s) > GRAIN
                   for s in event.input_shapes or [])

    return len(top), sum(map(large, top))


def _merged(profiles):
    """The key averages of several profiles as one table (a single pass is at the mercy of one time slice)."""
    merged = profiles[0].key_averages()
    for prof in profiles[1:]:
        by_key = {e.key: e for e in merged}
        for event in prof.key_averages():
            if event.key in by_key:
                by_key[event.key].add(event)
            else:
                merged.append(event)
    return merged


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dwp", required=True, metavar="PRIOR_FILE", help="a DWP prior file of the U-Net's groups")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch CPU thread counts (default 1 2)")
    parser.add_argument("--repeats", type=int, default=20, help="timed KL passes per thread count (default 20)")
    parser.add_argument("--table", type=int, default=15, help="rows of the profiler table (default 15)")
    parser.add_argument("--profiled", type=int, default=5, help="KL passes in the profile (default 5)")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    (variant,) = make_variants(build_network("unet3d"), ["dwp-sample"], "unet3d", args.dwp)
    model, x = variant.model, torch.randn(*SMALL_INPUT)
    for threads in args.threads:
        torch.set_num_threads(threads)
        for _ in range(3):  # warm-up
            kl_pass(model, x)
        cpu, wall = zip(*(kl_pass(model, x) for _ in range(args.repeats)), strict=True)
        tables = []
        for _ in range(args.profiled):
            model.zero_grad(set_to_none=True)
            model(x)
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                model.kl().backward()
            tables.append(prof)
        calls, large = operator_counts(tables[0])
        print(f"## {threads} thread(s), {args.repeats} KL passes (forward + backward): CPU time median "
              f"{1e3 * statistics.median(cpu):.1f} ms, min {1e3 * min(cpu):.1f} ms; wall median "
              f"{1e3 * statistics.median(wall):.1f} ms, min {1e3 * min(wall):.1f} ms; {calls} top-level operator "
              f"calls (views aside), {large} of them on more than {GRAIN} numbers")
        print(f"operators by self CPU time over {args.profiled} profiled passes:")
        print(_merged(tables).table(sort_by="self_cpu_time_total", row_limit=args.table))

if __name__ == "__main__":
    main()
