"""bayesprior: weight priors for Bayesian deep learning in PyTorch, extensible by plugins."""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import (BayespriorError, CheckpointError, ConfigError, DataError, PluginError,  # noqa: E402
                     PriorMismatchError)
from .layers import MODES, BayesianLayer  # noqa: E402
from .plugins import build_architecture, create_prior, hookimpl  # noqa: E402
from .posteriors import GaussianPosterior  # noqa: E402
from .priors import Prior, register_kl, resolve_kl  # noqa: E402
from .wrap import (ELBO, BayesianModel, Predictive, Rule, bayesianize, by_group, by_kernel_size,  # noqa: E402
                   by_name, by_type, load_bayesian)

__all__ = [
    "__version__", "hookimpl", "Prior", "register_kl", "resolve_kl", "GaussianPosterior", "BayesianLayer",
    "MODES", "bayesianize", "BayesianModel", "Rule", "by_name", "by_type", "by_kernel_size", "by_group",
    "load_bayesian", "ELBO", "Predictive", "create_prior", "build_architecture", "BayespriorError",
    "ConfigError", "DataError", "PluginError", "PriorMismatchError", "CheckpointError",
]
