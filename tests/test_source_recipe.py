"""The source-training levers: initialisation scale and decoupled weight decay."""
import math

import pytest
import torch

from bayesprior.checkpoints import read_model_file
from bayesprior.training.config import TrainConfig
from bayesprior.training.methods import build_model
from bayesprior.training.trainer import train

from training_fixtures import make_cases


def test_init_scale_multiplies_the_he_initialisation(tiny_architecture):
    torch.manual_seed(0)
    he = build_model(TrainConfig(architecture=tiny_architecture, architecture_config={}))
    torch.manual_seed(0)
    small = build_model(TrainConfig(architecture=tiny_architecture, architecture_config={}, init_scale=0.1))
    for (name, a), b in zip(he.named_parameters(), small.parameters(), strict=True):
        if name.endswith("weight"):
            assert torch.allclose(b, 0.1 * a)
    conv = he.init_conv.weight
    assert float(conv.detach().std()) == pytest.approx(math.sqrt(2 / (conv.shape[1] * 27)), rel=0.35)


def test_weight_decay_shrinks_weights_that_get_no_gradient(tmp_path, tiny_architecture):
    cases = make_cases(2, size=8)
    runs = {}
    for decay in (0.0, 0.5):
        model = train(TrainConfig(architecture=tiny_architecture, max_epochs=2, progress=False, weight_decay=decay,
                                  lr=0.01), cases, None, tmp_path / f"wd{decay}")
        runs[decay] = read_model_file(model)["state_dict"]
    # AdamW multiplies every weight by (1 - lr * decay) per step on top of the Adam update
    norm = {d: sum(float(v.norm()) for k, v in s.items() if k.endswith("weight")) for d, s in runs.items()}
    assert norm[0.5] < norm[0.0]
    config = read_model_file(tmp_path / "wd0.5" / "model.pt")["extra"]["train_config"]
    assert config["weight_decay"] == 0.5
