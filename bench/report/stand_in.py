"""Stand-in matrices: a matrix that runs a paper's grid on other data (or other models) is matched
to the paper's figures by their selectors without the data keys, or by its own ``stand_in:``
section (figure id or glob -> selector of its cells), checked here with file:field errors.
``plan_table`` turns planned cells into rows like ``bench.results.collect``'s, so a plan can be
checked against figure selectors with the very matching code reports use."""
from __future__ import annotations

import fnmatch
from typing import Any

import pandas as pd
from pydantic import ValidationError

from bench.errors import BenchError, ConfigError, first_validation_error
from bench.report.paper_figures import Cells, Figure, Paper

# A stand-in matrix runs a paper's grid on other data (e.g. digits for MNIST): its plan names the
# paper (``paper:`` in the matrix file) but not the paper's matrix, and its cells use other
# datasets. For it, a figure's selection ignores these keys (and ``<role>.<key>``), and the
# figure's matrix becomes the stand-in's. Reports must say that the data differ.
STAND_IN_IGNORED_KEYS = frozenset({"dataset", "unlabeled"})


def _strip_data_keys(selection: dict[str, Any] | None) -> dict[str, Any] | None:
    if selection is None:
        return None
    return {k: v for k, v in selection.items() if k.rpartition(".")[2] not in STAND_IN_IGNORED_KEYS}


def stand_in_figure(figure: Figure, matrix: str) -> Figure:
    """``figure`` as reproduced by the stand-in matrix ``matrix``: same reported value, selection
    without the ``dataset``/``unlabeled`` keys, matched against ``matrix``'s rows."""
    cells = figure.cells.model_copy(update={"select": _strip_data_keys(figure.cells.select),
                                            "baseline": _strip_data_keys(figure.cells.baseline)})
    return figure.model_copy(update={"matrix": matrix, "cells": cells})


def selection_data(selection: dict[str, Any]) -> tuple[str | None, str | None]:
    """The (labeled, unlabeled) datasets a selection names, None where it names none."""
    dataset, unlabeled = selection.get("dataset"), selection.get("unlabeled")
    return (None if dataset is None else str(dataset)), (None if unlabeled is None else str(unlabeled))


def check_stand_in(stand_in: Any, source: str, paper: "Paper | None" = None) -> dict[str, dict[str, Any]]:
    """A matrix's ``stand_in:`` section, validated: figure id glob -> a selector (or, for a gain,
    ``{select: ..., baseline: ...}``) whose keys are cell fields or ``role.field`` and whose values
    are what figure selectors take. Errors are ConfigErrors naming the file and ``stand_in.<glob>``."""
    from bench.matrix.config import FIELD_NAMES

    if stand_in is None:
        return {}
    if not isinstance(stand_in, dict):
        raise ConfigError(source, "stand_in", "must be a mapping of figure id (a glob) to a selector of this matrix's cells")
    out: dict[str, dict[str, Any]] = {}
    for glob, selector in stand_in.items():
        where = f"stand_in.{str(glob)[:80]}"
        if not isinstance(glob, str) or not glob.strip():
            raise ConfigError(source, "stand_in", f"{str(glob)[:80]!r}: a key must be a figure id or a glob of figure ids")
        if not isinstance(selector, dict) or not selector:
            raise ConfigError(source, where, "must be a non-empty selector such as {stage: augmentation, augment: [crop]}")
        sides = {"select": selector.get("select"), "baseline": selector.get("baseline")} if "select" in selector else {"select": selector}
        if "select" in selector and set(selector) - {"select", "baseline"}:
            raise ConfigError(source, where, "with `select`, only `select` and `baseline` may be given")
        try:
            Cells.model_validate({k: v for k, v in sides.items() if v is not None})
        except ValidationError as error:
            field, message = first_validation_error(error)
            side = field.partition(".")[0]
            raise ConfigError(source, where + (f".{side}" if "select" in selector and side else ""), message) from None
        for side in sides.values():
            for key in side or {}:
                if key.rpartition(".")[2] not in FIELD_NAMES:
                    raise ConfigError(source, f"{where}.{key[:60]}", f"unknown field {key.rpartition('.')[2][:60]!r}")
        if paper is not None:
            matched = [fig for fig in paper.figures if fnmatch.fnmatchcase(fig.id, glob)]
            if not matched:
                raise ConfigError(source, where, f"matches no figure of {paper.paper} (ids look like {paper.figures[0].id!r})")
            gains = [fig.id for fig in matched if fig.kind != "value"]
            if gains and sides.get("baseline") is None:
                raise ConfigError(source, where, f"{gains[0]} is a gain: give {{select: ..., baseline: ...}}")
        out[glob] = selector
    return out


def stand_in_for(figure_id: str, stand_in: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """``(glob, selector)`` of the ``stand_in`` entry for ``figure_id``: its exact id, else the first
    glob (in file order) that matches it; None when the matrix maps no cells to the figure."""
    if figure_id in stand_in:
        return figure_id, stand_in[figure_id]
    for glob, selector in stand_in.items():
        if fnmatch.fnmatchcase(figure_id, glob):
            return glob, selector
    return None


def mapped_figure(figure: Figure, matrix: str, selector: dict[str, Any]) -> Figure:
    """``figure`` reproduced by the stand-in cells ``selector`` of ``matrix`` (same reported value)."""
    if "select" in selector:
        select, baseline = selector["select"], selector.get("baseline")
    else:
        select, baseline = selector, None
    if figure.kind != "value" and baseline is None:
        raise BenchError(f"{figure.id}: a {figure.kind} needs {{select: ..., baseline: ...}} as its stand-in selector")
    cells = Cells(select=dict(select), baseline=None if figure.kind == "value" else dict(baseline))
    return figure.model_copy(update={"matrix": matrix, "cells": cells})


def plan_table(cells: list[Any], matrix: str) -> pd.DataFrame:
    """Planned cells (``bench.matrix.plan.expand``) as rows like ``bench.results.collect``'s: every config field,
    each parent's fields as ``role.field``, lists as comma-joined text, plus ``matrix`` and ``id``."""
    from bench.results.collect import _normalise

    rows = []
    for cell in cells:
        row = {k: v for k, v in cell.config.model_dump(mode="json").items() if k != "deps"}
        for role, parent in sorted(cell.parents.items()):
            row[f"{role}.id"] = parent.id
            row.update({f"{role}.{k}": v for k, v in parent.config.model_dump(mode="json").items() if k != "deps"})
        rows.append({"matrix": matrix, "id": cell.id, **{k: _normalise(v) for k, v in row.items()}})
    return pd.DataFrame(rows)
