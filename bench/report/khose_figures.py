"""khose2021's Figures 1-3 redrawn from a results table: accuracy against the label fraction for
teachers, students and self-distillation, with the paper's reported points beside ours."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.report.paper_figures import Figure, reproduce
from bench.report.plots import pyplot, save


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

    plt = pyplot()
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
                        save(fig, out / "khose-fig1-self-distillation.png")))

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
                        save(fig, out / "khose-fig2-self-distillation-gain.png")))
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
                        save(fig, out / "khose-fig3-distillation.png")))
    else:
        notes.append("khose2021 Figure 3: skipped — no students distilled from another architecture in the results.")
    return written, notes


