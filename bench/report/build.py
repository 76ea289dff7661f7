"""``bench report``: reported vs reproduced figures of a matrix's paper, with throughput and plots.

This module finds what to report (targets), assembles the sections (verdicts, claims, one per
paper table, the cells) and renders markdown and HTML. The figures' readings are
``bench.report.figures``, the numbers and tables ``bench.report.format``, the plots
``bench.report.plots``; intervals and verdicts ``bench.report.verdicts``, claims ``bench.report.claims``.

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
  (``bench.report.verdicts``), shown first; ``claims.csv``: the paper's claims judged on the cells
  (``bench.report.claims``); the header says how much compute the cells took and what sharing saved;
* PNG plots mirroring the paper's (error bars: the 95% intervals), chosen per paper in ``PAPER_VIEWS`` (a registry: a paper
  without an entry gets the generic plots): for menghani2019 a Table-1-style grid per table (T, S,
  S' per teacher->student pair; reported vs reproduced), for khose2021 grouped bars like its
  Figures 1-3 (skipped with a note when the results hold no khose-style cells), for nguyen2021
  grouped bars for Tables 1 and 2 (one bar per reading: per label fraction, per metric) and a line
  of accuracy against the number of classes for Table 4 with the paper's points; for other papers
  reported-vs-reproduced bars per table.

Units: every figure value is a fraction in ``bench.report.paper_figures``; reports show them x100. For
accuracies (``kind: value``) reported/reproduced are in %, delta in percentage points; absolute
gains are in points; relative gains in % of the baseline, delta in points of that percentage.

Which paper: the matrix file's ``paper`` field (for a results folder, the plan's ``source`` matrix
file; when that file is gone, the paper whose matrix has the matrix's name). When the matrix is not
the paper's own matrix (``matrix:`` of its figures) it is a *stand-in* (the paper's grid on other
data): figure selectors are applied without their ``matrix``, ``dataset`` and ``unlabeled`` keys
(``bench.report.paper_figures.stand_in_figure``), and every table row says whether and how the data differ.
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
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from bench.errors import BenchError
from bench.report.figures import FigureRow, base_matrix_name, concat_rows, figure_rows, selector_text, table_frame
from bench.report.format import (
    DATASET_NAMES,
    cells_frame,
    data_text,
    display_cells,
    display_label,
    display_table,
    html_table,
    is_missing,
    markdown_table,
    slug,
    unique_texts,
)
from bench.report.plots import paper_view
from bench.results.store import Store, atomic_write_bytes
from bench.report.verdicts import summary_counts, summary_line

REPORT_DIR = "report"
SUMMARY_FILE = "summary.json"  # what an index page and `bench run` show of a report


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


# --------------------------------------------------------------------------- the report


@dataclass
class Section:
    title: str
    intro: list[str]
    table: pd.DataFrame | None       # displayed table
    csv: Path | None
    images: list[tuple[str, Path]]
    notes: list[str]


def _texts(rows: pd.DataFrame, column: str) -> list[str]:
    """A column as text per row ("" where empty or absent)."""
    if column not in rows:
        return [""] * len(rows)
    return ["" if is_missing(v) else str(v) for v in rows[column]]


def _labels_text(rows: pd.DataFrame) -> str:
    fractions = sorted({float(v) for v in rows.get("label_fraction", pd.Series(dtype=float)) if not is_missing(v)})
    return "/".join(f"{f * 100:g}%" for f in fractions)


def _cells_text(rows: pd.DataFrame) -> str:
    """What a group of cells is, for a reader: stage, method, model, data, labels, and their parents."""
    parts = []
    for stage in unique_texts(rows, "stage"):
        sub = rows[rows["stage"].astype(str) == stage]
        model = "/".join(unique_texts(sub, "arch"))
        frozen = [v for v in sub.get("frozen_backbone", pd.Series(dtype=object)) if not is_missing(v)]
        if any(str(v).lower() == "true" for v in frozen):
            heads = unique_texts(sub, "head")
            model += " (frozen backbone, new head" + (f" [{heads[0]}]" if heads and heads[0] else "") + ")"
        data = ", ".join(dict.fromkeys(data_text(d or None, u or None)
                                       for d, u in zip(_texts(sub, "dataset"), _texts(sub, "unlabeled"))))
        classes = unique_texts(sub, "task_classes")
        if classes:
            data += f" (first {'/'.join(str(int(float(k))) for k in classes)} classes)"
        text = f"`{stage}`: {'/'.join(unique_texts(sub, 'method'))} {model} on {data}"
        labels = _labels_text(sub) if set(unique_texts(sub, "method")) != {"blind"} else ""  # blind never sees a label
        if labels:
            text += f" at {labels} labels"
        seeds = unique_texts(sub, "seed")
        if seeds:
            text += f", seeds {', '.join(seeds)}"
        roles = sorted({c[: -len(".id")] for c in sub.columns if c.endswith(".id") and "." not in c[: -len(".id")]
                        and sub[c].notna().any()})
        by_text: dict[str, list[str]] = {}
        for role in roles:
            have = sub[sub[f"{role}.id"].notna()]
            desc = (f"`{'/'.join(unique_texts(have, f'{role}.stage'))}` {'/'.join(unique_texts(have, f'{role}.method'))} "
                    f"{'/'.join(unique_texts(have, f'{role}.arch'))} on "
                    + ", ".join(dict.fromkeys(data_text(d or None, u or None) for d, u in zip(
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
        cells = concat_rows([r.cells for r in mine])
        axes = list(dict.fromkeys(a for r in mine for rd in r.readings for a in rd.group))
        records.append({
            "figures": ", ".join(r.figure.id.partition("/")[2] for r in mine) or "— (none)",
            "stand-in selector": selector_text(selector),
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
    """Compute spent on the matrix's done cells (summed wall time; GPU-hours for cells on CUDA,
    wall time times ranks) and
    what sharing saved: a parent that serves k dependants (a teacher, an annotation) ran once
    instead of k times, so its wall time times k - 1."""
    cells = rows.drop_duplicates("id").set_index("id")
    wall = pd.to_numeric(cells["wall_seconds"], errors="coerce").fillna(0.0)
    text = f"Compute: {len(cells)} cells, {_minutes(float(wall.sum()))} of wall time in all"
    if "device" in cells:
        on_cuda = cells["device"].astype(str).str.startswith("cuda")
        ranks = pd.to_numeric(cells["ranks"], errors="coerce").fillna(1.0) if "ranks" in cells else 1.0
        gpu = (wall * ranks)[on_cuda]  # a data-parallel cell holds one GPU per rank
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


def _to_decide(row: pd.Series) -> str:
    from bench.report.verdicts import MIN_SEEDS

    if row["verdict"] != "inconclusive":
        return "—"
    if not is_missing(row["seeds_needed"]) and row["seeds_needed"]:
        return f"≈{int(row['seeds_needed'])} seeds"
    return f"≥{MIN_SEEDS} seeds" if row["n"] < 2 else "more seeds unlikely to (mean at the band's edge)"


def _verdicts_section(judged: list[tuple[str, pd.DataFrame]], out: Path, written: list[Path]) -> tuple[Section, list[str]]:
    """Every reading's verdict (``bench.report.verdicts``) in one table, and the verdicts for the summary line."""
    from bench.report.verdicts import BOOTSTRAP_FROM, LEVEL, MIN_SEEDS

    frames = [frame.assign(table=name) for name, frame in judged]
    frame = pd.concat(frames, ignore_index=True)
    rows = []
    for _, r in frame.iterrows():
        unit = r["unit"]
        rows.append({
            "table": r["table"], "figure": display_label(r["figure"]), "reading": r.get("reading", "") or "—",
            "reported": f"{r['reported']:.2f} {unit}", "reproduced": r["reproduced_text"],
            f"{LEVEL:.0%} interval": "—" if is_missing(r["ci_low"]) else f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}] ({r['interval']})",
            "band": f"± {r['band']:.2f}", "verdict": r["verdict"], "to decide": _to_decide(r),
        })
    csv_path = out / "verdicts.csv"
    atomic_write_bytes(csv_path, frame.to_csv(index=False).encode())
    written.append(csv_path)
    intro = [f"A reading is *reproduced* when its {LEVEL:.0%} interval over seeds (Student's t below {BOOTSTRAP_FROM} "
             f"seeds, a BCa bootstrap from there; gains seed-paired) lies inside the band around the reported value, "
             f"*not reproduced* when it lies wholly outside, *inconclusive* otherwise or with fewer than {MIN_SEEDS} "
             f"seeds; *to decide*: about how many seeds in all would decide it if mean and spread held. Bands are data "
             f"(`tolerance` per figure, `tolerances` per paper, else 2 points for accuracies and absolute gains, "
             f"2% of the baseline for relative gains). *other data*: the matrix stands in for the paper's with "
             f"other data or models, so an absolute reading is shown but not judged (nor counted as reproduced or "
             f"not); only figures whose paper file declares `transfers:` (a gain over the paper's own baseline, with "
             f"the reason) are judged on a stand-in."]
    return Section("Verdicts", intro, pd.DataFrame(rows), csv_path, [], []), list(frame["verdict"])


def _claims_section(table: pd.DataFrame, matrix: str, paper: Any, out: Path,
                    written: list[Path]) -> tuple[Section, list[str]]:
    """The paper's claims judged on the matrix's cells (``bench.report.claims``), first in the report."""
    from bench.report.claims import LEVEL, claims_frame, evaluate, summary

    readings = [reading for claim in paper.claims for reading in evaluate(claim, table, matrix)]
    frame = claims_frame(readings)
    csv_path = out / "claims.csv"
    atomic_write_bytes(csv_path, frame.to_csv(index=False).encode())
    written.append(csv_path)
    intro = [f"**{summary(readings)}.** Each claim compares two kinds of cells (higher − lower) within each "
             f"value of its grouping columns; Δ is the mean over seeds of the seed-paired differences, the interval "
             f"its {LEVEL:.0%} t-interval. *holds*: the interval lies above 0; *fails*: below 0; *inconclusive*: "
             f"it contains 0, or fewer than 2 seeds pair up; *to decide*: about how many seeds in all would make the "
             f"interval exclude 0 if the paired differences' mean and spread held. Sides: mean ± std over seeds, in % "
             f"(for a claim on gains, `gain_over`: each cell's gain over its own teacher, in % of the teacher or in "
             f"points)."]
    notes = [f"*{claim.statement}*: {claim.source}" + (f" {claim.notes}" if claim.notes else "") for claim in paper.claims]
    return Section("Claims", intro, frame, csv_path, [], notes), [reading.verdict for reading in readings]


def stand_in_mapping(target: Target, paper: Any) -> tuple[bool, dict[str, Any]]:
    """(whether ``target`` stands in for ``paper``'s own matrix, its validated ``stand_in:`` mapping)."""
    from bench.report.paper_figures import check_stand_in

    stand_in = paper.matrix != base_matrix_name(target.matrix)
    return stand_in, check_stand_in(target.stand_in, target.source or target.matrix, paper) if stand_in else {}


def judged_figures(table: pd.DataFrame, target: Target) -> pd.DataFrame:
    """Every reading of ``target``'s paper figures on its done cells, as ``table_frame`` rows with
    their verdicts (empty when the matrix names no paper); ``bench check --verdicts`` gates on it."""
    from bench.report.paper_figures import load_paper

    if not target.paper or table.empty:
        return pd.DataFrame(columns=["matrix", "id", "reading", "verdict"])
    paper = load_paper(target.paper)
    mine = table[table["matrix"] == target.matrix].reset_index(drop=True)
    _, mapping = stand_in_mapping(target, paper)
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
    from bench.report.paper_figures import load_paper

    out.mkdir(parents=True, exist_ok=True)
    mine = table[table["matrix"] == target.matrix].reset_index(drop=True) if not table.empty else table
    written: list[Path] = []
    sections: list[Section] = []
    header: list[str] = []
    paper = load_paper(target.paper) if target.paper else None
    summary: dict[str, int] | None = None

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

    if target.variant:
        header.append(f"**Not the matrix as written**: `{target.matrix}` ran with {'; '.join(f'`{v}`' for v in target.variant)}. "
                      "Its figures are not the paper's setting, whatever the `data` column says.")
    if paper is None:
        header.append("No paper: the matrix names no `paper`, so there are no reported figures to compare; "
                      "only the cells table follows.")
    else:
        stand_in, mapping = stand_in_mapping(target, paper)
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
            from bench.report.paper_figures import STAND_IN_IGNORED_KEYS

            header.append(
                f"**Stand-in matrix — data differ from the paper.** `{target.matrix}` is not the paper's own matrix "
                f"(`{paper.matrix}`): it runs the paper's grid on other data, so each figure's selector is applied to "
                f"`{target.matrix}`'s cells with its `matrix` key and its "
                f"{', '.join(f'`{k}`' for k in sorted(STAND_IN_IGNORED_KEYS))} keys ignored. The `data` column of every "
                f"table says what the paper used and what was used here. Other settings (epochs, subsets) may differ "
                f"too: see the matrix file.")
        claim_verdicts: list[str] = []
        if paper.claims:
            section, claim_verdicts = _claims_section(mine, target.matrix, paper, out, written)
            sections.append(section)
        rows = figure_rows(mine, target.matrix, paper, mapping, target.stage_axes)
        if target.variant:  # the paper's data, not its settings
            for row in rows:
                if not row.data_differs:
                    row.data_note = f"{row.data_note}; settings differ ({target.variant[-1].split(':')[0]})"
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
            behind = concat_rows([r.cells for r in trows])
            if stand_in and mapping:
                title += (f"\nstood in by {', '.join(unique_texts(behind, 'arch'))} on "
                          f"{', '.join(dict.fromkeys(unique_texts(behind, 'dataset')))}")
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
                empty = [f"{r.figure.label} ({selector_text(r.mapping[1])})" for r in unmatched if r.mapping is not None]
                intro.append(f"{len(unmatched)} of {len(trows)} figures have no reproduced value (—): "
                             + "; ".join(([f"no stand-in in `stand_in:` for {', '.join(unmapped)}"] if unmapped else [])
                                         + ([f"no done cell matches the stand-in of {', '.join(empty)}"] if empty else []))
                             + ".")
            elif unmatched:
                intro.append(f"{len(unmatched)} of {len(trows)} figures have no done cell in `{target.matrix}` (reproduced —).")
            fig_notes = [f"*{display_label(r.figure.label)}*: {r.figure.notes}" for r in trows if r.figure.notes]
            sections.append(Section(name, intro, display_table(frame), csv_path, images, fig_notes))
        figure_verdicts: list[str] = []
        if judged:
            section, figure_verdicts = _verdicts_section(judged, out, written)
            sections.insert(0, section)
        summary = summary_counts(figure_verdicts, claim_verdicts)
        empty = figure_verdicts.count("no cells")
        header.append(f"**Summary — {summary_line(summary)}**"
                      + (f" ({empty} figures without cells)." if empty else "."))
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
    summary_path = out / SUMMARY_FILE
    wall = float(pd.to_numeric(mine["wall_seconds"], errors="coerce").sum()) if "wall_seconds" in mine else 0.0
    atomic_write_bytes(summary_path, json.dumps({
        "matrix": target.matrix, "paper": paper.paper if paper else None, "title": paper.title if paper else None,
        "summary": summary_line(summary) if summary is not None else None, "counts": summary,
        "cells_done": len(done), "cells_planned": len(target.planned) or len(done), "wall_seconds": round(wall, 1),
    }, indent=1).encode())
    return [md_path, html_path, summary_path, *written]


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
             "td.unsure{background:#fbefc6}td.none{color:#888}td.other{background:#e4e9f5;color:#445}")
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
    from bench.results.collect import read_cells, warn_unreadable

    targets = resolve_targets(arg, results)
    table, unreadable = read_cells(targets[0].results)
    warn_unreadable(Store(targets[0].results), unreadable)
    written: list[Path] = []
    folder = Path(out) if out else targets[0].results / REPORT_DIR
    for target in targets:
        mine = table[table["matrix"] == target.matrix] if not table.empty else table
        if mine.empty:
            if len(targets) == 1:
                raise BenchError(f"{target.results}: no finished cells of matrix {target.matrix!r} to report on")
            print(f"bench report: {target.matrix}: no finished cells, skipped", file=sys.stderr)
            continue
        written += build_report(table, target, folder / target.matrix, unreadable)
    if len(targets) > 1:  # a results folder of several matrices: one page over their reports
        from bench.report.index import write_index

        written = write_index(folder, [t.matrix for t in targets]) + written
    return written


@dataclass(frozen=True)
class Written:
    """A report as a command tells its user about it: the summary line and where report.html is."""

    summary: str | None  # None: the matrix names no paper
    html: Path


def report_matrix(results: Path, matrix: str) -> Written:
    """Write the report of ``matrix`` from the results folder ``results`` into ``results/report/<matrix>/``
    and return its summary; what ``bench run`` (and a smoke run) ends on."""
    from bench.results.collect import read_cells

    targets = [t for t in resolve_targets(str(results), None) if t.matrix == matrix]
    if not targets:
        raise BenchError(f"{results}: no plan of matrix {matrix!r} to report on")
    table, unreadable = read_cells(results)
    if table.empty or table[table["matrix"] == matrix].empty:
        raise BenchError(f"{results}: no finished cells of matrix {matrix!r} to report on")
    folder = results / REPORT_DIR / matrix
    build_report(table, targets[0], folder, unreadable)
    summary = json.loads((folder / SUMMARY_FILE).read_text())
    return Written(summary["summary"], folder / "report.html")
