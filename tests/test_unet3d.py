"""The unet3d architecture plugin: the paper's network, its seven kernel groups, its input checks."""
import pytest
import torch
from torch import nn

from bayesprior import bayesianize, build_architecture, by_group
from bayesprior.errors import ConfigError
from bayesprior.grouping import conv_layers, group_by_resolution
from bayesprior.plugins import architecture_finetune_layers, architecture_groups, architecture_registry

PAPER_GROUP_KERNELS = {"enc_full": 528, "enc_half": 4096, "enc_quarter": 5120, "enc_eighth": 12288,
                       "dec_quarter": 2048, "dec_half": 2048, "dec_full": 512}


@pytest.fixture(scope="module")
def unet():
    return build_architecture("unet3d")


def _kernels(model, name):
    w = model.get_submodule(name).weight
    return w.shape[0] * w.shape[1]


def test_unet3d_is_registered_with_groups_and_finetune_layers():
    entry = architecture_registry().get("unet3d")
    assert entry.plugin == "unet3d"
    assert architecture_finetune_layers("unet3d") == ["init_conv", "init_conv.*", "down1.*", "up3.*", "out_conv"]


def test_default_unet3d_has_the_papers_726480_parameters(unet):
    assert sum(p.numel() for p in unet.parameters()) == 726_480


def test_no_layer_has_a_bias_and_instance_norms_have_no_parameters(unet):
    for name, module in unet.named_modules():
        if isinstance(module, nn.Conv3d):
            assert module.bias is None, name
        if isinstance(module, nn.InstanceNorm3d):
            assert not module.affine and not list(module.parameters()), name


def test_module_names_follow_the_contract(unet):
    names = {n for n, _ in unet.named_modules()}
    assert {"init_conv", "out_conv", "down1.conv1.conv", "down1.conv2.conv", "down1.shortcut.conv",
            "down1.conv1.norm", "down1.conv1.act", "up1.reduce.conv", "up3.conv2.conv"} <= names
    for i in (2, 4, 6):
        assert isinstance(unet.get_submodule(f"down{i}.shortcut"), nn.Identity)
    for i in (1, 3, 5):
        assert unet.get_submodule(f"down{i}.shortcut.conv").stride == (2, 2, 2)
        assert unet.get_submodule(f"down{i}.conv1.conv").stride == (2, 2, 2)
    assert unet.init_conv.kernel_size == (3, 3, 3) and unet.out_conv.kernel_size == (1, 1, 1)


def test_seven_groups_hold_the_papers_kernel_counts(unet):
    groups = architecture_groups("unet3d", unet)
    assert list(groups) == list(PAPER_GROUP_KERNELS)
    assert {g: sum(_kernels(unet, n) for n in members) for g, members in groups.items()} == PAPER_GROUP_KERNELS
    assert sum(PAPER_GROUP_KERNELS.values()) == 26_640


def test_groups_cover_every_3x3x3_conv_and_no_pointwise_conv(unet):
    grouped = [n for members in architecture_groups("unet3d", unet).values() for n in members]
    convs = dict(conv_layers(unet))
    three = {n for n, m in convs.items() if m.kernel_size == (3, 3, 3)}
    assert len(grouped) == len(set(grouped)) == 19  # 1 initial + 2 per down block x 6 + 2 per up block x 3
    assert set(grouped) == three
    assert len(convs) == 26  # plus 3 shortcuts, 3 reductions and the output conv, all 1x1x1
    assert sum(_kernels(unet, n) * 27 for n in three) == 719_280


def test_generic_resolution_grouping_reproduces_the_plugin_groups(unet):
    plugin = architecture_groups("unet3d", unet)
    generic = group_by_resolution(unet, torch.zeros(1, 1, 16, 16, 16))
    assert sorted(map(sorted, generic.values())) == sorted(map(sorted, plugin.values()))
    assert generic == plugin  # the names agree too


def test_forward_and_backward_on_a_40x48x40_volume(unet):
    x = torch.randn(1, 1, 40, 48, 40)
    y = unet(x)
    assert y.shape == (1, 2, 40, 48, 40)
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in unet.parameters())
    unet.zero_grad(set_to_none=True)


def test_spatial_size_not_divisible_by_8_is_a_config_error_naming_the_shape(unet):
    with pytest.raises(ConfigError, match=r"\(41, 48, 40\)"):
        unet(torch.zeros(1, 1, 41, 48, 40))


def test_wrong_channel_count_is_a_config_error(unet):
    with pytest.raises(ConfigError, match="1, 2, 16, 16, 16"):
        unet(torch.zeros(1, 2, 16, 16, 16))


@pytest.mark.parametrize("config", [{"widths": (8, 16)}, {"widths": (8, 16, 0, 32)}, {"n_classes": 0},
                                    {"in_channels": 1.5}])
def test_invalid_options_are_config_errors(config):
    with pytest.raises(ConfigError):
        build_architecture("unet3d", **config)


def test_widths_channels_and_classes_are_options():
    net = build_architecture("unet3d", in_channels=2, n_classes=3, widths=(4, 8, 8, 8))
    assert net(torch.zeros(1, 2, 16, 8, 8)).shape == (1, 3, 16, 8, 8)
    assert net.init_conv.in_channels == 2 and net.down5.conv2.conv.out_channels == 8


def test_groups_name_the_same_layers_after_bayesianize():
    net = build_architecture("unet3d", widths=(4, 4, 4, 4))
    groups = architecture_groups("unet3d", net)
    bm = bayesianize(net, {by_group(g): "gaussian" for g in groups}, groups=groups)
    assert set(bm.assignment) == {n for members in groups.values() for n in members}
    assert architecture_groups("unet3d", bm.net) == groups
    assert group_by_resolution(bm.net, torch.zeros(1, 1, 16, 16, 16)) == groups


def test_groups_of_a_foreign_model_are_a_config_error():
    with pytest.raises(ConfigError, match="unet3d"):
        architecture_groups("unet3d", nn.Conv3d(1, 1, 3))
