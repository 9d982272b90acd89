"""The experiment with the priors that keep the source network's weights: the source stage collects SWAG
moments, the DWP and its anchored variant share one fitted prior, and every run starts at the source."""
import json
import os
import subprocess
import sys
import types

import pytest

from bayesprior.errors import ConfigError
from bayesprior.experiment.config import load_config
from bayesprior.experiment.pipeline import Experiment
from bayesprior.hashing import file_sha256

TINY = """
[source]
synthetic = { kind = "ms", cases = 3, shape = [16, 24, 16], seed = 1 }
[target]
synthetic = { kind = "tumour", cases = 3, shape = [16, 24, 16], seed = 2 }
[preprocess]
crop_nonzero = false
[architecture]
name = "unet3d"
config = { widths = [4, 4, 4, 4] }
[source_training]
seeds = [0]
max_epochs = 1
val_fraction = 0.0
swag_epochs = 2
swag_rank = 2
[prior]
max_epochs = 2
[target_training]
max_epochs = 1
forward_mode = "sample"
prior_init = "source"
[target_training.per_method.l2sp_strong]
method = "l2sp"
penalty_weight = 10.0
[protocol]
train_sizes = [1]
test_size = 1
splits = 1
methods = ["l2sp_strong", "l2sp_bayes", "swag", "dwp", "dwp_anchored"]
"""


def test_an_experiment_trains_every_source_centred_prior_from_one_source_stage(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "out"
    env = dict(os.environ, BAYESPRIOR_CACHE_DIR=str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, "-m", "bayesprior.cli", "experiment", str(config), "--out", str(out),
                             "--quiet"], capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    source_run = out / "source" / "runs" / "seed0"
    assert (source_run / "swag.pt").is_file()
    # the DWP and its anchored variant learn one kind of prior: fitted once, shared
    assert (out / "source" / "prior_dwp.pt").is_file() and not (out / "source" / "prior_dwp_anchored.pt").exists()
    # a config with the anchored DWP alone finds that file: nothing is fitted again, the digest is the same
    alone = tmp_path / "alone.toml"
    alone.write_text(TINY.replace('"swag", "dwp", "dwp_anchored"]', '"dwp_anchored"]'))
    again = subprocess.run([sys.executable, "-m", "bayesprior.cli", "experiment", str(alone), "--out", str(out),
                            "--stage", "source"], capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0 and "fitting" not in again.stdout + again.stderr, again.stdout + again.stderr
    assert not (out / "source" / "prior_dwp_anchored.pt").exists()
    for method in ("l2sp_strong", "l2sp_bayes", "swag", "dwp", "dwp_anchored"):
        record = json.loads((out / "runs" / f"split0_n1_{method}" / "config.json").read_text())
        assert record["inputs"]["source"], method  # every run starts at the source network
        assert 0.0 <= json.loads((out / "results" / f"split0_n1_{method}.json").read_text())["dsc"] <= 1.0
    swag_record = json.loads((out / "runs" / "split0_n1_swag" / "config.json").read_text())
    assert swag_record["inputs"]["prior_path"] == file_sha256(source_run / "swag.pt")
    anchored = json.loads((out / "runs" / "split0_n1_dwp_anchored" / "config.json").read_text())
    assert anchored["inputs"]["prior_path"] == file_sha256(out / "source" / "prior_dwp.pt")


def test_a_swag_method_without_swag_epochs_in_the_source_stage_is_refused_before_any_work(tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY.replace("swag_epochs = 2\nswag_rank = 2\n", ""))
    with pytest.raises(ConfigError, match=r"method 'swag' reads its prior from swag.pt, beside each source run's "
                                          r"model.pt: set \[source_training\] swag_epochs .*`train --swag-epochs`"):
        Experiment(load_config(config), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_plugins_source_file_that_no_training_setting_writes_must_come_with_the_source_zoo(tmp_path):
    from bayesprior import hookimpl
    from bayesprior.plugins import register_plugin, unregister_plugin
    from bayesprior_gaussian import GaussianPrior

    def register_priors(register):  # a third party's prior read from a file it writes itself
        register("test-moments", GaussianPrior, source_file="moments.pt", centred_at_source=True)

    config = tmp_path / "tiny.toml"
    config.write_text(TINY.replace('"swag", "dwp", "dwp_anchored"]', '"test-moments"]'))
    register_plugin(types.SimpleNamespace(register_priors=hookimpl(register_priors)), "test-moments")
    try:  # its registration says what writes it, not the name of SWAG's setting
        with pytest.raises(ConfigError, match=r"method 'test-moments' reads its prior from moments.pt, beside each "
                                              r"source run's model.pt: give \[source\] models whose folders hold it"):
            Experiment(load_config(config), tmp_path / "out", progress=False)
    finally:
        unregister_plugin("test-moments")


def test_a_shard_waits_for_the_synthetic_data_another_shard_is_making(tmp_path, monkeypatch):
    import threading
    import time

    from bayesprior.experiment import cases
    from bayesprior.locks import folder_lock

    monkeypatch.setattr(cases, "DATA_WAIT_SECONDS", 0.05)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    lines = []
    experiment = Experiment(load_config(config), tmp_path / "out", progress=False, log=lines.append)
    held, release = threading.Event(), threading.Event()

    def other_shard():
        with folder_lock(tmp_path / "out" / "data" / "target", "dataset folder"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=other_shard)
    thread.start()
    held.wait(10)
    threading.Timer(0.5, release.set).start()
    start = time.perf_counter()
    folder = experiment.data.dataset_folder(experiment.config.target, "target")
    thread.join()
    assert time.perf_counter() - start >= 0.4 and (folder / "synthesis.json").is_file()
    assert any("being made by another process; waiting" in line for line in lines)


def test_a_given_zoo_without_the_swag_file_is_refused_before_any_work(tmp_path):
    from bayesprior.checkpoints import save_model
    from bayesprior.plugins import build_architecture

    from hostile import SMALL_UNET

    model = tmp_path / "zoo" / "model.pt"
    model.parent.mkdir()
    save_model(build_architecture("unet3d", in_channels=1, n_classes=2, **SMALL_UNET), model)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY.replace('synthetic = { kind = "ms", cases = 3, shape = [16, 24, 16], seed = 1 }',
                                   f'models = ["{model}"]').replace('"swag", "dwp", "dwp_anchored"]', '"swag"]'))
    with pytest.raises(ConfigError, match=r"method 'swag' reads its prior from .*zoo/swag.pt, beside the first of "
                                          r"\[source\] models \(model.pt\), and there is none \(`train --swag-epochs`"):
        Experiment(load_config(config), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_only_the_first_source_seed_collects_swag_moments_the_others_are_never_read(tmp_path):
    config = tmp_path / "seeds.toml"
    config.write_text(TINY.replace("seeds = [0]", "seeds = [3, 4]"))
    source = Experiment(load_config(config), tmp_path / "out", progress=False).source
    zoo = tmp_path / "zoo"
    first, other = source.source_train_config(3, zoo), source.source_train_config(4, zoo)
    assert (first.swag_epochs, first.swag_rank) == (2, 2)
    assert other.swag_epochs == 0 and other.seed == 4 and other.max_epochs == first.max_epochs
    # the source stage's recorded settings are the first seed's: an experiment made before keeps its source
    assert source.source_settings()["zoo"]["train_config"]["swag_epochs"] == 2
