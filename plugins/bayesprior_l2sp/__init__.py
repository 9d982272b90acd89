"""Built-in plugin: priors centred at the source network's own weights (L2-SP).

- the method ``l2sp`` (Li, Grandvalet & Davoine, ICML 2018): a plain network fine-tuned from the source
  model with the penalty ``penalty_weight / 2 * ||w - w_source||^2`` on every weight, added to each step's
  data loss, as users know L2-SP;
- the prior ``l2sp_bayes``: N(w_source, s^2) on every weight of a layer, its Bayesian form. The scale s
  is absolute (``scale``), relative to the RMS of the layer's source weights (``relative_scale``), or
  learned per layer by empirical Bayes in closed form (``empirical_bayes``, the default; Harvey et al.'s
  data-emphasised ELBO). Its KL to the factorised Gaussian posterior is in closed form.
"""
from __future__ import annotations

from bayesprior import hookimpl

from .prior import L2SPPenalty, LayerSourceGaussian, SourceGaussianPrior

__all__ = ["L2SPPenalty", "LayerSourceGaussian", "SourceGaussianPrior"]


@hookimpl
def register_priors(register):
    register("l2sp_bayes", SourceGaussianPrior, centred_at_source=True, label="UNet-L2SP-Bayes",
             description="N(source weight, s^2) on every weight; s absolute, relative to the layer's RMS, or "
                         "empirical Bayes per layer (default); closed-form KL")


@hookimpl
def register_methods(register):
    # alpha 1: chosen on both pairs' validation cases and ahead of or level with PR on both test sets at 5 cases
    # (benchmarks/RESULTS.md, "A second look"), with train's default loss (0.99 Dice + 0.01 CE, summed)
    register("l2sp", L2SPPenalty, default_weight=1.0, label="UNet-L2SP",
             description="the source model's weights fine-tuned with alpha/2 ||w - w_source||^2 (L2-SP)")
