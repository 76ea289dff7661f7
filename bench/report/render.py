"""A report's sections rendered: markdown that links its PNGs by relative path, and a self-contained
HTML page (PNGs embedded as data URIs), from the same header and sections."""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

from bench.report.format import html_table, markdown_table
from bench.report.sections import Section
from bench.report.targets import Target


HOW_TO_READ = (
    "How to read: *reported* is the paper's number; *reproduced* is the mean ± std (ddof=1) over seeds of the "
    "matching cells, n = number of seeds (runs); *Δ* = reproduced − reported. Accuracies (unit %) are in percent, "
    "Δ in percentage points; gains are in points (pts) or in % of the baseline (% rel.), Δ in points of the same "
    "unit. Throughput columns are for the cell(s) behind a figure (for gains: the distilled model), averaged over "
    "seeds; FLOPs are forward FLOPs per image; peak memory is allocated CUDA memory (cuda_allocated), or on CPU the peak "
    "resident set of the process while it ran the cell (cell_rss; it includes the Python and torch runtime), or, "
    "where that cannot be reset, the process's lifetime peak (process_rss)."
)


def render(target: Target, paper: Any, header: list[str], sections: list[Section], out: Path) -> tuple[str, str]:
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
