"""The Prior interface and the one place where KL(q || p) is resolved.

A prior is an `nn.Module` (so `.to()`, `state_dict` and DDP work) that scores a posterior q over one
weight tensor. The contract is `prior.kl(posterior, weight_sample=None)`: KL(q || p) summed over the
layer, or an upper bound of it for implicit priors. Priors say how by what they define:

1. a closed form registered for the (posterior type, prior type) pair with `register_kl`;
2. else `log_prob(w)`: the Monte-Carlo estimate log q(w) - log p(w) at one reparameterised sample;
3. else `kl_upper_bound(posterior, w)`: an upper bound (implicit priors, e.g. the Deep Weight Prior).

`resolve_kl` tries them in that order, and nowhere else branches on prior types.

Several priors may be scored in one pass: priors of one class that return the same `batch_key` are handed to
that class's `kl_batch` together (`kl_of_priors`, which `BayesianModel.kl` calls), so a prior with one network
per layer group can evaluate all groups' networks as one batched computation.

A prior's `unit` says what it treats as one random variable: ``"scalar"`` (every weight independent)
or ``"kernel"`` (each ``weight[a, b]`` slice of a convolution, k x k x k values, is one variable).
"""
from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor, nn

from .errors import ConfigError, PriorMismatchError
from .posteriors import Posterior

_CLOSED_FORMS: dict[tuple[type, type], Callable[[Posterior, "Prior"], Tensor]] = {}

UNITS = ("scalar", "kernel")


def check_unit(unit: Any, owner: str) -> None:
    """Raise `ConfigError` naming `owner` unless `unit` is one of `UNITS`."""
    if unit not in UNITS:
        raise ConfigError(f"{owner}: unit must be one of {UNITS}, got {unit!r}")


def register_kl(posterior_type: type, prior_type: type):
    """Decorator registering a closed-form KL(q || p) summed over the tensor, like `torch.distributions.register_kl`.

    The function takes (posterior, prior) and returns a scalar tensor. Lookup follows the classes'
    method resolution order, so a closed form registered for a base class serves its subclasses.
    """

    def decorator(fn: Callable[[Posterior, "Prior"], Tensor]):
        _CLOSED_FORMS[(posterior_type, prior_type)] = fn
        return fn

    return decorator


def closed_form_kl(posterior: Posterior, prior: "Prior") -> Callable[[Posterior, "Prior"], Tensor] | None:
    """The registered closed form for this pair, or None."""
    for q_type in type(posterior).__mro__:
        for p_type in type(prior).__mro__:
            fn = _CLOSED_FORMS.get((q_type, p_type))
            if fn is not None:
                return fn
    return None


def kernel_view(w: Tensor) -> Tensor:
    """View a convolution weight (a, b, *k) as one row per kernel: (a * b, prod(k))."""
    if w.dim() < 3:
        raise PriorMismatchError(f"a kernel-unit prior needs a convolution weight, got shape {tuple(w.shape)}")
    return w.reshape(w.shape[0] * w.shape[1], -1)


class Prior(nn.Module):
    """Base class of weight priors.

    Subclasses set `unit`, and provide `log_prob`, a registered closed form, or `kl_upper_bound`.
    `config()` returns the JSON-serialisable keyword arguments that rebuild the prior through its
    registered factory (used by `BayesianModel.save`).
    """

    unit: str = "scalar"
    #: name under which the registry built this prior; set by `bayesprior.plugins.create_prior`
    registry_name: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_unit(cls.unit, f"prior class {cls.__name__}")  # a typo fails where the class is written

    def bind(self, layer_name: str, weight: Tensor) -> "Prior":
        """The prior of layer `layer_name`, whose weight is `weight` when the network is made Bayesian.

        `bayesianize` calls it once per selected layer, in network order, before the posterior is made,
        so `weight` is the wrapped network's own weight (a source network's, for transfer). The default
        returns `self` unchanged: one prior shared by the layers of its rule. A prior centred at the
        wrapped network may keep what it needs of `weight` and return `self` (it is then asked for the KL
        of its layers together, `kl_layers`, in the order it was bound) or return a new prior for that
        layer alone. When a saved model is loaded, `weight` is a fresh network's and the saved state
        then replaces whatever the prior kept of it, so keep it in buffers.
        """
        return self

    def kl(self, posterior: Posterior, weight_sample: Tensor | None = None) -> Tensor:
        """KL(q || p) summed over the layer (or an upper bound of it). `weight_sample` is drawn if needed."""
        return resolve_kl(posterior, self, weight_sample)

    def kl_layers(self, posteriors: list[Posterior],
                  weight_samples: list[Tensor | None] | None = None) -> Tensor:
        """The KL summed over several layers that share this prior.

        `weight_samples`, if given, holds per layer a reparameterised sample of its q to score (the
        forward's, see `BayesianLayer.take_weight_sample`) or None; an estimator that needs a sample
        draws one where there is none. The default adds `kl` layer by layer; a prior may override it to
        score all layers in one batch (the result must equal that sum in distribution).
        """
        samples = weight_samples or [None] * len(posteriors)
        total = self.kl(posteriors[0], samples[0])
        for posterior, sample in zip(posteriors[1:], samples[1:], strict=True):
            total = total + self.kl(posterior, sample)
        return total

    def batch_key(self) -> Hashable | None:
        """A key under which this prior is scored in one pass with the other priors of its class that return an
        equal key (`kl_batch`), or None (the default): scored alone, by `kl_layers`.

        Return a key only where `kl_batch` can score such priors together, e.g. one that holds what their
        networks must share (sizes, device, dtype).
        """
        return None

    @classmethod
    def kl_batch(cls, batch: Sequence["PriorLayers"]) -> Tensor:
        """The KL summed over several priors of this class with equal `batch_key`, each with its layers.

        The default adds each prior's `kl_layers`; a class may override it to score them all in one pass. The
        result must equal that sum in distribution, and exactly given the same draws.
        """
        total = batch[0].prior.kl_layers(batch[0].posteriors, batch[0].weight_samples)
        for item in batch[1:]:
            total = total + item.prior.kl_layers(item.posteriors, item.weight_samples)
        return total

    def log_prob(self, w: Tensor) -> Tensor:
        """Log density of `w`, summed over it. Explicit priors override this."""
        raise NotImplementedError

    def kl_upper_bound(self, posterior: Posterior, weight_sample: Tensor) -> Tensor:
        """An upper bound of KL(q || p) summed over the layer. Implicit priors override this."""
        raise NotImplementedError

    def sample(self, shape: torch.Size) -> Tensor:
        """A weight tensor of `shape` drawn from the prior (used to initialise posterior means)."""
        raise NotImplementedError(f"{type(self).__name__} cannot draw samples")

    def check_compatible(self, weight_shape: torch.Size, layer_name: str) -> None:
        """Raise `PriorMismatchError` naming `layer_name` if this prior cannot score such a weight."""
        check_unit(self.unit, f"prior {self.describe()}")  # also a unit set on the instance
        if self.unit == "kernel" and len(weight_shape) < 3:
            raise PriorMismatchError(
                f"layer {layer_name!r}: prior {self.describe()} treats each convolution kernel as one "
                f"variable, but the weight has shape {tuple(weight_shape)} (not a convolution)"
            )

    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this prior through its registered factory."""
        return {}

    def describe(self) -> str:
        """A short human-readable description used in layer tables and error messages."""
        name = self.registry_name or type(self).__name__
        args = ", ".join(f"{k}={v}" for k, v in self.config().items() if not isinstance(v, (dict, list)))
        return f"{name}({args})"

    def _overrides(self, method: str) -> bool:
        return getattr(type(self), method) is not getattr(Prior, method)


class PriorLayers(NamedTuple):
    """One prior and the layers it scores: their posteriors and, per layer, a weight sample to score or None."""

    prior: Prior
    posteriors: list[Posterior]
    weight_samples: list[Tensor | None] | None = None


def kl_of_priors(items: Sequence[PriorLayers]) -> list[Tensor]:
    """The KL of each prior's layers; priors of one class with an equal `Prior.batch_key` are scored together.

    Returns one scalar tensor per pass, in the order of each pass's first prior: a prior without a batch key,
    or alone with its key, by `Prior.kl_layers`; several with one key by their class's `Prior.kl_batch`.
    """
    passes: dict[Any, list[PriorLayers]] = {}
    for index, item in enumerate(items):
        key = item.prior.batch_key()
        passes.setdefault(("alone", index) if key is None else (type(item.prior), key), []).append(item)
    return [batch[0].prior.kl_layers(batch[0].posteriors, batch[0].weight_samples) if len(batch) == 1
            else type(batch[0].prior).kl_batch(batch) for batch in passes.values()]


def resolve_kl(posterior: Posterior, prior: Prior, weight_sample: Tensor | None = None) -> Tensor:
    """KL(q || p) summed over the tensor: closed form, else Monte Carlo via log_prob, else upper bound."""
    closed = closed_form_kl(posterior, prior)
    if closed is not None:
        return closed(posterior, prior)
    if prior._overrides("log_prob"):
        w = posterior.rsample() if weight_sample is None else weight_sample
        return posterior.log_prob(w).sum() - prior.log_prob(w)
    if prior._overrides("kl_upper_bound"):
        w = posterior.rsample() if weight_sample is None else weight_sample
        return prior.kl_upper_bound(posterior, w)
    raise NotImplementedError(
        f"prior {type(prior).__name__} defines no closed-form KL against {type(posterior).__name__}, "
        "no log_prob and no kl_upper_bound"
    )
