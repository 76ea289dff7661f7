"""Methods own their fields (issue 27): each method declares the method fields it reads, and the
planner refuses one set away from its default on a stage whose method does not read it."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Iterator

import pytest

from bench.errors import ConfigError
from bench.matrix.config import FIELD_NAMES, METHOD_FIELDS, TEACHER_TARGET_FIELDS, CellConfig
from bench.matrix.names import index, methods_reading
from bench.matrix.plan import expand
from bench.matrix.requirements import REQUIREMENTS
from bench.matrix.schema import Matrix, load_matrix
from bench.methods import METHODS, method
from tests.conftest import ROOT

BASE: dict[str, Any] = {
    "name": "m",
    "defaults": {"dataset": "digits", "arch": "menghani_mlp", "epochs": 1},
    "stages": {
        "teacher": {"method": "supervised"},
        "student": {"method": "kd", "needs": {"teacher": "teacher"}},
    },
}


def matrix(defaults: dict[str, Any] | None = None, teacher: dict[str, Any] | None = None,
           student: dict[str, Any] | None = None, overrides: list[dict[str, Any]] | None = None) -> Matrix:
    return Matrix.model_validate({
        **BASE, "defaults": {**BASE["defaults"], **(defaults or {})},
        "stages": {"teacher": {"method": "supervised", "set": teacher or {}},
                   "student": {"method": "kd", "needs": {"teacher": "teacher"}, "set": student or {}}},
        "overrides": overrides or [],
        "source": "m.yaml",
    })


def refusal(m: Matrix, sets: dict[str, Any] | None = None) -> str:
    with pytest.raises(ConfigError) as error:
        expand(m, sets)
    return str(error.value)


def test_a_field_its_method_does_not_read_is_refused_in_one_line() -> None:
    message = refusal(matrix(defaults={"temperature": 4.0}))
    assert message == ("m.yaml: stages.teacher: field 'temperature' is set (4.0) but method 'supervised' does not read it; "
                       "methods that read it: blind, finetune, kd, simclr")
    assert "\n" not in message


@pytest.mark.parametrize("how", ["stage", "override", "global --set", "stage --set"])
def test_the_refusal_applies_to_the_resolved_config(how: str) -> None:
    """Wherever the value comes from (a stage's set, an override, --set), the resolved cell is checked."""
    if how == "stage":
        message = refusal(matrix(teacher={"bank_top_k": 5}))
    elif how == "override":
        message = refusal(matrix(overrides=[{"when": {"method": "supervised"}, "set": {"bank_top_k": 5}}]))
    elif how == "global --set":
        message = refusal(matrix(), {"bank_top_k": 5})
    else:
        message = refusal(matrix(), {"teacher.bank_top_k": 5})
    hint = "; a --set without a stage sets every stage: set it on the stages that read it: --set student.bank_top_k=5"
    assert message.endswith("stages.teacher: field 'bank_top_k' is set (5) but method 'supervised' does not read it; "
                            "methods that read it: blind, finetune, kd" + (hint if how == "global --set" else ""))


def test_values_are_shown_as_a_matrix_spells_them() -> None:
    message = refusal(matrix(teacher={"views": ["crop", "flip"]}))
    assert "field 'views' is set ([\"crop\", \"flip\"])" in message and "methods that read it: simclr" in message


def test_a_field_the_method_reads_is_accepted() -> None:
    cells = expand(matrix(student={"temperature": 4.0, "alpha": 0.5, "teacher_targets": "bank", "bank_top_k": 5}))
    student = next(c for c in cells if c.stage == "student")
    assert (student.config.temperature, student.config.bank_top_k) == (4.0, 5)


def test_an_override_may_set_it_where_it_is_read() -> None:
    """The usual way to keep a shared value off the stages that do not read it."""
    cells = expand(matrix(overrides=[{"when": {"method": "kd"}, "set": {"temperature": 4.0}}]))
    assert [c.config.temperature for c in cells] == [1.0, 4.0]


def test_defaults_are_never_refused_and_change_no_id() -> None:
    """Every method field spelled at its default, for every stage: the same cells, the same ids."""
    defaults = {name: info.get_default(call_default_factory=True) for name, info in CellConfig.model_fields.items()
                if name in METHOD_FIELDS}
    defaults = {name: list(value) if isinstance(value, tuple) else value for name, value in defaults.items()}
    assert [c.id for c in expand(matrix(defaults=defaults))] == [c.id for c in expand(matrix())]


COMMITTED = sorted([*ROOT.glob("matrices/*.yaml"), *ROOT.glob("tests/fixtures/*.yaml")])


@pytest.mark.parametrize("path", COMMITTED, ids=[p.name for p in COMMITTED])
def test_every_committed_matrix_plans(path: Path) -> None:
    assert expand(load_matrix(path))


def test_declarations_are_method_fields_and_every_method_field_is_read() -> None:
    assert METHOD_FIELDS <= set(FIELD_NAMES)
    for name in METHODS.names():
        assert set(REQUIREMENTS[name].fields) <= METHOD_FIELDS, name
    assert {f for r in REQUIREMENTS.values() for f in r.fields} == METHOD_FIELDS  # none that no method reads
    assert REQUIREMENTS["supervised"].fields == ()


def test_a_distilling_method_reads_the_teacher_target_fields() -> None:
    for name in METHODS.names():
        assert REQUIREMENTS[name].distills == (set(TEACHER_TARGET_FIELDS) <= set(REQUIREMENTS[name].fields)), name


def test_an_undeclarable_field_fails_at_registration() -> None:
    with pytest.raises(ValueError, match="'lr' is not a method field"):
        method("nope", fields=("lr",))
    with pytest.raises(ValueError, match="required 'lrr' is not a config field"):
        method("nope", required=("lrr",))
    assert "nope" not in REQUIREMENTS


def test_the_name_index_carries_the_declarations() -> None:
    """The planner reads them without importing torch."""
    for name in METHODS.names():
        assert tuple(index()["methods"][name]["fields"]) == REQUIREMENTS[name].fields
    assert methods_reading("pseudo_threshold") == ("annotate",)


# ---- every method field a method's code reads is declared (by AST) ----------------------------
# A read is ``c.<field>``, ``config.<field>`` or ``<x>.config.<field>``. From a method's function the
# walk follows the calls it makes: functions of its module, functions imported from bench modules,
# and ``ctx.<name>(...)`` / ``self.<name>(...)`` into the cell's context class.

BENCH = ROOT / "bench"


def _module_file(module: str) -> Path | None:
    path = ROOT / Path(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


class _Module:
    def __init__(self, name: str) -> None:
        tree = ast.parse(_module_file(name).read_text())  # type: ignore[union-attr]
        self.name = name
        self.functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        self.classes = {n.name: {f.name: f for f in n.body if isinstance(f, ast.FunctionDef)}
                        for n in tree.body if isinstance(n, ast.ClassDef)}
        self.parts: dict[str, dict[str, str]] = {}  # class -> {attribute: the class __init__ assigns it}
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                init = next((f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)
                self.parts[node.name] = {
                    a.targets[0].attr: a.value.func.id for a in ast.walk(init) if init is not None
                    and isinstance(a, ast.Assign) and isinstance(a.targets[0], ast.Attribute)
                    and isinstance(a.value, ast.Call) and isinstance(a.value.func, ast.Name)} if init else {}
        self.imports: dict[str, tuple[str, str]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bench"):
                for alias in node.names:
                    self.imports[alias.asname or alias.name] = (node.module, alias.name)


_MODULES: dict[str, _Module] = {}


def _module(name: str) -> _Module:
    if name not in _MODULES:
        _MODULES[name] = _Module(name)
    return _MODULES[name]


def _is_config(node: ast.expr) -> bool:
    return (isinstance(node, ast.Name) and node.id in ("c", "config")) or \
        (isinstance(node, ast.Attribute) and node.attr == "config")


def _context_class() -> tuple[_Module, str]:
    module, name = _module("bench.methods.kd").imports["CellContext"]
    return _module(module), name


def _reads(function: ast.FunctionDef, module: _Module, cls: str | None, seen: set[tuple[str, str]]) -> Iterator[str]:
    """Method fields read by ``function`` and whatever it calls, transitively."""
    key = (module.name, f"{cls}.{function.name}")
    if key in seen:
        return
    seen.add(key)
    for node in ast.walk(function):
        if isinstance(node, ast.Attribute) and node.attr in METHOD_FIELDS and _is_config(node.value):
            yield node.attr
        if not isinstance(node, ast.Call):
            continue
        target = node.func
        if isinstance(target, ast.Name):
            if target.id in module.functions:
                yield from _reads(module.functions[target.id], module, None, seen)
            elif target.id in module.imports:
                other = _module_file(module.imports[target.id][0]) and _module(module.imports[target.id][0])
                if other and module.imports[target.id][1] in other.functions:
                    yield from _reads(other.functions[module.imports[target.id][1]], other, None, seen)
        elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
            if target.value.id == "ctx":
                context, name = _context_class()
                if target.attr in context.classes[name]:
                    yield from _reads(context.classes[name][target.attr], context, name, seen)
            elif target.value.id == "self" and cls is not None and target.attr in module.classes[cls]:
                yield from _reads(module.classes[cls][target.attr], module, cls, seen)
        elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Attribute) and cls is not None \
                and isinstance(target.value.value, ast.Name) and target.value.value.id == "self":
            # self.<part>.<name>(...): a part the class composes (the context's data, parents, teachers)
            part = module.parts[cls].get(target.value.attr)
            if part in module.imports:
                other = _module(module.imports[part][0])
                if target.attr in other.classes.get(part, {}):
                    yield from _reads(other.classes[part][target.attr], other, part, seen)
            elif part in module.classes and target.attr in module.classes[part]:
                yield from _reads(module.classes[part][target.attr], module, part, seen)


def _registered(module: _Module) -> Iterator[tuple[str, ast.FunctionDef]]:
    """(method name, function) of each ``@method("name", ...)`` in the module."""
    for function in module.functions.values():
        for decorator in function.decorator_list:
            if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", None) == "method":
                yield decorator.args[0].value, function  # type: ignore[attr-defined]


NOT_ITS_OWN = {"data_distill": {"unlabeled", "unlabeled_limit"}}
"""Reads the code walk attributes to a method although they are another cell's: data_distill's
``distillation_pool`` is its annotation's config's (the pool that cell labelled), not its own."""


def test_every_method_field_a_method_reads_is_declared() -> None:
    found: dict[str, set[str]] = {}
    for file in sorted((BENCH / "methods").glob("[!_]*.py")):
        module = _module(f"bench.methods.{file.stem}")
        for name, function in _registered(module):
            found[name] = set(_reads(function, module, None, set())) - NOT_ITS_OWN.get(name, set())
    assert set(found) == set(METHODS.names())
    for name, reads in found.items():
        assert reads <= set(REQUIREMENTS[name].fields), f"method {name!r} reads {sorted(reads - set(REQUIREMENTS[name].fields))} undeclared"
    # the walk reaches through the context and other modules (else it would prove nothing)
    assert set(TEACHER_TARGET_FIELDS) <= found["kd"] and {"frozen_backbone", "temperature"} <= found["blind"]
    assert {"annotate_flip", "pseudo_threshold", "unlabeled_limit"} <= found["annotate"]

