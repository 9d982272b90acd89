"""Kernel harvesting: the convolution kernels of trained networks, grouped, in one kernel-bank file.

    bank = harvest_kernels(["src1.pt", "src2.pt"])          # groups of the architecture plugin
    bank.save("kernels.npz")
    bank = KernelBank.load("kernels.npz")
    bank.kernels["enc_full"].shape                           # (n, 3, 3, 3), float32

Each ``weight[out, in]`` slice of a k x k x k convolution is one kernel. Kernels of the layers of one
group are pooled over layers and checkpoints; kernels whose L2 norm is below a threshold (dead or
near-zero filters, which would teach a prior nothing) are dropped and counted.

The file format (``bayesprior.kernel-bank/1``) is a single ``.npz`` readable with numpy alone; it is
documented in ``docs/formats.md``. This module knows nothing about the models fitted to a bank.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
from torch import nn

from .atomic import atomic_path
from .checkpoints import deterministic_state, read_model_file, require_finite_state
from .data.provenance import preprocessing_summary
from .errors import CheckpointError, ConfigError
from .grouping import group_by_resolution
from .hashing import file_sha256
from .plugins import architecture_groups, build_architecture
from .safe_load import NpzLimits, load_npz
from .tables import format_table
from .version import __version__, command_line

BANK_FORMAT = "bayesprior.kernel-bank/1"
KERNEL_KEY_PREFIX = "kernels__"
HEADER_KEY = "header_json"
#: what a bank file may declare: it is written uncompressed (`KernelBank.save`), so it never holds more than its
#: own size; a JSON header of megabytes, not gigabytes
BANK_LIMITS = NpzLimits(max_arrays=4096, max_bytes=16 * 2**30, max_bytes_per_name={HEADER_KEY: 64 * 2**20},
                        compressed=False)
GROUP_BY = ("architecture", "resolution")
#: the reference code's default (`KernelDataset3D(norm_thr=1e-2)`)
DEFAULT_NORM_THRESHOLD = 1e-2
_NEEDS_EXAMPLE_SHAPE = "group_by='resolution' needs example_shape (the spatial size of an input, e.g. 40,48,40)"
#: what `_read` takes from a model file: its plain weights, its architecture, its preprocessing summary
_ModelFile = tuple[dict[str, torch.Tensor], dict[str, Any], Union[dict[str, Any], None]]


@dataclass
class KernelBank:
    """Harvested kernels per group, and where they came from.

    Attributes:
        kernels: group name -> float32 array (n, k, k, k) (one row per kernel; spatial dims as harvested).
        header: provenance, JSON-serialisable: ``format``, ``bayesprior_version``, ``kernel_size``,
            ``norm_threshold``, ``group_by``, ``example_shape``, ``architecture`` ({name, config}),
            ``checkpoints`` ([{path, sha256, preprocessing}]: each model's preprocessing summary,
            `bayesprior.data.provenance.preprocessing_summary`, None if it records none),
            ``groups`` ({group: {layers, kept, dropped}}),
            ``skipped_layers`` ({layer: reason}).
    """

    kernels: dict[str, np.ndarray]
    header: dict[str, Any] = field(default_factory=dict)

    @property
    def groups(self) -> list[str]:
        return list(self.kernels)

    @property
    def kernel_size(self) -> tuple[int, ...]:
        return tuple(self.header["kernel_size"])

    def counts(self) -> dict[str, dict[str, int]]:
        """Per group: kernels ``kept`` and ``dropped`` (norm below threshold)."""
        return {g: {"kept": int(v["kept"]), "dropped": int(v["dropped"])} for g, v in self.header["groups"].items()}

    def flat(self, group: str) -> np.ndarray:
        """The kernels of `group` as rows of k^d values: (n, k^d)."""
        kernels = self.kernels[self._check_group(group)]
        return kernels.reshape(len(kernels), int(np.prod(kernels.shape[1:])))

    def _check_group(self, group: str) -> str:
        if group not in self.kernels:
            raise ConfigError(f"kernel bank has no group {group!r} (groups: {', '.join(self.kernels) or 'none'})")
        return group

    def save(self, path: str | Path) -> None:
        """Write the bank to `path` (a single ``.npz``) atomically."""
        arrays = {KERNEL_KEY_PREFIX + g: np.ascontiguousarray(k, dtype=np.float32) for g, k in self.kernels.items()}
        header = dict(self.header, format=BANK_FORMAT, group_order=list(self.kernels))
        arrays[HEADER_KEY] = np.array(json.dumps(header))
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:  # a file object keeps numpy from appending ".npz" to the temp name
                np.savez(f, **arrays)  # type: ignore[arg-type]  # mypy: a key might be allow_pickle; none is

    @classmethod
    def load(cls, path: str | Path) -> "KernelBank":
        """Read a bank written by `save`, within `BANK_LIMITS`. Raises `CheckpointError` naming the file on a bad
        file (one that declares more than the limits is refused before its arrays are read)."""
        path = Path(path)
        data = load_npz(path, BANK_LIMITS)
        if HEADER_KEY not in data:
            raise CheckpointError(path, f"not a kernel bank (no {HEADER_KEY!r} array)")
        try:
            header = json.loads(str(data[HEADER_KEY]))
        except ValueError as exc:
            raise CheckpointError(path, f"cannot be read as a kernel bank (its header is not JSON: {exc})") from None
        arrays = {k[len(KERNEL_KEY_PREFIX):]: v for k, v in data.items() if k.startswith(KERNEL_KEY_PREFIX)}
        if not isinstance(header, dict) or header.get("format") != BANK_FORMAT:
            found = header.get("format") if isinstance(header, dict) else type(header).__name__
            raise CheckpointError(path, f"not a kernel bank (format {found!r}, expected {BANK_FORMAT!r})")
        _check_against_header(path, arrays, header)
        order = [g for g in header.get("group_order", []) if g in arrays] + \
                [g for g in arrays if g not in header.get("group_order", [])]
        return cls({g: arrays[g] for g in order}, header)

    def table(self) -> str:
        """Per group: layers, kernels kept and dropped, element std and mean norm, as aligned text."""
        cols = ["group", "layers", "kept", "dropped", "elem std", "mean norm"]
        rows = []
        for g, info in self.header["groups"].items():
            k = self.flat(g) if g in self.kernels else np.zeros((0, 1), np.float32)
            std = f"{k.std():.3g}" if len(k) else "-"
            norm = f"{np.linalg.norm(k, axis=1).mean():.3g}" if len(k) else "-"
            values = [g, str(len(info["layers"])), str(info["kept"]), str(info["dropped"]), std, norm]
            rows.append(dict(zip(cols, values, strict=True)))
        return format_table(rows, cols)


def harvest_kernels(checkpoint_paths: Sequence[str | Path], group_by: str = "architecture",
                    example_shape: Sequence[int] | None = None,
                    norm_threshold: float = DEFAULT_NORM_THRESHOLD,
                    kernel_size: int | None = None) -> KernelBank:
    """Collect the k x k x k kernels of model files into a `KernelBank`, grouped.

    Args:
        checkpoint_paths: model files written by `bayesprior.checkpoints.save_model` (deterministic or
            Bayesian; Bayesian files give their posterior means). All must record the same architecture.
        group_by: ``"architecture"`` (the groups the architecture plugin declares) or ``"resolution"``
            (layers grouped by the spatial size of their input, `bayesprior.grouping.group_by_resolution`,
            for any network).
        example_shape: spatial shape of an example input, e.g. ``(40, 48, 40)`` (needed for
            ``"resolution"``; a leading channel count may be included).
        norm_threshold: kernels whose L2 norm is below this are dropped (counted per group).
        kernel_size: harvest only layers with this cubic kernel size; None takes the most common cubic
            kernel size above 1 among the grouped layers. Other layers are skipped and recorded.
    Returns:
        The bank; groups left with no layer of the kernel size are omitted (and recorded as skipped).
    Raises:
        CheckpointError: unreadable file, no architecture recorded, another architecture than the first
            file, a missing or misshaped layer (the message names the file and the layer), or NaN or
            infinite weights.
        ConfigError: bad arguments, an architecture that declares no groups, or a group left with no
            kernel above the norm threshold.
    """
    paths = [Path(p) for p in checkpoint_paths]
    _check_harvest_options(paths, group_by, example_shape, norm_threshold)
    first = _read(paths[0])
    architecture = first[1]
    model = _build(paths[0], architecture)
    groups = _groups(model, architecture["name"], group_by, example_shape)
    reference_shapes = {name: tuple(p.shape) for name, p in _layer_weights(model, groups).items()}
    size = kernel_size if kernel_size is not None else _common_kernel_size(reference_shapes)
    wanted = _wanted_layers(groups, reference_shapes, size)
    pooled, checkpoints = _pool_kernels(paths, first, wanted, reference_shapes)
    kernels, group_info = _kernels_above_threshold(pooled, wanted, size, norm_threshold)
    skipped = {name: f"kernel {shape[2:]} is not {size}^{len(shape) - 2}"
               for name, shape in reference_shapes.items() if not _is_cubic(shape, size)}
    header = {
        "format": BANK_FORMAT,
        "bayesprior_version": __version__,
        "command": command_line(),
        "kernel_size": [size] * _spatial_dims(reference_shapes, size),
        "norm_threshold": float(norm_threshold),
        "group_by": group_by,
        "example_shape": list(example_shape) if example_shape else None,
        "architecture": architecture,
        "checkpoints": checkpoints,
        "groups": group_info,
        "skipped_layers": skipped,
    }
    return KernelBank(kernels, header)


def _check_harvest_options(paths: list[Path], group_by: str, example_shape: Sequence[int] | None,
                           norm_threshold: float) -> None:
    """`ConfigError` for arguments of `harvest_kernels` that cannot work, before any file is read."""
    if not paths:
        raise ConfigError("harvest needs at least one checkpoint")
    if group_by not in GROUP_BY:
        raise ConfigError(f"group_by must be one of {GROUP_BY}, got {group_by!r}")
    if not (norm_threshold >= 0 and np.isfinite(norm_threshold)):
        raise ConfigError(f"norm_threshold must be a finite number >= 0, got {norm_threshold!r}")
    if group_by == "resolution" and not example_shape:
        raise ConfigError(_NEEDS_EXAMPLE_SHAPE)


def _pool_kernels(paths: list[Path], first: _ModelFile, wanted: dict[str, list[str]],
                  shapes: dict[str, tuple[int, ...]]) -> tuple[dict[str, list[np.ndarray]], list[dict[str, Any]]]:
    """Per group, the kernels of its `wanted` layers in every model file (`first` is the first file, read), and
    each file's record (path, SHA-256, preprocessing). A file of another architecture than the first is refused."""
    architecture = first[1]
    pooled: dict[str, list[np.ndarray]] = {g: [] for g in wanted}
    checkpoints = []
    for i, path in enumerate(paths):
        state, arch, preprocessing = first if i == 0 else _read(path)
        if arch != architecture:
            raise CheckpointError(path, f"was built as architecture {arch}, but {paths[0]} as {architecture}; "
                                        "harvest checkpoints of one architecture at a time")
        for g, layers in wanted.items():
            for layer in layers:
                pooled[g].append(_layer_kernels(path, state, layer, shapes[layer]))
        checkpoints.append({"path": str(path), "sha256": file_sha256(path), "preprocessing": preprocessing})
    return pooled, checkpoints


def _kernels_above_threshold(pooled: dict[str, list[np.ndarray]], wanted: dict[str, list[str]], size: int,
                             norm_threshold: float) -> tuple[dict[str, np.ndarray], dict[str, dict[str, Any]]]:
    """Per group, its pooled kernels with an L2 norm of at least `norm_threshold` (float32), and its header entry
    (layers, kept, dropped). `ConfigError` if a group keeps none."""
    kernels, group_info = {}, {}
    for g, layers in wanted.items():
        all_kernels = np.concatenate(pooled[g]) if pooled[g] else np.zeros((0,) + (size,) * 3, np.float32)
        norms = np.linalg.norm(all_kernels.reshape(len(all_kernels), size ** (all_kernels.ndim - 1)), axis=1)
        keep = norms >= norm_threshold
        kernels[g] = np.ascontiguousarray(all_kernels[keep], dtype=np.float32)
        group_info[g] = {"layers": list(layers), "kept": int(keep.sum()), "dropped": int((~keep).sum())}
    empty = [g for g, info in group_info.items() if info["kept"] == 0]
    if empty:
        raise ConfigError(f"no kernel of group(s) {empty} has an L2 norm >= the norm threshold {norm_threshold:g} "
                          "(the bank would teach a prior nothing about them); lower the threshold "
                          "(--norm-threshold), or check the models")
    return kernels, group_info


def _check_against_header(path: Path, arrays: dict[str, np.ndarray], header: dict[str, Any]) -> None:
    """Raise `CheckpointError` unless the bank's arrays are what its header says they are."""
    size = header.get("kernel_size")
    if not (isinstance(size, list) and size and all(isinstance(k, int) and k >= 1 for k in size)):
        raise CheckpointError(path, f"kernel bank header's kernel_size {size!r} is not a list of positive sizes")
    groups = header.get("groups")
    if not isinstance(groups, dict) or not all(isinstance(v, dict) for v in groups.values()):
        raise CheckpointError(path, "kernel bank header's 'groups' is not a mapping of group -> information")
    unlisted, missing = sorted(set(arrays) - set(groups)), sorted(set(groups) - set(arrays))
    if unlisted or missing:
        raise CheckpointError(path, f"kernel bank arrays and header disagree: groups without a header entry "
                                    f"{unlisted}, header groups without kernels {missing}")
    for group, kernels in arrays.items():
        if kernels.dtype.kind != "f" or kernels.shape[1:] != tuple(size):
            raise CheckpointError(path, f"group {group!r} holds {kernels.dtype} kernels of shape {kernels.shape}, "
                                        f"but the header says float kernels of size {size}")
        kept = groups[group].get("kept")
        if kept is not None and kept != len(kernels):
            raise CheckpointError(path, f"group {group!r} holds {len(kernels)} kernels, but the header says {kept}")


# ------------------------------------------------------------------------------------------ helpers
def _read(path: Path) -> _ModelFile:
    """A model file's plain weights, its architecture, and the summary of its preprocessing (None: not recorded)."""
    payload = read_model_file(path)
    architecture = payload.get("architecture")
    if not architecture or not isinstance(architecture, dict) or "name" not in architecture:
        raise CheckpointError(path, "records no architecture, so its layer groups are unknown; save it with "
                                    "bayesprior.checkpoints.save_model from a network made by build_architecture")
    architecture = {"name": architecture["name"], "config": dict(architecture.get("config") or {})}
    state = deterministic_state(payload)
    require_finite_state(state, path, "its weights")  # NaN kernels are no kernels, whatever their "norm"
    return state, architecture, preprocessing_summary(payload.get("extra"))


def _build(path: Path, architecture: dict[str, Any]) -> nn.Module:
    try:
        return build_architecture(architecture["name"], **architecture["config"])
    except Exception as exc:
        raise CheckpointError(path, f"cannot rebuild its architecture {architecture}: {exc}") from None


def _groups(model: nn.Module, name: str, group_by: str, example_shape: Sequence[int] | None) -> dict[str, list[str]]:
    if group_by == "architecture":
        groups = architecture_groups(name, model)
        if not groups:
            raise ConfigError(f"architecture {name!r} declares no layer groups; harvest with "
                              "group_by='resolution' and an example input shape")
        return {g: list(v) for g, v in groups.items()}
    if example_shape is None:  # (`_check_harvest_options` refuses this first)
        raise ConfigError(_NEEDS_EXAMPLE_SHAPE)
    return {g: list(v) for g, v in group_by_resolution(model, _example_input(model, example_shape)).items()}


def _example_input(model: nn.Module, example_shape: Sequence[int]) -> torch.Tensor:
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    if not convs:
        raise ConfigError("group_by='resolution' needs a network with convolutions")
    spatial_dims = convs[0].weight.dim() - 2
    shape = [int(s) for s in example_shape]
    if len(shape) == spatial_dims:
        shape = [convs[0].in_channels] + shape
    if len(shape) != spatial_dims + 1:
        raise ConfigError(f"example_shape {tuple(example_shape)} does not fit a {spatial_dims}D network "
                          f"(give {spatial_dims} spatial sizes)")
    return torch.zeros([1] + shape)


def _layer_weights(model: nn.Module, groups: dict[str, list[str]]) -> dict[str, torch.Tensor]:
    out = {}
    for g, layers in groups.items():
        for layer in layers:
            module = model.get_submodule(layer)
            weight = getattr(module, "weight", None)
            if not isinstance(weight, torch.Tensor):
                raise ConfigError(f"layer {layer!r} of group {g!r} has no weight")
            out[layer] = weight
    return out


def _is_cubic(shape: tuple[int, ...], size: int) -> bool:
    return len(shape) >= 3 and all(s == size for s in shape[2:])


def _common_kernel_size(shapes: dict[str, tuple[int, ...]]) -> int:
    sizes = Counter(s[2] for s in shapes.values() if len(s) >= 3 and len(set(s[2:])) == 1 and s[2] > 1)
    if not sizes:
        raise ConfigError("no grouped layer has a cubic kernel larger than 1; nothing to harvest")
    return sizes.most_common(1)[0][0]


def _spatial_dims(shapes: dict[str, tuple[int, ...]], size: int) -> int:
    return next(len(s) - 2 for s in shapes.values() if _is_cubic(s, size))


def _wanted_layers(groups: dict[str, list[str]], shapes: dict[str, tuple[int, ...]], size: int) -> dict[str, list[str]]:
    wanted = {g: [l for l in layers if _is_cubic(shapes[l], size)] for g, layers in groups.items()}
    wanted = {g: layers for g, layers in wanted.items() if layers}
    if not wanted:
        raise ConfigError(f"no grouped layer has a {size}x{size}x{size} kernel")
    dims = {len(shapes[l]) for layers in wanted.values() for l in layers}
    if len(dims) > 1:
        raise ConfigError(f"grouped layers mix kernel dimensions {sorted(d - 2 for d in dims)}")
    return wanted


def _layer_kernels(path: Path, state: dict[str, torch.Tensor], layer: str, shape: tuple[int, ...]) -> np.ndarray:
    key = f"{layer}.weight"
    if key not in state:
        raise CheckpointError(path, f"has no weight for layer {layer!r} (key {key!r}); was it saved from "
                                    "another network?")
    weight = state[key]
    if tuple(weight.shape) != shape:
        raise CheckpointError(path, f"layer {layer!r} has weight shape {tuple(weight.shape)}, but the "
                                    f"architecture builds {shape}")
    w = weight.detach().to(torch.float32).cpu().numpy()
    return w.reshape((shape[0] * shape[1],) + shape[2:])
