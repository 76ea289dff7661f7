"""The index page of a results folder that holds several matrices: one row per matrix with its
paper, summary line, cells done, compute spent and a link to its report (``bench report DIR``).

It reads only the ``summary.json`` each report wrote beside its report.html, so it never
recomputes a verdict and shows what the linked reports say."""
from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from bench.report.format import html_table, markdown_table
from bench.results.store import atomic_write_bytes

INDEX_TITLE = "Reports"


def _row(summary_path: Path) -> dict[str, str]:
    data = json.loads(summary_path.read_text())
    minutes = float(data.get("wall_seconds") or 0.0) / 60
    return {"matrix": str(data["matrix"]), "paper": str(data.get("paper") or "—"),
            "summary": str(data.get("summary") or "no paper, no verdicts"),
            "cells done": f"{data.get('cells_done', 0)} of {data.get('cells_planned', 0)}",
            "compute": f"{minutes:.1f} min", "report": f"{summary_path.parent.name}/report.html"}


def write_index(root: Path, matrices: list[str]) -> list[Path]:
    """``root/index.md`` and ``root/index.html`` over the reports ``root/<matrix>/`` of ``matrices``
    (those without a report, no finished cells, are left out)."""
    rows = [_row(root / m / "summary.json") for m in sorted(matrices) if (root / m / "summary.json").is_file()]
    frame = pd.DataFrame(rows, columns=["matrix", "paper", "summary", "cells done", "compute", "report"])
    intro = (f"{len(rows)} matrices. *summary*: comparable readings (reproduced, not, inconclusive), readings on "
             f"other data than the paper's (shown, not judged) and the paper's claims (hold, fail, inconclusive); "
             f"*compute*: summed wall time of the done cells.")
    md_frame = frame.assign(report=[f"[{r}]({r})" for r in frame["report"]])
    md = f"# {INDEX_TITLE}\n\n{intro}\n\n{markdown_table(md_frame)}\n"
    table = html_table(frame)
    for link in frame["report"]:  # html_table escapes its cells; the links are ours, made from folder names
        escaped = html.escape(link)
        table = table.replace(f"<td>{escaped}</td>", f"<td><a href=\"{escaped}\">{escaped}</a></td>", 1)
    style = ("body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;line-height:1.4}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
             "th{background:#f2f2f2}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{INDEX_TITLE}</title><style>{style}</style>"
            f"</head><body><h1>{INDEX_TITLE}</h1><p>{html.escape(intro).replace('*', '')}</p>{table}</body></html>\n")
    md_path, html_path = root / "index.md", root / "index.html"
    atomic_write_bytes(md_path, md.encode())
    atomic_write_bytes(html_path, page.encode())
    return [md_path, html_path]
