"""``bench report``: reported vs reproduced figures of a matrix's paper, with throughput and plots.

This module assembles a report: the targets (``bench.report.targets``), their sections
(``bench.report.sections``: verdicts, claims, one per paper table, the cells), rendered as markdown
and HTML (``bench.report.render``) and written with a summary for the index page. The figures' readings are
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
(``bench.report.stand_in.stand_in_figure``), and every table row says whether and how the data differ.
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

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.errors import BenchError
from bench.report.figures import FigureRow, concat_rows, figure_rows, selector_text, table_frame
from bench.report.format import cells_frame, display_cells, display_label, display_table, slug, unique_texts
from bench.report.paper_views import paper_view
from bench.report.render import render
from bench.report.sections import (
    Section,
    cells_text,
    claims_section,
    mapping_section,
    paper_cells_text,
    verdicts_section,
    cost_line,
    stand_in_mapping,
    write_csv,
)
from bench.report.targets import Target, resolve_targets
from bench.report.verdicts import summary_counts, summary_line
from bench.results.store import Store, atomic_write_bytes

REPORT_DIR = "report"
SUMMARY_FILE = "summary.json"  # what an index page and `bench run` show of a report


def build_report(table: pd.DataFrame, target: Target, out: Path, unreadable: dict[str, str] | None = None) -> list[Path]:
    """Write the report of ``target`` (rows of ``table`` with matrix == target.matrix) into ``out``.

    ``unreadable``: done cells that ``bench collect`` could not read, and why; the planned ones are
    named in the header, so a reader does not take them for cells that never ran."""
    from bench.report.paper_figures import load_paper

    out.mkdir(parents=True, exist_ok=True)
    mine = table[table["matrix"] == target.matrix].reset_index(drop=True) if not table.empty else table
    paper = load_paper(target.paper) if target.paper else None
    page = _Page(header=_cells_header(mine, target, unreadable))
    if paper is None:
        page.header.append("No paper: the matrix names no `paper`, so there are no reported figures to compare; "
                           "only the cells table follows.")
    else:
        _paper_part(page, mine, target, paper, out)
    _cells_part(page, mine, out)
    return _write(page, mine, target, paper, out)


@dataclass
class _Page:
    """A report as it is assembled: header lines, sections in order, the files written so far and,
    once judged, the summary counts."""

    header: list[str]
    sections: list[Section] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    summary: dict[str, int] | None = None


def _cells_header(mine: pd.DataFrame, target: Target, unreadable: dict[str, str] | None) -> list[str]:
    """How many planned cells are done, what they cost, which could not be read, how they differ."""
    done = set(mine["id"]) if "id" in mine else set()
    header = []
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
    return header


def _paper_header(target: Target, paper: Any, stand_in: bool, mapping: dict[str, Any]) -> list[str]:
    """Which paper, and whether (and how) the matrix stands in for the paper's own."""
    header = [f"Paper: **{paper.paper}** — {paper.title} (from {target.paper_reason})."]
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
        from bench.report.stand_in import STAND_IN_IGNORED_KEYS

        header.append(
            f"**Stand-in matrix — data differ from the paper.** `{target.matrix}` is not the paper's own matrix "
            f"(`{paper.matrix}`): it runs the paper's grid on other data, so each figure's selector is applied to "
            f"`{target.matrix}`'s cells with its `matrix` key and its "
            f"{', '.join(f'`{k}`' for k in sorted(STAND_IN_IGNORED_KEYS))} keys ignored. The `data` column of every "
            f"table says what the paper used and what was used here. Other settings (epochs, subsets) may differ "
            f"too: see the matrix file.")
    return header


def _paper_part(page: _Page, mine: pd.DataFrame, target: Target, paper: Any, out: Path) -> None:
    """Everything a paper brings: its header, claims, stand-in mapping, one section per table, the
    verdicts first, the summary line, and the paper's own extra plots."""
    stand_in, mapping = stand_in_mapping(target, paper)
    page.header += _paper_header(target, paper, stand_in, mapping)
    claim_verdicts: list[str] = []
    if paper.claims:
        section, claim_verdicts = claims_section(mine, target.matrix, paper, out, page.written)
        page.sections.append(section)
    rows = figure_rows(mine, target.matrix, paper, mapping, target.stage_axes)
    if target.variant:  # the paper's data, not its settings
        for row in rows:
            if not row.data_differs:
                row.data_note = f"{row.data_note}; settings differ ({target.variant[-1].split(':')[0]})"
    if mapping:
        page.sections.append(mapping_section(rows, mapping, target))
    view = paper_view(paper.paper)
    by_table: dict[str, list[FigureRow]] = {}
    for row in rows:
        by_table.setdefault(row.figure.table, []).append(row)
    skipped = [name for name, trows in by_table.items() if stand_in and not any(r.n for r in trows)]
    judged: list[tuple[str, pd.DataFrame]] = []
    for name, trows in by_table.items():
        if name not in skipped:
            frame = table_frame(trows)
            judged.append((name, frame))
            page.sections.append(_table_section(name, trows, frame, target, paper, (stand_in, mapping), view, out, page.written))
    figure_verdicts: list[str] = []
    if judged:
        section, figure_verdicts = verdicts_section(judged, out, page.written)
        page.sections.insert(0, section)
    page.summary = summary_counts(figure_verdicts, claim_verdicts)
    empty = figure_verdicts.count("no cells")
    page.header.append(f"**Summary — {summary_line(page.summary)}**" + (f" ({empty} figures without cells)." if empty else "."))
    if skipped:
        page.header.append(f"Not reproduced by `{target.matrix}` (no matching cells), so left out: {', '.join(skipped)}.")
    if view.extra is not None:
        images, notes = view.extra(mine, rows, out, target.matrix)
        page.written.extend(path for _, path in images)
        page.sections.append(Section(view.extra_title, [], None, None, images, notes))


def _table_section(name: str, trows: list[FigureRow], frame: pd.DataFrame, target: Target, paper: Any,
                   standing_in: tuple[bool, dict[str, Any]], view: Any, out: Path, written: list[Path]) -> Section:
    """One paper table: its CSV, its plot, which cells stood in and which figures have no value."""
    stand_in, mapping = standing_in
    csv_path = write_csv(out / f"{slug(name)}.csv", frame, written)
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
        intro.append(f"**Stood in by** (`{target.matrix}`, via `stand_in:`): {cells_text(behind)}. "
                     f"The paper (cells of its matrix `{paper.matrix}`): {paper_cells_text([r.figure for r in trows])}.")
    if differing:
        intro.append(f"**Data differ from the paper in this table** (`{target.matrix}` is a stand-in): "
                     + "; ".join(differing) + ".")
    intro += _unmatched_lines(trows, target, mapping)
    fig_notes = [f"*{display_label(r.figure.label)}*: {r.figure.notes}" for r in trows if r.figure.notes]
    return Section(name, intro, display_table(frame), csv_path, images, fig_notes)


def _unmatched_lines(trows: list[FigureRow], target: Target, mapping: dict[str, Any]) -> list[str]:
    """Why figures of a table have no reproduced value: no stand-in, or no done cell matches it."""
    unmatched = [r for r in trows if not r.n]
    if unmatched and mapping:
        unmapped = [r.figure.label for r in unmatched if r.mapping is None]
        empty = [f"{r.figure.label} ({selector_text(r.mapping[1])})" for r in unmatched if r.mapping is not None]
        return [f"{len(unmatched)} of {len(trows)} figures have no reproduced value (—): "
                + "; ".join(([f"no stand-in in `stand_in:` for {', '.join(unmapped)}"] if unmapped else [])
                            + ([f"no done cell matches the stand-in of {', '.join(empty)}"] if empty else []))
                + "."]
    if unmatched:
        return [f"{len(unmatched)} of {len(trows)} figures have no done cell in `{target.matrix}` (reproduced —)."]
    return []


def _cells_part(page: _Page, mine: pd.DataFrame, out: Path) -> None:
    """Every done cell of the matrix, as a table and cells.csv."""
    cells = cells_frame(mine) if not mine.empty else pd.DataFrame()
    cells_csv = write_csv(out / "cells.csv", cells, page.written)
    page.sections.append(Section("All cells", ["Every done cell of the matrix; accuracies in %, throughput as measured by the run."],
                                 display_cells(cells) if not cells.empty else None, cells_csv, [], []))


def _write(page: _Page, mine: pd.DataFrame, target: Target, paper: Any, out: Path) -> list[Path]:
    """report.md, report.html and the summary an index page and ``bench run`` show."""
    md, html_page = render(target, paper, page.header, page.sections, out)
    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write_bytes(md_path, md.encode())
    atomic_write_bytes(html_path, html_page.encode())
    summary_path = out / SUMMARY_FILE
    done = set(mine["id"]) if "id" in mine else set()
    wall = float(pd.to_numeric(mine["wall_seconds"], errors="coerce").sum()) if "wall_seconds" in mine else 0.0
    summary = page.summary
    atomic_write_bytes(summary_path, json.dumps({
        "matrix": target.matrix, "paper": paper.paper if paper else None, "title": paper.title if paper else None,
        "summary": summary_line(summary) if summary is not None else None, "counts": summary,
        "cells_done": len(done), "cells_planned": len(target.planned) or len(done), "wall_seconds": round(wall, 1),
    }, indent=1).encode())
    return [md_path, html_path, summary_path, *page.written]


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
