"""The Prior contract: closed-form KL, Monte-Carlo KL, upper bound, and the order that resolves them."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesprior import GaussianPosterior, Prior, create_prior, resolve_kl
from bayesprior.errors import ConfigError, PriorMismatchError
from bayesprior.priors import closed_form_kl, kernel_view
from bayesprior_gaussian import GaussianPrior
from bayesprior_loguniform import LogUniformPrior, kl_approximation, log_alpha

_LOG_2PI = math.log(2 * math.pi)


class GaussianLogProbOnly(Prior):
    """The Gaussian prior defined through log_prob alone, so the KL must be estimated by Monte Carlo."""

    def __init__(self, loc: float = 0.0, scale: float = 1.0):
        super().__init__()
        self.loc, self.scale = loc, scale

    def log_prob(self, w):
        return (-0.5 * (_LOG_2PI + 2 * math.log(self.scale) + ((w - self.loc) / self.scale) ** 2)).sum()


class UpperBoundOnly(Prior):
    def kl_upper_bound(self, posterior, weight_sample):
        return weight_sample.sum() * 0 + 7.0


class LogProbAndUpperBound(UpperBoundOnly):
    def log_prob(self, w):
        return torch.zeros(())


class NothingDefined(Prior):
    pass


def _posterior(shape, loc, log_var):
    q = GaussianPosterior(torch.zeros(shape, dtype=loc.dtype))
    with torch.no_grad():
        q.loc.copy_(loc)
        q.log_variance.copy_(log_var)
    return q


shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1), prior_loc=st.floats(-2, 2),
       prior_scale=st.floats(0.05, 5.0), log_var_center=st.floats(-8, 2))
def test_closed_form_gaussian_kl_equals_torch_kl_divergence(shape, seed, prior_loc, prior_scale, log_var_center):
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(shape, generator=g, dtype=torch.float64)
    log_var = log_var_center + torch.randn(shape, generator=g, dtype=torch.float64)
    q = _posterior(shape, loc, log_var)
    p = GaussianPrior(loc=prior_loc, scale=prior_scale).double()
    ours = p.kl(q)
    reference = torch.distributions.kl_divergence(q.distribution(), torch.distributions.Normal(p.loc, p.scale)).sum()
    assert ours.shape == ()
    assert torch.allclose(ours, reference, rtol=1e-9, atol=1e-9)


def test_gaussian_prior_uses_its_registered_closed_form():
    q = GaussianPosterior(torch.randn(3, 3))
    assert closed_form_kl(q, GaussianPrior()) is not None
    assert closed_form_kl(q, GaussianLogProbOnly()) is None


@pytest.mark.parametrize("log_var", [-3.0, -1.0, 0.5])
def test_monte_carlo_kl_through_log_prob_converges_to_the_closed_form(log_var):
    torch.manual_seed(1)
    shape = (4, 3, 3)
    q = _posterior(shape, 0.7 * torch.randn(shape), torch.full(shape, log_var) + 0.3 * torch.randn(shape))
    closed = GaussianPrior(loc=0.1, scale=0.8).kl(q)
    mc_prior = GaussianLogProbOnly(loc=0.1, scale=0.8)
    with torch.no_grad():
        estimates = torch.stack([mc_prior.kl(q) for _ in range(4000)])
    standard_error = estimates.std() / math.sqrt(len(estimates))
    assert abs(estimates.mean() - closed) < 4 * standard_error + 1e-3 * abs(closed)
    # one draw is a noisy but unbiased estimate, not the closed form itself
    assert estimates.std() > 0


def test_monte_carlo_kl_of_the_laplace_example_converges_to_numerical_integration():
    import bayesprior_laplace as laplace  # the example plugin, installed as the README says
    torch.manual_seed(2)
    q = _posterior((6,), torch.tensor([-1.0, -0.2, 0.0, 0.3, 1.0, 2.0]), torch.full((6,), -1.0))
    prior = laplace.LaplacePrior(loc=0.0, scale=0.5)
    with torch.no_grad():
        estimates = torch.stack([prior.kl(q) for _ in range(4000)])
    # reference: KL = -H(q) - E_q log p, with E_q |w| by quadrature on a fine stratified grid
    n = 200_000
    eps = torch.special.ndtri((torch.arange(n, dtype=torch.float64) + 0.5) / n)
    w = q.loc.detach().double()[:, None] + q.stddev.detach().double()[:, None] * eps
    expected_log_p = (-(w.abs() / 0.5) - math.log(2 * 0.5)).mean(dim=1)
    reference = (-q.entropy().detach().double() - expected_log_p).sum()
    standard_error = estimates.std() / math.sqrt(len(estimates))
    assert abs(estimates.mean().double() - reference) < 4 * standard_error + 1e-3


def test_monte_carlo_kl_uses_the_given_weight_sample():
    q = GaussianPosterior(torch.randn(5))
    w = torch.randn(5)
    prior = GaussianLogProbOnly()
    expected = q.log_prob(w).sum() - prior.log_prob(w)
    assert torch.equal(prior.kl(q, w), expected)


def test_resolution_order_is_closed_form_then_monte_carlo_then_upper_bound():
    q = GaussianPosterior(torch.randn(2, 3))
    w = torch.randn(2, 3)
    # closed form wins over log_prob (GaussianPrior defines both): the result ignores the sample
    gaussian = GaussianPrior()
    assert torch.equal(resolve_kl(q, gaussian, w), resolve_kl(q, gaussian, torch.randn(2, 3)))
    # log_prob wins over the upper bound
    both = LogProbAndUpperBound()
    assert torch.allclose(resolve_kl(q, both, w), q.log_prob(w).sum())
    # the upper bound is used when nothing else exists
    assert resolve_kl(q, UpperBoundOnly(), w).item() == 7.0
    assert UpperBoundOnly().kl(q).item() == 7.0


def test_prior_without_any_kl_route_raises_not_implemented_naming_it():
    with pytest.raises(NotImplementedError, match="NothingDefined"):
        NothingDefined().kl(GaussianPosterior(torch.randn(3)))


def test_closed_form_registered_for_a_base_class_serves_subclasses():
    class NarrowGaussian(GaussianPrior):
        pass

    q = GaussianPosterior(torch.randn(3))
    assert torch.equal(NarrowGaussian(scale=0.5).kl(q), GaussianPrior(scale=0.5).kl(q))


def test_kernel_view_gives_one_row_per_kernel():
    w = torch.arange(2 * 3 * 27.0).reshape(2, 3, 3, 3, 3)
    rows = kernel_view(w)
    assert rows.shape == (6, 27)
    assert torch.equal(rows[4], w[1, 1].flatten())
    with pytest.raises(PriorMismatchError):
        kernel_view(torch.randn(4, 5))


def test_kernel_prior_refuses_a_linear_weight_naming_the_layer():
    class KernelPrior(Prior):
        unit = "kernel"

    with pytest.raises(PriorMismatchError, match="fc"):
        KernelPrior().check_compatible(torch.Size([4, 5]), "fc")
    KernelPrior().check_compatible(torch.Size([4, 5, 3, 3, 3]), "conv")


def test_gaussian_prior_rejects_bad_arguments_by_name():
    from bayesprior.errors import ConfigError

    with pytest.raises(ConfigError, match="scale"):
        GaussianPrior(scale=0.0)
    with pytest.raises(ConfigError, match="loc"):
        GaussianPrior(loc=float("nan"))
    # a TOML `scale = true` is a mistake, not 1.0
    with pytest.raises(ConfigError, match="scale must be a positive finite number, got True"):
        GaussianPrior(scale=True)
    with pytest.raises(ConfigError, match="loc must be a finite number, got False"):
        GaussianPrior(loc=False)


def test_gaussian_prior_samples_have_its_moments():
    s = GaussianPrior(loc=1.5, scale=0.2).sample(torch.Size([20000]))
    assert abs(s.mean().item() - 1.5) < 0.01
    assert abs(s.std().item() - 0.2) < 0.01


def test_registry_built_priors_describe_themselves_by_name():
    p = create_prior(("gaussian", {"scale": 0.1}))
    assert p.registry_name == "gaussian"
    assert p.describe() == "gaussian(loc=0.0, scale=0.1)"


# ------------------------------------------------------------------------------------ log-uniform
def _loguniform_kl_numerical(log_alpha_value: float, n: int = 400_000) -> float:
    """KL(N(mu, alpha mu^2) || log-uniform) up to a constant, by quadrature over a stratified normal grid.

    KL = -H(q) + E_q log|w| + c = -0.5 log alpha + E log|1 + sqrt(alpha) eps| + c; the constant that
    makes KL -> 0 as alpha -> infinity is c = -E log|eps| = (Euler gamma + log 2) / 2.
    """
    eps = torch.special.ndtri((torch.arange(n, dtype=torch.float64) + 0.5) / n)
    alpha = math.exp(log_alpha_value)
    c = (0.5772156649015329 + math.log(2)) / 2
    return -0.5 * log_alpha_value + torch.log((1 + math.sqrt(alpha) * eps).abs()).mean().item() + c


@pytest.mark.parametrize("log_alpha_value", [-3.0, -1.0, 0.0, 1.0, 3.0])
def test_loguniform_kl_approximation_matches_numerical_kl(log_alpha_value):
    approx = kl_approximation(torch.tensor(log_alpha_value, dtype=torch.float64)).item()
    assert abs(approx - _loguniform_kl_numerical(log_alpha_value)) < 1e-2


def test_loguniform_kl_decreases_in_log_alpha_and_vanishes_at_infinity():
    grid = torch.linspace(-10, 10, 401)
    kl = kl_approximation(grid)
    assert (kl[1:] < kl[:-1]).all()
    assert (kl > 0).all()
    assert kl_approximation(torch.tensor(30.0)).item() < 1e-6


@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**31 - 1), log_var_center=st.floats(-12, 4))
def test_loguniform_kl_has_finite_gradients(shape, seed, log_var_center):
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(shape, generator=g)
    loc.view(-1)[0] = 0.0  # a weight exactly at zero must not give NaN
    q = _posterior(shape, loc, log_var_center + torch.randn(shape, generator=g))
    kl = LogUniformPrior().kl(q)
    kl.backward()
    assert torch.isfinite(kl)
    assert torch.isfinite(q.loc.grad).all() and torch.isfinite(q.log_variance.grad).all()


def test_loguniform_kl_depends_only_on_alpha():
    q1 = _posterior((1,), torch.tensor([2.0]), torch.tensor([math.log(0.5 * 4.0)]))
    q2 = _posterior((1,), torch.tensor([-0.1]), torch.tensor([math.log(0.5 * 0.01)]))
    assert torch.allclose(log_alpha(q1), log_alpha(q2), atol=1e-5)
    assert torch.allclose(LogUniformPrior().kl(q1), LogUniformPrior().kl(q2), atol=1e-5)


def test_loguniform_sparsity_counts_weights_above_the_threshold():
    q = _posterior((4,), torch.tensor([1.0, 1.0, 1.0, 1.0]), torch.tensor([-5.0, 0.0, 4.0, 6.0]))
    assert LogUniformPrior(prune_threshold=3.0).sparsity(q) == 0.5


def test_a_prior_class_with_an_unknown_unit_is_refused_where_it_is_written():
    with pytest.raises(ConfigError, match="KernelTypo.*unit must be one of.*'kernal'"):
        class KernelTypo(Prior):  # noqa: F841
            unit = "kernal"


def test_a_unit_set_on_an_instance_is_checked_when_a_layer_is_assigned():
    prior = GaussianPrior()
    prior.unit = "vector"
    with pytest.raises(ConfigError, match="unit must be one of"):
        prior.check_compatible(torch.Size([2, 3]), "fc")



# -- several priors in one pass (issue 25)
class BatchedConstant(Prior):
    """Scores each layer 1.0 alone, or its batch in one call that it records; key None scores alone."""

    calls: list = []

    def __init__(self, key="k"):
        super().__init__()
        self.key = key

    def batch_key(self):
        return self.key

    def kl_upper_bound(self, posterior, weight_sample):
        return weight_sample.sum() * 0 + 1.0

    @classmethod
    def kl_batch(cls, batch):
        cls.calls.append([item.prior for item in batch])
        return super().kl_batch(batch)


class OtherBatchedConstant(BatchedConstant):
    calls: list = []


def _layers(n):
    return [GaussianPosterior(torch.zeros(2, 2)) for _ in range(n)]


def test_priors_of_one_class_with_an_equal_batch_key_are_scored_in_one_pass():
    from bayesprior.priors import PriorLayers, kl_of_priors

    BatchedConstant.calls.clear()
    OtherBatchedConstant.calls.clear()
    a, b, c = BatchedConstant(), BatchedConstant(), BatchedConstant(key="other")
    d = OtherBatchedConstant()  # the same key, another class: never in the same pass
    terms = kl_of_priors([PriorLayers(p, _layers(2), None) for p in (a, c, b, d)])
    assert BatchedConstant.calls == [[a, b]] and OtherBatchedConstant.calls == []
    assert [float(t.detach()) for t in terms] == [4.0, 2.0, 2.0]  # in the order of each pass's first prior


def test_a_prior_without_a_batch_key_is_scored_alone_by_its_kl_layers():
    from bayesprior.priors import PriorLayers, kl_of_priors

    BatchedConstant.calls.clear()
    alone = [BatchedConstant(key=None), BatchedConstant(key=None)]
    terms = kl_of_priors([PriorLayers(p, _layers(3), None) for p in alone])
    assert BatchedConstant.calls == [] and [float(t.detach()) for t in terms] == [3.0, 3.0]
    assert GaussianPrior().batch_key() is None  # the default
