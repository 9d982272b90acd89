"""Shared by the hostile-input tests (tests/test_hostile_*.py): running a command, asserting that it ended in
one clear error line, and small bad files to feed it."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from click.testing import CliRunner

from bayesprior.checkpoints import save_model
from bayesprior.cli import cli
from bayesprior.plugins import build_architecture
from bayesprior.wrap import bayesianize

from training_fixtures import oblique_lps_affine, write_nnunet_dataset

#: a tiny experiment config, section -> its lines: valid, and cheap enough to run end to end
TINY_EXPERIMENT = {
    "source": 'synthetic = { kind = "ms", cases = 3, shape = [16, 16, 16], seed = 1 }',
    "target": 'synthetic = { kind = "tumour", cases = 3, shape = [16, 16, 16], seed = 2 }',
    "preprocess": "crop_nonzero = false",
    "source_training": "seeds = [0]\nmax_epochs = 1\nval_fraction = 0.0",
    "prior": "max_epochs = 1",
    "target_training": "max_epochs = 1",
    "protocol": 'train_sizes = [1]\ntest_size = 1\nsplits = 1\nmethods = ["dwp", "ri"]',
}

#: a U-Net small enough for tests that only need a valid model file
SMALL_UNET = {"widths": [4, 4, 4, 4]}


def run(*args: str | Path):
    """``bayesprior ARGS`` in this process (stdout and stderr apart); the Python warnings it raised, which a user
    would see printed on stderr, in ``result.warnings``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(cli, [str(a) for a in args])
    # those Python shows a user by default (not DeprecationWarning and the like, which a dependency may add any day)
    result.warnings = [f"{w.category.__name__}: {w.message}" for w in caught if not issubclass(
        w.category, (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning))]
    for w in caught:  # raised again, for a test that expects one (`pytest.warns`)
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result


def assert_one_line_error(result, *fragments: str) -> str:
    """Assert that the command failed with exit code 1 (our error) or 2 (a bad option), printed no traceback,
    and said why in one ``Error:`` line, the last of its output, holding every fragment; return the line."""
    assert result.exit_code in (1, 2), (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert getattr(result, "warnings", []) == [], result.warnings  # printed above the error line, they bury it
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    if result.exit_code == 1:  # our own message is all there is: nothing follows its line
        assert result.stderr.rstrip().endswith(errors[0]), result.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def assert_ok(result) -> None:
    assert result.exit_code == 0, result.output


def model_file(path: Path, nan: bool = False, preprocess: dict | None = None) -> Path:
    """An (untrained) small U-Net model file that records its preprocessing, optionally with NaN weights."""
    net = build_architecture("unet3d", **SMALL_UNET)
    if nan:
        with torch.no_grad():
            net.init_conv.weight.fill_(float("nan"))
    save_model(net, path, extra={"preprocess": preprocess or {"crop_nonzero": False}})
    return path


def bayesian_model_file(path: Path) -> Path:
    """An (untrained) small Bayesian U-Net model file (Gaussian prior) that records its preprocessing."""
    net = build_architecture("unet3d", **SMALL_UNET)
    model = bayesianize(net, {"*": ("gaussian", {"scale": 0.1})}, log_variance_init=-4.0)
    save_model(model, path, extra={"preprocess": {"crop_nonzero": False}})
    return path


def dataset(root: Path, n: int = 4, size: int = 16) -> Path:
    """An nnU-Net v2 dataset of `n` tiny cases (`training_fixtures.write_nnunet_dataset`)."""
    write_nnunet_dataset(root, n=n, size=size)
    return root


def nifti(path: Path, data, affine=None) -> Path:
    """Write `data` as NIfTI at `path` (the oblique test affine by default)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), oblique_lps_affine() if affine is None else affine), path)
    return path


def write_json(path: Path, value) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return path


class Payload:
    """Unpickling this creates `marker`: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))
