"""`bayesprior arch`: the architecture list and the layer table."""
import json

from click.testing import CliRunner

from bayesprior.cli import cli


def _run(*args):
    result = CliRunner().invoke(cli, ["arch", *args])
    return result


def test_arch_without_a_name_lists_unet3d():
    result = _run()
    assert result.exit_code == 0, result.output
    assert "unet3d" in result.output and "726,480" in result.output


def test_arch_unet3d_prints_layers_groups_and_totals():
    result = _run("unet3d")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    row = next(line for line in lines if line.startswith("down5.conv2.conv "))
    assert row.split() == ["down5.conv2.conv", "Conv3d", "3x3x3", "enc_eighth", "4,096", "110,592"]
    assert next(line for line in lines if line.startswith("out_conv ")).split() == [
        "out_conv", "Conv3d", "1x1x1", "32", "32"]
    assert "726,480 parameters in 26 layers; 19 grouped layers in 7 groups holding 26,640 kernels" in result.output


def test_arch_json_resolution_grouping_matches_plugin_grouping():
    plugin = json.loads(_run("unet3d", "--json").output)
    generic = json.loads(_run("unet3d", "--json", "--grouping", "resolution", "--input-shape", "16,16,16").output)
    assert plugin["groups"] == generic["groups"]
    assert [g["kernels"] for g in plugin["groups"]] == [528, 4096, 5120, 12288, 2048, 2048, 512]
    assert plugin["totals"]["parameters"] == 726_480


def test_arch_builder_options_are_passed_as_json():
    result = _run("unet3d", "--json", "-c", "widths=[4,8,8,8]", "-c", "n_classes=3")
    assert result.exit_code == 0, result.output
    out_conv = next(r for r in json.loads(result.output)["layers"] if r["name"] == "out_conv")
    assert out_conv["parameters"] == 3 * 4


def test_arch_errors_are_reported_without_a_traceback():
    unknown = _run("no_such_net")
    assert unknown.exit_code == 1 and "no architecture named 'no_such_net'" in unknown.output
    bad_shape = _run("unet3d", "--grouping", "resolution", "--input-shape", "41,48,40")
    assert bad_shape.exit_code == 1 and "(41, 48, 40)" in bad_shape.output
    assert _run("unet3d", "--input-shape", "a,b").exit_code == 2
