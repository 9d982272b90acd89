"""Networks we did not write: MONAI's UNet and BasicUNet, grouped by resolution, made Bayesian, trained."""
import torch
from monai.networks import nets

from bayesprior import bayesianize, by_group
from bayesprior.grouping import group_by_resolution


def _train_two_steps(net, x):
    """Group by resolution, give every group a Gaussian prior, take two Adam steps; return (bm, kls, y)."""
    with torch.no_grad():
        shape_before = net(x).shape
    groups = group_by_resolution(net, x)
    bm = bayesianize(net, {by_group(g): "gaussian" for g in groups}, groups=groups)
    target = torch.randint(0, 2, (x.shape[0],) + tuple(x.shape[2:]))
    optimiser = torch.optim.Adam(bm.parameters(), lr=1e-3)
    kls = []
    for _ in range(2):
        optimiser.zero_grad()
        nll = torch.nn.functional.cross_entropy(bm(x), target)
        elbo = bm.elbo_loss(nll, n_train=10)
        elbo.loss.backward()
        optimiser.step()
        kls.append(elbo.kl.detach())
    with torch.no_grad(), bm.sampling("mean"):
        y = bm(x)
    return bm, groups, kls, shape_before, y


def test_monai_unet_is_grouped_wrapped_and_trained():
    net = nets.UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(8, 16, 32), strides=(2, 2),
                    num_res_units=1)
    x = torch.randn(1, 1, 16, 16, 16)
    bm, groups, kls, shape_before, y = _train_two_steps(net, x)
    assert {"enc_full", "enc_half", "enc_quarter", "dec_half", "dec_full"} <= set(groups)
    assert len(list(bm.bayesian_layers())) == sum(len(v) for v in groups.values())
    assert all(torch.isfinite(k) and k > 0 for k in kls)
    assert y.shape == shape_before == (1, 2, 16, 16, 16)


def test_monai_basic_unet_is_grouped_wrapped_and_trained():
    net = nets.BasicUNet(spatial_dims=3, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4))
    x = torch.randn(1, 1, 32, 32, 32)  # four poolings: 32 -> 2 keeps the instance norms well defined
    bm, groups, kls, shape_before, y = _train_two_steps(net, x)
    three = [g for g in groups if g.endswith("_k3x3x3")]
    assert [g.removesuffix("_k3x3x3") for g in three] == [
        "enc_full", "enc_half", "enc_quarter", "enc_eighth", "enc_sixteenth",
        "dec_eighth", "dec_quarter", "dec_half", "dec_full"]
    assert all(torch.isfinite(k) for k in kls)
    assert y.shape == shape_before == (1, 2, 32, 32, 32)
