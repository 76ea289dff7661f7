"""The matrix a user writes: schema, loading and validation with errors that name file and field."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench.matrix.config import FIELD_NAMES, CellConfig, SafeName
from bench.errors import ConfigError, first_validation_error, plain, short
from bench.yaml_input import load_yaml, validate
from bench.matrix.selectors import value_problem

Rule = dict[str, Any]  # field (or role.field) -> value or list of accepted values


class Override(BaseModel):
    """Set fields on every cell whose fields match ``when`` (e.g. lr per architecture)."""

    model_config = ConfigDict(extra="forbid")
    when: Rule
    set: dict[str, Any]


class Stage(BaseModel):
    """A step of the pipeline; its cells are its parents' cells times its own axes."""

    model_config = ConfigDict(extra="forbid")
    method: str
    needs: dict[SafeName, SafeName] = Field(default_factory=dict, description="role -> stage name")
    set: dict[str, Any] = Field(default_factory=dict)
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    include: list[Rule] = Field(default_factory=list)
    exclude: list[Rule] = Field(default_factory=list)


class Matrix(BaseModel):
    """A whole matrix file. Matrix-level ``axes`` apply to stages that need nothing."""

    model_config = ConfigDict(extra="forbid")
    name: SafeName
    paper: SafeName | None = None
    description: str = ""
    data_root: str | None = None
    defaults: dict[str, Any] = Field(default_factory=dict)
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    stages: dict[SafeName, Stage]
    overrides: list[Override] = Field(default_factory=list)
    stand_in: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="bench report: for a matrix that runs a paper's design on other data or "
        "models, figure id (a glob) -> the selector of this matrix's cells that stand in for it; data, never run")
    source: str = Field("", exclude=True)


def load_matrix(path: str | Path) -> Matrix:
    """Read and validate a matrix file; every problem is a ConfigError naming file and field."""
    source = str(path)
    raw = load_yaml(path, "matrix")
    if not isinstance(raw, dict):
        raise ConfigError(source, "", "a matrix must be a YAML mapping with 'name' and 'stages'")
    matrix = validate(Matrix, raw, source, "matrix")
    matrix.source = source
    validate_matrix(matrix)
    return matrix


def validate_field(source: str, where: str, name: str, value: Any) -> None:
    """Check one field value against CellConfig, naming where in the file it came from."""
    if name not in FIELD_NAMES or name in ("stage", "deps"):
        raise ConfigError(source, where, f"unknown field {short(name)}; known: {', '.join(f for f in FIELD_NAMES if f not in ('stage', 'deps'))}")
    probe = {"stage": "x", "method": "x", "arch": "x", "dataset": "x", name: value}
    try:
        CellConfig.model_validate(probe)
    except ValidationError as error:
        _, message = first_validation_error(error)
        raise ConfigError(source, where, f"{short(value)}: {message}") from None
    _check_registered(source, where, name, value)


def _check_registered(source: str, where: str, name: str, value: Any) -> None:
    """Names of methods, architectures and datasets must exist in their registries."""
    from bench.matrix.name_checks import NAME_CHECKS

    check = NAME_CHECKS.get(name)
    if check is not None and value is not None and not check(value):
        raise ConfigError(source, where, f"unknown {name} {short(value)}")


def _check_rule_keys(matrix: Matrix, where: str, rule: Rule, roles: set[str]) -> None:
    for key in rule:
        role, _, field = key.rpartition(".")
        if role and role.split(".")[0] not in roles:
            raise ConfigError(matrix.source, f"{where}.{plain(key)}", f"no role {plain(role)!r} (known: {', '.join(sorted(roles)) or 'none'})")
        if field not in FIELD_NAMES:
            raise ConfigError(matrix.source, f"{where}.{plain(key)}", f"unknown field {plain(field)!r}")
        problem = value_problem(rule[key])
        if problem:
            raise ConfigError(matrix.source, f"{where}.{plain(key)}", problem)


def stage_order(matrix: Matrix) -> list[str]:
    """Stages in dependency order; a missing stage or a cycle is a ConfigError."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = " -> ".join(path[path.index(name):] + [name])
            raise ConfigError(matrix.source, f"stages.{name}.needs", f"dependency cycle {cycle}")
        state[name] = "visiting"
        for role, parent in matrix.stages[name].needs.items():
            if parent not in matrix.stages:
                raise ConfigError(matrix.source, f"stages.{name}.needs.{role}", f"no stage {parent!r} (stages: {', '.join(matrix.stages)})")
            visit(parent, path + [name])
        state[name] = "done"
        order.append(name)

    for name in matrix.stages:
        visit(name, [])
    return order


def roles_of(matrix: Matrix, stage: str) -> set[str]:
    """Roles a stage's cells can refer to: its own needs and, transitively, its parents' roles."""
    roles: set[str] = set()
    for role, parent in matrix.stages[stage].needs.items():
        roles.add(role)
        roles |= roles_of(matrix, parent)
    return roles


def validate_matrix(matrix: Matrix) -> None:
    """Check every field name and value where it is written, and the stage graph."""
    src = matrix.source
    if not matrix.stages:
        raise ConfigError(src, "stages", "at least one stage is needed")
    for name, value in matrix.defaults.items():
        validate_field(src, f"defaults.{name}", name, value)
    for name, values in matrix.axes.items():
        _validate_axis(src, f"axes.{name}", name, values)
    order = stage_order(matrix)
    for stage_name in order:
        stage = matrix.stages[stage_name]
        base = f"stages.{stage_name}"
        validate_field(src, f"{base}.method", "method", stage.method)
        for name, value in stage.set.items():
            validate_field(src, f"{base}.set.{name}", name, value)
        for name, values in stage.axes.items():
            _validate_axis(src, f"{base}.axes.{name}", name, values)
        roles = roles_of(matrix, stage_name)
        for kind, rules in (("include", stage.include), ("exclude", stage.exclude)):
            for i, rule in enumerate(rules):
                _check_rule_keys(matrix, f"{base}.{kind}[{i}]", rule, roles)
    all_roles = set().union(*(roles_of(matrix, s) for s in matrix.stages))
    for i, override in enumerate(matrix.overrides):
        _check_rule_keys(matrix, f"overrides[{i}].when", override.when, all_roles)
        for name, value in override.set.items():
            validate_field(src, f"overrides[{i}].set.{name}", name, value)


def _validate_axis(source: str, where: str, name: str, values: list[Any]) -> None:
    if not values:
        raise ConfigError(source, where, "an axis needs at least one value")
    for i, value in enumerate(values):
        validate_field(source, f"{where}[{i}]", name, value)
