"""bayesprior: weight priors for Bayesian deep learning in PyTorch, extensible by plugins."""
from __future__ import annotations

from .checkpoints import load_bayesian, load_model, save_model
from .errors import (
    BayespriorError,
    CheckpointError,
    ConfigError,
    DataError,
    FolderInUseError,
    NonFiniteError,
    PluginError,
    PriorMismatchError,
)
from .layers import MODES, BayesianLayer
from .plugins import build_architecture, create_prior, hookimpl
from .posteriors import GaussianPosterior, Posterior
from .priors import Prior, register_kl, resolve_kl
from .selectors import Selector, by_group, by_kernel_size, by_layer_names, by_name, by_type
from .version import __version__
from .wrap import ELBO, BayesianModel, Predictive, Rule, bayesianize

__all__ = [
    "__version__", "hookimpl", "Prior", "register_kl", "resolve_kl", "Posterior", "GaussianPosterior",
    "BayesianLayer", "MODES", "bayesianize", "BayesianModel", "Rule", "Selector", "by_name", "by_type",
    "by_kernel_size", "by_group", "by_layer_names", "save_model", "load_model", "load_bayesian", "ELBO",
    "Predictive", "create_prior", "build_architecture", "BayespriorError", "ConfigError", "DataError",
    "PluginError", "PriorMismatchError", "CheckpointError", "NonFiniteError", "FolderInUseError",
]
