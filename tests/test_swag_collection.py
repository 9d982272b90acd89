"""SWAG moments collected after training (`train --swag-epochs`), their file, and training with the swag prior."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from bayesprior.checkpoints import load_model, read_model_file
from bayesprior.cli import cli
from bayesprior.errors import CheckpointError, ConfigError
from bayesprior.training.swag import SWAG_FORMAT, SwagMoments, read_swag_file, write_swag_file
from bayesprior.training.trainer import TrainConfig, train

from _kill_at import kill_at, temp_files
from training_fixtures import make_cases, write_nnunet_dataset


def test_swag_moments_are_the_snapshots_mean_variance_and_last_deviations():
    net = nn.Linear(3, 2)
    snapshots = []
    moments = SwagMoments(net, rank=3)
    for _ in range(5):
        with torch.no_grad():
            net.weight.copy_(torch.randn(2, 3))
        snapshots.append(net.weight.detach().double().clone())
        moments.add(net)
    stack = torch.stack(snapshots)
    params = moments.params()["weight"]
    assert torch.allclose(params["mean"].double(), stack.mean(0), atol=1e-6)
    assert torch.allclose(params["variance"].double(), stack.var(0, unbiased=False), atol=1e-6)
    running = [stack[: k + 1].mean(0) for k in range(5)]  # each deviation from the mean at its snapshot
    expected = torch.stack([stack[k] - running[k] for k in (2, 3, 4)])
    assert torch.allclose(params["deviations"].double(), expected, atol=1e-6)
    assert set(moments.params()) == {"weight"}  # biases (one dimension) are not followed


def _swag_config(arch, **kw):
    base = dict(architecture=arch, architecture_config={"in_channels": 1, "n_classes": 2}, max_epochs=2,
                batch_size=2, progress=False, seed=3, swag_epochs=3, swag_rank=2, swag_lr=1e-3)
    base.update(kw)
    return TrainConfig(**base)


def test_training_with_swag_epochs_writes_the_moments_beside_the_unchanged_model(tiny_architecture, tmp_path):
    cases = make_cases(3)
    model = train(_swag_config(tiny_architecture), cases, run_dir=tmp_path / "swag")
    plain = train(_swag_config(tiny_architecture, swag_epochs=0), cases, run_dir=tmp_path / "plain")
    a, b = read_model_file(model)["state_dict"], read_model_file(plain)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # model.pt is the trained network, not the SWAG walk's end
    swag = read_swag_file(tmp_path / "swag" / "swag.pt")
    assert swag["format"] == SWAG_FORMAT and swag["rank"] == 2 and swag["snapshots"] == 3 and swag["lr"] == 1e-3
    assert set(swag["params"]) == {"init_conv.weight", "down.weight", "out_conv.weight"}
    entry = swag["params"]["down.weight"]
    assert entry["deviations"].shape == (2, *a["down.weight"].shape) and float(entry["variance"].sum()) > 0
    assert not (tmp_path / "swag" / "swag_checkpoint.pt").exists()
    # asked again with other SWAG settings: refused, never silently kept
    with pytest.raises(ConfigError, match="collected with other settings.*rank 2 -> 3"):
        train(_swag_config(tiny_architecture, swag_rank=3), cases, run_dir=tmp_path / "swag")


def test_a_bayesian_run_cannot_collect_swag_moments(tiny_architecture, tmp_path):
    with pytest.raises(ConfigError, match="swag_epochs collects the moments of a plain network"):
        train(_swag_config(tiny_architecture, method="gaussian"), make_cases(2), run_dir=tmp_path / "r")


def test_swag_settings_are_checked(tiny_architecture):
    with pytest.raises(ConfigError, match="swag_rank must be between 2 and swag_epochs"):
        _swag_config(tiny_architecture, swag_epochs=3, swag_rank=4)
    with pytest.raises(ConfigError, match="swag_lr"):
        _swag_config(tiny_architecture, swag_lr=0.0)


def test_a_swag_file_that_is_not_one_is_refused_in_one_line(tmp_path):
    torch.save({"format": "other"}, tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match="a.pt.*not a SWAG file"):
        read_swag_file(tmp_path / "a.pt")
    bad = {"format": SWAG_FORMAT, "rank": 2, "params": {"w": {"mean": torch.zeros(2), "variance": torch.zeros(2),
                                                               "deviations": torch.zeros(3, 2)}}}
    torch.save(bad, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match="do not fit rank 2"):
        read_swag_file(tmp_path / "b.pt")
    bad["params"]["w"]["deviations"] = torch.full((2, 2), float("nan"))
    torch.save(bad, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="NaN"):
        read_swag_file(tmp_path / "c.pt")
    bad["params"]["w"] = {k: torch.zeros(shape, dtype=torch.complex64)
                          for k, shape in (("mean", 2), ("variance", 2), ("deviations", (2, 2)))}
    torch.save(bad, tmp_path / "d.pt")
    with pytest.raises(CheckpointError, match="d.pt.*not of real floating-point numbers.*complex64"):
        read_swag_file(tmp_path / "d.pt")


def test_moments_resumed_from_a_cpu_checkpoint_follow_the_network_to_its_device():
    # a checkpoint is read onto the CPU; a run on another device (here "meta", standing in for a GPU) must take its
    # next snapshot there, not fail on mixing devices
    net = nn.Linear(3, 2)
    saved = SwagMoments(net, rank=2)
    for _ in range(2):
        saved.add(net)
    on_device = nn.Linear(3, 2, device="meta")
    resumed = SwagMoments(on_device, rank=2)
    resumed.load_state_dict(saved.state_dict())
    resumed.add(on_device)
    assert resumed.snapshots == 3
    tensors = [*resumed.mean.values(), *resumed.square_mean.values(), *(t for d in resumed.deviations for t in d.values())]
    assert {t.device.type for t in tensors} == {"meta"}


def _invoke(args):
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


TINY_UNET = ["--arch-option", "widths=[4,4,4,4]", "--no-progress", "--no-cache"]


def test_a_run_killed_during_its_swag_epochs_resumes_to_the_same_moments(tmp_path):
    data = tmp_path / "data"
    write_nnunet_dataset(data, n=3, size=16)
    args = ["--method", "ri", "--epochs", "2", "--swag-epochs", "3", "--swag-rank", "2", *TINY_UNET]
    kill_at("*/killed/swag_checkpoint.pt", 2, ["train", str(data), str(tmp_path / "killed"), *args])
    assert (tmp_path / "killed" / "model.pt").is_file() and not (tmp_path / "killed" / "swag.pt").exists()
    _invoke(["train", str(data), str(tmp_path / "killed"), *args])
    _invoke(["train", str(data), str(tmp_path / "whole"), *args])
    killed, whole = (read_swag_file(tmp_path / name / "swag.pt")["params"] for name in ("killed", "whole"))
    for name, entry in whole.items():
        assert all(torch.equal(entry[k], killed[name][k]) for k in entry), name
    assert not temp_files(tmp_path / "killed") and not (tmp_path / "killed" / "swag_checkpoint.pt").exists()


def test_source_run_with_swag_then_every_source_centred_method_trains_and_predicts(tmp_path):
    data = tmp_path / "data"
    write_nnunet_dataset(data, n=3, size=16)
    source = tmp_path / "source"
    _invoke(["train", str(data), str(source), "--epochs", "2", "--swag-epochs", "2", "--swag-rank", "2", *TINY_UNET])
    runs = {
        "l2sp": ["--method", "l2sp", "--penalty-weight", "0.5"],
        "l2sp_bayes": ["--method", "l2sp_bayes", "--forward-mode", "sample"],
        "swag": ["--method", "swag", "--prior-file", str(source / "swag.pt"), "--prior-option", "scale=2.0"],
    }
    for name, method_args in runs.items():
        out = tmp_path / name
        epochs = 2 if name == "l2sp" else 1
        _invoke(["train", str(data), str(out), "--source", str(source / "model.pt"), "--epochs", str(epochs),
                 *method_args, *TINY_UNET])
        log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        assert len(log) == epochs and all(np.isfinite(e["loss"]) for e in log)
        if name == "l2sp":
            assert log[0]["penalty"] >= 0 and log[1]["penalty"] > 0  # the weights left the source, and pay for it
        else:
            assert log[0]["kl"] > 0
        _invoke(["predict", str(out / "model.pt"), str(data / "imagesTr"), str(tmp_path / f"pred_{name}"),
                 "--quiet"])
        assert len(list((tmp_path / f"pred_{name}").glob("case*.nii.gz"))) == 3
    info = _invoke(["info", str(source / "swag.pt")])
    assert "SWAG moments of a source network" in info and "rank=2, snapshots=2" in info
    (source / "swag.pt").unlink()  # the swag model file predicts without the SWAG file it was trained with
    model = load_model(tmp_path / "swag" / "model.pt")
    assert sum(1 for _ in model.bayesian_layers()) > 0


def test_the_cli_refuses_a_source_centred_method_without_a_source_and_swag_options_without_swag_epochs(tmp_path):
    data = tmp_path / "data"
    write_nnunet_dataset(data, n=2, size=16)
    runner = CliRunner()
    result = runner.invoke(cli, ["train", str(data), str(tmp_path / "r"), "--method", "l2sp_bayes", *TINY_UNET])
    assert result.exit_code == 2 and "needs a source model: --source" in result.output
    result = runner.invoke(cli, ["train", str(data), str(tmp_path / "r"), "--swag-rank", "3", *TINY_UNET])
    assert result.exit_code == 2 and "--swag-rank has no effect without --swag-epochs" in result.output
    result = runner.invoke(cli, ["train", str(data), str(tmp_path / "r"), "--penalty-weight", "1", *TINY_UNET])
    assert result.exit_code == 2 and "--penalty-weight has no effect with --method ri" in result.output
    # the swag prior without its file would train under a placeholder; a file given twice would pick one silently
    model = tmp_path / "src.pt"
    torch.save({"not": "read"}, model)
    result = runner.invoke(cli, ["train", str(data), str(tmp_path / "r"), "--method", "swag", "--source", str(model),
                                 *TINY_UNET])
    assert result.exit_code == 2 and "reads its prior from the source run's swag.pt: give it with --prior-file" \
        in result.output
    for name in ("a.pt", "b.pt"):
        (tmp_path / name).write_bytes(b"")
    result = runner.invoke(cli, ["train", str(data), str(tmp_path / "r"), "--method", "swag", "--source", str(model),
                                 "--prior-file", str(tmp_path / "a.pt"), "--prior-option",
                                 f'path="{tmp_path / "b.pt"}"', *TINY_UNET])
    assert result.exit_code == 2 and "the prior file is given twice" in result.output
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_a_prior_file_given_both_ways_is_refused_by_the_library_too():
    from bayesprior.training.methods import prior_rules

    with pytest.raises(ConfigError, match="the prior file is given twice: a/swag.pt .* path=b/swag.pt"):
        prior_rules("swag", {}, "a/swag.pt", {"path": "b/swag.pt"})
    assert prior_rules("swag", {}, "a/swag.pt", {"path": "a/swag.pt", "scale": 2.0})[0].prior[1] == \
        {"path": "a/swag.pt", "scale": 2.0}


def _write_swag(path, net, **changes):
    moments = SwagMoments(net, rank=2)
    for _ in range(2):
        moments.add(net)
    model = path.parent / "model.pt"
    from bayesprior.checkpoints import save_model
    save_model(net, model)
    write_swag_file(moments, path, lr=1e-3, source_model=model, architecture=None, preprocess=None)
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    torch.save(payload, path)


def test_a_swag_file_with_a_damaged_record_is_refused_when_read_and_in_info_in_one_line(tmp_path):
    from hostile import assert_one_line_error, run

    _write_swag(tmp_path / "swag.pt", nn.Sequential(nn.Conv3d(1, 2, 3)), preprocess=5)
    with pytest.raises(CheckpointError, match="swag.pt.*'preprocess' is a int, not a table"):
        read_swag_file(tmp_path / "swag.pt")
    assert_one_line_error(run("info", tmp_path / "swag.pt"), "swag.pt", "'preprocess'")


def test_a_swag_file_whose_covariance_cannot_be_factored_fails_naming_itself_when_bound(tmp_path):
    import bayesprior as bp

    net = nn.Sequential(nn.Conv3d(1, 2, 3))
    _write_swag(tmp_path / "swag.pt", net)
    payload = torch.load(tmp_path / "swag.pt", weights_only=True)
    entry = payload["params"]["0.weight"]
    entry["variance"].zero_()
    entry["deviations"].fill_(1e12)  # rank one and huge: I + U^T A^-1 U loses its unit eigenvalue to rounding
    torch.save(payload, tmp_path / "swag.pt")
    with pytest.raises(CheckpointError, match="swag.pt.*'0.weight': its covariance is not positive definite"):
        bp.bayesianize(net, {"*": ("swag", {"path": str(tmp_path / "swag.pt")})})


def test_a_swag_file_records_its_source_runs_preprocessing_and_a_target_run_is_checked_against_it(tmp_path):
    """The swag prior's file says how its source run saw the data: a target run on other preprocessing is warned,
    one on the same is not, and neither is told the file is from an older bayesprior."""
    from bayesprior.data.provenance import preprocessing_summary
    from bayesprior.training.transfer_checks import preprocessing_warnings, prior_file_origins
    data, source = tmp_path / "data", tmp_path / "source"
    write_nnunet_dataset(data, n=3, size=16)
    _invoke(["train", str(data), str(source), "--epochs", "1", "--swag-epochs", "2", "--swag-rank", "2", *TINY_UNET])
    swag = read_swag_file(source / "swag.pt")
    assert swag["preprocess"]["intensity"] == "minmax" and len(swag["input_grid"]["spacing"]) == 3
    origins = prior_file_origins(source / "swag.pt")
    same = preprocessing_summary(json.loads((source / "config.json").read_text()))
    assert same is not None and preprocessing_warnings(origins, same) == []
    warned = preprocessing_warnings(origins, {**same, "intensity": "zscore"})
    assert len(warned) == 1 and "preprocessing differs in intensity" in warned[0] and "swag.pt" in warned[0]
    assert not any("older bayesprior" in line for line in warned)


def test_a_swag_file_met_with_another_source_network_is_said_in_one_warning_line(tmp_path):
    from bayesprior.checkpoints import save_model
    from bayesprior.training.transfer_checks import source_mismatch_warnings

    net, other = nn.Sequential(nn.Conv3d(1, 2, 3)), nn.Sequential(nn.Conv3d(1, 2, 3))
    save_model(net, tmp_path / "a.pt")
    save_model(other, tmp_path / "b.pt")
    moments = SwagMoments(net, rank=2)
    for _ in range(2):
        moments.add(net)
    write_swag_file(moments, tmp_path / "swag.pt", lr=1e-3, source_model=tmp_path / "a.pt", architecture=None,
                    preprocess=None)
    assert source_mismatch_warnings(TrainConfig(method="swag", source=str(tmp_path / "a.pt"),
                                                prior_path=str(tmp_path / "swag.pt"))) == []
    lines = source_mismatch_warnings(TrainConfig(method="swag", source=str(tmp_path / "b.pt"),
                                                 prior_path=str(tmp_path / "swag.pt")))
    assert len(lines) == 1 and "swag.pt" in lines[0] and "b.pt" in lines[0] and "another source network" in lines[0]
    # a method that does not start from the source is not asked
    assert source_mismatch_warnings(TrainConfig(method="ri", prior_path=str(tmp_path / "swag.pt"))) == []
