"""Throughput of the synthetic MRI generator (cases per second, one process, files not written).

Run: .venv/bin/python benchmarks/synth_throughput.py [--cases 10]
The one-off template load for each grid is timed separately and excluded from the per-case rate.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

from bayesprior.data.synth import generate_case, healthy_anatomy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=10)
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print("| kind | grid | template load (s) | s/case | cases/s |")
    print("|---|---|---|---|---|")
    for label, shape, spacing in (("2 mm (84x100x84)", None, 2.0), ("40x48x40 (4.2 mm)", (40, 48, 40), None)):
        start = time.perf_counter()
        healthy_anatomy(shape, spacing)
        load = time.perf_counter() - start
        for kind in ("ms", "tumour"):
            start = time.perf_counter()
            for index in range(1, args.cases + 1):
                generate_case(kind, index, seed=0, shape=shape, spacing=spacing)
            per_case = (time.perf_counter() - start) / args.cases
            print(f"| {kind} | {label} | {load:.2f} | {per_case:.3f} | {1 / per_case:.2f} |")


if __name__ == "__main__":
    main()
