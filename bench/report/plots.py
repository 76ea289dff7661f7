"""The report's matplotlib plots of a paper table: reported vs reproduced bars, menghani2019's Table-1
grid, grouped readings, accuracy against the number of classes. Which plot draws which paper's
table is ``bench.report.paper_views``."""
from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.report.figures import UNITS, FigureRow, Reading
from bench.report.format import DATASET_CLASSES, DATASET_NAMES, display_label, is_missing, unique_texts
from bench.results.store import atomic_write_bytes

# --------------------------------------------------------------------------- plots


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path) -> Path:
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path


_COLUMN_COLORS = {"T": "tab:blue", "S": "tab:orange", "S'": "tab:green"}


def _errors(results: list[dict[str, Any] | None]) -> np.ndarray:
    """Error bars (2 x n: below, above the mean, in points) from each result's 95% interval over
    seeds (``bench.report.verdicts``); none where there is no interval (fewer than two seeds)."""
    bars = np.zeros((2, len(results)))
    for i, res in enumerate(results):
        if res and res.get("n", 0) >= 2 and not is_missing(res.get("low", math.nan)):
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
    plt = pyplot()
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
            ax.set_title(display_label(pair), fontsize=11)
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
    return save(fig, path)


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
    plt = pyplot()
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
    ax.set_yticks(ys, [f"{display_label(r.figure.label)} [{UNITS[r.figure.kind]}]" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="0.3", linewidth=0.8)
    ax.set_xlabel("value (% or points, see label)")
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=8, loc="best")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def _wrap_title(title: str, width: int = 95) -> str:
    return "\n".join(textwrap.fill(line, width) for line in title.split("\n"))


def _stand_in_stage(row: FigureRow) -> str:
    if row.mapping is None:
        return ""
    stages = unique_texts(row.cells, "stage")
    return f"\n(here: {', '.join(stages)})" if stages else ""


def plot_grouped_readings(rows: list[FigureRow], title: str, path: Path, ylabel: str = "accuracy (%)",
                          name_stand_ins: bool = False) -> Path | None:
    """Vertical grouped bars, one group per figure (a row of the paper's table): the paper's value
    (hatched) and one bar per reading (label fraction, metric, ...) with 95% interval over seeds and n."""
    if not any(r.n for r in rows):
        return None
    plt = pyplot()
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
    ax.set_xticks(xs, [textwrap.fill(display_label(r.figure.label), 16) + (_stand_in_stage(r) if name_stand_ins else "")
                       for r in rows], fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(_wrap_title(title), fontsize=10)
    ax.legend(fontsize=8, loc="upper center", ncol=k, framealpha=0.9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def _classes(frame: pd.DataFrame) -> int | None:
    """The number of classes of the cells behind a reading: their ``task_classes``, else their dataset's."""
    if frame.empty:
        return None
    if "task_classes" in frame:
        values = {int(float(v)) for v in frame["task_classes"] if not is_missing(v)}
        if len(values) == 1:
            return values.pop()
    if "dataset" in frame:
        counts = {DATASET_CLASSES.get(str(v)) for v in frame["dataset"] if not is_missing(v)}
        if len(counts) == 1:
            return counts.pop()
    return None


def plot_accuracy_vs_classes(rows: list[FigureRow], title: str, path: Path) -> Path | None:
    """nguyen2021 Table 4 / Figure 6 style: accuracy against the number of classes (log scale): the
    paper's points (one per dataset) and one line per reading (e.g. per stand-in dataset)."""
    if not any(r.n for r in rows):
        return None
    plt = pyplot()
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
    return save(fig, path)
