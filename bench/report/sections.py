"""The sections of a report as data (``Section``: title, intro, table, CSV, images, notes) and the
texts they are made of: which cells stood in, what the compute cost, the verdicts and claims
tables. Rendering them is ``bench.report.render``; assembling them, ``bench.report.build``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.report.figures import FigureRow, base_matrix_name, concat_rows, figure_rows, selector_text, table_frame
from bench.report.format import DATASET_NAMES, data_text, display_label, is_missing, unique_texts
from bench.report.targets import Target
from bench.results.store import atomic_write_bytes

@dataclass
class Section:
    title: str
    intro: list[str]
    table: pd.DataFrame | None       # displayed table
    csv: Path | None
    images: list[tuple[str, Path]]
    notes: list[str]


def write_csv(path: Path, frame: pd.DataFrame, written: list[Path]) -> Path:
    """A section's CSV, written whole and counted among the report's files."""
    atomic_write_bytes(path, frame.to_csv(index=False).encode())
    written.append(path)
    return path


def _texts(rows: pd.DataFrame, column: str) -> list[str]:
    """A column as text per row ("" where empty or absent)."""
    if column not in rows:
        return [""] * len(rows)
    return ["" if is_missing(v) else str(v) for v in rows[column]]


def _labels_text(rows: pd.DataFrame) -> str:
    fractions = sorted({float(v) for v in rows.get("label_fraction", pd.Series(dtype=float)) if not is_missing(v)})
    return "/".join(f"{f * 100:g}%" for f in fractions)


def cells_text(rows: pd.DataFrame) -> str:
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


def paper_cells_text(figures: list[Any]) -> str:
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


def mapping_section(rows: list[FigureRow], stand_in: dict[str, Any], target: Target) -> Section:
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
            "stood in by": cells_text(cells) if not cells.empty else "no done cell matches",
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


def verdicts_section(judged: list[tuple[str, pd.DataFrame]], out: Path, written: list[Path]) -> tuple[Section, list[str]]:
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
    csv_path = write_csv(out / "verdicts.csv", frame, written)
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


def claims_section(table: pd.DataFrame, matrix: str, paper: Any, out: Path,
                    written: list[Path]) -> tuple[Section, list[str]]:
    """The paper's claims judged on the matrix's cells (``bench.report.claims``), first in the report."""
    from bench.report.claims import LEVEL, claims_frame, evaluate, summary

    readings = [reading for claim in paper.claims for reading in evaluate(claim, table, matrix)]
    frame = claims_frame(readings)
    csv_path = write_csv(out / "claims.csv", frame, written)
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
    from bench.report.stand_in import check_stand_in

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
