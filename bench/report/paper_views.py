"""Which plot draws each paper's tables (``PAPER_VIEWS``, a registry by paper id: a paper without an
entry gets generic reported-vs-reproduced bars), and the extra figures a paper draws from the whole
results table (khose2021's Figures 1-3)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from bench.report.figures import FigureRow
from bench.report.khose_figures import plot_khose
from bench.report.plots import plot_accuracy_vs_classes, plot_grouped_readings, plot_menghani_table, plot_reported_vs_reproduced

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
