import math

import torch

import bayesprior as bp
from bayesprior.checkpoints import load_model, save_model
from bayesprior.kernels import harvest_kernels
from bayesprior.plugins import architecture_groups, build_architecture
from bayesprior_dwp import fit_prior, save_prior_file

from _dwp_tiny import TINY_NAME


def _task(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 1, 6, 6, 6, generator=g)
    y = (x > 0.3).long()[:, 0]  # a "segmentation" of bright voxels
    return x, y


def test_train_sources_harvest_fit_and_train_dwp_end_to_end(tmp_path, tiny_dwp_architecture):
    x, y = _task(0)
    sources = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        net = build_architecture(TINY_NAME, width=4)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        for _ in range(15):
            loss = torch.nn.functional.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        save_model(net, tmp_path / f"src{seed}.pt")
        sources.append(tmp_path / f"src{seed}.pt")

    bank = harvest_kernels(sources, norm_threshold=1e-3)
    fits = fit_prior(bank, max_epochs=5, batch_size=16, progress=False)
    save_prior_file(tmp_path / "prior.pt", fits, bank)

    torch.manual_seed(3)
    target = build_architecture(TINY_NAME, width=4)
    groups = architecture_groups(TINY_NAME, target)
    rules = [(bp.by_group(g), ("dwp", {"path": str(tmp_path / "prior.pt"), "group": g})) for g in groups]
    bm = bp.bayesianize(target, rules, groups=groups, init_from_prior=True, log_variance_init=-8)
    assert {row["layer"] for row in bm.layer_table() if row["prior"].startswith("dwp")} == {"conv_a", "conv_b", "conv_c"}
    opt = torch.optim.Adam([p for p in bm.parameters() if p.requires_grad], lr=1e-2)
    x_target, y_target = _task(5)
    losses = []
    for _ in range(20):
        nll = torch.nn.functional.cross_entropy(bm(x_target), y_target)
        elbo = bm.elbo_loss(nll, n_train=4)
        opt.zero_grad()
        elbo.loss.backward()
        opt.step()
        losses.append(float(elbo.loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5

    prediction = bm.predict(x_target, samples=3, transform=lambda out: out.softmax(1))
    assert prediction.mean.shape == (4, 2, 6, 6, 6) and torch.isfinite(prediction.uncertainty).all()
    save_model(bm, tmp_path / "target.pt")
    reloaded = load_model(tmp_path / "target.pt")
    assert reloaded.prior_of("conv_c").config()["group"] == "half"

    # a Bayesian model file is harvested at its posterior means
    posterior_bank = harvest_kernels([tmp_path / "target.pt"], norm_threshold=0)
    expected = bm.net.conv_c.posterior.loc.detach().reshape(-1, 3, 3, 3).numpy()
    assert (posterior_bank.kernels["half"] == expected).all()
