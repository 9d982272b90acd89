"""The overhead benchmark keeps running (tiny input, one round); its numbers live in benchmarks/RESULTS.md."""
import runpy
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "benchmarks" / "bench_overhead.py"


def test_benchmark_network_has_at_least_twenty_conv_layers():
    bench = runpy.run_path(str(BENCH))
    assert bench["count_convs"](bench["ResidualNet3d"]()) >= 20


def test_benchmark_runs_every_variant_and_prints_ratios(capsys):
    bench = runpy.run_path(str(BENCH))
    bench["main"](["--sizes", "4", "--repeats", "1", "--warmup", "0", "--variants", "plain,lrt,sample"])
    out = capsys.readouterr().out
    assert "21 conv layers" in out
    for variant in ("| 4x4x4 | plain |", "bayesprior gaussian lrt", "bayesprior gaussian sample"):
        assert variant in out


def test_benchmark_can_time_steps_by_cpu_time(capsys):
    bench = runpy.run_path(str(BENCH))
    bench["main"](["--sizes", "4", "--repeats", "1", "--warmup", "0", "--variants", "plain", "--clock", "cpu"])
    out = capsys.readouterr().out
    assert "times are CPU times" in out and "| 4x4x4 | plain |" in out


def test_benchmark_refuses_an_unregistered_architecture():
    bench = runpy.run_path(str(BENCH))
    with pytest.raises(SystemExit, match="not registered"):
        bench["build_network"]("no-such-architecture")


SCALING = BENCH.parent / "bench_scaling.py"
MC_PREDICTION = BENCH.parent / "bench_mc_prediction.py"


def test_scaling_benchmark_measures_time_and_memory_in_a_process_per_row(capsys):
    bench = runpy.run_path(str(SCALING))
    bench["main"](["--sizes", "16", "--steps", "1", "--warmup", "0", "--variants", "plain,gaussian sample"])
    out = capsys.readouterr().out
    assert "| 16x16x16 | plain |" in out and "| 16x16x16 | gaussian sample |" in out and "peak RSS delta" in out


def test_scaling_benchmark_times_the_kl_against_the_number_of_kernels(capsys, tmp_path):
    import numpy as np
    from test_dwp_prior import _random_vae

    from bayesprior.kernels import KernelBank
    from bayesprior_dwp import save_prior_file

    bank = KernelBank({"g1": np.zeros((4, 3, 3, 3), np.float32)},
                      {"kernel_size": [3, 3, 3], "groups": {"g1": {"layers": ["c"], "kept": 4, "dropped": 0}}})
    save_prior_file(tmp_path / "prior.pt", {"g1": (_random_vae(latent_dim=6), [-1.0, 0.0])}, bank)
    runpy.run_path(str(SCALING))["main"](["--dwp", str(tmp_path / "prior.pt"), "--kl-cost", "32", "64", "--threads", "1"])
    out = capsys.readouterr().out
    assert "| 32 |" in out and "| 64 |" in out


def test_mc_prediction_benchmark_compares_stacked_and_sequential_samples(capsys):
    runpy.run_path(str(MC_PREDICTION))["main"](["--size", "16", "--samples", "2", "--stacks", "1", "2", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "| 1 | 2 |" in out and "| 2 | 1 |" in out


def test_the_dwp_kl_profile_times_and_counts_the_operators_of_one_kl_pass(capsys, tmp_path):
    from test_dwp_prior import _random_vae

    from bayesprior.kernels import KernelBank
    from bayesprior.plugins import architecture_groups, build_architecture
    from bayesprior_dwp import save_prior_file

    groups = architecture_groups("unet3d", build_architecture("unet3d"))
    save_prior_file(tmp_path / "prior.pt", {g: (_random_vae(hidden=4), [0.0]) for g in groups},
                    KernelBank({}, {"groups": {}}))
    runpy.run_path(str(BENCH.parent / "profile_dwp_kl.py"))["main"](
        ["--dwp", str(tmp_path / "prior.pt"), "--threads", "1", "--repeats", "1", "--table", "3"])
    out = capsys.readouterr().out
    assert "## 1 thread(s), 1 KL passes" in out and "top-level operator calls" in out
