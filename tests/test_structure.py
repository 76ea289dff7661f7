"""The house: libraries never reach up into the command line, and module-level imports form no
cycle (a cycle works or fails depending on which module is imported first)."""
from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "bench"
COMMAND_LAYER = ("bench.cli", "bench.commands", "bench.__main__")


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST, top_level_only: bool) -> set[str]:
    """Modules imported; with ``top_level_only``, outside functions and ``if TYPE_CHECKING``."""
    found: set[str] = set()
    nodes = ast.iter_child_nodes(tree) if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name == "bench" or name.startswith("bench.")}


def _modules() -> dict[str, ast.AST]:
    return {_module(path): ast.parse(path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))}


def test_no_library_imports_the_command_line() -> None:
    offenders = {name: sorted(i for i in _imports(tree, top_level_only=False) if i.startswith(COMMAND_LAYER))
                 for name, tree in _modules().items() if not name.startswith(COMMAND_LAYER)}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_module_level_imports_have_no_cycle() -> None:
    modules = _modules()
    graph = {name: {i for i in _imports(tree, top_level_only=True) if i in modules and i != name} for name, tree in modules.items()}
    # a package's submodule importing its package's names is the registry pattern, not a cycle
    graph = {name: {i for i in deps if not name.startswith(i + ".")} for name, deps in graph.items()}
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        assert state.get(name) != "open", " -> ".join(path[path.index(name):] + [name])
        state[name] = "open"
        for dep in sorted(graph[name]):
            visit(dep, path + [name])
        state[name] = "done"

    for name in sorted(graph):
        visit(name, [])
    assert len(state) == len(modules) > 30
