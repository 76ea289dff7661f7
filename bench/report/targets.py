"""What ``bench report`` reports on: a matrix file's plans or every plan of a results folder, each a
``Target`` with its paper (and how it was found), its planned cells, its ``stand_in:`` mapping,
its stages' varying axes and how its cells differ from the matrix's own (``--set``, ``--smoke``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.errors import BenchError
from bench.results.store import Store


@dataclass
class Target:
    """One matrix to report on."""

    matrix: str
    results: Path
    paper: str | None = None
    source: str | None = None           # the matrix YAML, when known
    description: str = ""
    planned: list[dict[str, Any]] = field(default_factory=list)  # plan entries (id, stage, describe)
    paper_reason: str = ""              # how the paper was found
    stand_in: dict[str, Any] = field(default_factory=dict)         # the matrix file's `stand_in:` section
    stage_axes: dict[str, list[str]] = field(default_factory=dict)  # stage -> its axes (matrix axes for roots)
    variant: list[str] = field(default_factory=list)  # how its cells differ from the matrix's own (--set, --smoke)


def stage_axes(fields: dict[str, Any]) -> dict[str, list[str]]:
    """Stage -> the names of its axes of more than one value (a stage that needs nothing also has the
    matrix-level axes), from a matrix file's fields; what a stand-in selector may leave varying."""
    stages = fields.get("stages") if isinstance(fields.get("stages"), dict) else {}

    def varying(axes: Any) -> list[str]:
        if not isinstance(axes, dict):
            return []
        return [str(k) for k, v in axes.items() if isinstance(v, list) and len(v) > 1]

    top = varying(fields.get("axes"))
    out: dict[str, list[str]] = {}
    for name, stage in stages.items():
        if not isinstance(stage, dict):
            continue
        own = varying(stage.get("axes"))
        out[str(name)] = own + ([a for a in top if a not in own] if not stage.get("needs") else [])
    return out


def _matrix_file_fields(path: str) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _paper_by_matrix_name(matrix: str) -> str | None:
    from bench.report.paper_figures import all_papers

    for paper in all_papers():
        if paper.matrix == matrix:
            return paper.paper
    return None


def resolve_targets(arg: str, results: str | None) -> list[Target]:
    """A matrix YAML (results from ``results``) or a results folder (every matrix planned in it)."""
    path = Path(arg)
    if path.is_dir():
        store = Store(path)
        plans = store.plans()
        if not plans:
            raise BenchError(f"{path}: no plans/ in this results folder (run `bench run MATRIX --results {path}` first)")
        targets = []
        for name, plan in plans.items():
            source = plan.get("source") or None
            fields = _matrix_file_fields(source) if source else {}
            paper, reason = fields.get("paper"), f"`paper` of {source}"
            if "paper" in plan:  # recorded at run time: needs no matrix file, wherever this runs
                paper, reason = plan["paper"], f"`paper` of {source}, as recorded in the plan"
            elif not fields:
                paper, reason = _paper_by_matrix_name(name), f"matrix file {source!r} not found; paper by matrix name"
            targets.append(Target(name, path, paper, source, str(fields.get("description", "")), plan.get("cells", []), reason,
                                  fields.get("stand_in") or {}, stage_axes(fields), _variant(plan)))
        return targets
    if not path.is_file():
        raise BenchError(f"{arg}: neither a matrix file nor a results folder")
    from bench.matrix.schema import load_matrix

    matrix = load_matrix(path)
    if results is None:
        raise BenchError(f"{arg}: a matrix file needs --results (the folder its cells are in)")
    root = Path(results)
    plans = Store(root).plans()
    # the matrix's own plan, else its --set variants and rehearsals (name@hash, name@smoke), each reported
    names = [matrix.name] if matrix.name in plans else sorted(n for n in plans if n.startswith(f"{matrix.name}@"))
    if not names:
        raise BenchError(f"{root}: no results for matrix {matrix.name!r} (run `bench run {arg} --results {root}` first)")
    return [Target(name, root, matrix.paper, str(path), matrix.description, plans[name].get("cells", []),
                   f"`paper` of {path}", dict(matrix.stand_in), stage_axes(matrix.model_dump()),
                   _variant(plans[name])) for name in names]


def _variant(plan: dict[str, Any]) -> list[str]:
    """How a plan's cells differ from the matrix's own: its ``--set`` overrides and a rehearsal's shortening."""
    sets = plan.get("sets") if isinstance(plan.get("sets"), list) else []
    out = [f"--set {s}" for s in sets if isinstance(s, str) and s.isprintable()][:50]
    smoke = plan.get("smoke")
    if isinstance(smoke, dict):
        size = smoke.get("batch_size") or "the cells' own number of"
        out.append(f"--smoke: {smoke.get('batches')} batches of at most {size} images per epoch and evaluation set, "
                   "1 epoch (a rehearsal: its numbers measure nothing)")
    return out
