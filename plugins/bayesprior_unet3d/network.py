"""The 3D U-Net of Kuzina, Egorov, Burnaev (2019), as the authors' code builds it ("short" config).

Pre-activation residual blocks (InstanceNorm3d without affine parameters -> ReLU -> Conv3d, no biases
anywhere), three stride-2 stages (input sizes must be divisible by 8), additive skips, trilinear
upsampling. With the default widths (16, 32, 32, 64) and two classes it has exactly 726,480 parameters.

Module names are part of the contract (layer groups, fine-tuning globs and kernel harvesting use them):
``init_conv``, ``down1`` .. ``down6`` (children ``conv1``, ``conv2``, ``shortcut``), ``up1`` .. ``up3``
(children ``reduce``, ``upsample``, ``conv1``, ``conv2``) and ``out_conv``; every `ConvBlock` has
``norm``, ``act`` and ``conv``, so a 3x3x3 convolution is named like ``down1.conv1.conv``.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from bayesprior.errors import ConfigError

DEFAULT_WIDTHS = (16, 32, 32, 64)
# the network halves the volume three times, so every spatial size must be a multiple of this
SIZE_MULTIPLE = 8
# at 1/8 resolution instance normalisation needs more than one voxel, so one axis must reach this
MIN_INPUT_SIZE = 2 * SIZE_MULTIPLE


class ConvBlock(nn.Sequential):
    """Pre-activation convolution: InstanceNorm3d (no affine parameters) -> ReLU -> Conv3d (no bias)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.norm = nn.InstanceNorm3d(in_channels, affine=False)
        self.act = nn.ReLU(inplace=False)
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=kernel_size // 2, bias=False)


class DownBlock(nn.Module):
    """Residual block ``conv2(conv1(x)) + shortcut(x)``; with ``downsample`` conv1 and the shortcut
    (a pre-activated 1x1x1 projection) have stride 2, otherwise the shortcut is the identity."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool):
        super().__init__()
        stride = 2 if downsample else 1
        self.conv1 = ConvBlock(in_channels, out_channels, 3, stride)
        self.conv2 = ConvBlock(out_channels, out_channels, 3)
        if downsample:
            self.shortcut: nn.Module = ConvBlock(in_channels, out_channels, 1, stride)
        elif in_channels == out_channels:
            self.shortcut = nn.Identity()
        else:
            raise ConfigError(f"a down block without downsampling keeps its width; got {in_channels} -> "
                              f"{out_channels}")

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x)) + self.shortcut(x)


class UpBlock(nn.Module):
    """Pre-activated 1x1x1 channel reduction, trilinear x2 upsampling, additive skip, then a residual
    pair of 3x3x3 convolutions: ``u = up(reduce(x)) + skip; out = conv2(conv1(u)) + u``."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.reduce = ConvBlock(in_channels, out_channels, 1)
        self.upsample = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=True)
        self.conv1 = ConvBlock(out_channels, out_channels, 3)
        self.conv2 = ConvBlock(out_channels, out_channels, 3)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        u = self.upsample(self.reduce(x)) + skip
        return self.conv2(self.conv1(u)) + u


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"unet3d: {what} must be a positive integer, got {value!r}")
    return value


class UNet3D(nn.Module):
    """The paper's 3D U-Net.

    Args:
        in_channels: input modalities (1 in the paper).
        n_classes: output channels, logits (2 in the paper: background and lesion/tumour).
        widths: four channel widths: the full-resolution level and the levels at 1/2, 1/4 and 1/8.
    Raises:
        ConfigError: a non-positive channel count or not exactly four widths; at forward time, an input
            that is not 5-D with `in_channels` channels, whose spatial size is not divisible by 8, or
            that is 8 or less on every axis (one voxel at 1/8 resolution).
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 2, widths: Sequence[int] = DEFAULT_WIDTHS):
        super().__init__()
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.n_classes = _positive_int(n_classes, "n_classes")
        if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence) or len(widths) != 4:
            raise ConfigError(f"unet3d: widths must be four channel counts (full, 1/2, 1/4, 1/8 resolution), "
                              f"got {widths!r} (on the command line: --arch-option 'widths=[8,16,32,64]')")
        w0, w1, w2, w3 = (_positive_int(w, "every width") for w in widths)
        self.widths = (w0, w1, w2, w3)
        self.init_conv = nn.Conv3d(in_channels, w0, 3, padding=1, bias=False)
        self.down1 = DownBlock(w0, w1, downsample=True)
        self.down2 = DownBlock(w1, w1, downsample=False)
        self.down3 = DownBlock(w1, w2, downsample=True)
        self.down4 = DownBlock(w2, w2, downsample=False)
        self.down5 = DownBlock(w2, w3, downsample=True)
        self.down6 = DownBlock(w3, w3, downsample=False)
        self.up1 = UpBlock(w3, w2)
        self.up2 = UpBlock(w2, w1)
        self.up3 = UpBlock(w1, w0)
        self.out_conv = nn.Conv3d(w0, n_classes, 1, bias=False)

    def check_input(self, x: Tensor) -> None:
        """Raise `ConfigError` unless `x` is (batch, in_channels, D, H, W) with D, H, W divisible by 8."""
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ConfigError(f"unet3d: input must have shape (batch, {self.in_channels}, D, H, W), "
                              f"got {tuple(x.shape)}")
        spatial = tuple(x.shape[2:])
        if any(s % SIZE_MULTIPLE for s in spatial):
            padded = tuple(-(-s // SIZE_MULTIPLE) * SIZE_MULTIPLE for s in spatial)
            raise ConfigError(f"unet3d: input spatial shape {spatial} is not divisible by {SIZE_MULTIPLE} "
                              f"in every axis (the network halves it three times); pad it, e.g. to {padded}")
        if all(s < MIN_INPUT_SIZE for s in spatial):
            raise ConfigError(f"unet3d: input spatial shape {spatial} is below the network's minimum: at 1/8 "
                              "resolution it is a single voxel, which instance normalisation cannot normalise; "
                              f"at least one axis must be {MIN_INPUT_SIZE} or more (pad or preprocess to a "
                              "larger --shape)")

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        full = self.init_conv(x)
        half = self.down2(self.down1(full))
        quarter = self.down4(self.down3(half))
        eighth = self.down6(self.down5(quarter))
        h = self.up1(eighth, quarter)
        h = self.up2(h, half)
        h = self.up3(h, full)
        return self.out_conv(h)
