import torch
from torch import nn

import bayesprior as bp
from bayesprior.checkpoints import deterministic_state, load_model, read_model_file, save_model


def _net():
    return nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 2, 1))


def test_bayesian_model_file_round_trips_and_gives_posterior_means_as_plain_weights(tmp_path):
    torch.manual_seed(0)
    bm = bp.bayesianize(_net(), {bp.by_kernel_size(3): "gaussian"})
    with torch.no_grad():
        bm.net[0].posterior.loc.add_(0.5)
    save_model(bm, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt", model=_net())
    x = torch.randn(1, 1, 4, 4, 4)
    with bm.sampling("mean"), loaded.sampling("mean"):
        assert torch.equal(bm(x), loaded(x))
    plain = _net()
    plain.load_state_dict(deterministic_state(read_model_file(tmp_path / "m.pt")))
    with bm.sampling("mean"):
        assert torch.allclose(plain(x), bm(x))


def test_atomic_outputs_get_the_usual_permissions_not_0600(tmp_path):
    import os
    import stat

    from bayesprior.atomic import atomic_write_text

    atomic_write_text("x", tmp_path / "f.txt")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o666 & ~mask
