"""bayesprior.grouping on small networks written here: resolution, kernel-size and name groups."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from bayesprior import bayesianize, by_type
from bayesprior.errors import ConfigError
from bayesprior.grouping import (
    describe_layers,
    group_by_kernel_size,
    group_by_name,
    group_by_resolution,
    resolution_label,
)


class TinyUNet2d(nn.Module):
    """Two levels, a strided conv down, a transposed conv up, a concatenated skip, batch norm."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.down = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.bottom = nn.Conv2d(8, 8, 3, padding=1)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.fuse = nn.Conv2d(8, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        a = F.relu(self.norm(self.stem(x)))
        b = F.relu(self.bottom(F.relu(self.down(a))))
        return self.head(F.relu(self.fuse(torch.cat([self.up(b), a], 1))))


def test_resolution_groups_split_encoder_and_decoder_and_name_kernel_sizes_when_mixed():
    groups = group_by_resolution(TinyUNet2d(), torch.zeros(1, 1, 16, 16))
    assert groups == {"enc_full_k3x3": ["stem", "down"], "enc_half_k3x3": ["bottom"],
                      "dec_half_k2x2": ["up"], "dec_full_k3x3": ["fuse"]}


def test_kernel_size_option_keeps_one_kernel_size_and_drops_the_suffix():
    groups = group_by_resolution(TinyUNet2d(), torch.zeros(1, 1, 16, 16), kernel_size=3)
    assert groups == {"enc_full": ["stem", "down"], "enc_half": ["bottom"], "dec_full": ["fuse"]}


def test_pointwise_convs_are_left_out_unless_asked_for():
    net, x = TinyUNet2d(), torch.zeros(1, 1, 16, 16)
    assert "head" not in {n for g in group_by_resolution(net, x).values() for n in g}
    assert group_by_resolution(net, x, include_pointwise=True)["dec_full_k1x1"] == ["head"]


def test_dry_forward_leaves_batch_norm_statistics_and_training_flags_alone():
    net = TinyUNet2d().train()
    before = net.norm.running_mean.clone()
    group_by_resolution(net, torch.randn(2, 1, 16, 16) + 5)
    assert net.training and net.norm.training
    assert torch.equal(net.norm.running_mean, before) and net.norm.num_batches_tracked == 0


def test_bayesian_wrapped_network_gets_the_same_groups():
    net, x = TinyUNet2d(), torch.zeros(1, 1, 16, 16)
    plain = group_by_resolution(net, x)
    bm = bayesianize(net, {by_type(nn.Conv2d, nn.ConvTranspose2d): "gaussian"})
    assert group_by_resolution(bm.net, x) == plain
    assert group_by_kernel_size(bm.net) == group_by_kernel_size(TinyUNet2d())


def test_failing_forward_is_a_config_error_naming_the_input_shape():
    with pytest.raises(ConfigError, match=r"\(1, 3, 16, 16\)"):
        group_by_resolution(TinyUNet2d(), torch.zeros(1, 3, 16, 16))


def test_example_input_must_be_a_batch_tensor():
    with pytest.raises(ConfigError, match="example_input"):
        group_by_resolution(TinyUNet2d(), torch.zeros(16))


def test_resolution_labels():
    assert [resolution_label((e, e, e)) for e in range(5)] == ["full", "half", "quarter", "eighth", "sixteenth"]
    assert resolution_label((5, 5)) == "1_32"
    assert resolution_label((-1, -1)) == "x2"
    assert resolution_label((0, 1, 1)) == "down1x2x2"


def test_anisotropic_downsampling_is_named_per_axis():
    net = nn.Sequential(nn.Conv3d(1, 2, 3, stride=(1, 2, 2), padding=1), nn.Conv3d(2, 2, 3, padding=1))
    assert group_by_resolution(net, torch.zeros(1, 1, 4, 8, 8)) == {"enc_full": ["0"], "enc_down1x2x2": ["1"]}


def test_group_by_kernel_size_lists_every_conv_by_kernel():
    assert group_by_kernel_size(TinyUNet2d()) == {"k3x3": ["stem", "down", "bottom", "fuse"],
                                                  "k2x2": ["up"], "k1x1": ["head"]}
    assert "k1x1" not in group_by_kernel_size(TinyUNet2d(), include_pointwise=False)


def test_group_by_name_gives_each_layer_to_the_first_matching_group():
    groups = group_by_name(TinyUNet2d(), {"ends": ["stem", "head"], "convs": "*", "more": "fuse"}, strict=False)
    assert groups == {"ends": ["stem", "head"], "convs": ["down", "bottom", "up", "fuse"], "more": []}


def test_group_by_name_raises_on_a_group_matching_nothing():
    with pytest.raises(ConfigError, match="nothing_here"):
        group_by_name(TinyUNet2d(), {"nothing_here": "decoder.*"})


def test_describe_layers_counts_kernels_and_parameters():
    rows = {r["name"]: r for r in describe_layers(TinyUNet2d(), {"g": ["down"]})}
    assert rows["down"] == {"name": "down", "type": "Conv2d", "kernel": "3x3", "group": "g",
                            "kernels": 32, "parameters": 8 * 4 * 9 + 8}
    assert rows["norm"]["parameters"] == 8 and rows["norm"]["kernel"] == ""


class _UNet1d(nn.Module):
    """A 1-D U-Net of any depth: two convs per level, strided conv down, transposed conv up, additive skips."""

    def __init__(self, depth: int, convs_per_level: int):
        super().__init__()
        self.depth = depth
        self.enc = nn.ModuleList(nn.Sequential(*[nn.Conv1d(2, 2, 3, padding=1) for _ in range(convs_per_level)])
                                 for _ in range(depth + 1))
        self.down = nn.ModuleList(nn.Conv1d(2, 2, 3, stride=2, padding=1) for _ in range(depth))
        self.up = nn.ModuleList(nn.ConvTranspose1d(2, 2, 2, stride=2) for _ in range(depth))
        self.dec = nn.ModuleList(nn.Conv1d(2, 2, 3, padding=1) for _ in range(depth))

    def forward(self, x):
        skips = []
        for level in range(self.depth):
            x = self.enc[level](x)
            skips.append(x)
            x = self.down[level](x)
        x = self.enc[self.depth](x)
        for level in reversed(range(self.depth)):
            x = self.dec[level](self.up[level](x) + skips[level])
        return x


@settings(max_examples=10, deadline=None)
@given(depth=st.integers(1, 3), convs_per_level=st.integers(1, 2))
def test_resolution_groups_partition_the_convs_of_any_depth_unet(depth, convs_per_level):
    net = _UNet1d(depth, convs_per_level)
    groups = group_by_resolution(net, torch.zeros(1, 2, 8 * 2 ** depth), kernel_size=3)
    members = [n for g in groups.values() for n in g]
    assert len(members) == len(set(members))
    assert set(members) == {n for n, m in net.named_modules() if isinstance(m, nn.Conv1d)}
    labels = ["full", "half", "quarter", "eighth"]
    assert list(groups) == [f"enc_{r}" for r in labels[:depth + 1]] + [f"dec_{r}" for r in reversed(labels[:depth])]
    assert groups[f"enc_{labels[depth]}"] == [f"enc.{depth}.{i}" for i in range(convs_per_level)]
    assert groups["dec_full"] == ["dec.0"]
