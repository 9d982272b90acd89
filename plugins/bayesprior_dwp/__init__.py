"""Built-in plugin: the Deep Weight Prior (kernel VAEs fitted to harvested kernels) and its commands.

Registers the prior ``dwp`` (factory arguments: ``path`` of a prior file, ``group``, and the options
``fine_tune_encoder=True``, ``chunk_size=None``) and the commands ``fit-prior`` and ``show-kernels``.
"""
from __future__ import annotations

from bayesprior import hookimpl

from .fit import check_fit_options, fit_and_score, fit_kernel_vae, fit_prior, fit_prior_file
from .prior import DeepWeightPrior, check_dwp_options, create_anchored_dwp_prior, create_dwp_prior
from .prior_file import PRIOR_FORMAT, PriorFile, load_prior_file, save_prior_file
from .vae import KernelVAE

__all__ = ["KernelVAE", "fit_kernel_vae", "fit_prior", "fit_prior_file", "DeepWeightPrior", "create_dwp_prior", "PriorFile",
           "load_prior_file", "save_prior_file", "PRIOR_FORMAT"]


@hookimpl
def register_priors(register):
    register("dwp", create_dwp_prior, fit=fit_and_score, per_group=True, check_fit_options=check_fit_options,
             check_options=check_dwp_options, label="UNet-DWP",
             description="Deep Weight Prior: a kernel VAE per layer group (path=prior file, group=name)")
    register("dwp_anchored", create_anchored_dwp_prior, fit=fit_and_score, per_group=True,
             check_fit_options=check_fit_options, check_options=check_dwp_options, centred_at_source=True,
             label="UNet-DWP-anchored",
             description="Deep Weight Prior whose latent prior per kernel is r(z | the source kernel there): "
                         "kernels like the source network's own (path=prior file, group=name, anchor_scale)")


@hookimpl
def register_commands(cli):
    from .commands import register

    register(cli)
