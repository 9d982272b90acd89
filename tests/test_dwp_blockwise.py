"""The DWP's fast pass (issue 25): all layer groups' kernel VAEs in one block-wise pass, with fused ends, is the same
estimator as each group's `KernelVAE.negative_elbo`, given the same draws, for values and gradients alike."""
import copy

import pytest
import torch
from torch import nn

import bayesprior as bp
from bayesprior import GaussianPosterior
from bayesprior.priors import PriorLayers
from bayesprior_dwp import DeepWeightPrior, KernelVAE
from bayesprior_dwp.batched import BLOCK_ROWS, BlockLayout


def _vae(seed, latent_dim=2, hidden=8):
    """Random weights everywhere and a random full-covariance whitening (a fresh VAE is only a Gaussian)."""
    torch.manual_seed(seed)
    vae = KernelVAE((3, 3, 3), latent_dim=latent_dim, hidden=hidden)
    for head in (vae.encoder, vae.decoder):
        nn.init.normal_(head.net[-1].weight, std=0.3)
    generator = torch.Generator().manual_seed(seed + 100)
    factor = 0.1 * torch.randn(27, 27, generator=generator)
    vae.set_reference(0.01 * torch.randn(27, generator=generator), factor @ factor.T + 1e-3 * torch.eye(27))
    return vae


# groups of unequal sizes: one below a block, one of exactly a block, one over two blocks
GROUP_SHAPES = [[(4, 3), (5, 2)], [(16, 16)], [(3, 3), (20, 20), (70, 4)]]


def _groups(anchored=False):
    priors = [DeepWeightPrior(_vae(seed), anchored=anchored) for seed in range(len(GROUP_SHAPES))]
    posteriors = [[GaussianPosterior(0.3 * torch.randn(a, b, 3, 3, 3), -2.0) for a, b in shapes]
                  for shapes in GROUP_SHAPES]
    if anchored:
        for prior, layers in zip(priors, posteriors, strict=True):
            for i, q in enumerate(layers):
                prior.bind(f"layer{i}", q.loc.detach() + 0.1 * torch.randn(q.shape))
    samples = [[q.rsample() for q in layers] for layers in posteriors]
    noise = [torch.randn(sum(q.shape[0] * q.shape[1] for q in layers), 2) for layers in posteriors]
    return priors, posteriors, samples, noise


def _reference(priors, posteriors, samples, noise):
    """Group by group: -H(q) + sum of `KernelVAE.negative_elbo`, the formula the fast pass must equal."""
    total = 0
    for prior, layers, ws, eps in zip(priors, posteriors, samples, noise, strict=True):
        kernels = torch.cat([w.reshape(-1, 27) for w in ws])
        total = total - sum(q.entropy().sum() for q in layers) + prior.vae.negative_elbo(
            kernels, eps, prior._anchors(layers)).sum()
    return total


def _parameters(priors, posteriors):
    return ([t for layers in posteriors for q in layers for t in (q.loc, q.log_variance)]
            + [p for prior in priors for p in prior.vae.encoder.parameters()])


@pytest.mark.parametrize("anchored", [False, True], ids=["dwp", "dwp_anchored"])
def test_one_pass_over_several_groups_equals_each_groups_vae_given_the_same_draws(anchored):
    priors, posteriors, samples, noise = _groups(anchored)
    fast = DeepWeightPrior.kl_batch([PriorLayers(p, q, w) for p, q, w in zip(priors, posteriors, samples, strict=True)], noise)
    slow = _reference(priors, posteriors, samples, noise)
    assert torch.allclose(fast, slow, rtol=1e-5)
    parameters = _parameters(priors, posteriors)
    for a, b in zip(torch.autograd.grad(fast, parameters, retain_graph=True), torch.autograd.grad(slow, parameters), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


def test_the_fast_pass_sends_no_gradient_to_the_frozen_decoders():
    priors, posteriors, samples, noise = _groups()
    DeepWeightPrior.kl_batch([PriorLayers(p, q, w) for p, q, w in zip(priors, posteriors, samples, strict=True)]).backward()
    encoders = [p for prior in priors for p in prior.vae.encoder.parameters()]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoders)
    assert all(p.grad is None for prior in priors for p in prior.vae.decoder.parameters())


def test_a_frozen_encoder_is_kept_between_steps_and_a_changed_one_is_not():
    priors, posteriors, samples, noise = _groups()
    for prior in priors:
        prior.vae.encoder.requires_grad_(False)
    batch = [PriorLayers(p, q, w) for p, q, w in zip(priors, posteriors, samples, strict=True)]
    before = DeepWeightPrior.kl_batch(batch, noise)
    with torch.no_grad():  # an in-place change of a frozen weight, of a buffer (as load_state_dict makes them)
        priors[1].vae.encoder.net[0].weight.mul_(1.5)
        priors[2].vae.decoder.net[2].bias.add_(0.1)
        priors[0].vae.set_reference(torch.zeros(27), 0.02 * torch.eye(27))
    after = DeepWeightPrior.kl_batch(batch, noise)
    assert not torch.allclose(before, after)
    assert torch.allclose(after, _reference(priors, posteriors, samples, noise), rtol=1e-5)


def test_the_bayesian_model_scores_all_dwp_groups_in_one_pass(monkeypatch):
    passes = []
    real = DeepWeightPrior.kl_batch.__func__

    def counting(cls, batch, latent_noise=None):
        passes.append(len(batch))
        return real(cls, batch, latent_noise)

    monkeypatch.setattr(DeepWeightPrior, "kl_batch", classmethod(counting))
    net = nn.Sequential(nn.Conv3d(1, 4, 3), nn.Conv3d(4, 4, 3), nn.Conv3d(4, 2, 3), nn.Conv3d(2, 2, 1))
    rules = {"0": DeepWeightPrior(_vae(0)), "1": DeepWeightPrior(_vae(1)), "2": DeepWeightPrior(_vae(2)),
             "3": "gaussian"}
    bm = bp.bayesianize(net, rules)
    assert torch.isfinite(bm.kl())
    assert passes == [3]


def test_priors_that_cannot_share_a_pass_are_scored_alone():
    chunked = DeepWeightPrior(_vae(0), chunk_size=5)
    other_size = DeepWeightPrior(_vae(1, hidden=4))
    assert chunked.batch_key() is None
    assert other_size.batch_key() != DeepWeightPrior(_vae(2)).batch_key()
    custom = _vae(3)
    custom.decoder = copy.deepcopy(custom.decoder)
    custom.decoder.net[1] = nn.Tanh()
    assert DeepWeightPrior(custom).batch_key() is None


def test_the_layout_pads_each_group_to_whole_blocks_and_masks_the_padding():
    layout = BlockLayout([3, BLOCK_ROWS, BLOCK_ROWS + 1])
    assert layout.blocks == (1, 1, 2) and layout.padding == (BLOCK_ROWS - 3, 0, BLOCK_ROWS - 1)
    mask = layout.mask(torch.device("cpu"), torch.float32)
    assert mask.shape == (4 * BLOCK_ROWS,) and int(mask.sum()) == 3 + BLOCK_ROWS + BLOCK_ROWS + 1
    packed = layout.pack([[torch.ones(3, 2)], [2 * torch.ones(BLOCK_ROWS, 2)], [3 * torch.ones(BLOCK_ROWS + 1, 2)]])
    assert packed.shape == (4, BLOCK_ROWS, 2)
    assert torch.equal(packed.reshape(-1, 2)[:, 0], mask * torch.repeat_interleave(torch.tensor([1., 2., 3.]),
                                                                                 torch.tensor([1, 1, 2]) * BLOCK_ROWS))


@pytest.mark.parametrize("anchored", [False, True], ids=["dwp", "dwp_anchored"])
def test_the_models_kl_equals_the_formula_group_by_group(anchored, monkeypatch):
    # deterministic draws: posteriors of (almost) no variance, so a weight sample is its mean, and zero latent noise
    net = nn.Sequential(nn.Conv3d(2, 5, 3), nn.Conv3d(5, 5, 3), nn.Conv3d(5, 3, 3), nn.Conv3d(3, 3, 3))
    priors = [DeepWeightPrior(_vae(seed), anchored=anchored) for seed in range(2)]
    bm = bp.bayesianize(net, {"0": priors[0], "2": priors[0], "1": priors[1], "3": priors[1]},
                        log_variance_init=-80.0)  # each prior is bound to its layers in network order
    layers = {id(prior): [] for prior in priors}
    for name, layer in bm.bayesian_layers():
        layers[id(bm.prior_of(name))].append(layer.posterior)
    monkeypatch.setattr(torch, "randn", lambda *size, **kwargs: torch.zeros(*size, **kwargs))
    fast = bm.kl()
    slow = _reference(priors, [layers[id(p)] for p in priors], [[q.loc for q in layers[id(p)]] for p in priors],
                      [torch.zeros(sum(q.shape[0] * q.shape[1] for q in layers[id(p)]), 2) for p in priors])
    assert torch.allclose(fast, slow, rtol=1e-5)


def test_what_the_fast_pass_keeps_follows_the_priors_to_another_dtype():
    priors, posteriors, samples, noise = _groups()
    batch = [PriorLayers(p, q, w) for p, q, w in zip(priors, posteriors, samples, strict=True)]
    DeepWeightPrior.kl_batch(batch, noise)  # keeps the float32 layout, whitening and decoders
    for prior in priors:
        prior.double()
    samples = [[w.detach().double() for w in ws] for ws in samples]
    posteriors = [[q.double() for q in layers] for layers in posteriors]
    noise = [n.double() for n in noise]
    again = DeepWeightPrior.kl_batch([PriorLayers(p, q, w) for p, q, w in zip(priors, posteriors, samples, strict=True)], noise)
    assert again.dtype == torch.float64
    assert torch.allclose(again, _reference(priors, posteriors, samples, noise), rtol=1e-10)
