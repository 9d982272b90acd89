"""The package's modules import in any order: no import cycle, and each imports on its own.

The graph is read from the source with `ast`: every ``import`` and ``from ... import`` of our own modules,
at module level or inside a function (only ``if TYPE_CHECKING:`` blocks are left out, as they never run).
An edge goes to the module named, and to a submodule when one is the name imported. A package's
``__init__`` that a submodule import runs first is not an edge (Python has that package half-imported
already). Imports by string (`importlib.import_module`, used by the deprecated aliases and by the CLI's
list of command modules) are not edges.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_ROOTS = (ROOT / "src", ROOT / "plugins")


def _modules() -> dict[str, Path]:
    found = {}
    for source_root in SOURCE_ROOTS:
        for path in sorted(source_root.rglob("*.py")):
            parts = list(path.relative_to(source_root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for n in ast.walk(node))
    return skipped


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text())
    skipped = _type_checking_blocks(tree)
    package = name if _is_package(path) else name.rpartition(".")[0]
    edges = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            edges.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            submodules = {f"{target}.{alias.name}" for alias in node.names} & set(modules)
            edges.update(submodules)
            if not submodules or len(submodules) < len(node.names):
                edges.add(target)
    return {e for e in edges if e in modules and e != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_reader_sees_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_the_import_graph_of_the_package_and_its_plugins_has_no_cycle():
    graph = _graph()
    assert "bayesprior.checkpoints" in graph and "bayesprior.wrap" in graph["bayesprior.checkpoints"]
    assert _cycles(graph) == []


def test_persistence_imports_the_wrapper_and_never_the_other_way_round():
    graph = _graph()
    assert "bayesprior.wrap" in graph["bayesprior.checkpoints"]
    assert "bayesprior.checkpoints" not in graph["bayesprior.wrap"]


# One interpreter loads the third-party libraries once, then forks a fresh child per module: the child
# starts with none of our modules loaded, so each is imported on its own, at the cost of a fork.
_IMPORT_EACH = textwrap.dedent("""
    import importlib, os, sys, traceback, warnings
    import click, nibabel, numpy, pluggy, scipy.ndimage, torch, tqdm  # noqa: F401
    failures = []
    for name in sys.argv[1:]:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    importlib.import_module(name)
                status = 0
            except BaseException:
                os.write(write, traceback.format_exc().encode())
                status = 1
            os._exit(status)
        os.close(write)
        with os.fdopen(read) as pipe:
            message = pipe.read()
        _, status = os.waitpid(pid, 0)
        if status:
            failures.append(f"{name}:\\n{message}")
    print("\\n".join(failures))
    sys.exit(1 if failures else 0)
""")


def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    names = sorted(_modules())
    env = dict(os.environ, MPLBACKEND="Agg")
    if hasattr(os, "fork"):
        result = subprocess.run([sys.executable, "-c", _IMPORT_EACH, *names], capture_output=True, text=True,
                                env=env, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        return
    for name in names:  # no fork: one interpreter per module
        result = subprocess.run([sys.executable, "-W", "ignore", "-c", f"import {name}"], capture_output=True,
                                text=True, env=env, timeout=120)
        assert result.returncode == 0, f"{name}:\n{result.stderr}"
