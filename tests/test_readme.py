"""The README's Python examples run as written."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples():
    assert len(_python_blocks()) >= 1


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_python_example_runs(index, tmp_path, monkeypatch):
    code = _python_blocks()[index]
    if "@hookimpl" in code:  # a plugin module: it must at least import and register
        namespace: dict = {"__name__": "readme_plugin"}
        exec(compile(code, f"README block {index}", "exec"), namespace)
        registered = []
        namespace["register_priors"](lambda name, factory, description="": registered.append((name, factory)))
        name, factory = registered[0]
        assert name == "laplace" and factory(scale=2.0).config() == {"loc": 0.0, "scale": 2.0}
        return
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README block {index}", "exec"), {"__name__": "__main__"})
