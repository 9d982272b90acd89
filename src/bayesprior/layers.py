"""Bayesian wrappers for Conv1d/2d/3d, ConvTranspose1d/2d/3d and Linear.

`BayesianLayer(module)` takes an existing layer, keeps it (and so every setting: stride, padding,
dilation, groups, padding_mode, output_padding, the deterministic bias) and replaces its weight by a
`GaussianPosterior` whose mean starts at the old weight. The forward returns exactly what the wrapped
module's forward returns, computed in one of three modes:

- ``"lrt"``: local reparameterisation; pre-activations are sampled from their Gaussian,
  ``y = op(x, mu) + eps * sqrt(op(x**2, sigma**2))`` (lower-variance gradients; the training default);
- ``"sample"``: one weight sample per forward, ``y = op(x, mu + sigma * eps)``;
- ``"mean"``: the posterior mean, ``y = op(x, mu)``.

In ``"sample"`` mode with gradients on, the layer keeps its weight sample until the KL asks for it
(`take_weight_sample`): an estimator that needs one sample of q (the DWP bound, Monte-Carlo KLs) then
scores the sample the forward used instead of drawing another. That sample is a draw from q like any
other, so the KL estimate keeps its expectation; it is handed out only while it is still a draw from
the *current* q (no optimiser step since); its graph may be walked by several backward passes
(`GaussianPosterior.rsample`).

The mode is its own switch, independent of `train()` / `eval()` (which keep their usual meaning for
normalisation and dropout layers).
"""
from __future__ import annotations

from typing import Any, Callable, TypeGuard, Union, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd
from torch.nn.parameter import is_lazy
from torch.nn.utils import parametrize

from .errors import ConfigError
from .posteriors import GaussianPosterior

MODES = ("lrt", "sample", "mean")
_LRT_EPS = 1e-12  # floor of the variance: keeps sqrt differentiable where the input is exactly zero

class _SamplePreActivation(torch.autograd.Function):
    """y = mean + sqrt(variance) * noise, the tail of the local reparameterisation, in one node.

    Autograd would keep the noise and the standard deviation (two activation-sized tensors) for the
    backward; this keeps only their ratio d y / d variance = noise / (2 sqrt(variance)). The variance is
    clamped, not shifted, at `_LRT_EPS`: a fast convolution algorithm (e.g. Winograd on GPU) may round a
    zero variance slightly below zero, and sqrt of that is NaN; where it is clamped the gradient is zero.
    """

    @staticmethod
    def forward(ctx, mean: Tensor, variance: Tensor) -> Tensor:
        stddev = variance.clamp_min(_LRT_EPS).sqrt_()
        noise = torch.randn_like(mean)
        out = torch.addcmul(mean, stddev, noise)
        ctx.slope = noise.div_(stddev).mul_(0.5).masked_fill_(variance < _LRT_EPS, 0.0)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        return grad, grad * ctx.slope


_CONV_OPS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE_OPS = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _apply_conv(m: _ConvNd, x: Tensor, w: Tensor, b: Tensor | None, *args: Any, **kwargs: Any) -> Tensor:
    # _conv_forward applies padding_mode (reflect/replicate/circular) exactly as the module does
    return m._conv_forward(x, w, b)


def _transpose_padding(m: _ConvTransposeNd) -> tuple[int, ...]:
    # a ConvTranspose*d takes no string padding ("same", "valid"): its constructor has no such option
    return cast(tuple[int, ...], m.padding)


def _output_padding(m: _ConvTransposeNd, x: Tensor, output_size: list[int] | None) -> list[int]:
    # torch types these arguments as lists (for TorchScript); the module holds the same numbers as tuples
    return m._output_padding(x, output_size, list(m.stride), list(_transpose_padding(m)), list(m.kernel_size),
                             len(m.kernel_size), list(m.dilation))


def _apply_conv_transpose(m: _ConvTransposeNd, x: Tensor, w: Tensor, b: Tensor | None,
                          output_size: list[int] | None = None) -> Tensor:
    return _CONV_TRANSPOSE_OPS[len(m.kernel_size)](x, w, b, m.stride, _transpose_padding(m),
                                                   _output_padding(m, x, output_size), m.groups, m.dilation)


def _apply_linear(m: nn.Linear, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    return F.linear(x, w, b)


# -- several weight samples in one forward: the batch holds `n` inputs, each repeated S times in a row
# (index i * S + s), so (n * S, C, ...) is the same memory as (n, S * C, ...) and a convolution with S
# times the groups applies weight sample s to copy s of every input without moving any data
def _apply_conv_stacked(m: _ConvNd, x: Tensor, weights: Tensor, b: Tensor | None) -> Tensor:
    samples, dims = weights.shape[0], len(m.kernel_size)
    grouped = x.reshape(x.shape[0] // samples, samples * x.shape[1], *x.shape[2:])
    padding: str | tuple[int, ...] | int = m.padding
    if m.padding_mode != "zeros":
        grouped, padding = F.pad(grouped, m._reversed_padding_repeated_twice, mode=m.padding_mode), 0
    y = _CONV_OPS[dims](grouped, weights.flatten(0, 1), None if b is None else b.repeat(samples), m.stride,
                        padding, m.dilation, samples * m.groups)
    return y.reshape(x.shape[0], y.shape[1] // samples, *y.shape[2:])


def _apply_conv_transpose_stacked(m: _ConvTransposeNd, x: Tensor, weights: Tensor, b: Tensor | None,
                                  output_size: list[int] | None = None) -> Tensor:
    samples, dims = weights.shape[0], len(m.kernel_size)
    grouped = x.reshape(x.shape[0] // samples, samples * x.shape[1], *x.shape[2:])
    y = _CONV_TRANSPOSE_OPS[dims](grouped, weights.flatten(0, 1), None if b is None else b.repeat(samples),
                                  m.stride, _transpose_padding(m), _output_padding(m, x, output_size),
                                  samples * m.groups, m.dilation)
    return y.reshape(x.shape[0], y.shape[1] // samples, *y.shape[2:])


def _apply_linear_stacked(m: nn.Linear, x: Tensor, weights: Tensor, b: Tensor | None) -> Tensor:
    samples = weights.shape[0]
    grouped = x.reshape(x.shape[0] // samples, samples, -1, x.shape[-1])  # (n, S, other dims, in)
    y = torch.einsum("nsmi,soi->nsmo", grouped, weights)
    y = y if b is None else y + b
    return y.reshape(*x.shape[:-1], weights.shape[1])


_SUPPORTED: tuple[tuple[type[nn.Module], Callable[..., Tensor]], ...] = (
    (nn.Conv1d, _apply_conv), (nn.Conv2d, _apply_conv), (nn.Conv3d, _apply_conv),
    (nn.ConvTranspose1d, _apply_conv_transpose), (nn.ConvTranspose2d, _apply_conv_transpose),
    (nn.ConvTranspose3d, _apply_conv_transpose),
    (nn.Linear, _apply_linear),
)
_STACKED: dict[Callable[..., Tensor], Callable[..., Tensor]] = {
    _apply_conv: _apply_conv_stacked, _apply_conv_transpose: _apply_conv_transpose_stacked,
    _apply_linear: _apply_linear_stacked}
#: what every class of _SUPPORTED derives from (checked as well, it tells the type checker their attributes)
WrappableLayer = Union[_ConvNd, nn.Linear]
_WRAPPABLE = (_ConvNd, nn.Linear)

# hyper-parameters of the wrapped module that stay readable on the wrapper (e.g. layer.kernel_size)
_FORWARDED = frozenset({
    "in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
    "padding_mode", "output_padding", "transposed", "in_features", "out_features",
})


def supported_base(module: nn.Module) -> type[nn.Module] | None:
    """The supported torch layer class `module` is (or safely extends), or None."""
    for base, _ in _SUPPORTED:
        if isinstance(module, base) and type(module).forward is base.forward:
            return base
    return None


def is_supported(module: nn.Module) -> TypeGuard[WrappableLayer]:
    """True if `module` can be wrapped by `BayesianLayer`."""
    return (supported_base(module) is not None and isinstance(module, _WRAPPABLE)
            and not parametrize.is_parametrized(module) and not is_lazy(module.weight))


class BayesianLayer(nn.Module):
    """A supported layer whose weight follows a Gaussian posterior. See the module docstring.

    Args:
        module: an ``nn.Conv{1,2,3}d``, ``nn.ConvTranspose{1,2,3}d`` or ``nn.Linear``; it is taken over
            (its weight parameter moves into ``self.posterior``).
        log_variance_init: initial log-variance of every weight (default -10).
        mode: ``"lrt"``, ``"sample"`` or ``"mean"``.

    Raises:
        ConfigError: unsupported module type, a subclass with its own forward, a parametrized module,
            or an unknown mode.
    """

    def __init__(self, module: nn.Module, log_variance_init: float = -10.0, mode: str = "lrt"):
        super().__init__()
        base = supported_base(module)
        if base is None or not isinstance(module, _WRAPPABLE):
            raise ConfigError(
                f"cannot wrap {type(module).__name__}: supported are Conv1d/2d/3d, ConvTranspose1d/2d/3d "
                "and Linear (subclasses only if they keep the base class's forward)"
            )
        if parametrize.is_parametrized(module):
            raise ConfigError(f"cannot wrap a parametrized {type(module).__name__}; remove its parametrizations first")
        if is_lazy(module.weight):
            raise ConfigError(f"cannot wrap a lazy {type(module).__name__} before its first forward "
                              "(its weight has no shape yet); run one forward first")
        self._apply_op = dict(_SUPPORTED)[base]
        self.wrapped_type = base.__name__
        self.posterior = GaussianPosterior(module.weight, log_variance_init)
        del module.weight  # the posterior owns it now; the module keeps its settings and bias
        self.module = module
        self.mode = mode
        #: weight samples per ``"sample"`` forward, the batch holding each input that many times in a
        #: row (set by `BayesianModel.predict`); 1 is the ordinary forward
        self.stacked_samples = 1

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {value!r}")
        self._mode = value

    @property
    def weight(self) -> Tensor:
        """The posterior mean (read-only view for code that inspects `layer.weight`)."""
        return self.posterior.loc

    @property
    def bias(self) -> Tensor | None:
        return self.module.bias

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in _FORWARDED:
                return getattr(self._modules["module"], name)
            raise

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        q, m, op = self.posterior, self.module, self._apply_op
        if self._mode == "mean":
            return op(m, x, q.loc, m.bias, *args, **kwargs)
        if self._mode == "sample" and self.stacked_samples > 1:
            return self.stacked_forward(x, q.rsample_n(self.stacked_samples), *args, **kwargs)
        if self._mode == "sample":
            w = q.rsample()
            if torch.is_grad_enabled():
                self._keep_weight_sample(w)
            return op(m, x, w, m.bias, *args, **kwargs)
        mean = op(m, x, q.loc, m.bias, *args, **kwargs)
        variance = op(m, x * x, q.variance, None, *args, **kwargs)
        return _SamplePreActivation.apply(mean, variance)

    def stacked_forward(self, x: Tensor, weights: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        """The forward of ``len(weights)`` = S weight samples at once (Monte-Carlo prediction).

        `x` holds n inputs, each repeated S times in a row (``x.repeat_interleave(S, 0)``); row
        ``i * S + s`` of the output is input i through weight sample s. One grouped convolution (or one
        batched matmul) does all S, with no copy of the activations.
        """
        if x.shape[0] % weights.shape[0]:
            raise ConfigError(f"a batch of {x.shape[0]} cannot hold {weights.shape[0]} samples of each input")
        return _STACKED[self._apply_op](self.module, x, weights, self.module.bias, *args, **kwargs)

    # -- the forward's weight sample, lent to the KL
    def _parameter_state(self) -> tuple:
        # a parameter's version counter moves with every in-place change (an optimiser step, load_state_dict)
        return tuple((p._version, p.device, p.dtype) for p in self.posterior.parameters())

    def _keep_weight_sample(self, w: Tensor) -> None:
        self.__dict__["_weight_sample"] = (w, self._parameter_state())

    def take_weight_sample(self) -> Tensor | None:
        """The weight sample of the last ``"sample"`` forward, once, if it is still a draw from the current q.

        Returns None (the caller then draws its own) when there was no such forward, the posterior's
        parameters changed since (an optimiser step), or the sample was taken already.
        """
        sample, state = self.__dict__.pop("_weight_sample", (None, None))
        return sample if state == self._parameter_state() else None

    def __getstate__(self) -> dict[str, Any]:
        # copies and pickles never carry a pending sample (a non-leaf tensor cannot be deep-copied)
        state = super().__getstate__()
        state.pop("_weight_sample", None)
        return state

    def to_deterministic(self) -> nn.Module:
        """A plain copy of the wrapped module with the posterior mean as its weight."""
        import copy

        plain = copy.deepcopy(self.module)
        plain.weight = nn.Parameter(self.posterior.loc.detach().clone())
        return plain

    def extra_repr(self) -> str:
        return f"mode={self._mode!r}"
