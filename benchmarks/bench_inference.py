"""Sliding-window inference speed: bayesprior against MONAI, in one run, same model and volume.

Run: .venv/bin/python benchmarks/bench_inference.py [--size 96,112,96] [--roi 40,48,40] [--overlap 0.5]
     [--repeats 3] [--device cpu] [--no-write]

Uses the registered `unet3d` architecture when installed, else a small 3-level conv net. Prints the
median times and the ratio (ours / MONAI; target <= 1.0), checks that both outputs agree within 1e-5,
and appends the result under a dated heading to benchmarks/notes/<date>-inference-vs-monai.md (RESULTS.md holds
each benchmark's current, curated result: copy a new measurement there by hand, with its reading).
"""
from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn


def _model(device: str) -> tuple[nn.Module, str]:
    try:
        from bayesprior.plugins import architecture_registry, build_architecture

        if "unet3d" in architecture_registry():
            return build_architecture("unet3d", in_channels=1, n_classes=2).to(device).eval(), "unet3d"
    except Exception:  # noqa: BLE001 - any failure falls back to the stand-in network
        pass
    net = nn.Sequential(nn.Conv3d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv3d(16, 32, 3, padding=1), nn.ReLU(),
                        nn.Conv3d(32, 16, 3, padding=1), nn.ReLU(), nn.Conv3d(16, 2, 1))
    return net.to(device).eval(), "3-layer conv net (unet3d not installed)"


def _timed(fn) -> tuple[float, torch.Tensor]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def _race(ours, theirs, repeats: int) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """Median times of both, interleaved (A B B A ...) so that load from other processes hits both alike."""
    ours(), theirs()  # warm-up
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    outputs = {}
    for i in range(repeats):
        order = (("ours", ours), ("theirs", theirs)) if i % 2 == 0 else (("theirs", theirs), ("ours", ours))
        for name, fn in order:
            seconds, outputs[name] = _timed(fn)
            times[name].append(seconds)
    return (statistics.median(times["ours"]), statistics.median(times["theirs"]), outputs["ours"],
            outputs["theirs"])


def main() -> None:
    from monai.inferers import sliding_window_inference

    from bayesprior.inference.sliding_window_prediction import sliding_window

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="96,112,96")
    parser.add_argument("--roi", default="40,48,40")
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=1, help="windows per forward")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split(","))
    roi = tuple(int(v) for v in args.roi.split(","))
    torch.manual_seed(0)
    model, model_name = _model(args.device)
    x = torch.randn(1, 1, *size, device=args.device)
    with torch.no_grad():
        ours_s, monai_s, ours, theirs = _race(
            lambda: sliding_window(x, roi, model, overlap=args.overlap, batch_size=args.batch),
            lambda: sliding_window_inference(x, roi, args.batch, model, overlap=args.overlap, mode="gaussian"),
            args.repeats)
    max_diff = float((ours - torch.as_tensor(theirs)).abs().max())
    ratio = ours_s / monai_s
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    lines = [
        f"## Sliding-window inference vs MONAI — {datetime.date.today().isoformat()}",
        "",
        f"- machine: {platform.node()} ({platform.machine()}, {device_name}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {args.device}",
        f"- command: `{' '.join([Path(sys.executable).name] + sys.argv)}`",
        f"- model: {model_name}; volume {size}, roi {roi}, overlap {args.overlap}, {args.batch} window(s) per forward",
        f"- bayesprior {ours_s * 1000:.1f} ms, MONAI {monai_s * 1000:.1f} ms (median of {args.repeats}, interleaved); "
        f"**ratio {ratio:.3f}** (target <= 1.0); max |difference| {max_diff:.2e}",
        "",
    ]
    print("\n".join(lines))
    if not args.no_write:
        notes = Path(__file__).with_name("notes") / f"{datetime.date.today().isoformat()}-inference-vs-monai.md"
        previous = notes.read_text() if notes.exists() else "# Sliding-window inference against MONAI\n\n"
        partial = notes.with_name(f".{notes.name}.tmp")  # a kill mid-write leaves the old notes whole
        partial.write_text(previous + "\n".join(lines) + "\n")
        partial.replace(notes)
        print(f"appended to {notes}")


if __name__ == "__main__":
    main()
