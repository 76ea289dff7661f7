"""The house, as issue 27 drew it: packages named for the pipeline, at most 15 modules at
``bench/``'s top level and none over 450 lines, no import cycle at any depth (imports inside
functions and under ``TYPE_CHECKING`` count: a cycle works or fails by import order), the command
line imported only by the command layer, the training interface below both the methods and the
cell's context, and methods discovered, one per module."""
from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "bench"
COMMAND_LAYER = ("bench.cli", "bench.commands", "bench.__main__")
MAX_TOP_LEVEL_MODULES = 15
MAX_LINES = 450
PIPELINE_PACKAGES = {"matrix", "training", "cell", "methods", "run", "data", "models", "results", "report",
                     "executors", "commands"}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def _modules() -> dict[str, ast.AST]:
    return {_module(path): ast.parse(path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(tree: ast.AST) -> set[str]:
    """Every bench module a module imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name in _modules()}


@cache
def _graph() -> dict[str, frozenset[str]]:
    return {name: frozenset(_imports(tree) - {name}) for name, tree in _modules().items()}


def _reachable(start: str) -> set[str]:
    seen: set[str] = set()
    stack = [start]
    while stack:
        for dep in _graph()[stack.pop()]:
            if dep not in seen:
                seen.add(dep)
                stack.append(dep)
    return seen


def test_packages_are_named_for_the_pipeline() -> None:
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert PIPELINE_PACKAGES <= packages, sorted(PIPELINE_PACKAGES - packages)


def test_few_modules_at_the_top_level() -> None:
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


def test_no_module_is_over_the_line_limit() -> None:
    lengths = {str(path.relative_to(ROOT)): len(path.read_text().splitlines()) for path in PACKAGE.rglob("*.py")}
    assert {path: n for path, n in lengths.items() if n > MAX_LINES} == {}


def test_no_library_imports_the_command_line() -> None:
    offenders = {name: sorted(i for i in _graph()[name] if i.startswith(COMMAND_LAYER))
                 for name in _modules() if not name.startswith(COMMAND_LAYER)}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_only_the_entry_point_imports_the_parser() -> None:
    """The commands are below the command line that dispatches them (``bench doctor`` runs ``bench``
    in a process of its own rather than calling back up)."""
    assert sorted(name for name in _modules() if "bench.cli" in _graph()[name]) == ["bench.__main__"]


def test_imports_have_no_cycle_at_any_depth() -> None:
    graph = _graph()
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
    assert len(state) == len(graph) > 60


@pytest.mark.parametrize("lower, upper", [
    ("bench.training.interface", "bench.methods"),
    ("bench.training.interface", "bench.cell"),
    ("bench.training.engine", "bench.methods"),
    ("bench.cell.context", "bench.methods"),
    ("bench.cell.context", "bench.run"),
    ("bench.methods", "bench.run"),
])
def test_layers_never_reach_up(lower: str, upper: str) -> None:
    """The interface sits below the methods and the cell's context; the context never depends on the
    methods, at any depth; the methods never on the runner."""
    found = sorted(m for m in _reachable(lower) if m == upper or m.startswith(upper + "."))
    assert found == [], f"{lower} reaches {found}"


def test_methods_are_discovered_one_per_module() -> None:
    """No hand-written list: the methods package imports none of its modules by name, and each of
    its modules registers exactly one method with ``@method``."""
    modules = _modules()
    assert not [i for i in _graph()["bench.methods"] if i.startswith("bench.methods.")]
    for name, tree in modules.items():
        if not name.startswith("bench.methods."):
            continue
        registered = [d for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) for d in node.decorator_list
                      if isinstance(d, ast.Call) and getattr(d.func, "id", None) == "method"]
        assert len(registered) == 1, f"{name}: {len(registered)} @method registrations"


def test_every_method_module_is_registered() -> None:
    from bench.methods import METHODS

    files = {path.stem for path in (PACKAGE / "methods").glob("*.py") if path.stem != "__init__"}
    assert len(METHODS.names()) == len(files) >= 8
