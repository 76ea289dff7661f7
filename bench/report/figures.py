"""A paper's figures read from a results table: which cells stand in for each figure, one reading
per metric and varying axis, each with its interval and verdict (``bench.report.paper_figures.reproduce``),
and the rows of a table's CSV."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bench.report.format import THROUGHPUT_COLUMNS, data_text, is_missing

# --------------------------------------------------------------------------- figures -> rows


@dataclass
class Reading:
    """One reproduced number of a figure: one metric, on the cells of one value of a varying axis."""

    label: str             # "" for a figure's only reading; else e.g. "at 1% labels", "test_agreement"
    metric: str
    group: dict[str, Any]  # the varying axes' values of these cells ({} when nothing varies)
    result: dict[str, Any]
    cells: pd.DataFrame
    baseline_cells: pd.DataFrame


@dataclass
class FigureRow:
    figure: Any            # the paper's Figure
    used: Any              # the Figure as matched against this matrix (stand-in: retargeted)
    result: dict[str, Any]  # the first reading's
    cells: pd.DataFrame    # rows behind the figure (the `select` side; for gains the "after" model), every reading
    baseline_cells: pd.DataFrame
    stand_in: bool
    data_note: str
    data_differs: bool
    readings: list[Reading] = field(default_factory=list)
    mapping: tuple[str, dict[str, Any]] | None = None  # the `stand_in:` entry (glob, selector) that matched
    mapping_note: str = ""  # why there is no reproduced value, when the mapping explains it

    @property
    def n(self) -> int:
        """Seeds behind the best-covered reading (0: nothing reproduced)."""
        return max((int(r.result["n"]) for r in self.readings), default=int(self.result["n"]))


def _here_data(rows: pd.DataFrame) -> str:
    if rows.empty:
        return ""
    pairs = []
    for _, row in rows.iterrows():
        dataset = row.get("dataset")
        unlabeled = row.get("unlabeled")
        text = data_text(None if is_missing(dataset) else str(dataset), None if is_missing(unlabeled) else str(unlabeled))
        classes = row.get("task_classes")
        if not is_missing(classes):
            text += f" (first {int(float(classes))} classes)"
        if text not in pairs:
            pairs.append(text)
    return ", ".join(pairs)


def _data_note(figure: Any, rows: pd.DataFrame, stand_in: bool) -> tuple[str, bool]:
    """The "data" column: whether this matrix's data for the figure are the paper's."""
    from bench.report.stand_in import selection_data

    paper_ds, paper_un = selection_data(figure.cells.select)
    if not stand_in:
        return "as paper", False
    paper_text = data_text(paper_ds, paper_un, pretty=True)
    if rows.empty:
        return f"paper {paper_text}; no cell here", False
    here = _here_data(rows)
    same = here == data_text(paper_ds, paper_un)
    if same:
        return "same data as paper (stand-in matrix)", False
    return f"data differs from the paper: paper {paper_text}, here {here}", True


def _metric_rows(table: pd.DataFrame, figure: Any, selection: dict[str, Any] | None) -> pd.DataFrame:
    from bench.report.paper_figures import select_rows

    if selection is None or table.empty:
        return table.iloc[0:0]
    rows = select_rows(table, figure.matrix, selection)
    if figure.metric in rows:
        rows = rows[pd.to_numeric(rows[figure.metric], errors="coerce").notna()]
    return rows


def base_matrix_name(name: str) -> str:
    """``demo@1a2b3c4d`` (a run with --set) is still the demo matrix."""
    return name.partition("@")[0]


def _same_value(cell: Any, wanted: Any) -> bool:
    from bench.matrix.selectors import value_matches

    if is_missing(wanted):
        return is_missing(cell) or cell == ""
    return value_matches(cell, wanted.item() if isinstance(wanted, np.generic) else wanted)


def _axis_text(axis: str, value: Any) -> str:
    """How a reading names the value of a varying axis: "at 1% labels", "on digits", "on 5 classes"."""
    if is_missing(value):
        return f"{axis} unset"
    if axis in ("label_fraction", "teacher.label_fraction"):
        fraction = float(value)
        return f"at {fraction * 100:g}% labels"
    if axis == "dataset":
        return f"on {value}"
    if axis == "task_classes":
        return f"on {int(float(value))} classes"
    return f"{axis}={value}"


def varying_axes(rows: pd.DataFrame, selector: dict[str, Any], stage_axes: dict[str, list[str]]) -> list[str]:
    """The axes (of more than one value) of the matched cells' stages that ``selector`` does not fix
    (seeds are what a reading averages over, never an axis here). Declared by the matrix, not read
    from the done cells, so a reading is labelled by its axis value even while the others run."""
    if rows.empty or "stage" not in rows:
        return []
    names: list[str] = []
    for stage in dict.fromkeys(rows["stage"].astype(str)):
        names += [a for a in stage_axes.get(stage, []) if a not in names]
    fixed = set(selector.get("select", selector) if isinstance(selector.get("select"), dict) else selector)
    return [axis for axis in names if axis != "seed" and axis not in fixed and axis in rows]


def _readings(table: pd.DataFrame, used: Any, axes: list[str]) -> list[Reading]:
    """One reading per (value of the varying axes, metric), in the order the cells appear."""
    from bench.report.paper_figures import reproduce, select_rows

    matched = select_rows(table, used.matrix, used.cells.select) if not table.empty else table
    groups: list[dict[str, Any]] = [{}]
    if axes and not matched.empty:
        seen: dict[tuple[str, ...], dict[str, Any]] = {}
        for _, row in matched.iterrows():
            key = tuple("" if is_missing(row[a]) else str(row[a]) for a in axes)
            seen.setdefault(key, {a: row[a] for a in axes})
        groups = list(seen.values())
    several_metrics = len(used.metrics) > 1
    out = []
    for group in groups:
        subset = table
        for axis, value in group.items():
            subset = subset[subset[axis].map(lambda cell, want=value: _same_value(cell, want)).astype(bool)]
        for metric in used.metrics:
            reading = used.model_copy(update={"metric": metric})
            result = reproduce(reading, subset) if not subset.empty else {
                "mean": math.nan, "std": math.nan, "n": 0, "paired": None, "reported": used.value}
            parts = ([metric] if several_metrics else []) + [_axis_text(a, v) for a, v in group.items()]
            out.append(Reading(" ".join(parts), metric, dict(group), result,
                               _metric_rows(subset, reading, reading.cells.select),
                               _metric_rows(subset, reading, reading.cells.baseline)))
    return out


def figure_rows(table: pd.DataFrame, matrix: str, paper: Any, stand_in: dict[str, Any] | None = None,
                stage_axes: dict[str, list[str]] | None = None) -> list[FigureRow]:
    """Every figure of ``paper`` reproduced from ``table``'s rows of ``matrix``.

    ``stand_in``: the matrix's ``stand_in:`` section (validated, ``bench.report.stand_in.check_stand_in``);
    when given for a stand-in matrix it alone says which cells reproduce which figure, and a selector
    that leaves an axis of ``stage_axes`` varying gives one reading per value of that axis."""
    from bench.report.stand_in import mapped_figure, stand_in_figure, stand_in_for

    out = []
    for fig in paper.figures:
        is_stand_in = fig.matrix != base_matrix_name(matrix)
        mapping = stand_in_for(fig.id, stand_in) if is_stand_in and stand_in else None
        mapping_note, axes = "", []
        if mapping is not None:
            used = mapped_figure(fig, matrix, mapping[1])
        elif is_stand_in and stand_in:  # the matrix maps its cells to figures, and not to this one
            used = fig.model_copy(update={"matrix": matrix})
            mapping_note = f"no stand-in: `stand_in:` of `{base_matrix_name(matrix)}` maps no cells to {fig.id}"
        elif is_stand_in:
            used = stand_in_figure(fig, matrix)
        else:
            used = fig.model_copy(update={"matrix": matrix})  # matrix@hash too
        if mapping_note:
            readings = [Reading("", fig.metric, {}, {"mean": math.nan, "std": math.nan, "n": 0, "paired": None,
                                                     "reported": fig.value}, table.iloc[0:0], table.iloc[0:0])]
        else:
            if mapping is not None and not table.empty:
                from bench.report.paper_figures import select_rows

                axes = varying_axes(select_rows(table, used.matrix, used.cells.select), mapping[1], stage_axes or {})
            readings = _readings(table, used, axes)
            if mapping is not None and not any(r.result["n"] for r in readings):
                mapping_note = (f"stand-in {selector_text(mapping[1])} matches no done cell of `{matrix}`"
                                f" with {fig.metric}")
        cells = concat_rows([r.cells for r in readings])
        base = concat_rows([r.baseline_cells for r in readings])
        note, differs = (mapping_note, False) if mapping_note else _data_note(fig, cells, is_stand_in)
        out.append(FigureRow(fig, used, readings[0].result, cells, base, is_stand_in, note, differs,
                             readings, mapping, mapping_note))
    return out


def concat_rows(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=["id"])
    joined = pd.concat(frames)
    return joined[~joined.index.duplicated()] if "id" not in joined else joined.drop_duplicates(subset="id")


def selector_text(selector: dict[str, Any]) -> str:
    def text(value: Any) -> str:
        return "[" + ", ".join(map(text, value)) + "]" if isinstance(value, list) else str(value)

    def one(sel: dict[str, Any]) -> str:
        return "{" + ", ".join(f"{key}={text(value)}" for key, value in sel.items()) + "}"

    if isinstance(selector.get("select"), dict):
        base = selector.get("baseline")
        return one(selector["select"]) + (f" vs baseline {one(base)}" if isinstance(base, dict) else "")
    return one(selector)


UNITS = {"value": "%", "absolute_gain": "pts", "relative_gain": "% rel."}


def _throughput(rows: pd.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column in THROUGHPUT_COLUMNS:
        if column not in rows or rows.empty:
            out[column] = math.nan if column not in ("peak_memory_kind", "device") else ""
            continue
        if column in ("peak_memory_kind", "device"):
            values = []
            for _, row in rows.iterrows():
                if column == "device":
                    device, name = row.get("device"), row.get("device_name")
                    text = "" if is_missing(device) else str(device)
                    if not is_missing(name) and str(name) != text:
                        text = f"{text} ({name})"
                else:
                    text = "" if is_missing(row.get(column)) else str(row.get(column))
                if text and text not in values:
                    values.append(text)
            out[column] = ", ".join(values)
        else:
            values = pd.to_numeric(rows[column], errors="coerce")
            out[column] = float(values.mean()) if values.notna().any() else math.nan
    return out


def _reading_text(res: dict[str, Any]) -> str:
    n = int(res["n"])
    if not n:
        return "—"
    mean, std = res["mean"] * 100, res["std"] * 100
    text = f"{mean:.2f} (n=1)" if n == 1 else f"{mean:.2f} ± {std:.2f} (n={n})"
    return text + (" from means" if res.get("paired") is False else "")


def _pct_or_nan(value: Any) -> float:
    return math.nan if value is None or is_missing(value) else round(float(value) * 100, 6)


OTHER_DATA = "other data"


def judged(row: FigureRow) -> bool:
    """Whether ``row``'s numbers are comparable with the paper's: the paper's own matrix, or a
    stand-in for a figure that declares it ``transfers`` (a gain carries over, an accuracy does not)."""
    return not row.stand_in or (row.figure.transfers is not None and row.figure.transfers.form != "none")


def _verdict(row: FigureRow, res: dict[str, Any]) -> str:
    found = res.get("verdict", "no cells")
    return found if found == "no cells" or judged(row) else OTHER_DATA


def table_frame(rows: list[FigureRow]) -> pd.DataFrame:
    """The CSV of one paper table: numbers x100 (%, points); delta = reproduced - reported.

    One row per figure; where a figure has several readings (metrics, values of a varying axis),
    one row per reading, with the extra columns ``reading`` (its label) and ``reading_group``."""
    records = []
    several = any(len(r.readings) > 1 or any(rd.label for rd in r.readings) for r in rows)
    mapped = any(r.mapping is not None for r in rows)
    for row in rows:
        fig = row.figure
        for reading in row.readings or [Reading("", fig.metric, {}, row.result, row.cells, row.baseline_cells)]:
            res = reading.result
            n = int(res["n"])
            mean = res["mean"] * 100 if n else math.nan
            std = res["std"] * 100 if n else math.nan
            reported = fig.value * 100
            ids = list(dict.fromkeys(reading.cells["id"])) if "id" in reading.cells else []
            base_ids = list(dict.fromkeys(reading.baseline_cells["id"])) if "id" in reading.baseline_cells else []
            record = {"figure": fig.label, "id": fig.id, "source": fig.source, "metric": reading.metric, "kind": fig.kind}
            if several:
                record["reading"] = reading.label
                record["reading_group"] = ", ".join(f"{k}={v}" for k, v in reading.group.items())
            record.update({
                "unit": UNITS[fig.kind], "reported": round(reported, 6),
                "reproduced": round(mean, 6) if n else math.nan, "std": round(std, 6) if n else math.nan, "n": n,
                "reproduced_text": _reading_text(res), "delta": round(mean - reported, 6) if n else math.nan,
                "ci_low": _pct_or_nan(res.get("low")), "ci_high": _pct_or_nan(res.get("high")),
                "interval": res.get("interval") or "", "band": _pct_or_nan(res.get("tolerance", fig.band)),
                "verdict": _verdict(row, res), "seeds_needed": res.get("seeds_needed") if judged(row) else None,
                "data": row.data_note})
            if row.stand_in:
                record["transfers"] = (f"{fig.transfers.form}: {fig.transfers.why}" if fig.transfers is not None
                                       else "not reviewed")
            if mapped:
                record["stand_in"] = selector_text(row.mapping[1]) if row.mapping is not None else ""
            record.update({"cells": " ".join(ids), "baseline_cells": " ".join(base_ids),
                           **_throughput(reading.cells), "notes": fig.notes})
            records.append(record)
    return pd.DataFrame(records)
