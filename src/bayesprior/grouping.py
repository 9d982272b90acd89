"""Layer groups for any network: by input resolution, by kernel size, or by module-name patterns.

A group is a named list of module names, ``{"enc_half": ["down1.conv2.conv", ...]}``; `bayesianize`
takes groups through ``groups=`` and selects them with `by_group`. The Deep Weight Prior fits one kernel
VAE per group, so layers whose kernels look alike should share one: the paper puts together the
convolutions whose inputs have the same resolution, encoder and decoder apart.

`group_by_resolution` finds such groups for a network it has never seen, from one dry forward pass.

Group names
-----------
``{phase}_{resolution}``, plus ``_k{kernel}`` when the grouped layers have more than one kernel size:

- ``phase`` is ``enc`` or ``dec``. The decoder starts after the last layer whose input is at the
  coarsest resolution of the forward pass; a layer that itself leaves the coarsest resolution by
  upsampling (a transposed convolution: output finer than input) already belongs to the decoder.
- ``resolution`` is the input resolution of the layer relative to the example input, rounded to the
  nearest power of two per axis (so the one-voxel loss of an unpadded convolution does not count):
  ``full``, ``half``, ``quarter``, ``eighth``, ``sixteenth``, then ``1_32``, ``1_64``...; above the input
  resolution ``x2``, ``x4``...; anisotropic resolutions are named by their per-axis factors, e.g.
  ``down1x2x2`` (depth kept, height and width halved).
- ``kernel`` is the kernel size, e.g. ``k3x3x3``.

On the paper's U-Net (`unet3d` plugin) this gives exactly the plugin's seven groups, with the same names:
``enc_full``, ``enc_half``, ``enc_quarter``, ``enc_eighth``, ``dec_quarter``, ``dec_half``, ``dec_full``.
"""
from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

import torch
from torch import Tensor, nn

from .errors import ConfigError
from .layers import BayesianLayer, WrappableLayer, is_supported

CONV_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
)

KernelSpec = Union[int, Sequence[int], None]

_RESOLUTION_NAMES = {0: "full", 1: "half", 2: "quarter", 3: "eighth", 4: "sixteenth"}


# ------------------------------------------------------------------------------------------ layers
def _is_conv(module: nn.Module) -> bool:
    if isinstance(module, BayesianLayer):
        return module.wrapped_type.startswith("Conv")
    return isinstance(module, CONV_TYPES)


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) for every convolution and transposed convolution of `model`, in definition order.

    A `BayesianLayer` wrapping a convolution counts as that convolution (under the same name); the plain
    module inside it is skipped.
    """
    found: list[tuple[str, nn.Module]] = []
    bayesian_prefixes: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(p + ".") for p in bayesian_prefixes):
            continue
        if isinstance(module, BayesianLayer):
            bayesian_prefixes.append(name)
        if name and _is_conv(module):
            found.append((name, module))
    return found


def kernel_size_of(module: nn.Module) -> tuple[int, ...]:
    """The kernel size of a convolution (or of a Bayesian-wrapped one) as a tuple."""
    # a layer setting (a tuple, or an int for a layer of another library), which nn.Module's __getattr__ would
    # type as a tensor or a module
    k: Any = module.kernel_size
    return tuple(k) if isinstance(k, (tuple, list)) else (int(k),)


def kernel_label(kernel_size: Sequence[int]) -> str:
    """``(3, 3, 3)`` -> ``"3x3x3"``."""
    return "x".join(str(int(k)) for k in kernel_size)


def _kernel_filter(kernel_size: KernelSpec, include_pointwise: bool):
    if kernel_size is None:
        return lambda k: include_pointwise or any(v != 1 for v in k)
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, (int, Sequence)):
        raise ConfigError(f"kernel_size must be an int, a tuple of ints or None, got {kernel_size!r}")
    if isinstance(kernel_size, int):
        return lambda k: all(v == kernel_size for v in k)
    wanted = tuple(int(v) for v in kernel_size)
    return lambda k: k == wanted


# ------------------------------------------------------------------------------ by input resolution
@dataclass(frozen=True)
class _Call:
    name: str
    kernel_size: tuple[int, ...]
    input_exponents: tuple[int, ...]   # log2 of the downsampling factor per axis, w.r.t. the example input
    output_exponents: tuple[int, ...]

    @property
    def input_coarseness(self) -> int:
        return sum(self.input_exponents)

    @property
    def upsamples(self) -> bool:
        return sum(self.output_exponents) < self.input_coarseness


def _exponents(reference: Sequence[int], spatial: Sequence[int]) -> tuple[int, ...]:
    """Per-axis log2 of reference/spatial, rounded (whole-volume ratio if the dimensionality differs)."""
    if any(s <= 0 for s in spatial):
        return tuple(0 for _ in spatial)
    if len(spatial) == len(reference):
        return tuple(round(math.log2(r / s)) for r, s in zip(reference, spatial, strict=True))
    ratio = math.prod(reference) / math.prod(spatial)
    e = round(math.log2(ratio) / max(len(reference), 1))
    return tuple(e for _ in spatial)


def resolution_label(exponents: Sequence[int]) -> str:
    """Name of a resolution given per-axis log2 downsampling factors (see the module docstring)."""
    def factor(e: int) -> str:
        return str(2 ** e) if e >= 0 else f"{2.0 ** e:g}"

    if len(set(exponents)) > 1:
        return "down" + "x".join(factor(e) for e in exponents)
    e = exponents[0] if exponents else 0
    if e in _RESOLUTION_NAMES:
        return _RESOLUTION_NAMES[e]
    return f"1_{2 ** e}" if e > 0 else f"x{2 ** -e}"


def _first_tensor(obj: Any) -> Tensor | None:
    if isinstance(obj, Tensor):
        return obj
    if isinstance(obj, (tuple, list)):
        for item in obj:
            t = _first_tensor(item)
            if t is not None:
                return t
    if isinstance(obj, Mapping):
        for item in obj.values():
            t = _first_tensor(item)
            if t is not None:
                return t
    return None


def _record_calls(model: nn.Module, example_input: Tensor | Sequence[Tensor]) -> list[_Call]:
    """Run one forward pass without gradients, in eval mode, recording every convolution call in order."""
    args = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    reference_tensor = _first_tensor(args)
    if reference_tensor is None or reference_tensor.dim() < 3:
        raise ConfigError("example_input must be a tensor (or tuple of tensors) shaped (batch, channels, "
                          f"*spatial); got {type(example_input).__name__}"
                          + (f" of shape {tuple(reference_tensor.shape)}" if reference_tensor is not None else ""))
    reference = tuple(reference_tensor.shape[2:])
    calls: list[_Call] = []
    handles = []

    def hook_for(name: str, module: nn.Module):
        kernel = kernel_size_of(module)

        def hook(mod: nn.Module, inputs: tuple, output: Any) -> None:
            x, y = _first_tensor(inputs), _first_tensor(output)
            if x is None:
                return
            x_spatial = tuple(x.shape[2:]) if x.dim() >= 3 else tuple(x.shape[1:])
            y_spatial = tuple(y.shape[2:]) if y is not None and y.dim() >= 3 else x_spatial
            calls.append(_Call(name, kernel, _exponents(reference, x_spatial), _exponents(reference, y_spatial)))

        return hook

    for name, module in conv_layers(model):
        handles.append(module.register_forward_hook(hook_for(name, module)))
    # eval mode so that batch-norm running statistics are not touched; restored afterwards
    was_training = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            model(*args)
    except Exception as exc:
        raise ConfigError(f"the dry forward pass of {type(model).__name__} on an input of shape "
                          f"{tuple(reference_tensor.shape)} failed: {exc}") from exc
    finally:
        for h in handles:
            h.remove()
        for m, flag in was_training.items():
            m.training = flag
    return calls


def group_by_resolution(model: nn.Module, example_input: Tensor | Sequence[Tensor], *,
                        kernel_size: KernelSpec = None, include_pointwise: bool = False) -> dict[str, list[str]]:
    """Group the convolutions of any network by (encoder or decoder, input resolution, kernel size).

    One forward pass on `example_input` (without gradients, in eval mode, training flags restored)
    records each convolution's input and output spatial shape and call order; names follow the module
    docstring. A module called several times is grouped by its first call; a module never called is in
    no group. Bayesian-wrapped convolutions are grouped under their own names.

    Args:
        model: any ``nn.Module`` whose forward takes `example_input`.
        example_input: a (batch, channels, *spatial) tensor, or a tuple of positional inputs whose first
            tensor defines the reference ("full") resolution. A batch of 1 suffices.
        kernel_size: keep only convolutions of this kernel size (``3`` matches 3, 3x3 and 3x3x3; a tuple
            must match exactly). Default None: every kernel size except pointwise (all ones), which carry
            no spatial pattern and are usually left deterministic.
        include_pointwise: with ``kernel_size=None``, keep the pointwise (1x1x1) convolutions too.
    Returns:
        ``{group name: [module names in call order]}``, groups ordered by their first call.
    Raises:
        ConfigError: `example_input` is not a batch tensor, the forward pass fails, or `kernel_size` is
            malformed.
    """
    keep = _kernel_filter(kernel_size, include_pointwise)
    calls = _record_calls(model, example_input)
    if not calls:
        return {}
    coarsest = max(c.input_coarseness for c in calls)
    first_coarsest = next(i for i, c in enumerate(calls) if c.input_coarseness == coarsest)
    last_coarsest = max(i for i, c in enumerate(calls) if c.input_coarseness == coarsest)

    first_calls: dict[str, tuple[int, _Call]] = {}
    for i, call in enumerate(calls):
        if call.name not in first_calls and keep(call.kernel_size):
            first_calls[call.name] = (i, call)
    several_kernels = len({c.kernel_size for _, c in first_calls.values()}) > 1

    groups: dict[str, list[str]] = {}
    for i, call in first_calls.values():
        in_decoder = i > last_coarsest or (i >= first_coarsest and call.upsamples)
        name = f"{'dec' if in_decoder else 'enc'}_{resolution_label(call.input_exponents)}"
        if several_kernels:
            name += f"_k{kernel_label(call.kernel_size)}"
        groups.setdefault(name, []).append(call.name)
    return groups


# ------------------------------------------------------------------------------------ other ways
def group_by_kernel_size(model: nn.Module, *, include_pointwise: bool = True) -> dict[str, list[str]]:
    """Group every convolution by kernel size: ``{"k3x3x3": [...], "k1x1x1": [...]}``, definition order.

    Args:
        include_pointwise: keep the pointwise (all-ones) kernel sizes as a group of their own.
    """
    groups: dict[str, list[str]] = {}
    for name, module in conv_layers(model):
        k = kernel_size_of(module)
        if include_pointwise or any(v != 1 for v in k):
            groups.setdefault(f"k{kernel_label(k)}", []).append(name)
    return groups


def weight_layers(model: nn.Module) -> list[tuple[str, BayesianLayer | WrappableLayer]]:
    """(name, module) for every layer that can be (or already is) Bayesian: convolutions and linears."""
    found: list[tuple[str, BayesianLayer | WrappableLayer]] = []
    bayesian_prefixes: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(p + ".") for p in bayesian_prefixes):
            continue
        if isinstance(module, BayesianLayer):
            bayesian_prefixes.append(name)
            found.append((name, module))
        elif is_supported(module):
            found.append((name, module))
    return found


def group_by_name(model: nn.Module, patterns: Mapping[str, str | Sequence[str]], *,
                  strict: bool = True) -> dict[str, list[str]]:
    """Group layers by module-name globs: ``group_by_name(net, {"encoder": ["down*", "init_conv"]})``.

    Only layers that can be made Bayesian (convolutions, transposed convolutions, linears, and
    Bayesian-wrapped ones) are grouped. A layer goes to the first group (in the mapping's order) with a
    matching glob, so groups never overlap.

    Args:
        patterns: ``{group name: glob or list of globs}`` matched against qualified module names.
        strict: raise if a group matches no layer.
    Returns:
        ``{group name: [module names in definition order]}``.
    Raises:
        ConfigError: a malformed pattern, or (strict) a group that matches no layer.
    """
    normalised: dict[str, tuple[str, ...]] = {}
    for group, globs in patterns.items():
        globs = (globs,) if isinstance(globs, str) else tuple(globs)
        if not globs or not all(isinstance(g, str) and g for g in globs):
            raise ConfigError(f"group {group!r}: patterns must be non-empty name globs, got {globs!r}")
        normalised[group] = globs
    groups: dict[str, list[str]] = {group: [] for group in normalised}
    for name, _ in weight_layers(model):
        for group, globs in normalised.items():
            if any(fnmatch.fnmatchcase(name, g) for g in globs):
                groups[group].append(name)
                break
    if strict:
        empty = [g for g, members in groups.items() if not members]
        if empty:
            raise ConfigError(f"group(s) {empty} match no layer of {type(model).__name__} "
                              f"(patterns: {[list(normalised[g]) for g in empty]})")
    return groups


# --------------------------------------------------------------------------------------- inspection
def describe_layers(model: nn.Module, groups: Mapping[str, Sequence[str]] | None = None) -> list[dict[str, Any]]:
    """One row per layer with a weight: ``name``, ``type``, ``kernel`` (e.g. "3x3x3", "" for a linear),
    ``group`` ("" if none), ``kernels`` (out x in/groups spatial kernels of a convolution, 0 otherwise)
    and ``parameters`` (of that module alone).

    Parameter-holding modules that are not convolutions or linears (affine norms) get a row too.
    """
    group_of = {layer: g for g, layers in (groups or {}).items() for layer in layers}
    rows = []
    layer_names = set()
    for name, module in weight_layers(model):
        layer_names.add(name)
        is_conv = _is_conv(module)
        weight = module.weight
        type_name = (module.wrapped_type + " (Bayesian)") if isinstance(module, BayesianLayer) else type(module).__name__
        rows.append({
            "name": name, "type": type_name,
            "kernel": kernel_label(kernel_size_of(module)) if is_conv else "",
            "group": group_of.get(name, ""),
            "kernels": int(weight.shape[0] * weight.shape[1]) if is_conv else 0,
            "parameters": sum(p.numel() for p in module.parameters()),
        })
    for name, module in model.named_modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        if own and name not in layer_names and not any(name.startswith(n + ".") for n in layer_names):
            rows.append({"name": name, "type": type(module).__name__, "kernel": "",
                         "group": group_of.get(name, ""), "kernels": 0, "parameters": own})
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    rows.sort(key=lambda r: order.get(r["name"], len(order)))
    return rows
