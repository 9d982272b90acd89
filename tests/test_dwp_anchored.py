"""The anchored DWP: each kernel's latent prior is r(z | the source kernel at its place)."""
import copy
import math

import pytest
import torch
from torch import nn

import bayesprior as bp
from bayesprior.checkpoints import load_model, save_model
from bayesprior.errors import PriorMismatchError
from bayesprior_dwp import DeepWeightPrior, KernelVAE
from bayesprior_dwp.vae import gaussian_kl, gaussian_kl_to_standard


def _random_vae(seed=0):
    torch.manual_seed(seed)
    vae = KernelVAE((3, 3, 3), latent_dim=2, hidden=8)
    for head in (vae.encoder, vae.decoder):
        nn.init.normal_(head.net[-1].weight, std=0.3)
    return vae


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(1, 3, 3, padding=1, bias=False), nn.ReLU(), nn.Conv3d(3, 2, 3, padding=1, bias=False))


def _bayesian(vae, anchored, net=None, **options):
    prior = DeepWeightPrior(copy.deepcopy(vae), anchored=anchored, **options)
    return bp.bayesianize(net or _net(), {"*": prior}, log_variance_init=-6, mode="sample")


def test_the_latent_kl_to_an_anchor_at_zero_and_unit_variance_is_the_kl_to_the_standard_normal():
    mean, log_variance = torch.randn(5, 2), torch.randn(5, 2)
    zeros = torch.zeros(5, 2)
    assert torch.allclose(gaussian_kl(mean, log_variance, zeros, zeros), gaussian_kl_to_standard(mean, log_variance))


def test_the_anchored_bound_reduces_to_the_plain_dwp_when_the_anchor_is_removed():
    vae = _random_vae()
    anchored, plain = _bayesian(vae, True), _bayesian(vae, False, net=_net())
    prior = anchored.prior_of("0")
    with torch.no_grad():  # remove the anchor: every kernel's latent prior back to N(0, I)
        for name, buffer in prior.named_buffers():
            if name.startswith("anchor_"):
                buffer.zero_()
    posteriors = [layer.posterior for _, layer in anchored.bayesian_layers()]
    samples = [q.rsample().detach() for q in posteriors]
    torch.manual_seed(11)
    a = prior.kl_layers(posteriors, samples)
    torch.manual_seed(11)
    b = plain.prior_of("0").kl_layers(posteriors, samples)
    assert torch.allclose(a, b, rtol=1e-6)


def test_anchors_are_the_encoder_distribution_of_each_source_kernel():
    vae = _random_vae(1)
    net = _net(2)
    source = net[2].weight.detach().clone()
    bm = _bayesian(vae, True, net=net, anchor_scale=2.0)
    prior = bm.prior_of("2")
    mean, log_variance = vae.encode(source.reshape(-1, 27))
    assert torch.allclose(prior.anchor_mean_1, mean) and prior.anchor_kernels == [3, 6]
    assert torch.allclose(prior.anchor_log_variance_1, log_variance + 2 * math.log(2.0))


def test_the_anchored_prior_pulls_towards_the_source_kernels_not_the_banks_typical_one():
    # The anchored bound minus the plain one, on the same draws (same seed: the reconstruction terms cancel), is the
    # latent KL to each place's anchor minus the KL to N(0, I). The plain bound is a sum over kernels and does not
    # care where a kernel sits; moving the source kernels to other places must raise the anchored one.
    vae = _random_vae(3)
    nn.init.normal_(vae.encoder.net[-1].weight, std=3.0)  # an encoder that tells kernels apart
    anchored, plain = _bayesian(vae, True, net=_net(3)), _bayesian(vae, False, net=_net(3))

    def anchored_minus_plain():
        bounds = []
        for model in (anchored, plain):
            torch.manual_seed(0)
            with torch.no_grad():
                bounds.append(torch.stack([model.kl() for _ in range(20)]).mean())
        return float(bounds[0] - bounds[1])

    at_source = anchored_minus_plain()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for (_, a), (_, p) in zip(anchored.bayesian_layers(), plain.bayesian_layers(), strict=True):
            places = torch.randperm(a.posterior.loc.shape[0], generator=generator)  # other kernels at each place
            a.posterior.loc.copy_(a.posterior.loc[places])
            p.posterior.loc.copy_(p.posterior.loc[places])
    assert anchored_minus_plain() > at_source + 1.0  # nats; 0 if the anchors were ignored


def test_an_anchored_prior_scores_only_the_layers_it_was_bound_to_in_their_order():
    bm = _bayesian(_random_vae(), True)
    first, second = [layer.posterior for _, layer in bm.bayesian_layers()]
    prior = bm.prior_of("0")
    with pytest.raises(PriorMismatchError, match="bound to layers of \\[3, 6\\] kernels"):
        prior.kl_layers([second, first])
    with pytest.raises(PriorMismatchError, match="kl_layers"):
        prior.kl(first)


def test_a_saved_anchored_model_keeps_its_anchors_and_predicts_without_the_prior_file(tmp_path):
    bm = _bayesian(_random_vae(4), True, net=_net(5))
    bm.priors["prior0"].registry_name = "dwp_anchored"
    save_model(bm, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt", _net(9))  # another network: the file's anchors win
    for name, buffer in bm.prior_of("0").named_buffers():
        assert torch.equal(dict(loaded.prior_of("0").named_buffers())[name], buffer), name
    x = torch.randn(1, 1, 5, 5, 5)
    assert torch.allclose(loaded.mean_model()(x), bm.mean_model()(x))
