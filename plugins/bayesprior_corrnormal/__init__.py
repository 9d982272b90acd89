"""Built-in plugin: the correlated Gaussian kernel prior ``corrnormal``.

Each k x k x k kernel of a layer group is one variable with prior N(mean, covariance): one mean vector
and one k^d x k^d covariance per group, fitted by maximum likelihood to a kernel bank. Its KL to the
fully factorised Gaussian posterior has a closed form. It is the explicit baseline of the Deep Weight
Prior: it keeps the spatial correlations of harvested kernels but nothing non-Gaussian, and it costs a
triangular solve per step.

Registered as ``corrnormal`` (factory arguments: ``path`` of a prior file written by its ``fit``, and
``group``), with ``fit(bank_path, out_path, ridge=1e-3)``.
"""
from __future__ import annotations

from bayesprior import hookimpl

from .prior import (
    PRIOR_FORMAT,
    CorrelatedNormalPrior,
    check_corrnormal_fit_options,
    create_corrnormal_prior,
    fit_corrnormal_file,
    load_corrnormal_file,
)

__all__ = ["CorrelatedNormalPrior", "create_corrnormal_prior", "fit_corrnormal_file", "load_corrnormal_file",
           "PRIOR_FORMAT"]


@hookimpl
def register_priors(register):
    register("corrnormal", create_corrnormal_prior, fit=fit_corrnormal_file, per_group=True,
             check_fit_options=check_corrnormal_fit_options, label="UNet-CorrNormal",
             description="correlated Gaussian per kernel: one k^d x k^d covariance per layer group "
                         "(path=prior file, group=name); closed-form KL")
