"""``bench report``: reported vs reproduced figures of a matrix's paper, with throughput and plots.

Usage::

    bench report matrices/demo.yaml [--results DIR] [--out DIR]
    bench report RESULTS_DIR [--out DIR]          # every matrix with a plan in RESULTS_DIR

Writes ``<out>/<matrix>/`` (``<out>`` defaults to ``<results>/report``):

* ``report.md`` and ``report.html`` (self-contained: PNGs embedded as data URIs); the markdown
  links its PNGs by relative path, so the folder can be copied anywhere;
* one CSV per paper table (``table-1.csv``, ...): figure label, reported, reproduced (mean, std
  over seeds, n), delta, the data note, and throughput of the cell(s) behind the figure;
* ``cells.csv``: every done cell of the matrix;
* ``verdicts.csv``: every figure reading with its 95% interval over seeds and its verdict
  (``bench.verdicts``), shown first; ``claims.csv``: the paper's claims judged on the cells
  (``bench.claims``); the header says how much compute the cells took and what sharing saved;
* PNG plots mirroring the paper's (error bars: the 95% intervals), chosen per paper in ``PAPER_VIEWS`` (a registry: a paper
  without an entry gets the generic plots): for menghani2019 a Table-1-style grid per table (T, S,
  S' per teacher->student pair; reported vs reproduced), for khose2021 grouped bars like its
  Figures 1-3 (skipped with a note when the results hold no khose-style cells), for nguyen2021
  grouped bars for Tables 1 and 2 (one bar per reading: per label fraction, per metric) and a line
  of accuracy against the number of classes for Table 4 with the paper's points; for other papers
  reported-vs-reproduced bars per table.

Units: every figure value is a fraction in ``bench.paper_figures``; reports show them x100. For
accuracies (``kind: value``) reported/reproduced are in %, delta in percentage points; absolute
gains are in points; relative gains in % of the baseline, delta in points of that percentage.

Which paper: the matrix file's ``paper`` field (for a results folder, the plan's ``source`` matrix
file; when that file is gone, the paper whose matrix has the matrix's name). When the matrix is not
the paper's own matrix (``matrix:`` of its figures) it is a *stand-in* (the paper's grid on other
data): figure selectors are applied without their ``matrix``, ``dataset`` and ``unlabeled`` keys
(``bench.paper_figures.stand_in_figure``), and every table row says whether and how the data differ.
A stand-in whose matrix file has a ``stand_in:`` section (figure id glob -> selector of its cells)
is matched by that instead, and only by that: a figure it does not map has no reproduced value.

Readings. A figure is shown as one or more *readings*, each a mean ± std over seeds: one per
metric (``metric`` and the figure's ``alt_metrics``, e.g. nguyen2021's Table 2 as ``test_acc`` and
``test_agreement``) and, for a ``stand_in:`` selector that leaves an axis of the matrix varying
(an ``axes`` key of the matched cells' stage that the selector does not fix, such as
``label_fraction``), one per value of that axis: the table reads "reported | ours at 1% labels |
ours at 10% labels". The table CSV then has one row per (figure, reading), with ``reading`` and
``reading_group`` columns; a figure with a single reading keeps the one-row-per-figure layout.
"""
from __future__ import annotations

import base64
import html
import math
import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import yaml

from bench.errors import BenchError
from bench.store import Store, atomic_write_bytes

REPORT_DIR = "report"

# Nicer names for the paper side of a "data differs" note; our side stays as the registry name.
DATASET_NAMES = {
    "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100",
    "caltech256": "Caltech-256", "imagenet": "ImageNet", "openimages": "OpenImages", "tf_flowers": "TF-Flowers",
    "cats_vs_dogs": "Cats vs Dogs", "dtd": "DTD", "food101": "Food-101",
}

# Number of classes of a dataset, for plots against the number of classes (nguyen2021 Table 4).
DATASET_CLASSES = {
    "mnist": 10, "fashion_mnist": 10, "digits": 10, "cifar10": 10, "cifar100": 100, "caltech256": 257,
    "imagenet": 1000, "tf_flowers": 5, "cats_vs_dogs": 2, "dtd": 47, "food101": 101, "flowers102": 102,
    "oxford_pets": 37,
}

THROUGHPUT_COLUMNS = ["train_images_per_s", "infer_images_per_s", "params", "flops", "peak_memory_mb",
                      "peak_memory_kind", "wall_seconds", "device"]

CELL_COLUMNS = ["id", "stage", "method", "arch", "teacher.arch", "student.arch", "dataset", "unlabeled",
                "label_fraction", "n_per_class", "task_classes", "augment", "frozen_backbone", "teacher.label_fraction",
                "labeled_share", "init", "transforms", "seed", "epochs", "test_acc", "val_acc", "train_acc",
                "test_agreement", "probe_test_acc", "coverage", "pseudo_acc", "selection"] + THROUGHPUT_COLUMNS
ACCURACY_COLUMNS = ("test_acc", "val_acc", "train_acc", "test_agreement", "probe_test_acc", "coverage", "pseudo_acc")


# --------------------------------------------------------------------------- what to report


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
    from bench.paper_figures import all_papers

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
                                  fields.get("stand_in") or {}, stage_axes(fields)))
        return targets
    if not path.is_file():
        raise BenchError(f"{arg}: neither a matrix file nor a results folder")
    from bench.matrix import load_matrix

    matrix = load_matrix(path)
    if results is None:
        raise BenchError(f"{arg}: a matrix file needs --results (the folder its cells are in)")
    root = Path(results)
    plans = Store(root).plans()
    if matrix.name not in plans:
        raise BenchError(f"{root}: no results for matrix {matrix.name!r} (run `bench run {arg} --results {root}` first)")
    return [Target(matrix.name, root, matrix.paper, str(path), matrix.description, plans[matrix.name].get("cells", []),
                   f"`paper` of {path}", dict(matrix.stand_in), stage_axes(matrix.model_dump()))]


# --------------------------------------------------------------------------- formatting


def _nan(value: Any) -> bool:
    try:
        return value is None or (isinstance(value, float) and math.isnan(value)) or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _si(value: Any) -> str:
    if _nan(value):
        return "—"
    value = float(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.0f}"


def _num(value: Any, digits: int = 2, sign: bool = False) -> str:
    if _nan(value):
        return "—"
    return f"{float(value):+.{digits}f}" if sign else f"{float(value):.{digits}f}"


def _rate(value: Any) -> str:
    return "—" if _nan(value) else f"{float(value):,.0f}"


def _memory(mb: Any, kind: Any) -> str:
    if _nan(mb):
        return "—"
    return f"{float(mb):,.0f} MB" + (f" ({kind})" if not _nan(kind) and kind else "")


def _data_text(dataset: str | None, unlabeled: str | None, pretty: bool = False) -> str:
    name = (lambda d: DATASET_NAMES.get(d, d)) if pretty else (lambda d: d)
    if not dataset and not unlabeled:
        return "?"
    return f"{name(dataset or '?')}←{name(unlabeled)}" if unlabeled else name(dataset or "?")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "table"


def _display_label(label: str) -> str:
    return label.replace(" | ", " · ").replace("->", "→")


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
        text = _data_text(None if _nan(dataset) else str(dataset), None if _nan(unlabeled) else str(unlabeled))
        classes = row.get("task_classes")
        if not _nan(classes):
            text += f" (first {int(float(classes))} classes)"
        if text not in pairs:
            pairs.append(text)
    return ", ".join(pairs)


def _data_note(figure: Any, rows: pd.DataFrame, stand_in: bool) -> tuple[str, bool]:
    """The "data" column: whether this matrix's data for the figure are the paper's."""
    from bench.paper_figures import selection_data

    paper_ds, paper_un = selection_data(figure.cells.select)
    if not stand_in:
        return "as paper", False
    paper_text = _data_text(paper_ds, paper_un, pretty=True)
    if rows.empty:
        return f"paper {paper_text}; no cell here", False
    here = _here_data(rows)
    same = here == _data_text(paper_ds, paper_un)
    if same:
        return "same data as paper (stand-in matrix)", False
    return f"data differs from the paper: paper {paper_text}, here {here}", True


def _metric_rows(table: pd.DataFrame, figure: Any, selection: dict[str, Any] | None) -> pd.DataFrame:
    from bench.paper_figures import select_rows

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
    from bench.selectors import value_matches

    if _nan(wanted):
        return _nan(cell) or cell == ""
    return value_matches(cell, wanted.item() if isinstance(wanted, np.generic) else wanted)


def _axis_text(axis: str, value: Any) -> str:
    """How a reading names the value of a varying axis: "at 1% labels", "on digits", "on 5 classes"."""
    if _nan(value):
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
    from bench.paper_figures import reproduce, select_rows

    matched = select_rows(table, used.matrix, used.cells.select) if not table.empty else table
    groups: list[dict[str, Any]] = [{}]
    if axes and not matched.empty:
        seen: dict[tuple[str, ...], dict[str, Any]] = {}
        for _, row in matched.iterrows():
            key = tuple("" if _nan(row[a]) else str(row[a]) for a in axes)
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

    ``stand_in``: the matrix's ``stand_in:`` section (validated, ``bench.paper_figures.check_stand_in``);
    when given for a stand-in matrix it alone says which cells reproduce which figure, and a selector
    that leaves an axis of ``stage_axes`` varying gives one reading per value of that axis."""
    from bench.paper_figures import mapped_figure, stand_in_figure, stand_in_for

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
                from bench.paper_figures import select_rows

                axes = varying_axes(select_rows(table, used.matrix, used.cells.select), mapping[1], stage_axes or {})
            readings = _readings(table, used, axes)
            if mapping is not None and not any(r.result["n"] for r in readings):
                mapping_note = (f"stand-in {_selector_text(mapping[1])} matches no done cell of `{matrix}`"
                                f" with {fig.metric}")
        cells = _concat([r.cells for r in readings])
        base = _concat([r.baseline_cells for r in readings])
        note, differs = (mapping_note, False) if mapping_note else _data_note(fig, cells, is_stand_in)
        out.append(FigureRow(fig, used, readings[0].result, cells, base, is_stand_in, note, differs,
                             readings, mapping, mapping_note))
    return out


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=["id"])
    joined = pd.concat(frames)
    return joined[~joined.index.duplicated()] if "id" not in joined else joined.drop_duplicates(subset="id")


def _selector_text(selector: dict[str, Any]) -> str:
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
                    text = "" if _nan(device) else str(device)
                    if not _nan(name) and str(name) != text:
                        text = f"{text} ({name})"
                else:
                    text = "" if _nan(row.get(column)) else str(row.get(column))
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
    return math.nan if value is None or _nan(value) else round(float(value) * 100, 6)


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
                "verdict": res.get("verdict", "no cells"), "seeds_needed": res.get("seeds_needed"),
                "data": row.data_note})
            if mapped:
                record["stand_in"] = _selector_text(row.mapping[1]) if row.mapping is not None else ""
            record.update({"cells": " ".join(ids), "baseline_cells": " ".join(base_ids),
                           **_throughput(reading.cells), "notes": fig.notes})
            records.append(record)
    return pd.DataFrame(records)


def cells_frame(table: pd.DataFrame) -> pd.DataFrame:
    columns = [c for c in CELL_COLUMNS if c in table and not table[c].map(lambda v: _nan(v) or v == "").all()]
    frame = table[columns].copy()
    if "device" in frame and "device_name" in table:
        frame["device"] = [d if _nan(n) or str(n) == str(d) else f"{d} ({n})" for d, n in zip(table["device"], table["device_name"])]
    return frame


# --------------------------------------------------------------------------- markdown / html tables


def _md_cell(value: Any) -> str:
    return ("—" if _nan(value) else str(value)).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(_md_cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


VERDICT_CLASSES = {"reproduced": "good", "holds": "good", "not reproduced": "bad", "fails": "bad",
                   "inconclusive": "unsure", "no cells": "none"}


def _html_cell(column: str, value: Any) -> str:
    text = "—" if _nan(value) else str(value)
    kind = VERDICT_CLASSES.get(text) if str(column).startswith("verdict") else None
    return f'<td class="verdict {kind}">{html.escape(text)}</td>' if kind else f"<td>{html.escape(text)}</td>"


def html_table(frame: pd.DataFrame) -> str:
    """A table as HTML; verdict cells carry a class (good / bad / unsure / none) the page colours."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(_html_cell(c, v) for c, v in zip(frame.columns, row)) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def display_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The report's view of a table CSV: formatted numbers, one row per figure; a figure with several
    readings gets one "reproduced"/"Δ" column pair per reading ("ours at 1% labels", ...)."""
    if frame.empty:
        return frame
    has_readings = "reading" in frame
    labels = list(dict.fromkeys(frame["reading"].fillna("").astype(str))) if has_readings else [""]
    if has_readings:  # a reading no figure has a value for (e.g. of an unmapped figure) is not a column
        filled = [lab for lab in labels if (frame.loc[frame["reading"].fillna("").astype(str) == lab, "n"] > 0).any()]
        labels = filled or labels
    rows = []
    for _, group in frame.groupby("id", sort=False):
        first = group.iloc[0]
        unit = first["unit"]
        reported = f"{first['reported']:.2f}" if unit == "%" else f"{first['reported']:+.2f}"
        row: dict[str, Any] = {"figure": _display_label(first["figure"]), "unit": unit, "reported": reported}
        for label in labels:
            match = group[group["reading"].fillna("").astype(str) == label] if has_readings else group
            text = match.iloc[0]["reproduced_text"] if not match.empty else "—"
            delta = match.iloc[0]["delta"] if not match.empty else math.nan
            head, dhead = ((f"ours {label} (mean ± std, n)", f"Δ {label} (pts)") if label
                           else ("reproduced (mean ± std, n)", "Δ (pts)"))
            row[head] = "—" if _nan(text) else text
            row[dhead] = _num(delta, 2, sign=True)
            row[f"verdict {label}" if label else "verdict"] = match.iloc[0]["verdict"] if not match.empty else "no cells"
        row["data"] = first["data"]
        if "stand_in" in group:
            row["stood in by"] = first["stand_in"] if isinstance(first["stand_in"], str) and first["stand_in"] else "—"
        done = group[group["n"] > 0] if (group["n"] > 0).any() else group.iloc[:1]
        mean = lambda column: pd.to_numeric(done[column], errors="coerce").mean()  # noqa: E731
        texts = lambda column: ", ".join(dict.fromkeys(  # noqa: E731
            part for v in done[column] if isinstance(v, str) and v for part in v.split(", ")))
        cells = list(dict.fromkeys(c for v in done["cells"] if isinstance(v, str) for c in v.split()))
        row.update({
            "train img/s": _rate(mean("train_images_per_s")), "infer img/s": _rate(mean("infer_images_per_s")),
            "params": _si(mean("params")), "FLOPs/img": _si(mean("flops")),
            "peak memory": _memory(mean("peak_memory_mb"), texts("peak_memory_kind")),
            "wall s": _num(mean("wall_seconds"), 1), "device": texts("device") or "—",
            "cells": " ".join(c[:8] for c in cells) or "—",
        })
        rows.append(row)
    return pd.DataFrame(rows)


def display_cells(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for column in ACCURACY_COLUMNS:
        if column in out:
            out[column] = [_num(float(v) * 100 if not _nan(v) else v, 2) for v in out[column]]
    for column in ("train_images_per_s", "infer_images_per_s"):
        if column in out:
            out[column] = [_rate(v) for v in out[column]]
    for column in ("params", "flops"):
        if column in out:
            out[column] = [_si(v) for v in out[column]]
    if "peak_memory_mb" in out:
        kinds = out.pop("peak_memory_kind") if "peak_memory_kind" in out else [None] * len(out)
        out["peak_memory_mb"] = [_memory(m, k) for m, k in zip(out["peak_memory_mb"], kinds)]
    if "wall_seconds" in out:
        out["wall_seconds"] = [_num(v, 1) for v in out["wall_seconds"]]
    renames = {"test_acc": "test %", "val_acc": "val %", "train_acc": "train %", "test_agreement": "test agreement %",
               "probe_test_acc": "probe test %", "coverage": "pseudo-labeled %", "pseudo_acc": "pseudo-label acc %",
               "labeled_share": "labeled share", "train_images_per_s": "train img/s",
               "infer_images_per_s": "infer img/s", "flops": "FLOPs/img", "peak_memory_mb": "peak memory",
               "wall_seconds": "wall s"}
    return out.rename(columns=renames)


# --------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


_COLUMN_COLORS = {"T": "tab:blue", "S": "tab:orange", "S'": "tab:green"}


def _errors(results: list[dict[str, Any] | None]) -> np.ndarray:
    """Error bars (2 x n: below, above the mean, in points) from each result's 95% interval over
    seeds (``bench.verdicts``); none where there is no interval (fewer than two seeds)."""
    bars = np.zeros((2, len(results)))
    for i, res in enumerate(results):
        if res and res.get("n", 0) >= 2 and not _nan(res.get("low", math.nan)):
            bars[:, i] = ((res["mean"] - res["low"]) * 100, (res["high"] - res["mean"]) * 100)
    return bars


def _menghani_column(label: str) -> str:
    part = label.split(" | ", 1)[1] if " | " in label else label
    short = part.split()[0]
    found = re.search(r"n=(\w+)", part)
    return f"{short} n={found.group(1)}" if found and short.startswith("S'") else short


def plot_menghani_table(rows: list[FigureRow], title: str, path: Path) -> Path | None:
    """Table-1-style grid: one panel per teacher->student pair, T / S / S' each as reported vs reproduced."""
    values = [r for r in rows if r.figure.kind == "value"]
    pairs: dict[str, list[FigureRow]] = {}
    for row in values:
        pair = row.figure.label.split(" | ", 1)[0] if " | " in row.figure.label else ""
        pairs.setdefault(pair, []).append(row)
    pairs = {p: rs for p, rs in pairs.items() if any(r.result["n"] for r in rs)}
    if not pairs:
        return None
    plt = _pyplot()
    ncols = min(2, len(pairs))
    nrows = math.ceil(len(pairs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.6 * ncols, 3.8 * nrows), squeeze=False)
    numbers = [r.figure.value * 100 for rs in pairs.values() for r in rs]
    numbers += [r.result["mean"] * 100 for rs in pairs.values() for r in rs if r.result["n"]]
    low = max(0.0, math.floor((min(numbers) - 8) / 10) * 10)
    width = 0.38
    for ax, (pair, rs) in zip(axes.flat, pairs.items()):
        xs = np.arange(len(rs))
        reported = [r.figure.value * 100 for r in rs]
        means = [r.result["mean"] * 100 if r.result["n"] else math.nan for r in rs]
        stds = _errors([r.result for r in rs])
        columns = [_menghani_column(r.figure.label) for r in rs]
        colors = [_COLUMN_COLORS.get(c.split()[0], "tab:purple") for c in columns]
        ax.bar(xs - width / 2, reported, width, color="0.85", edgecolor="0.3", hatch="//", label="reported (paper)")
        ax.bar(xs + width / 2, np.nan_to_num(means, nan=low), width, color=colors, edgecolor="0.2",
               yerr=stds, capsize=3, label="reproduced (here)")
        for x, rep, mean in zip(xs, reported, means):
            ax.text(x - width / 2, rep + 0.4, f"{rep:.1f}", ha="center", va="bottom", fontsize=8)
            ax.text(x + width / 2, (mean if not math.isnan(mean) else low) + 0.4,
                    "n/a" if math.isnan(mean) else f"{mean:.1f}", ha="center", va="bottom", fontsize=8, fontweight="bold")
        ax.set_xticks(xs, columns)
        ax.set_ylim(low, 104)
        ax.set_ylabel(f"{rs[0].figure.metric} (%)")
        if pair:
            ax.set_title(_display_label(pair), fontsize=11)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(pairs):]:
        ax.axis("off")
    from matplotlib.patches import Patch

    shown = list(dict.fromkeys(_menghani_column(r.figure.label).split()[0] for rs in pairs.values() for r in rs))
    handles = [Patch(facecolor="0.85", edgecolor="0.3", hatch="//")] + [
        Patch(facecolor=_COLUMN_COLORS.get(c, "tab:purple"), edgecolor="0.2") for c in shown]
    labels = ["reported (paper)"] + [f"reproduced {c} (here)" for c in shown]
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.06 / nrows, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    return _save(fig, path)


def _reading_labels(rows: list[FigureRow], metric: str | None = None) -> list[str]:
    """The reading labels of a table in order of appearance (those of ``metric`` only, when given)."""
    labels = [rd.label for r in rows for rd in r.readings if metric is None or rd.metric == metric]
    return list(dict.fromkeys(labels))


def _reading(row: FigureRow, label: str) -> Reading | None:
    return next((rd for rd in row.readings if rd.label == label), None)


_READING_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:red", "tab:brown"]


def plot_reported_vs_reproduced(rows: list[FigureRow], title: str, path: Path) -> Path | None:
    """Generic: per figure of a table, a bar for the reported value and one per reading (reproduced)."""
    if not any(r.n for r in rows):
        return None
    plt = _pyplot()
    labels = [lab for lab in _reading_labels(rows) if any((rd := _reading(r, lab)) and rd.result["n"] for r in rows)] or [""]
    k = len(labels)
    height = 0.8 / (k + 1)
    fig, ax = plt.subplots(figsize=(8.5, (0.55 if k == 1 else 0.3 * (k + 1)) * len(rows) + 1.4))
    ys = np.arange(len(rows))
    reported = [r.figure.value * 100 for r in rows]
    offset = lambda i: (i - k / 2) * height  # noqa: E731  (reported at i = 0, readings after)
    ax.barh(ys + offset(0), reported, height, color="0.85", edgecolor="0.3", hatch="//", label="reported (paper)")
    for i, label in enumerate(labels, start=1):
        found = [_reading(r, label) for r in rows]
        means = [rd.result["mean"] * 100 if rd and rd.result["n"] else 0.0 for rd in found]
        stds = _errors([rd.result if rd else None for rd in found])
        ax.barh(ys + offset(i), means, height, xerr=stds, color=_READING_COLORS[(i - 1) % len(_READING_COLORS)] if k > 1
                else "tab:blue", edgecolor="0.2", capsize=3, label=f"reproduced {label} (here)" if label else "reproduced (here)")
        for y, rd in zip(ys, found):
            if not (rd and rd.result["n"]):
                ax.text(0, y + offset(i), " n/a", va="center", fontsize=8)
    ax.set_yticks(ys, [f"{_display_label(r.figure.label)} [{UNITS[r.figure.kind]}]" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="0.3", linewidth=0.8)
    ax.set_xlabel("value (% or points, see label)")
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=8, loc="best")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _wrap_title(title: str, width: int = 95) -> str:
    return "\n".join(textwrap.fill(line, width) for line in title.split("\n"))


def _stand_in_stage(row: FigureRow) -> str:
    if row.mapping is None:
        return ""
    stages = _unique(row.cells, "stage")
    return f"\n(here: {', '.join(stages)})" if stages else ""


def plot_grouped_readings(rows: list[FigureRow], title: str, path: Path, ylabel: str = "accuracy (%)",
                          name_stand_ins: bool = False) -> Path | None:
    """Vertical grouped bars, one group per figure (a row of the paper's table): the paper's value
    (hatched) and one bar per reading (label fraction, metric, ...) with 95% interval over seeds and n."""
    if not any(r.n for r in rows):
        return None
    plt = _pyplot()
    labels = [lab for lab in _reading_labels(rows) if any((rd := _reading(r, lab)) and rd.result["n"] for r in rows)]
    k = len(labels) + 1
    width = 0.8 / k
    fig, ax = plt.subplots(figsize=(max(6.5, 1.15 * len(rows) * k / 2 + 2.5), 4.6))
    xs = np.arange(len(rows))
    reported = [r.figure.value * 100 for r in rows]
    numbers = list(reported)
    ax.bar(xs - 0.4 + width / 2, reported, width, color="0.85", edgecolor="0.3", hatch="//", label="reported (paper)")
    for x, rep in zip(xs, reported):
        ax.text(x - 0.4 + width / 2, rep + 0.5, f"{rep:.1f}", ha="center", va="bottom", fontsize=7)
    for i, label in enumerate(labels, start=1):
        found = [_reading(r, label) for r in rows]
        means = [rd.result["mean"] * 100 if rd and rd.result["n"] else math.nan for rd in found]
        stds = _errors([rd.result if rd else None for rd in found])
        numbers += [m for m in means if not math.isnan(m)]
        offs = xs - 0.4 + width / 2 + i * width
        ax.bar(offs, np.nan_to_num(means), width, yerr=stds, capsize=2, color=_READING_COLORS[(i - 1) % len(_READING_COLORS)],
               edgecolor="0.2", label=f"ours {label}" if label else "reproduced (here)")
        for x, m, s, rd in zip(offs, means, stds[1], found):
            text = "n/a" if math.isnan(m) else f"{m:.1f}"
            ax.text(x, (0 if math.isnan(m) else m + s) + 0.5, text, ha="center", va="bottom", fontsize=7, fontweight="bold")
    low = max(0.0, math.floor((min(numbers) - 10) / 10) * 10) if numbers else 0.0
    high = max(numbers, default=90.0)
    ax.set_ylim(low, high + max(8.0, (high - low) * 0.22))  # room above the bars for the legend
    ax.set_xticks(xs, [textwrap.fill(_display_label(r.figure.label), 16) + (_stand_in_stage(r) if name_stand_ins else "")
                       for r in rows], fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(_wrap_title(title), fontsize=10)
    ax.legend(fontsize=8, loc="upper center", ncol=k, framealpha=0.9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _classes(frame: pd.DataFrame) -> int | None:
    """The number of classes of the cells behind a reading: their ``task_classes``, else their dataset's."""
    if frame.empty:
        return None
    if "task_classes" in frame:
        values = {int(float(v)) for v in frame["task_classes"] if not _nan(v)}
        if len(values) == 1:
            return values.pop()
    if "dataset" in frame:
        counts = {DATASET_CLASSES.get(str(v)) for v in frame["dataset"] if not _nan(v)}
        if len(counts) == 1:
            return counts.pop()
    return None


def plot_accuracy_vs_classes(rows: list[FigureRow], title: str, path: Path) -> Path | None:
    """nguyen2021 Table 4 / Figure 6 style: accuracy against the number of classes (log scale): the
    paper's points (one per dataset) and one line per reading (e.g. per stand-in dataset)."""
    if not any(r.n for r in rows):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.8, 4.6))
    paper = sorted((DATASET_CLASSES.get(str(r.figure.cells.select.get("dataset")), math.nan), r.figure.value * 100,
                    str(r.figure.cells.select.get("dataset", r.figure.label))) for r in rows)
    paper = [p for p in paper if not math.isnan(p[0])]
    ax.plot([p[0] for p in paper], [p[1] for p in paper], "D--", color="black", markersize=7, linewidth=1,
            label="reported (paper)")
    for x, y, name in paper:
        ax.annotate(DATASET_NAMES.get(name, name), (x, y), textcoords="offset points", xytext=(6, 4), fontsize=8)
    for i, label in enumerate(lab for lab in _reading_labels(rows, rows[0].figure.metric)):
        points = []
        for r in rows:
            rd = _reading(r, label)
            k = _classes(rd.cells) if rd is not None and rd.result["n"] else None
            if k is not None:
                points.append((k, rd.result["mean"] * 100, _errors([rd.result])[:, 0],
                               int(rd.result["n"]), r.figure.label))
        if not points:
            continue
        points.sort()
        color = _READING_COLORS[i % len(_READING_COLORS)]
        ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=np.array([p[2] for p in points]).T, fmt="o-", capsize=3,
                    color=color, label=f"ours {label} (n={min(p[3] for p in points)} seeds)" if label else "reproduced (here)")
        for x, y, s, _, _ in points:
            ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(7, -12), fontsize=7,
                        color=color, ha="left")
    ax.set_xscale("log")
    ticks = sorted({p[0] for p in paper} | {k for r in rows for rd in r.readings if rd.result["n"]
                                              for k in [_classes(rd.cells)] if k is not None})
    merged: list[list[int]] = []
    for tick in ticks:  # ticks closer than 10% (100 and 101 classes) share one label
        if merged and tick <= merged[-1][0] * 1.1:
            merged[-1].append(tick)
        else:
            merged.append([tick])
    ax.set_xticks([m[0] for m in merged], ["/".join(map(str, m)) for m in merged])
    pairs, unmapped = [], []
    for r in rows:  # which of our class counts stands in for which of the paper's datasets
        k = next((_classes(rd.cells) for rd in r.readings if rd.result["n"]), None)
        name = str(r.figure.cells.select.get("dataset", ""))
        if r.mapping is not None and k is not None:
            pairs.append(f"k={k} ↔ {DATASET_NAMES.get(name, name)} ({DATASET_CLASSES.get(name, '?')})")
        elif r.mapping is None and any(rr.mapping is not None for rr in rows):
            unmapped.append(DATASET_NAMES.get(name, name))
    note = ""
    if pairs:
        note = "stand-ins (first k classes ↔ the paper's dataset): " + ", ".join(pairs)
        note += f"; no stand-in for {', '.join(unmapped)}" if unmapped else ""
    ax.minorticks_off()
    ax.set_ylim(0, 105)
    ax.set_xlabel("number of classes (log scale)")
    ax.set_ylabel(f"{rows[0].figure.metric} (%)")
    ax.set_title(_wrap_title(title, 90), fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout(rect=(0, 0.05 if note else 0, 1, 1))
    if note:
        fig.text(0.01, 0.01, textwrap.fill(note, 120), fontsize=8, ha="left", va="bottom")
    return _save(fig, path)


# ------------------------------------------------------------- khose2021 Figures 1-3 (from the table)


def _lf(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else round(number, 6)


def _khose_parts(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Teachers (stage teacher, supervised) with `lf`, and kd students with `lf` = their teacher's."""
    empty = pd.DataFrame(columns=["arch", "lf"])
    if table.empty or not {"stage", "method", "arch"} <= set(table.columns):
        return empty, empty
    teachers = table[(table["stage"] == "teacher") & (table["method"] == "supervised")].copy()
    teachers["lf"] = teachers["label_fraction"].map(_lf) if "label_fraction" in teachers else None
    if {"teacher.arch", "teacher.label_fraction"} <= set(table.columns):
        students = table[(table["method"] == "kd") & table["teacher.arch"].notna()].copy()
        students["lf"] = students["teacher.label_fraction"].map(_lf)
    else:
        students = empty
    return teachers, students


def _khose_reported(figures: list[Any], kind: str, metric: str, **want: Any) -> float | None:
    """The reported value of the khose figure of ``kind``/``metric`` whose selection has ``want``."""
    for fig in figures:
        if fig.kind != kind or fig.metric != metric:
            continue
        select = fig.cells.select
        lf = _lf(select.get("label_fraction", select.get("teacher.label_fraction")))
        if lf != want.get("lf"):
            continue
        if all(select.get(k) == v for k, v in want.items() if k != "lf"):
            return fig.value
    return None


def plot_khose(table: pd.DataFrame, figures: list[Any], out: Path, tag: str) -> tuple[list[tuple[str, Path]], list[str]]:
    """Grouped bars like khose2021 Figures 1-3, from the results table (rows of one matrix).

    Fig. 1: train/val accuracy of teacher and self-distilled student per label fraction.
    Fig. 2: relative val-accuracy gain of self-distillation per label fraction, per model.
    Fig. 3: knowledge distillation to another model: teacher vs student val accuracy per label fraction.
    Reported values of the paper are drawn as black diamonds. Returns (caption, path) pairs and notes.
    """
    teachers, students = _khose_parts(table)
    notes: list[str] = []
    if teachers.empty or students.empty:
        return [], [f"khose2021 Figures 1–3: skipped — no khose-style cells (stage=teacher/method=supervised and "
                    f"method=kd students with teacher.label_fraction) in the {tag} results."]
    val = "val_acc"
    if pd.to_numeric(pd.concat([teachers.get(val, pd.Series(dtype=float)), students.get(val, pd.Series(dtype=float))]),
                     errors="coerce").notna().sum() == 0:
        val = "test_acc"
        notes.append("khose2021 reports validation accuracy; these results have no validation split, so test accuracy is plotted.")

    def mean(frame: pd.DataFrame, metric: str, **where: Any) -> float:
        mask = pd.Series(True, index=frame.index)
        for key, value in where.items():
            mask &= frame[key] == value
        values = pd.to_numeric(frame.loc[mask, metric], errors="coerce") if metric in frame else pd.Series(dtype=float)
        return float(values.mean()) * 100 if values.notna().any() else math.nan

    def seed_means(frame: pd.DataFrame, **where: Any) -> pd.Series:
        mask = pd.Series(True, index=frame.index)
        for key, value in where.items():
            mask &= frame[key] == value
        rows = frame[mask]
        values = pd.to_numeric(rows[val], errors="coerce") if val in rows else pd.Series(dtype=float)
        seeds = rows["seed"].astype(str) if "seed" in rows else pd.Series("", index=rows.index)
        return values.groupby(seeds).mean().dropna()

    def gain(teacher_arch: str, arch: str, lf: float) -> float:
        """Relative gain in %, per common seed then averaged (as in the tables); else from the means."""
        t = seed_means(teachers, arch=teacher_arch, lf=lf)
        s = seed_means(students, arch=arch, lf=lf, **{"teacher.arch": teacher_arch})
        common = sorted(set(t.index) & set(s.index))
        if common:
            return float(np.mean([(s[k] - t[k]) / t[k] * 100 for k in common if t[k]]))
        if t.empty or s.empty or not t.mean():
            return math.nan
        return (s.mean() - t.mean()) / t.mean() * 100

    plt = _pyplot()
    written: list[tuple[str, Path]] = []
    self_archs = sorted({a for a, t in zip(students["arch"], students["teacher.arch"]) if a == t})
    kd_pairs = sorted({(t, a) for a, t in zip(students["arch"], students["teacher.arch"]) if a != t})

    # Figure 1: teacher vs self-distilled student, train and val accuracy.
    if self_archs:
        fig, axes = plt.subplots(1, len(self_archs), figsize=(6.2 * len(self_archs), 4.0), squeeze=False)
        bars = [("teacher train", "train_acc", False, "tab:blue"), ("teacher val", val, False, "lightsteelblue"),
                ("student train", "train_acc", True, "tab:orange"), ("student val", val, True, "navajowhite")]
        for ax, arch in zip(axes.flat, self_archs):
            lfs = sorted(set(teachers.loc[teachers["arch"] == arch, "lf"].dropna())
                         | set(students.loc[(students["arch"] == arch) & (students["teacher.arch"] == arch), "lf"].dropna()))
            xs = np.arange(len(lfs))
            width = 0.2
            for i, (name, metric, is_student, color) in enumerate(bars):
                if is_student:
                    ys = [mean(students, metric, arch=arch, **{"teacher.arch": arch}, lf=lf) for lf in lfs]
                else:
                    ys = [mean(teachers, metric, arch=arch, lf=lf) for lf in lfs]
                offs = xs + (i - 1.5) * width
                ax.bar(offs, np.nan_to_num(ys), width, color=color, edgecolor="0.3", label=name)
                for x, lf in zip(offs, lfs):
                    stage = {"stage": "student", "teacher.arch": arch} if is_student else {"stage": "teacher"}
                    rep = _khose_reported(figures, "value", metric, arch=arch, lf=lf, **stage)
                    if rep is not None:
                        ax.plot([x], [rep * 100], "D", color="black", markersize=6,
                                label="reported (paper)" if "reported (paper)" not in ax.get_legend_handles_labels()[1] else None)
            ax.set_xticks(xs, [f"{lf:.0%} labels" for lf in lfs])
            ax.set_ylim(0, 118)
            ax.set_ylabel("accuracy (%, mean over seeds)")
            ax.set_title(f"{arch}: before/after self-distillation", fontsize=10)
            ax.legend(fontsize=7, ncol=2)
            ax.grid(axis="y", alpha=0.3)
        fig.suptitle("khose2021 Fig. 1 style — overfitting: train vs val accuracy", fontsize=11)
        fig.tight_layout()
        written.append(("khose2021 Figure 1 style: teacher vs self-distilled student, train and validation accuracy",
                        _save(fig, out / "khose-fig1-self-distillation.png")))

        # Figure 2: relative gain of self-distillation.
        lfs = sorted(set(students.loc[students["arch"] == students["teacher.arch"], "lf"].dropna()))
        fig, ax = plt.subplots(figsize=(max(5.5, 2.2 * len(lfs) * max(1, len(self_archs)) / 2), 3.8))
        xs = np.arange(len(lfs))
        width = 0.8 / len(self_archs)
        for i, arch in enumerate(self_archs):
            gains = [gain(arch, arch, lf) for lf in lfs]
            offs = xs + (i - (len(self_archs) - 1) / 2) * width
            ax.bar(offs, np.nan_to_num(gains), width, edgecolor="0.3", label=arch)
            for x, lf, g in zip(offs, lfs, gains):
                ax.text(x, (0 if math.isnan(g) else g), "n/a" if math.isnan(g) else f"{g:+.1f}%", ha="center",
                        va="bottom", fontsize=8)
                rep = _khose_reported(figures, "relative_gain", "val_acc", arch=arch, lf=lf, **{"teacher.arch": arch})
                if rep is not None:
                    ax.plot([x], [rep * 100], "D", color="black", markersize=6,
                            label="reported (paper)" if "reported (paper)" not in ax.get_legend_handles_labels()[1] else None)
        ax.axhline(0, color="0.3", linewidth=0.8)
        ax.margins(y=0.25)
        ax.set_xticks(xs, [f"{lf:.0%} labels" for lf in lfs])
        ax.set_ylabel(f"relative {val} gain (%, mean over seeds)")
        ax.set_title("khose2021 Fig. 2 style — % increase in accuracy by self-distillation", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        written.append(("khose2021 Figure 2 style: relative validation-accuracy gain of self-distillation",
                        _save(fig, out / "khose-fig2-self-distillation-gain.png")))
    else:
        notes.append("khose2021 Figures 1–2: skipped — no self-distilled students (arch = teacher.arch) in the results.")

    # Figure 3: knowledge distillation into another model.
    if kd_pairs:
        fig, axes = plt.subplots(1, len(kd_pairs), figsize=(5.0 * len(kd_pairs), 3.9), squeeze=False)
        for ax, (teacher_arch, arch) in zip(axes.flat, kd_pairs):
            lfs = sorted(set(students.loc[(students["arch"] == arch) & (students["teacher.arch"] == teacher_arch), "lf"].dropna()))
            xs = np.arange(len(lfs))
            before = [mean(teachers, val, arch=teacher_arch, lf=lf) for lf in lfs]
            after = [mean(students, val, arch=arch, **{"teacher.arch": teacher_arch}, lf=lf) for lf in lfs]
            ax.bar(xs - 0.2, np.nan_to_num(before), 0.4, color="lightsteelblue", edgecolor="0.3", label=f"teacher {teacher_arch}")
            ax.bar(xs + 0.2, np.nan_to_num(after), 0.4, color="tab:orange", edgecolor="0.3", label=f"student {arch}")
            for x, lf, b, a in zip(xs, lfs, before, after):
                rep = _khose_reported(figures, "relative_gain", "val_acc", arch=arch, lf=lf, **{"teacher.arch": teacher_arch})
                here = gain(teacher_arch, arch, lf)
                text = ("here n/a" if math.isnan(here) else f"here {here:+.1f}%") + ("" if rep is None else f"\npaper {rep * 100:+.2f}%")
                ax.text(x, max(np.nan_to_num([a, b])) + 1, text, ha="center", va="bottom", fontsize=7)
            ax.set_xticks(xs, [f"{lf:.0%} labels" for lf in lfs])
            ax.set_ylim(0, 115)
            ax.set_ylabel(f"{val} (%)")
            ax.set_title(f"{teacher_arch} → {arch}", fontsize=10)
            ax.legend(fontsize=7, loc="lower right")
            ax.grid(axis="y", alpha=0.3)
        fig.suptitle("khose2021 Fig. 3 style — before (teacher) / after (student) distillation", fontsize=11)
        fig.tight_layout()
        written.append(("khose2021 Figure 3 style: teacher vs distilled student per label fraction",
                        _save(fig, out / "khose-fig3-distillation.png")))
    else:
        notes.append("khose2021 Figure 3: skipped — no students distilled from another architecture in the results.")
    return written, notes


# --------------------------------------------------------------------------- per-paper views

TablePlot = Callable[[list[FigureRow], str, Path], "Path | None"]
ExtraPlots = Callable[[pd.DataFrame, list[FigureRow], Path, str], "tuple[list[tuple[str, Path]], list[str]]"]


@dataclass(frozen=True)
class PaperView:
    """How a paper's tables are drawn: a plot per table (by table name, else ``default``), each with
    its caption, and optionally extra figures drawn from the whole results table (own section)."""

    default: TablePlot = plot_reported_vs_reproduced
    default_caption: str = "{table}: reported (hatched) vs reproduced (solid, 95% interval over seeds)"
    tables: dict[str, tuple[TablePlot, str]] = field(default_factory=dict)
    extra: ExtraPlots | None = None
    extra_title: str = ""

    def plot(self, table: str) -> tuple[TablePlot, str]:
        plot, caption = self.tables.get(table, (self.default, self.default_caption))
        return plot, caption.format(table=table)


def _khose_extra(table: pd.DataFrame, rows: list[FigureRow], out: Path, tag: str) -> tuple[list[tuple[str, Path]], list[str]]:
    return plot_khose(table, [r.used for r in rows], out, tag)


# paper id -> its view; a paper without an entry gets PaperView() (generic bars per table).
PAPER_VIEWS: dict[str, PaperView] = {
    "menghani2019": PaperView(default=plot_menghani_table),
    "khose2021": PaperView(extra=_khose_extra, extra_title="khose2021 Figures 1–3"),
    "nguyen2021": PaperView(tables={
        "Table 1": (plot_grouped_readings, "Table 1 (Figure 2 style): accuracy per augmentation set, the paper's "
                    "(hatched) and ours per reading (e.g. per label fraction), 95% interval over seeds"),
        "Table 2": (lambda rows, title, path: plot_grouped_readings(rows, title, path, name_stand_ins=True), "Table 2: the paper's accuracy (hatched) and ours as test accuracy and as "
                    "agreement with the teacher, 95% interval over seeds"),
        "Table 4": (plot_accuracy_vs_classes, "Table 4 (Figure 6 style): accuracy against the number of classes, the "
                    "paper's points (diamonds) and ours per reading, 95% interval over seeds"),
    }),
}


def paper_view(paper: str) -> PaperView:
    return PAPER_VIEWS.get(paper, PaperView())


# --------------------------------------------------------------------------- the report


@dataclass
class Section:
    title: str
    intro: list[str]
    table: pd.DataFrame | None       # displayed table
    csv: Path | None
    images: list[tuple[str, Path]]
    notes: list[str]


def _unique(rows: pd.DataFrame, column: str) -> list[str]:
    if column not in rows:
        return []
    return list(dict.fromkeys(str(v) for v in rows[column] if not _nan(v) and v != ""))


def _texts(rows: pd.DataFrame, column: str) -> list[str]:
    """A column as text per row ("" where empty or absent)."""
    if column not in rows:
        return [""] * len(rows)
    return ["" if _nan(v) else str(v) for v in rows[column]]


def _labels_text(rows: pd.DataFrame) -> str:
    fractions = sorted({float(v) for v in rows.get("label_fraction", pd.Series(dtype=float)) if not _nan(v)})
    return "/".join(f"{f * 100:g}%" for f in fractions)


def _cells_text(rows: pd.DataFrame) -> str:
    """What a group of cells is, for a reader: stage, method, model, data, labels, and their parents."""
    parts = []
    for stage in _unique(rows, "stage"):
        sub = rows[rows["stage"].astype(str) == stage]
        model = "/".join(_unique(sub, "arch"))
        frozen = [v for v in sub.get("frozen_backbone", pd.Series(dtype=object)) if not _nan(v)]
        if any(str(v).lower() == "true" for v in frozen):
            heads = _unique(sub, "head")
            model += " (frozen backbone, new head" + (f" [{heads[0]}]" if heads and heads[0] else "") + ")"
        data = ", ".join(dict.fromkeys(_data_text(d or None, u or None)
                                       for d, u in zip(_texts(sub, "dataset"), _texts(sub, "unlabeled"))))
        classes = _unique(sub, "task_classes")
        if classes:
            data += f" (first {'/'.join(str(int(float(k))) for k in classes)} classes)"
        text = f"`{stage}`: {'/'.join(_unique(sub, 'method'))} {model} on {data}"
        labels = _labels_text(sub) if set(_unique(sub, "method")) != {"blind"} else ""  # blind never sees a label
        if labels:
            text += f" at {labels} labels"
        seeds = _unique(sub, "seed")
        if seeds:
            text += f", seeds {', '.join(seeds)}"
        roles = sorted({c[: -len(".id")] for c in sub.columns if c.endswith(".id") and "." not in c[: -len(".id")]
                        and sub[c].notna().any()})
        by_text: dict[str, list[str]] = {}
        for role in roles:
            have = sub[sub[f"{role}.id"].notna()]
            desc = (f"`{'/'.join(_unique(have, f'{role}.stage'))}` {'/'.join(_unique(have, f'{role}.method'))} "
                    f"{'/'.join(_unique(have, f'{role}.arch'))} on "
                    + ", ".join(dict.fromkeys(_data_text(d or None, u or None) for d, u in zip(
                        _texts(have, f"{role}.dataset"), _texts(have, f"{role}.unlabeled")))))
            by_text.setdefault(desc, []).append(role)
        if by_text:
            text += "; " + "; ".join(f"{' = '.join(rs)}: {desc}" for desc, rs in by_text.items())
        parts.append(text)
    return " | ".join(parts)


def _paper_cells_text(figures: list[Any]) -> str:
    """What the paper's cells for some figures are, from their selectors: method, model, data."""
    by_model: dict[str, list[str]] = {}
    for fig in figures:
        sel = fig.cells.select
        text = " ".join(str(sel[k]) for k in ("method", "arch") if k in sel)
        if "frozen_backbone" in sel:
            text += " (frozen backbone)"
        teacher = {k.partition(".")[2]: v for k, v in sel.items() if k.startswith("teacher.")}
        if teacher:
            text += " ← teacher " + " ".join(str(v) for v in teacher.values())
        data = by_model.setdefault(text, [])
        if "dataset" in sel and DATASET_NAMES.get(str(sel["dataset"]), str(sel["dataset"])) not in data:
            data.append(DATASET_NAMES.get(str(sel["dataset"]), str(sel["dataset"])))
    return "; ".join(f"{model} on {', '.join(data)}" if data else model for model, data in by_model.items())


def _mapping_section(rows: list[FigureRow], stand_in: dict[str, Any], target: Target) -> Section:
    """The `stand_in:` mapping as a table: which cells stood in for which figures, and what varied."""
    records = []
    for glob, selector in stand_in.items():
        mine = [r for r in rows if r.mapping is not None and r.mapping[0] == glob]
        cells = _concat([r.cells for r in mine])
        axes = list(dict.fromkeys(a for r in mine for rd in r.readings for a in rd.group))
        records.append({
            "figures": ", ".join(r.figure.id.partition("/")[2] for r in mine) or "— (none)",
            "stand-in selector": _selector_text(selector),
            "done cells": len(cells),
            "one reading per": ", ".join(axes) or "—",
            "stood in by": _cells_text(cells) if not cells.empty else "no done cell matches",
        })
    unmapped = [r.figure.id for r in rows if r.mapping is None]
    notes = [f"Not mapped by `stand_in:` (no reproduced value): {', '.join(unmapped)}."] if unmapped else []
    intro = [f"`stand_in:` of `{target.source or target.matrix}`: figure id (or glob) → the selector of "
             f"`{target.matrix}`'s cells that stand in for it. Where the selector leaves an axis of the matrix "
             "varying, each value of that axis is a reading of its own (mean ± std over seeds, n)."]
    return Section("Stand-in mapping", intro, pd.DataFrame(records), None, [], notes)


def _minutes(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.1f} min"


def cost_line(rows: pd.DataFrame) -> str:
    """Compute spent on the matrix's done cells (summed wall time; GPU-hours for cells on CUDA) and
    what sharing saved: a parent that serves k dependants (a teacher, an annotation) ran once
    instead of k times, so its wall time times k - 1."""
    cells = rows.drop_duplicates("id").set_index("id")
    wall = pd.to_numeric(cells["wall_seconds"], errors="coerce").fillna(0.0)
    text = f"Compute: {len(cells)} cells, {_minutes(float(wall.sum()))} of wall time in all"
    if "device" in cells:
        gpu = wall[cells["device"].astype(str).str.startswith("cuda")]
        if len(gpu):
            text += f" ({gpu.sum() / 3600:.2f} GPU-hours on CUDA)"
    served: dict[str, set[str]] = {}
    for column in (c for c in cells.columns if c.endswith(".id")):
        for child, parent in cells[column].items():
            if isinstance(parent, str) and parent in cells.index:
                served.setdefault(parent, set()).add(child)
    saved = sum(float(wall[parent]) * (len(children) - 1) for parent, children in served.items())
    shared = sum(len(children) > 1 for children in served.values())
    if shared:
        text += (f"; {shared} shared parents (teachers, encoders, annotations) saved about {_minutes(saved)}: each ran "
                 f"once for all its dependants instead of once per dependant")
    return text + "."


VERDICT_ORDER = ("reproduced", "not reproduced", "inconclusive", "no cells")


def _to_decide(row: pd.Series) -> str:
    from bench.verdicts import MIN_SEEDS

    if row["verdict"] != "inconclusive":
        return "—"
    if not _nan(row["seeds_needed"]) and row["seeds_needed"]:
        return f"≈{int(row['seeds_needed'])} seeds"
    return f"≥{MIN_SEEDS} seeds" if row["n"] < 2 else "more seeds unlikely to (mean at the band's edge)"


def _verdicts_section(judged: list[tuple[str, pd.DataFrame]], out: Path, written: list[Path]) -> tuple[Section, str]:
    """Every reading's verdict (``bench.verdicts``) in one table, and the paper's summary line."""
    from bench.verdicts import BOOTSTRAP_FROM, LEVEL, MIN_SEEDS

    frames = [frame.assign(table=name) for name, frame in judged]
    frame = pd.concat(frames, ignore_index=True)
    rows = []
    for _, r in frame.iterrows():
        unit = r["unit"]
        rows.append({
            "table": r["table"], "figure": _display_label(r["figure"]), "reading": r.get("reading", "") or "—",
            "reported": f"{r['reported']:.2f} {unit}", "reproduced": r["reproduced_text"],
            f"{LEVEL:.0%} interval": "—" if _nan(r["ci_low"]) else f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}] ({r['interval']})",
            "band": f"± {r['band']:.2f}", "verdict": r["verdict"], "to decide": _to_decide(r),
        })
    csv_path = out / "verdicts.csv"
    atomic_write_bytes(csv_path, frame.to_csv(index=False).encode())
    written.append(csv_path)
    counts = {v: int((frame["verdict"] == v).sum()) for v in VERDICT_ORDER}
    judged_n = len(frame) - counts["no cells"]
    line = (f"**Verdicts: {counts['reproduced']} of {judged_n} readings reproduced, {counts['not reproduced']} not "
            f"reproduced, {counts['inconclusive']} inconclusive**"
            + (f" ({counts['no cells']} figures without cells)." if counts["no cells"] else "."))
    intro = [f"A reading is *reproduced* when its {LEVEL:.0%} interval over seeds (Student's t below {BOOTSTRAP_FROM} "
             f"seeds, a BCa bootstrap from there; gains seed-paired) lies inside the band around the reported value, "
             f"*not reproduced* when it lies wholly outside, *inconclusive* otherwise or with fewer than {MIN_SEEDS} "
             f"seeds; *to decide*: about how many seeds in all would decide it if mean and spread held. Bands are data "
             f"(`tolerance` per figure, `tolerances` per paper, else 2 points for accuracies and absolute gains, "
             f"5% for relative gains)."]
    return Section("Verdicts", intro, pd.DataFrame(rows), csv_path, [], []), line


def _claims_section(table: pd.DataFrame, matrix: str, paper: Any, out: Path, written: list[Path]) -> Section:
    """The paper's claims judged on the matrix's cells (``bench.claims``), first in the report."""
    from bench.claims import LEVEL, claims_frame, evaluate, summary

    readings = [reading for claim in paper.claims for reading in evaluate(claim, table, matrix)]
    frame = claims_frame(readings)
    csv_path = out / "claims.csv"
    atomic_write_bytes(csv_path, frame.to_csv(index=False).encode())
    written.append(csv_path)
    intro = [f"**{summary(readings)}.** Each claim compares two kinds of cells (higher − lower) within each "
             f"value of its grouping columns; Δ is the mean over seeds of the seed-paired differences, the interval "
             f"its {LEVEL:.0%} t-interval. *holds*: the interval lies above 0; *fails*: below 0; *inconclusive*: "
             f"it contains 0, or fewer than 2 seeds pair up. Sides: mean ± std over seeds, in %."]
    notes = [f"*{claim.statement}*: {claim.source}" + (f" {claim.notes}" if claim.notes else "") for claim in paper.claims]
    return Section("Claims", intro, frame, csv_path, [], notes)


def judged_figures(table: pd.DataFrame, target: Target) -> pd.DataFrame:
    """Every reading of ``target``'s paper figures on its done cells, as ``table_frame`` rows with
    their verdicts (empty when the matrix names no paper); ``bench check --verdicts`` gates on it."""
    from bench.paper_figures import check_stand_in, load_paper

    if not target.paper or table.empty:
        return pd.DataFrame(columns=["matrix", "id", "reading", "verdict"])
    paper = load_paper(target.paper)
    mine = table[table["matrix"] == target.matrix].reset_index(drop=True)
    stand_in = paper.matrix != base_matrix_name(target.matrix)
    mapping = check_stand_in(target.stand_in, target.source or target.matrix, paper) if stand_in else {}
    frame = table_frame(figure_rows(mine, target.matrix, paper, mapping, target.stage_axes))
    if frame.empty:
        return pd.DataFrame(columns=["matrix", "id", "reading", "verdict"])
    if "reading" not in frame:
        frame["reading"] = ""
    return frame.assign(matrix=target.matrix)


def build_report(table: pd.DataFrame, target: Target, out: Path, unreadable: dict[str, str] | None = None) -> list[Path]:
    """Write the report of ``target`` (rows of ``table`` with matrix == target.matrix) into ``out``.

    ``unreadable``: done cells that ``bench collect`` could not read, and why; the planned ones are
    named in the header, so a reader does not take them for cells that never ran."""
    from bench.paper_figures import check_stand_in, load_paper

    out.mkdir(parents=True, exist_ok=True)
    mine = table[table["matrix"] == target.matrix].reset_index(drop=True) if not table.empty else table
    written: list[Path] = []
    sections: list[Section] = []
    header: list[str] = []
    paper = load_paper(target.paper) if target.paper else None

    done = set(mine["id"]) if "id" in mine else set()
    if target.planned:
        missing = [c for c in target.planned if c["id"] not in done]
        header.append(f"Cells: {len(target.planned) - len(missing)} of {len(target.planned)} planned cells done"
                      + (f"; not done: {', '.join(c['id'] for c in missing)}." if missing else "."))
    else:
        header.append(f"Cells: {len(done)} done.")
    if not mine.empty and "wall_seconds" in mine:
        header.append(cost_line(mine))
    planned = {c["id"] for c in target.planned}
    broken = [f"`{cell_id}` ({why})" for cell_id, why in sorted((unreadable or {}).items()) if cell_id in planned]
    if broken:
        header.append(f"Left out, marked done but unreadable: {'; '.join(broken)}.")

    if paper is None:
        header.append("No paper: the matrix names no `paper`, so there are no reported figures to compare; "
                      "only the cells table follows.")
    else:
        stand_in = paper.matrix != base_matrix_name(target.matrix)
        mapping = check_stand_in(target.stand_in, target.source or target.matrix, paper) if stand_in else {}
        header.append(f"Paper: **{paper.paper}** — {paper.title} (from {target.paper_reason}).")
        if not paper.figures:
            header.append(f"{paper.paper} reports no number a matrix of ours could reproduce (see *Notes on "
                          f"{paper.paper}*): its claims are judged on `{target.matrix}`'s cells instead (*Claims*).")
        elif stand_in and mapping:
            header.append(
                f"**Stand-in matrix — data and models differ from the paper.** `{target.matrix}` is not the paper's own "
                f"matrix (`{paper.matrix}`): it runs the paper's design on other data and models, and its `stand_in:` "
                f"section maps each figure to the cells that stand in for it (see *Stand-in mapping*). Figures it does "
                f"not map have no reproduced value. The `data` column of every table says what the paper used and "
                f"what was used here; each table says which cells stood in. Other settings (epochs, subsets) differ "
                f"too: see the matrix file.")
        elif stand_in:
            from bench.paper_figures import STAND_IN_IGNORED_KEYS

            header.append(
                f"**Stand-in matrix — data differ from the paper.** `{target.matrix}` is not the paper's own matrix "
                f"(`{paper.matrix}`): it runs the paper's grid on other data, so each figure's selector is applied to "
                f"`{target.matrix}`'s cells with its `matrix` key and its "
                f"{', '.join(f'`{k}`' for k in sorted(STAND_IN_IGNORED_KEYS))} keys ignored. The `data` column of every "
                f"table says what the paper used and what was used here. Other settings (epochs, subsets) may differ "
                f"too: see the matrix file.")
        if paper.claims:
            sections.append(_claims_section(mine, target.matrix, paper, out, written))
        rows = figure_rows(mine, target.matrix, paper, mapping, target.stage_axes)
        if mapping:
            sections.append(_mapping_section(rows, mapping, target))
        view = paper_view(paper.paper)
        by_table: dict[str, list[FigureRow]] = {}
        for row in rows:
            by_table.setdefault(row.figure.table, []).append(row)
        skipped = []
        judged: list[tuple[str, pd.DataFrame]] = []
        for name, trows in by_table.items():
            if stand_in and not any(r.n for r in trows):
                skipped.append(name)
                continue
            frame = table_frame(trows)
            judged.append((name, frame))
            csv_path = out / f"{slug(name)}.csv"
            atomic_write_bytes(csv_path, frame.to_csv(index=False).encode())
            written.append(csv_path)
            images = []
            title = f"{paper.paper} {name}: reported vs reproduced ({target.matrix})"
            differing = list(dict.fromkeys(r.data_note.split(": ", 1)[1] for r in trows if r.data_differs))
            behind = _concat([r.cells for r in trows])
            if stand_in and mapping:
                title += (f"\nstood in by {', '.join(_unique(behind, 'arch'))} on "
                          f"{', '.join(dict.fromkeys(_unique(behind, 'dataset')))}")
            elif stand_in and differing:
                title += "\n" + "; ".join(differing)
            plot, caption = view.plot(name)
            png = plot(trows, title, out / f"{slug(name)}.png")
            if png is not None:
                images.append((caption, png))
                written.append(png)
            intro = []
            if stand_in and mapping and not behind.empty:
                intro.append(f"**Stood in by** (`{target.matrix}`, via `stand_in:`): {_cells_text(behind)}. "
                             f"The paper (cells of its matrix `{paper.matrix}`): {_paper_cells_text([r.figure for r in trows])}.")
            if differing:
                intro.append(f"**Data differ from the paper in this table** (`{target.matrix}` is a stand-in): "
                             + "; ".join(differing) + ".")
            unmatched = [r for r in trows if not r.n]
            if unmatched and mapping:
                unmapped = [r.figure.label for r in unmatched if r.mapping is None]
                empty = [f"{r.figure.label} ({_selector_text(r.mapping[1])})" for r in unmatched if r.mapping is not None]
                intro.append(f"{len(unmatched)} of {len(trows)} figures have no reproduced value (—): "
                             + "; ".join(([f"no stand-in in `stand_in:` for {', '.join(unmapped)}"] if unmapped else [])
                                         + ([f"no done cell matches the stand-in of {', '.join(empty)}"] if empty else []))
                             + ".")
            elif unmatched:
                intro.append(f"{len(unmatched)} of {len(trows)} figures have no done cell in `{target.matrix}` (reproduced —).")
            fig_notes = [f"*{_display_label(r.figure.label)}*: {r.figure.notes}" for r in trows if r.figure.notes]
            sections.append(Section(name, intro, display_table(frame), csv_path, images, fig_notes))
        if judged:
            section, line = _verdicts_section(judged, out, written)
            sections.insert(0, section)
            header.append(line)
        if skipped:
            header.append(f"Not reproduced by `{target.matrix}` (no matching cells), so left out: {', '.join(skipped)}.")
        if view.extra is not None:
            images, notes = view.extra(mine, rows, out, target.matrix)
            written.extend(path for _, path in images)
            sections.append(Section(view.extra_title, [], None, None, images, notes))

    cells = cells_frame(mine) if not mine.empty else pd.DataFrame()
    cells_csv = out / "cells.csv"
    atomic_write_bytes(cells_csv, cells.to_csv(index=False).encode())
    written.append(cells_csv)
    sections.append(Section("All cells", ["Every done cell of the matrix; accuracies in %, throughput as measured by the run."],
                            display_cells(cells) if not cells.empty else None, cells_csv, [], []))

    md, page = _render(target, paper, header, sections, out)
    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write_bytes(md_path, md.encode())
    atomic_write_bytes(html_path, page.encode())
    return [md_path, html_path, *written]


HOW_TO_READ = (
    "How to read: *reported* is the paper's number; *reproduced* is the mean ± std (ddof=1) over seeds of the "
    "matching cells, n = number of seeds (runs); *Δ* = reproduced − reported. Accuracies (unit %) are in percent, "
    "Δ in percentage points; gains are in points (pts) or in % of the baseline (% rel.), Δ in points of the same "
    "unit. Throughput columns are for the cell(s) behind a figure (for gains: the distilled model), averaged over "
    "seeds; FLOPs are forward FLOPs per image; peak memory is allocated CUDA memory (cuda_allocated), or on CPU the peak "
    "resident set of the process while it ran the cell (cell_rss; it includes the Python and torch runtime), or, "
    "where that cannot be reset, the process's lifetime peak (process_rss)."
)


def _render(target: Target, paper: Any, header: list[str], sections: list[Section], out: Path) -> tuple[str, str]:
    title = f"Report: {target.matrix}" + (f" vs {paper.paper}" if paper else "")
    meta = [f"Results: `{target.results}`" + (f"; matrix file: `{target.source}`" if target.source else "")]
    if target.description:
        meta.append(f"Matrix: {target.description}")
    md = [f"# {title}", "", *[f"{line}  " for line in meta], "", *[f"{line}\n" for line in header]]
    if paper is not None and paper.figures:
        md += [HOW_TO_READ, ""]
    body = [f"<h1>{html.escape(title)}</h1>", *[f"<p>{_inline(line)}</p>" for line in meta + header]]
    if paper is not None and paper.figures:
        body.append(f"<p>{_inline(HOW_TO_READ)}</p>")
    for section in sections:
        md += [f"## {section.title}", ""]
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        for line in section.intro:
            md += [line, ""]
            body.append(f"<p>{_inline(line)}</p>")
        if section.table is not None:
            md += [markdown_table(section.table), ""]
            body.append(html_table(section.table))
        if section.csv is not None:
            md += [f"CSV: [{section.csv.name}]({section.csv.name})", ""]
            body.append(f"<p>CSV: <code>{html.escape(section.csv.name)}</code></p>")
        for caption, path in section.images:
            md += [f"![{caption}]({path.relative_to(out).as_posix()})", "", f"*{caption}*", ""]
            data = base64.b64encode(path.read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        if section.notes:
            md += ["Notes:", "", *[f"- {note}" for note in section.notes], ""]
            body.append("<ul>" + "".join(f"<li>{_inline(n)}</li>" for n in section.notes) + "</ul>")
    if paper is not None and paper.notes:
        md += [f"## Notes on {paper.paper}", "", *[f"- {note}" for note in paper.notes], ""]
        body.append(f"<h2>Notes on {html.escape(paper.paper)}</h2><ul>"
                    + "".join(f"<li>{_inline(n)}</li>" for n in paper.notes) + "</ul>")
    style = ("body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;line-height:1.4}"
             "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px;"
             "text-align:left}th{background:#f2f2f2}img{max-width:100%}figcaption{font-style:italic;font-size:13px}"
             "code{background:#f5f5f5}td.verdict{font-weight:bold}td.good{background:#d7f5d7}td.bad{background:#f8d3d3}"
             "td.unsure{background:#fbefc6}td.none{color:#888}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
    return "\n".join(md).rstrip() + "\n", page


def _inline(text: str) -> str:
    """Markdown-ish inline text as HTML: escape, then **bold**, *italic* and `code`."""
    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    out = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<i>\1</i>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


# --------------------------------------------------------------------------- command line


def report(arg: str, results: str | None = None, out: str | None = None) -> list[Path]:
    """Reports of every target of ``arg``; returns the files written."""
    from bench.collect import read_cells, warn_unreadable

    targets = resolve_targets(arg, results)
    table, unreadable = read_cells(targets[0].results)
    warn_unreadable(Store(targets[0].results), unreadable)
    written: list[Path] = []
    for target in targets:
        mine = table[table["matrix"] == target.matrix] if not table.empty else table
        if mine.empty:
            if len(targets) == 1:
                raise BenchError(f"{target.results}: no finished cells of matrix {target.matrix!r} to report on")
            print(f"bench report: {target.matrix}: no finished cells, skipped", file=sys.stderr)
            continue
        folder = Path(out) if out else target.results / REPORT_DIR
        written += build_report(table, target, folder / target.matrix, unreadable)
    return written
