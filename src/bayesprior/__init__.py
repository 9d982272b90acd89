"""bayesprior: weight priors for Bayesian deep learning in PyTorch, extensible by plugins."""
from __future__ import annotations

from .version import __version__  # noqa: F401
from .errors import (BayespriorError, CheckpointError, ConfigError, DataError, FolderInUseError,  # noqa: E402
                     NonFiniteError, PluginError, PriorMismatchError)
from .layers import MODES, BayesianLayer  # noqa: E402
from .plugins import build_architecture, create_prior, hookimpl  # noqa: E402
from .posteriors import GaussianPosterior, Posterior  # noqa: E402
from .priors import Prior, register_kl, resolve_kl  # noqa: E402
from .selectors import Selector, by_group, by_kernel_size, by_layer_names, by_name, by_type  # noqa: E402
from .wrap import ELBO, BayesianModel, Predictive, Rule, bayesianize  # noqa: E402
from .checkpoints import load_bayesian, load_model, save_model  # noqa: E402

__all__ = [
    "__version__", "hookimpl", "Prior", "register_kl", "resolve_kl", "Posterior", "GaussianPosterior",
    "BayesianLayer", "MODES", "bayesianize", "BayesianModel", "Rule", "Selector", "by_name", "by_type",
    "by_kernel_size", "by_group", "by_layer_names", "save_model", "load_model", "load_bayesian", "ELBO",
    "Predictive", "create_prior", "build_architecture", "BayespriorError", "ConfigError", "DataError",
    "PluginError", "PriorMismatchError", "CheckpointError", "NonFiniteError", "FolderInUseError",
]
