"""Bayesian layers: every supported layer type, every setting kept, three forward modes."""
import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrize

from bayesprior import BayesianLayer
from bayesprior.errors import ConfigError

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONV_TRANSPOSE = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
SPATIAL = {1: 9, 2: 6, 3: 5}  # input side per dimensionality: small, but large enough for every setting


@st.composite
def conv_layers(draw):
    """A random Conv1d/2d/3d and a fitting input."""
    dims = draw(st.sampled_from([1, 2, 3]))
    groups = draw(st.sampled_from([1, 2]))
    kernel = draw(st.integers(1, 3))
    dilation = draw(st.integers(1, 2))
    padding_mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    if draw(st.booleans()):
        stride, padding = 1, "same"
    else:
        stride, padding = draw(st.integers(1, 2)), draw(st.integers(0, 2))
    layer = CONV[dims](groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 3)), kernel,
                       stride=stride, padding=padding, dilation=dilation, groups=groups,
                       bias=draw(st.booleans()), padding_mode=padding_mode)
    x = torch.randn((draw(st.integers(1, 2)), layer.in_channels) + (SPATIAL[dims],) * dims)
    return layer, x


@st.composite
def conv_transpose_layers(draw):
    """A random ConvTranspose1d/2d/3d (with output_padding) and a fitting input."""
    dims = draw(st.sampled_from([1, 2, 3]))
    groups = draw(st.sampled_from([1, 2]))
    stride = draw(st.integers(1, 2))
    dilation = draw(st.integers(1, 2))
    output_padding = draw(st.integers(0, max(stride, dilation) - 1))
    layer = CONV_TRANSPOSE[dims](groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 3)),
                                 draw(st.integers(1, 3)), stride=stride, padding=draw(st.integers(0, 1)),
                                 output_padding=output_padding, groups=groups, bias=draw(st.booleans()),
                                 dilation=dilation)
    x = torch.randn((draw(st.integers(1, 2)), layer.in_channels) + (SPATIAL[dims] - 1,) * dims)
    return layer, x


@st.composite
def linear_layers(draw):
    layer = nn.Linear(draw(st.integers(1, 6)), draw(st.integers(1, 6)), bias=draw(st.booleans()))
    leading = tuple(draw(st.lists(st.integers(1, 3), min_size=0, max_size=2)))
    return layer, torch.randn(leading + (layer.in_features,))


any_layer = st.one_of(conv_layers(), conv_transpose_layers(), linear_layers())


# torch's note that padding='same' with an even kernel copies the input: a generated layer's cost, not a defect
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")
@settings(max_examples=50, deadline=None)
@given(case=any_layer)
def test_mean_mode_reproduces_the_wrapped_module_exactly_at_initialisation(case):
    module, x = case
    expected = module(x)
    wrapped = BayesianLayer(copy.deepcopy(module), mode="mean")
    assert torch.equal(wrapped(x), expected)


@settings(max_examples=25, deadline=None)
@given(case=conv_transpose_layers(), extra=st.integers(0, 1))
def test_conv_transpose_honours_an_output_size_argument(case, extra):
    module, x = case
    default = module(x).shape[2:]
    extra = min(extra, module.stride[0] - 1)  # torch accepts up to stride - 1 more per dimension
    if module.output_padding[0] + extra >= max(module.stride[0], module.dilation[0]):
        extra = 0
    output_size = [s - module.output_padding[0] + extra for s in default]
    expected = module(x, output_size=output_size)
    wrapped = BayesianLayer(copy.deepcopy(module), mode="mean")
    out = wrapped(x, output_size=output_size)
    assert list(out.shape[2:]) == output_size
    assert torch.equal(out, expected)
    for mode in ("lrt", "sample"):
        wrapped.mode = mode
        assert wrapped(x, output_size).shape == expected.shape


@settings(max_examples=25, deadline=None)
@given(case=any_layer, mode=st.sampled_from(["lrt", "sample"]))
def test_random_modes_keep_the_output_shape_and_give_gradients_to_both_parameters(case, mode):
    module, x = case
    wrapped = BayesianLayer(copy.deepcopy(module), log_variance_init=-2.0, mode=mode)
    out = wrapped(x)
    assert out.shape == module(x).shape
    out.square().sum().backward()
    q = wrapped.posterior
    assert torch.isfinite(q.loc.grad).all() and torch.isfinite(q.log_variance.grad).all()
    assert q.log_variance.grad.abs().sum() > 0


def _moments(layer, x, mode, draws):
    layer.mode = mode
    with torch.no_grad():
        if mode == "lrt":  # noise is drawn per output element, so one batched forward gives independent draws
            outs = layer(x.expand(draws, *x.shape[1:]))[:, None]
        else:  # one weight sample per forward: draws forwards
            outs = torch.stack([layer(x) for _ in range(draws)])
    return outs.mean(0), outs.var(0)


@pytest.mark.parametrize("module", [
    nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"),
    nn.ConvTranspose2d(2, 2, 2, stride=2, groups=2),
    nn.Linear(4, 3),
], ids=lambda m: type(m).__name__)
def test_lrt_and_sample_modes_agree_in_output_mean_and_variance(module):
    torch.manual_seed(3)
    dims = {nn.Conv2d: 2, nn.ConvTranspose2d: 2, nn.Linear: 0}[type(module)]
    x = torch.randn((1, 4) if dims == 0 else (1, 2) + (3,) * dims)
    layer = BayesianLayer(module, log_variance_init=-1.0)
    draws = 2000
    mean_lrt, var_lrt = _moments(layer, x, "lrt", draws)
    mean_sample, var_sample = _moments(layer, x, "sample", draws)
    layer.mode = "mean"
    with torch.no_grad():
        exact_mean = layer(x)
    # exact variance of every output: the op applied to x^2 and the weight variances
    exact_var = layer._apply_op(layer.module, x * x, layer.posterior.variance.detach(), None)
    for mean, var in ((mean_lrt, var_lrt), (mean_sample, var_sample)):
        assert (mean - exact_mean).abs().max() < 5 * (exact_var / draws).sqrt().max()
        # the sample variance has relative standard error sqrt(2 / draws) ~ 2.6 %
        assert ((var - exact_var).abs() / exact_var).max() < 0.15
    assert ((var_lrt - var_sample).abs() / exact_var).max() < 0.2


@pytest.mark.parametrize("mode", ["lrt", "sample", "mean"])
def test_mode_is_independent_of_train_and_eval(mode):
    layer = BayesianLayer(nn.Linear(3, 2), log_variance_init=0.0, mode=mode)
    x = torch.randn(4, 3)
    layer.eval()
    assert layer.mode == mode
    random = mode != "mean"
    assert (not torch.equal(layer(x), layer(x))) == random
    layer.train()
    assert layer.mode == mode
    assert (not torch.equal(layer(x), layer(x))) == random


def test_unknown_mode_is_refused():
    with pytest.raises(ConfigError, match="mode"):
        BayesianLayer(nn.Linear(2, 2), mode="flipout")
    layer = BayesianLayer(nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="mode"):
        layer.mode = "eval"


def test_settings_of_the_wrapped_module_stay_readable():
    conv = nn.Conv3d(2, 4, (3, 1, 3), stride=(1, 2, 1), padding=1, dilation=2, groups=2,
                     padding_mode="replicate")
    layer = BayesianLayer(conv)
    assert layer.kernel_size == (3, 1, 3)
    assert layer.stride == (1, 2, 1)
    assert layer.padding_mode == "replicate"
    assert layer.groups == 2 and layer.in_channels == 2 and layer.out_channels == 4
    assert layer.bias is conv.bias
    assert torch.equal(layer.weight, layer.posterior.loc)
    with pytest.raises(AttributeError):
        _ = layer.no_such_attribute


def test_posterior_takes_over_the_weight_parameter():
    conv = nn.Conv2d(1, 2, 3)
    weight = conv.weight.detach().clone()
    layer = BayesianLayer(conv, log_variance_init=-6.0)
    names = {name for name, _ in layer.named_parameters()}
    assert names == {"posterior.loc", "posterior.log_variance", "module.bias"}
    assert torch.equal(layer.posterior.loc, weight)
    assert (layer.posterior.log_variance == -6.0).all()


@pytest.mark.parametrize("module", [nn.BatchNorm2d(3), nn.LSTM(2, 2), nn.LazyConv2d(2, 3)],
                         ids=lambda m: type(m).__name__)
def test_unsupported_modules_are_refused(module):
    with pytest.raises(ConfigError, match="cannot wrap"):
        BayesianLayer(module)


def test_subclass_with_its_own_forward_is_refused_but_plain_subclass_is_accepted():
    class Scaled(nn.Conv2d):
        def forward(self, x):
            return 2 * super().forward(x)

    class Named(nn.Conv2d):
        pass

    with pytest.raises(ConfigError, match="Scaled"):
        BayesianLayer(Scaled(1, 1, 1))
    assert BayesianLayer(Named(1, 1, 1)).wrapped_type == "Conv2d"


def test_parametrized_module_is_refused():
    class Double(nn.Module):
        def forward(self, w):
            return 2 * w

    conv = nn.Conv1d(1, 1, 3)
    parametrize.register_parametrization(conv, "weight", Double())
    with pytest.raises(ConfigError, match="parametrized"):
        BayesianLayer(conv)


def test_lrt_gradients_are_finite_on_an_all_zero_input():
    layer = BayesianLayer(nn.Conv2d(1, 2, 3, padding=1))
    out = layer(torch.zeros(1, 1, 4, 4))
    out.sum().backward()
    assert torch.isfinite(layer.posterior.loc.grad).all()
    assert torch.isfinite(layer.posterior.log_variance.grad).all()


def test_to_deterministic_gives_a_plain_module_at_the_posterior_mean():
    layer = BayesianLayer(nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"), log_variance_init=0.0)
    with torch.no_grad():
        layer.posterior.loc.mul_(2)
    plain = layer.to_deterministic()
    assert type(plain) is nn.Conv2d and plain.padding_mode == "circular"
    x = torch.randn(1, 2, 5, 5)
    layer.mode = "mean"
    assert torch.equal(plain(x), layer(x))
    with torch.no_grad():
        plain.weight.zero_()
    assert layer.posterior.loc.abs().sum() > 0  # an independent copy


def test_state_dict_round_trips_into_a_fresh_layer():
    a = BayesianLayer(nn.ConvTranspose2d(2, 2, 3, stride=2, output_padding=1), log_variance_init=-3.0)
    with torch.no_grad():
        a.posterior.log_variance.uniform_(-5, -1)
    b = BayesianLayer(nn.ConvTranspose2d(2, 2, 3, stride=2, output_padding=1))
    b.load_state_dict(a.state_dict())
    for key, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[key], value)
    x = torch.randn(1, 2, 3, 3)
    a.mode = b.mode = "mean"
    assert torch.equal(a(x), b(x))


def test_deepcopy_is_independent():
    a = BayesianLayer(nn.Linear(3, 3))
    b = copy.deepcopy(a)
    with torch.no_grad():
        b.posterior.loc.zero_()
        b.module.bias.zero_()
    b.mode = "mean"
    assert a.mode == "lrt"
    assert a.posterior.loc.abs().sum() > 0 and a.module.bias.abs().sum() > 0


def test_double_precision_and_unbatched_inputs_work():
    layer = BayesianLayer(nn.Conv1d(2, 2, 3).double(), mode="mean")
    x = torch.randn(2, 7, dtype=torch.float64)
    assert layer(x).shape == (2, 5) and layer(x).dtype == torch.float64
    layer.mode = "lrt"
    assert math.isfinite(layer(x).sum().item())


# -- the forward's weight sample, lent to the KL
def _sampling_conv():
    torch.manual_seed(0)
    return BayesianLayer(nn.Conv3d(2, 3, 3), log_variance_init=-2.0, mode="sample")


def test_a_sample_forward_lends_its_weight_sample_once():
    layer = _sampling_conv()
    x = torch.randn(1, 2, 5, 5, 5)
    y = layer(x)
    w = layer.take_weight_sample()
    assert w is not None and torch.allclose(layer.module._conv_forward(x, w, layer.module.bias), y, atol=1e-6)
    assert layer.take_weight_sample() is None


def test_no_weight_sample_is_lent_after_an_optimiser_step_or_without_gradients():
    layer = _sampling_conv()
    layer(torch.randn(1, 2, 5, 5, 5)).sum().backward()
    torch.optim.SGD(layer.parameters(), lr=0.1).step()
    assert layer.take_weight_sample() is None  # a draw from the old q
    with torch.no_grad():
        layer(torch.randn(1, 2, 5, 5, 5))
    assert layer.take_weight_sample() is None
    layer.mode = "lrt"
    layer(torch.randn(1, 2, 5, 5, 5))
    assert layer.take_weight_sample() is None


def test_a_lent_sample_gives_gradients_in_two_separate_backward_passes():
    layer = _sampling_conv()
    data = layer(torch.randn(1, 2, 5, 5, 5)).square().mean()
    kl_like = layer.take_weight_sample().square().sum()
    first = torch.autograd.grad(data, [layer.posterior.loc, layer.posterior.log_variance])
    second = torch.autograd.grad(kl_like, [layer.posterior.loc, layer.posterior.log_variance])
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in first + second)


def test_a_layer_holding_a_sample_can_be_copied_and_pickled(tmp_path):
    layer = _sampling_conv()
    layer(torch.randn(1, 2, 5, 5, 5))
    twin = copy.deepcopy(layer)
    assert twin.take_weight_sample() is None and layer.take_weight_sample() is not None
    layer(torch.randn(1, 2, 5, 5, 5))
    torch.save(layer, tmp_path / "layer.pt")


@pytest.mark.parametrize("module, shape", [
    (nn.Conv3d(2, 4, 3, padding=1, padding_mode="reflect"), (2, 2, 5, 5, 5)),
    (nn.Conv2d(4, 6, 3, groups=2, stride=2), (2, 4, 7, 7)),
    (nn.ConvTranspose3d(2, 3, 2, stride=2, bias=False), (2, 2, 3, 3, 3)),
    (nn.ConvTranspose1d(4, 2, 3, groups=2), (2, 4, 5)),
    (nn.Linear(5, 3), (2, 4, 5)),
])
def test_a_stacked_forward_equals_one_forward_per_weight_sample(module, shape):
    torch.manual_seed(0)
    layer = BayesianLayer(module, log_variance_init=-2.0)
    weights = layer.posterior.rsample_n(3).detach()
    x = torch.randn(shape)
    stacked = layer.stacked_forward(x.repeat_interleave(3, 0), weights)
    for s in range(3):
        expected = layer._apply_op(layer.module, x, weights[s], layer.module.bias)
        assert torch.allclose(stacked[s::3], expected, atol=1e-5)


def test_a_sample_drawn_under_autocast_is_lent_in_float32():
    # the KL is computed outside autocast from this sample, so it stays float32 (issue 13)
    layer = _sampling_conv()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(torch.randn(1, 2, 5, 5, 5))
    assert y.dtype == torch.bfloat16 and layer.take_weight_sample().dtype == torch.float32
