"""A tiny registered architecture with layer groups, shared by the kernel-bank and DWP tests."""
from __future__ import annotations

import torch
from torch import nn

from bayesprior import hookimpl

TINY_NAME = "tiny_dwp_net"


class TinyNet(nn.Module):
    """conv_a, conv_b at full resolution, conv_c at half resolution, a 1x1 head (not in any group)."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.conv_a = nn.Conv3d(1, width, 3, padding=1, bias=False)
        self.conv_b = nn.Conv3d(width, width, 3, padding=1, bias=False)
        self.conv_c = nn.Conv3d(width, width, 3, stride=2, padding=1, bias=False)
        self.head = nn.Conv3d(2 * width, 2, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.conv_b(torch.relu(self.conv_a(x))))
        c = nn.functional.interpolate(torch.relu(self.conv_c(a)), size=a.shape[2:], mode="nearest")
        return self.head(torch.cat([a, c], dim=1))


def tiny_groups(model: nn.Module) -> dict[str, list[str]]:
    return {"full": ["conv_a", "conv_b"], "half": ["conv_c"]}


class TinyPlugin:
    @hookimpl
    def register_architectures(self, register):
        register(TINY_NAME, TinyNet, groups=tiny_groups, description="tiny test net")
