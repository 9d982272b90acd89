"""Every command reports bad input in one line, with exit code 1 (our errors) or 2 (a malformed option)."""
import errno

import click
import pytest
from click.testing import CliRunner

from bayesprior.atomic import atomic_path
from bayesprior.cli import cli
from bayesprior.commands.common import describe_os_error


def _bad_invocations(tmp_path):
    """One bad invocation per command, and the exit code it must end with."""
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("not a folder")
    missing = tmp_path / "missing"
    return {
        "arch": (["arch", "no-such-architecture"], 1),
        "demo": (["demo", "--out", str(a_file)], 2),
        "evaluate": (["evaluate", str(missing), str(missing)], 2),
        "experiment": (["experiment", str(missing / "config.toml")], 1),
        "fit-prior": (["fit-prior", str(missing / "bank.npz"), "--out", str(tmp_path / "prior.pt")], 1),
        "harvest": (["harvest", str(missing / "model.pt"), "--out", str(tmp_path / "bank.npz")], 1),
        "info": (["info", str(a_file)], 1),
        "plugins": (["plugins", "--no-such-option"], 2),
        "predict": (["predict", str(missing / "model.pt"), str(tmp_path), str(tmp_path / "out")], 2),
        "show-cases": (["show-cases", str(missing), "--out", str(tmp_path / "cases.png")], 1),
        "show-kernels": (["show-kernels", str(missing / "bank.npz"), str(missing / "prior.pt"),
                          "--out", str(tmp_path / "k.png")], 1),
        "synth": (["synth", "--kind", "ms", "--cases", "0", "--out", str(tmp_path / "data")], 2),
        "train": (["train", str(tmp_path), str(tmp_path / "run"), "--val-fraction", "1.5"], 2),
    }


def _error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("Error:")]


def test_every_command_is_in_the_table_of_bad_invocations(tmp_path):
    commands = set(cli.list_commands(click.Context(cli)))
    assert commands == set(_bad_invocations(tmp_path)) == set(COMMANDS)


COMMANDS = ["arch", "demo", "evaluate", "experiment", "fit-prior", "harvest", "info", "plugins", "predict",
            "show-cases", "show-kernels", "synth", "train"]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_bad_argument_ends_in_one_error_line_and_no_traceback(command, tmp_path):
    args, code = _bad_invocations(tmp_path)[command]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert len(_error_lines(result)) == 1, result.stderr
    if code == 1:  # our own errors: the message is all there is, on one line
        assert result.stderr.strip().count("\n") == 0, result.stderr


def test_a_file_system_error_is_one_line_naming_the_path(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder is wanted")
    result = CliRunner().invoke(cli, ["synth", "--kind", "ms", "--cases", "1", "--shape", "8,8,8",
                                      "--out", str(blocker / "data")])
    assert result.exit_code == 1, result.output
    error, = _error_lines(result)  # after the progress bar, which also writes to stderr
    assert error.startswith(f"Error: {blocker}") and error.endswith("Not a directory")
    assert "Traceback" not in result.output


def test_a_full_disk_while_writing_names_the_output(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(OSError) as info:
        with atomic_path(target):
            raise OSError(errno.ENOSPC, "No space left on device")  # as a write() reports it: no file name
    assert describe_os_error(info.value) == f"{target}: No space left on device"
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind
