"""Every third-party module the package and its plugins import is declared in pyproject.toml's dependencies.

An undeclared import works here (the test extra or a neighbour pulled it in) and fails on a user's fresh install:
tomli on Python 3.10 was one. The imports are read from the source with `ast`, at any depth.
"""
from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

from bayesprior.experiment.config import tomllib  # tomli on Python 3.10

ROOT = Path(__file__).resolve().parents[1]
OWN = {"bayesprior"}


def _imported_top_levels() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted([*(ROOT / "src").rglob("*.py"), *(ROOT / "plugins").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], path)
    return found


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = {re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0].lower() for spec in project["dependencies"]}
    return {name.replace("_", "-") for name in names}


def _plugin_packages() -> set[str]:
    return {path.name for path in (ROOT / "plugins").iterdir() if (path / "__init__.py").is_file()}


def test_every_third_party_import_is_a_declared_dependency():
    distributions = packages_distributions()
    declared = _declared()
    local = OWN | _plugin_packages()
    undeclared = {}
    for module, path in _imported_top_levels().items():
        if module in sys.stdlib_module_names or module in local or module == "tomli":
            continue
        owners = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        if not owners & declared:
            undeclared[module] = path.relative_to(ROOT)
    assert not undeclared, f"imported but not in pyproject.toml's dependencies: {undeclared}"


def test_the_python_3_10_toml_reader_is_declared_for_3_10_only():
    specs = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    tomli = [spec for spec in specs if spec.startswith("tomli")]
    assert tomli and all("python_version < '3.11'" in spec for spec in tomli), tomli
    assert "import tomli as tomllib" in (ROOT / "src/bayesprior/experiment/config.py").read_text(encoding="utf-8")
