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


def test_benchmark_refuses_an_unregistered_architecture():
    bench = runpy.run_path(str(BENCH))
    with pytest.raises(SystemExit, match="not registered"):
        bench["build_network"]("no-such-architecture")
