"""Expand a matrix into cells: cartesian product of axes, parents, rules and overrides.

A cell's id is a hash of its resolved config (canonical JSON, sorted keys), so the same cell has
the same id whatever the order of keys or axis values, and a student's id changes when its
teacher's does (the teacher's id is part of the student's config).
"""
from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from pydantic import ValidationError

from bench.matrix.config import CellConfig, cell_id, unread_fields
from bench.errors import BenchError, ConfigError, first_validation_error, short
from bench.matrix.schema import Matrix, Rule, stage_order, validate_field
from bench.matrix.limits import DEFAULT_MAX_CELLS
from bench.matrix.selectors import rule_matches
from bench.matrix.smoke import SHORTENED, Smoke
from bench.matrix.smoke import plan_name as smoke_plan_name
from bench.yaml_input import parse_yaml

if TYPE_CHECKING:
    from bench.results.store import Store

# A dependant sees its parents' inputs: the same images, and the same train/val/test split (which
# the dataset, protocol, val_fraction and seed define). Otherwise a teacher could have trained on
# its student's test images.
SHARED_WITH_PARENTS = ("dataset", "image_size", "protocol", "val_fraction", "effective_split_seed")
_LABELS = {"effective_split_seed": "split seed"}


@dataclass(eq=False)
class Cell:
    """One concrete run of one stage. ``parents`` maps every role it can see to that cell."""

    config: CellConfig
    axis_values: dict[str, Any]
    parents: dict[str, "Cell"] = field(default_factory=dict)
    id: str = ""

    def __post_init__(self) -> None:
        self.id = cell_id(self.config)

    @property
    def stage(self) -> str:
        return self.config.stage

    def lookup(self, key: str) -> Any:
        """A field of this cell, or of a parent as ``role.field`` (roles chain: student.teacher.arch)."""
        role, dot, rest = key.partition(".")
        if dot:
            parent = self.parents.get(role)
            return parent.lookup(rest) if parent is not None else _MISSING
        return getattr(self.config, key, _MISSING)


_MISSING = object()


def _matches(cell: Cell, rule: Rule) -> bool:
    """Every key of ``rule`` accepts the cell's value (``bench.matrix.selectors``; role.field reaches parents)."""
    return all(_value_present(value := cell.lookup(key)) and rule_matches(value, wanted) for key, wanted in rule.items())


def _value_present(value: Any) -> bool:
    return value is not _MISSING


def _equal(value: Any, wanted: Any) -> bool:
    if isinstance(value, (list, tuple)) and isinstance(wanted, (list, tuple)):
        return list(value) == list(wanted)
    if isinstance(value, bool) or isinstance(wanted, bool):
        return value is wanted
    if isinstance(value, (int, float)) and isinstance(wanted, (int, float)):
        return float(value) == float(wanted)
    return value == wanted


def _product(axes: dict[str, list[Any]]) -> Iterable[dict[str, Any]]:
    names = list(axes)
    for values in itertools.product(*(axes[n] for n in names)):
        yield dict(zip(names, values))


def parse_sets(assignments: Iterable[str], source: str = "--set") -> dict[str, Any]:
    """``key=value`` pairs from the command line; values are parsed as YAML scalars/lists."""
    parsed: dict[str, Any] = {}
    for item in assignments:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(source, short(item, 80), "expected key=value (e.g. epochs=2 or teacher.epochs=2)")
        parsed[key.strip()] = parse_yaml(value, f"{source} {short(key.strip(), 60)}")
    return parsed


def _roles_agree(parents: dict[str, Cell]) -> bool:
    """A role the stage names must be the very cell its other parents see in it. A parent's own
    ancestors do not count: a kd student that teaches the next one (a teacher assistant) has its
    teacher in the role its student names it in, and the stage's naming wins."""
    for role, parent in parents.items():
        for other in parents.values():
            seen = other.parents.get(role) if other is not parent else None
            if seen is not None and seen.id != parent.id:
                return False
    return True


class Planner:
    """Expands one matrix (plus command-line ``--set`` values) into cells in dependency order."""

    def __init__(self, matrix: Matrix, sets: dict[str, Any] | None = None, max_cells: int = DEFAULT_MAX_CELLS,
                 smoke: Smoke | None = None) -> None:
        self.matrix = matrix
        self.max_cells = max_cells
        self.smoke = smoke
        self.trained_by_sets: list[str] = []  # stages whose epochs 0 (evaluated as is) a --set turned into training
        self.global_sets: dict[str, Any] = {}
        self.stage_sets: dict[str, dict[str, Any]] = {}
        for key, value in (sets or {}).items():
            stage, dot, name = key.rpartition(".")
            if dot and stage not in matrix.stages:
                raise ConfigError("--set", key, f"no stage {stage!r} (stages: {', '.join(matrix.stages)})")
            validate_field("--set", key, name, value)
            (self.stage_sets.setdefault(stage, {}) if dot else self.global_sets)[name] = value

    def check_size(self) -> None:
        """Fail before expanding when the axes alone would make more than ``max_cells`` cells.

        Per stage: its own axes' product times the cells of its parents (roles that are ancestors
        of another role are paired by lineage, so they do not multiply). Include/exclude rules
        may keep fewer, but the planner would still have to enumerate these.
        """
        counts: dict[str, int] = {}
        for stage_name in stage_order(self.matrix):
            stage = self.matrix.stages[stage_name]
            axes = dict(stage.axes) if stage.needs else {**self.matrix.axes, **stage.axes}
            parents = set(stage.needs.values())
            leaves = {p for p in parents if not any(p != q and p in _ancestors(self.matrix, q) for q in parents)}
            count = math.prod(counts[p] for p in leaves) * math.prod(len(v) for v in axes.values())
            counts[stage_name] = count
            if count > self.max_cells:
                factors = [f"{counts[p]:,} {p} cells" for p in sorted(leaves)] + [f"{name} {len(v)}" for name, v in axes.items()]
                raise ConfigError(self.matrix.source, f"stages.{stage_name}",
                                  f"expands to {count:,} cells ({' x '.join(factors)}), more than the limit of "
                                  f"{self.max_cells:,}; shrink its axes or raise --max-cells")

    def cells(self) -> list[Cell]:
        self.check_size()
        by_stage: dict[str, list[Cell]] = {}
        ordered: list[Cell] = []
        seen: dict[str, Cell] = {}
        for stage_name in stage_order(self.matrix):
            stage_cells = []
            for cell in self._expand_stage(stage_name, by_stage):
                if cell.id not in seen:
                    seen[cell.id] = cell
                    stage_cells.append(cell)
                    ordered.append(cell)
                    if len(ordered) > self.max_cells:
                        raise ConfigError(self.matrix.source, f"stages.{stage_name}",
                                          f"more than {self.max_cells:,} cells; shrink the axes or raise --max-cells")
            if not stage_cells:
                raise ConfigError(self.matrix.source, f"stages.{stage_name}", "expands to no cells (check its include/exclude rules and its parents' axes)")
            by_stage[stage_name] = stage_cells
        return ordered

    def _expand_stage(self, stage_name: str, by_stage: dict[str, list[Cell]]) -> Iterable[Cell]:
        stage = self.matrix.stages[stage_name]
        roles = list(stage.needs)
        own_axes = dict(stage.axes) if roles else {**self.matrix.axes, **stage.axes}
        parent_lists = [by_stage[stage.needs[r]] for r in roles]
        for parents in itertools.product(*parent_lists):
            # An ancestor of another parent (the teacher of a student this stage also needs) hands
            # its axis values down through that parent, which may have overridden them.
            leaves = [p for p in parents if not any(p.id in q.config.deps.values() for q in parents)]
            inherited = _merge_axis_values([p.axis_values for p in leaves])
            if inherited is None:
                continue  # parents disagree on a shared axis (e.g. different seeds): not a pair
            visible: dict[str, Cell] = {}
            deps: dict[str, str] = {}
            for role, parent in zip(roles, parents):
                visible.update(parent.parents)
                deps.update(parent.config.deps)
            if not _roles_agree(dict(zip(roles, parents))):
                continue
            for role, parent in zip(roles, parents):
                visible[role] = parent
                deps[role] = parent.id
            for own in _product(own_axes):
                axis_values = {**inherited, **own}
                cell = self._resolve(stage_name, axis_values, visible, deps)
                self._check_inputs_match(cell, dict(zip(roles, parents)))
                if stage.include and not any(_matches(cell, r) for r in stage.include):
                    continue
                if any(_matches(cell, r) for r in stage.exclude):
                    continue
                yield cell

    def _resolve(self, stage_name: str, axis_values: dict[str, Any], parents: dict[str, Cell], deps: dict[str, str]) -> Cell:
        stage = self.matrix.stages[stage_name]
        fields: dict[str, Any] = {**self.matrix.defaults, **stage.set, "method": stage.method, **axis_values}
        fields.update(stage=stage_name, deps=dict(sorted(deps.items())))
        cli_sets = {**self.global_sets, **self.stage_sets.get(stage_name, {})}
        probe = Cell(self._validate(stage_name, {**fields, **cli_sets}), axis_values, parents)
        matched = [o for o in self.matrix.overrides if _matches(probe, o.when)]
        for override in matched:
            fields.update(override.set)
        if fields.get("epochs") == 0 and cli_sets.get("epochs", 0) != 0 and stage_name not in self.trained_by_sets:
            self.trained_by_sets.append(stage_name)
        if matched:
            fields.update(cli_sets)
            cell = Cell(self._validate(stage_name, fields), axis_values, parents)
        else:
            cell = probe  # no override applies: the probe is the cell (validated and hashed once)
        if self.smoke is not None:  # the rehearsal of the cell: last, so overrides matched the real one
            fields = {**cell.config.model_dump(), **self.smoke.update(cell.config)}
            cell = Cell(self._validate(stage_name, fields), axis_values, parents)
        self._check_method_needs(cell)
        return cell

    def _check_method_needs(self, cell: Cell) -> None:
        """What a cell's method needs (roles, fields, a validation split) is checked before anything runs,
        and that it sets no method field its method does not read (``bench.matrix.config.METHOD_FIELDS``)."""
        from bench.matrix.names import methods_reading, requirement

        c, where = cell.config, f"stages.{cell.stage}"
        needs = requirement(c.method)
        for role in needs.roles if needs else ():
            if role not in c.deps:
                raise ConfigError(self.matrix.source, f"{where}.needs", f"method {c.method!r} needs a {role!r} role (e.g. needs: {{{role}: <stage>}})")
        for name in needs.required if needs else ():
            if getattr(c, name) is None:
                raise ConfigError(self.matrix.source, where, f"method {c.method!r} needs the field {name!r}")
        unread = unread_fields(c, needs.fields) if needs else ()
        if unread:
            name = unread[0]
            readers = methods_reading(name)
            raise ConfigError(self.matrix.source, where, f"field {name!r} is set ({_shown(getattr(c, name))}) but method "
                              f"{c.method!r} does not read it; methods that read it: {', '.join(readers)}"
                              + self._stage_set_hint(name, readers))
        if c.epochs == 0 and not (c.pretrained or c.encoder_file) and (needs is None or needs.trains):
            raise ConfigError(self.matrix.source, f"{where}.epochs", "0 trains nothing: a cell with epochs 0 evaluates "
                              "pretrained weights as they are (set pretrained: true or encoder_file), otherwise use epochs >= 1")
        if c.metric == "best_val" and c.eval_every != 1:
            raise ConfigError(self.matrix.source, f"{where}.eval_every", "metric 'best_val' compares every epoch: use eval_every 1")
        if c.metric == "best_val" and c.protocol == "official" and c.val_fraction == 0:
            raise ConfigError(self.matrix.source, where, "metric 'best_val' needs a validation split: set val_fraction > 0 or protocol resplit_4_1_1")

    def _stage_set_hint(self, name: str, readers: tuple[str, ...]) -> str:
        """A --set without a stage reaches every stage: say how to name the ones that read the field."""
        if name not in self.global_sets:
            return ""
        stages = [s for s, stage in self.matrix.stages.items() if stage.method in readers]
        value = self.global_sets[name]
        examples = " ".join(f"--set {s}.{name}={value}" for s in stages) or "(no stage here reads it)"
        return f"; a --set without a stage sets every stage: set it on the stages that read it: {examples}"

    def _check_inputs_match(self, cell: Cell, parents: dict[str, Cell]) -> None:
        """A student is fed the inputs its teacher was trained on: same dataset, image size and
        split (so no parent trained on its dependant's test images). A role the method takes for
        transfer (an encoder pretrained elsewhere) may be on another dataset; on the same dataset
        the guard holds."""
        from bench.matrix.names import requirement

        needs = requirement(cell.config.method)
        for role, parent in parents.items():
            if needs and role in needs.transfer_roles and parent.config.dataset != cell.config.dataset:
                continue
            for name in SHARED_WITH_PARENTS:
                mine, theirs = getattr(cell.config, name), getattr(parent.config, name)
                if mine != theirs:
                    raise ConfigError(self.matrix.source, f"stages.{cell.stage}",
                                      f"{_LABELS.get(name, name)} {mine!r} differs from its {role}'s {theirs!r} (stage {parent.stage}); set it in defaults"
                                      + ("; to vary the training seed alone, set split_seed for every stage" if name in _LABELS else ""))

    def _validate(self, stage_name: str, fields: dict[str, Any]) -> CellConfig:
        try:
            return CellConfig.model_validate(fields)
        except ValidationError as error:
            where, message = first_validation_error(error)
            raise ConfigError(self.matrix.source, f"stages.{stage_name}", f"cell field {where}: {message}") from None


def _shown(value: Any) -> str:
    """A field's value as a matrix spells it (4.0, "bank", [crop, flip] as ["crop", "flip"])."""
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _merge_axis_values(values: list[dict[str, Any]]) -> dict[str, Any] | None:
    merged: dict[str, Any] = {}
    for item in values:
        for key, value in item.items():
            if key in merged and not _equal(merged[key], value):
                return None
            merged[key] = value
    return merged


def _ancestors(matrix: Matrix, stage: str) -> set[str]:
    """Stages that ``stage`` depends on, directly or through its parents."""
    found: set[str] = set()
    for parent in matrix.stages[stage].needs.values():
        found |= {parent} | _ancestors(matrix, parent)
    return found


def expand(matrix: Matrix, sets: dict[str, Any] | None = None, max_cells: int = DEFAULT_MAX_CELLS,
           smoke: Smoke | None = None) -> list[Cell]:
    """All cells of a matrix, parents before children, each id once (their rehearsals with ``smoke``)."""
    return Planner(matrix, sets, max_cells, smoke).cells()


def matching(cells: list[Cell], pattern: str) -> list[Cell]:
    """The cells whose id, stage, method or arch matches ``pattern`` (what ``bench cancel --only``
    stops: a student's teacher is not cancelled with it). An empty or blank pattern is an error:
    ``--only "$UNSET"`` must not select (and cancel) every cell."""
    if not pattern.strip():
        raise BenchError(f"--only {pattern!r}: an empty pattern selects nothing; name a stage, method, arch or "
                         "cell id (leave --only out for every cell)")
    found = [c for c in cells if c.id.startswith(pattern)
             or any(fnmatch.fnmatchcase(v, pattern) for v in (c.id, c.stage, c.config.method, c.config.arch))]
    if not found:
        raise BenchError(f"--only {short(pattern, 60)} matches no cell's id, stage, method or arch")
    return found


def select(cells: list[Cell], pattern: str | None) -> list[Cell]:
    """Cells whose id, stage, method or arch matches ``pattern`` (a glob; an id may be given by
    its first characters), plus every cell they need. Free text (descriptions) is not matched:
    ``--only teacher`` means the teacher stage, not every cell whose description names one."""
    if pattern is None:
        return cells
    wanted = {c.id for c in matching(cells, pattern)}
    by_id = {c.id: c for c in cells}
    stack = list(wanted)
    while stack:
        for dep in by_id[stack.pop()].config.deps.values():
            if dep not in wanted:
                wanted.add(dep)
                stack.append(dep)
    return [c for c in cells if c.id in wanted]


def structural_key(cell: Cell) -> tuple[Any, ...]:
    """What a cell is, but for the fields a rehearsal shortens: its stage, its axis values and its
    parents' keys by role. A real cell and its rehearsal have the same key, so a rehearsal's
    measurements price the real cells (two real cells differing only in batch size share one)."""
    values = tuple(sorted((k, repr(v)) for k, v in cell.axis_values.items() if k not in SHORTENED))
    parents = tuple(sorted((role, structural_key(cell.parents[role])) for role in cell.config.deps if role in cell.parents))
    return cell.stage, values, parents


def plan_name(matrix_name: str, sets: list[str] | None, smoke: Smoke | None = None) -> str:
    """The matrix's name, or name@hash for a run with --set, so a variant never replaces the
    matrix's own plan (and its cells stay in the matrix's tables and baselines); a rehearsal's
    is name@smoke (``bench.matrix.smoke.plan_name``)."""
    if smoke is not None:
        return smoke_plan_name(matrix_name, sets, smoke)
    if not sets:
        return matrix_name
    return f"{matrix_name}@{hashlib.sha256(' '.join(sorted(sets)).encode()).hexdigest()[:8]}"


def describe_fields(values: Any) -> str:
    """A short human description of a cell from its fields (a mapping or a results-table row;
    ``role.arch`` names a parent's architecture): ``stage method arch <- teacher on data labels seed``."""
    get = values.get

    def present(value: Any) -> bool:
        return value is not None and not (isinstance(value, float) and math.isnan(value)) and str(value) not in ("", "nan", "None")

    parts = [str(get(k)) for k in ("stage", "method", "arch") if present(get(k))]
    parents = [f"{role}={get(f'{role}.arch')}" for role in ("teacher", "student", "encoder", "backbone") if present(get(f"{role}.arch"))]
    if parents:
        parts.append("<- " + ",".join(parents))
    if present(get("dataset")):
        parts.append(f"on {get('dataset')}" + (f"+{get('unlabeled')}" if present(get("unlabeled")) else ""))
    for key, label in (("label_fraction", "labels="), ("n_per_class", "n="), ("seed", "seed ")):
        if key == "label_fraction" and present(get(key)) and str(get(key)) in ("1", "1.0"):
            continue  # all labels: the default, not worth a word
        if present(get(key)):
            parts.append(f"{label}{get(key)}")
    return " ".join(parts)


def describe_cell(cell: Cell) -> str:
    """One line for progress and plans: the cell's id, then ``describe_fields`` of it and the
    architectures of the parents it names."""
    values: dict[str, Any] = cell.config.model_dump(mode="json", exclude={"deps"})
    values |= {f"{role}.arch": parent.config.arch for role, parent in cell.parents.items() if cell.config.deps.get(role) == parent.id}
    return f"{cell.id} {describe_fields(values)}"

PLAN_COLUMNS = ("id", "stage", "method", "dataset", "arch", "labels", "seed", "epochs", "lr", "needs")
"""What ``bench plan`` prints of each cell."""


def plan_rows(cells: list[Cell]) -> list[tuple[Any, ...]]:
    """One row per cell, in the order of :data:`PLAN_COLUMNS` (no pandas: plan stays quick)."""
    rows = []
    for c in cells:
        cfg = c.config
        rows.append((
            c.id, cfg.stage, cfg.method, cfg.dataset + (f"+{cfg.unlabeled}" if cfg.unlabeled else ""), cfg.arch,
            f"n={cfg.n_per_class}" if cfg.n_per_class is not None else f"{cfg.label_fraction:g}",
            cfg.seed, cfg.epochs, float(cfg.lr), " ".join(f"{role}:{dep}" for role, dep in sorted(cfg.deps.items())) or "-",
        ))
    return rows


def record_plan(store: "Store", name: str, matrix: Matrix, cells: list[Cell], sets: list[str], smoke: Smoke | None = None) -> None:
    """Which cells the matrix (or its ``--set`` variant or rehearsal ``name``) has, for collect, status and reports."""
    store.write_plan(name, matrix.source, matrix.paper, [{"id": c.id, "stage": c.stage, "describe": describe_cell(c)} for c in cells], sets,
                     None if smoke is None else {"batches": smoke.batches, "batch_size": smoke.batch_size})
