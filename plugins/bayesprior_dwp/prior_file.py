"""The DWP prior file: every group's kernel VAE with its metadata, in one `torch.save`d dict.

Format ``bayesprior.dwp-prior/1``::

    {"format": "bayesprior.dwp-prior/1", "bayesprior_version": "0.1.0", "command": "bayesprior fit-prior ...",
     "kernel_size": [3, 3, 3], "latent_dim": 6,
     "vae": {"kernel_size": [3, 3, 3], "latent_dim": 6, "hidden": 32, "depth": 2, "min_variance": 1e-06},
     "groups": {"enc_full": {"state_dict": {...}, "heldout_elbo": [...], "layers": [...],
                             "n_kernels": 10560}, ...},
     "provenance": {...the kernel bank's header...}}

Written atomically; read with `load_prior_file`, which raises `CheckpointError` naming the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from bayesprior import __version__
from bayesprior.atomic import atomic_torch_save
from bayesprior.errors import CheckpointError, ConfigError
from bayesprior.kernels import KernelBank
from bayesprior.safe_load import load_plain
from bayesprior.version import command_line

from .vae import KernelVAE

PRIOR_FORMAT = "bayesprior.dwp-prior/1"


@dataclass
class PriorFile:
    """A loaded prior file: `header` (everything but the weights) and the per-group VAE states."""

    path: Path
    header: dict[str, Any]
    states: dict[str, dict[str, torch.Tensor]]

    @property
    def groups(self) -> list[str]:
        return list(self.states)

    @property
    def kernel_size(self) -> tuple[int, ...]:
        return tuple(self.header["kernel_size"])

    def heldout_elbo(self, group: str) -> list[float]:
        return list(self.header["groups"][group]["heldout_elbo"])

    def vae(self, group: str) -> KernelVAE:
        """The fitted VAE of `group` (CPU, eval mode). Raises `ConfigError` for an unknown group."""
        if group not in self.states:
            raise ConfigError(f"prior file {self.path} has no group {group!r} "
                              f"(groups: {', '.join(self.states) or 'none'})")
        vae = KernelVAE(**self.header["vae"])
        try:
            vae.load_state_dict(self.states[group])
        except RuntimeError as exc:
            raise CheckpointError(self.path, f"VAE state of group {group!r} does not fit: {exc}") from None
        return vae.eval()


def save_prior_file(path: str | Path, fits: Mapping[str, tuple[KernelVAE, list[float]]], bank: KernelBank) -> None:
    """Write the VAEs of `fits` ({group: (vae, heldout_elbo)}) with the bank's provenance, atomically."""
    if not fits:
        raise ConfigError("no fitted group to write")
    hparams = {tuple(sorted((k, str(v)) for k, v in vae.hparams.items())) for vae, _ in fits.values()}
    if len(hparams) != 1:
        raise ConfigError("all groups of one prior file must share the VAE hyper-parameters")
    first = next(iter(fits.values()))[0]
    bank_groups = bank.header.get("groups", {})
    payload = {
        "format": PRIOR_FORMAT,
        "bayesprior_version": __version__,
        "command": command_line(),
        "kernel_size": list(first.kernel_size),
        "latent_dim": first.latent_dim,
        "vae": dict(first.hparams),
        "groups": {
            g: {"state_dict": {k: v.detach().cpu() for k, v in vae.state_dict().items()},
                "heldout_elbo": [float(x) for x in history],
                "layers": list(bank_groups.get(g, {}).get("layers", [])),
                "n_kernels": int(len(bank.kernels[g])) if g in bank.kernels else None}
            for g, (vae, history) in fits.items()
        },
        "provenance": dict(bank.header),
    }
    atomic_torch_save(payload, path)


def load_prior_file(path: str | Path) -> PriorFile:
    """Read a prior file. Raises `CheckpointError` naming the file if it is missing or not a prior file."""
    path = Path(path)
    payload = load_plain(path, "a DWP prior file", trust=False)
    if not isinstance(payload, dict) or payload.get("format") != PRIOR_FORMAT:
        raise CheckpointError(path, f"not a DWP prior file (expected format {PRIOR_FORMAT!r}); "
                                    "write one with `bayesprior fit-prior`")
    for key in ("kernel_size", "latent_dim", "vae", "groups"):
        if key not in payload:
            raise CheckpointError(path, f"DWP prior file lacks {key!r}")
    groups = payload["groups"]
    if not isinstance(groups, dict) or not groups or any("state_dict" not in v for v in groups.values()):
        raise CheckpointError(path, "DWP prior file holds no group VAE states")
    header = {k: v for k, v in payload.items() if k != "groups"}
    header["groups"] = {g: {k: v for k, v in info.items() if k != "state_dict"} for g, info in groups.items()}
    return PriorFile(path, header, {g: info["state_dict"] for g, info in groups.items()})
