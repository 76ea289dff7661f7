"""The report's matplotlib figures, mirroring each paper's, chosen per paper in ``PAPER_VIEWS``."""
from __future__ import annotations

import math
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from bench.report.paper_figures import Figure, reproduce
from bench.report.figures import UNITS, FigureRow, Reading
from bench.report.format import DATASET_CLASSES, DATASET_NAMES, display_label, is_missing, unique_texts
from bench.results.store import atomic_write_bytes

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
    ax.set_yticks(ys, [f"{display_label(r.figure.label)} [{UNITS[r.figure.kind]}]" for r in rows], fontsize=8)
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
    stages = unique_texts(row.cells, "stage")
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
    ax.set_xticks(xs, [textwrap.fill(display_label(r.figure.label), 16) + (_stand_in_stage(r) if name_stand_ins else "")
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

    matrix = str(table["matrix"].iloc[0]) if "matrix" in table else ""

    def gain(teacher_arch: str, arch: str, lf: float) -> float:
        """Relative gain in %, computed as every gain figure is (``bench.report.paper_figures.reproduce``:
        per common seed, then averaged; else from the means)."""
        figure = Figure(id="khose2021/plot", source="plot", table="plot", label="gain", metric=val,
                        metric_definition="plot", value=0.0, kind="relative_gain", matrix=matrix, cells={
                            "select": {"method": "kd", "arch": arch, "teacher.arch": teacher_arch, "teacher.label_fraction": lf},
                            "baseline": {"stage": "teacher", "method": "supervised", "arch": teacher_arch, "label_fraction": lf}})
        result = reproduce(figure, table)
        return result["mean"] * 100 if result["n"] else math.nan

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
