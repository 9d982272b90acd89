"""Training-step time and peak GPU memory of the paper's U-Net at the paper's scale, with and without AMP.

    python benchmarks/bench_gpu.py --prior PRIOR_FILE [--shape 152,184,144] [--repeats 5] [--json out.json]

Variants: plain (method ri), DWP `sample`, DWP `lrt`, each in float32 and with bf16 autocast
(`TrainConfig.amp`), plus channels-last-3d for plain and DWP `sample` under bf16. One timed step is
exactly the trainer's: forward under the precision context, the data term in float32, the ELBO with
the KL in float32, backward, Adam step; synchronised before and after. Steps are interleaved over
rounds (one of each variant per round) after warm-up rounds; the table gives the median step and the
peak `torch.cuda.max_memory_allocated` of each variant. The prior's quality does not matter for the
cost, so any DWP prior file of the U-Net's groups will do.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from bayesprior.training.config import TrainConfig
from bayesprior.training.methods import build_model
from bayesprior.training.precision import MixedPrecision
from bayesprior.training.trainer import batch_data_loss

N_TRAIN = 20  # sets the data/KL balance only, not the cost


def make_variant(name: str, prior: str, shape: tuple[int, ...], device: torch.device):
    method, mode, amp, channels_last = {
        "plain fp32": ("ri", "lrt", None, False),
        "plain bf16": ("ri", "lrt", "bf16", False),
        "plain bf16 channels-last": ("ri", "lrt", "bf16", True),
        "dwp sample fp32": ("dwp", "sample", None, False),
        "dwp sample bf16": ("dwp", "sample", "bf16", False),
        "dwp sample bf16 channels-last": ("dwp", "sample", "bf16", True),
        "dwp lrt fp32": ("dwp", "lrt", None, False),
        "dwp lrt bf16": ("dwp", "lrt", "bf16", False),
    }[name]
    config = TrainConfig(method=method, forward_mode=mode, amp=amp, channels_last=channels_last,
                         prior_path=prior if method == "dwp" else None, device=str(device))
    model = build_model(config).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    precision = MixedPrecision(amp, device)
    images = torch.rand((2, 1) + shape, device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last_3d)
    labels = (torch.rand((2,) + shape, device=device) > 0.97).long()
    loss_config = config.loss_config()

    def step() -> None:
        with precision.autocast():
            logits = model(images)
        data, n_global = batch_data_loss(logits.float(), labels, loss_config)
        loss = model.elbo_loss(data / n_global, N_TRAIN, 1.0).loss if method == "dwp" else data
        optimizer.zero_grad(set_to_none=True)
        precision.backward_and_step(loss, optimizer)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", required=True, help="a DWP prior file of the U-Net's 7 groups")
    parser.add_argument("--shape", default="152,184,144")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--variants", default="plain fp32,plain bf16,plain bf16 channels-last,dwp sample fp32,"
                                               "dwp sample bf16,dwp sample bf16 channels-last,dwp lrt fp32,dwp lrt bf16")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shape = tuple(int(v) for v in args.shape.split(","))
    names = [v.strip() for v in args.variants.split(",")]
    torch.backends.cudnn.benchmark = True
    rows = []
    for name in names:  # one variant at a time: peak memory must be per variant
        step = make_variant(name, args.prior, shape, device)
        for _ in range(args.warmup):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        rows.append({"variant": name, "median_s": statistics.median(times), "min_s": min(times), "peak_gib": peak})
        print(f"{name:32s} median {statistics.median(times):.3f} s  min {min(times):.3f} s  peak {peak:.2f} GiB",
              flush=True)
        del step
        if device.type == "cuda":
            torch.cuda.empty_cache()
    plain = next((r["median_s"] for r in rows if r["variant"] == "plain fp32"), None)
    info = {"device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor(),
            "torch": torch.__version__, "shape": list(shape), "batch": 2, "repeats": args.repeats, "rows": rows}
    print(f"| variant | median step (s) | ratio to plain fp32 | peak memory (GiB) |  ({info['device']}, torch {torch.__version__})")
    for r in rows:
        ratio = f"{r['median_s'] / plain:.2f}x" if plain else "–"
        print(f"| {r['variant']} | {r['median_s']:.3f} | {ratio} | {r['peak_gib']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(info, f, indent=1)


if __name__ == "__main__":
    main()
