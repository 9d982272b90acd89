"""Built-in plugin: the paper's 3D U-Net (`unet3d`) and its seven kernel groups.

Groups (one DWP prior each in the paper) hold the 26 3x3x3 convolutions, by the resolution of their
input, encoder and decoder apart; the 1x1x1 convolutions (shortcuts, reductions, output) are in no group
and stay deterministic by default:

=============  ==================================================================  =======
group          convolutions                                                        kernels
=============  ==================================================================  =======
enc_full       init_conv, down1.conv1                                                  528
enc_half       down1.conv2, down2.conv1, down2.conv2, down3.conv1                     4096
enc_quarter    down3.conv2, down4.conv1, down4.conv2, down5.conv1                     5120
enc_eighth     down5.conv2, down6.conv1, down6.conv2                                 12288
dec_quarter    up1.conv1, up1.conv2                                                   2048
dec_half       up2.conv1, up2.conv2                                                   2048
dec_full       up3.conv1, up3.conv2                                                    512
=============  ==================================================================  =======

(kernel counts for the default widths; ``down1.conv1`` stands for the Conv3d ``down1.conv1.conv``.)
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from bayesprior import hookimpl
from bayesprior.errors import ConfigError

from .network import DEFAULT_WIDTHS, MIN_INPUT_SIZE, ConvBlock, DownBlock, UNet3D, UpBlock

__all__ = ["UNet3D", "ConvBlock", "DownBlock", "UpBlock", "build_unet3d", "unet3d_groups", "GROUP_LAYERS",
           "FINETUNE_LAYERS"]

# group -> the Conv3d modules in it, in forward order (a stride-2 conv belongs to the resolution of its input)
GROUP_LAYERS: dict[str, tuple[str, ...]] = {
    "enc_full": ("init_conv", "down1.conv1.conv"),
    "enc_half": ("down1.conv2.conv", "down2.conv1.conv", "down2.conv2.conv", "down3.conv1.conv"),
    "enc_quarter": ("down3.conv2.conv", "down4.conv1.conv", "down4.conv2.conv", "down5.conv1.conv"),
    "enc_eighth": ("down5.conv2.conv", "down6.conv1.conv", "down6.conv2.conv"),
    "dec_quarter": ("up1.conv1.conv", "up1.conv2.conv"),
    "dec_half": ("up2.conv1.conv", "up2.conv2.conv"),
    "dec_full": ("up3.conv1.conv", "up3.conv2.conv"),
}

# the paper's PRf trains the first and the last blocks only and freezes the middle
FINETUNE_LAYERS = ["init_conv", "init_conv.*", "down1.*", "up3.*", "out_conv"]


def build_unet3d(in_channels: int = 1, n_classes: int = 2, widths: Sequence[int] = DEFAULT_WIDTHS) -> UNet3D:
    """Build the paper's 3D U-Net (torch's default initialisation; training code applies its own).

    Raises:
        ConfigError: invalid channel counts or widths (see `UNet3D`).
    """
    # a list from JSON or TOML becomes the tuple the network keeps; anything else goes to its check as given, so
    # that '8,16,32,64' is named as it was written, not as the characters tuple() makes of it
    return UNet3D(in_channels=in_channels, n_classes=n_classes,
                  widths=tuple(widths) if isinstance(widths, (list, tuple)) else widths)


def unet3d_groups(model: nn.Module) -> dict[str, list[str]]:
    """The seven named kernel groups of a `UNet3D` (or of a Bayesian-wrapped one: names are unchanged).

    Raises:
        ConfigError: `model` lacks one of the group's modules (it is not a unet3d network).
    """
    known = {name for name, _ in model.named_modules()}
    missing = [name for layers in GROUP_LAYERS.values() for name in layers if name not in known]
    if missing:
        raise ConfigError(f"unet3d groups: the model has no module(s) {missing[:4]}; is it a unet3d network?")
    return {group: list(layers) for group, layers in GROUP_LAYERS.items()}


@hookimpl
def register_architectures(register):
    register("unet3d", build_unet3d, groups=unet3d_groups, finetune_layers=list(FINETUNE_LAYERS),
             min_input_size=MIN_INPUT_SIZE,
             description="the 3D U-Net of Kuzina et al. 2019 (726,480 parameters; 7 kernel groups by "
                         "input resolution; inputs divisible by 8)")
