"""How a report writes numbers and tables: units, SI prefixes, throughput, markdown and HTML
tables (verdict cells coloured), the displayed figure tables and the cells table."""
from __future__ import annotations

import html
import math
import re
from typing import Any

import pandas as pd

from bench.matrix.selectors import is_empty as is_missing  # None, NaN, pd.NA/NaT: shown as —

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




# --------------------------------------------------------------------------- formatting


def _si(value: Any) -> str:
    if is_missing(value):
        return "—"
    value = float(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.0f}"


def _num(value: Any, digits: int = 2, sign: bool = False) -> str:
    if is_missing(value):
        return "—"
    return f"{float(value):+.{digits}f}" if sign else f"{float(value):.{digits}f}"


def _rate(value: Any) -> str:
    return "—" if is_missing(value) else f"{float(value):,.0f}"


def _memory(mb: Any, kind: Any) -> str:
    if is_missing(mb):
        return "—"
    return f"{float(mb):,.0f} MB" + (f" ({kind})" if not is_missing(kind) and kind else "")


def data_text(dataset: str | None, unlabeled: str | None, pretty: bool = False) -> str:
    name = (lambda d: DATASET_NAMES.get(d, d)) if pretty else (lambda d: d)
    if not dataset and not unlabeled:
        return "?"
    return f"{name(dataset or '?')}←{name(unlabeled)}" if unlabeled else name(dataset or "?")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "table"


def display_label(label: str) -> str:
    return label.replace(" | ", " · ").replace("->", "→")


# --------------------------------------------------------------------------- markdown / html tables


def _md_cell(value: Any) -> str:
    return ("—" if is_missing(value) else str(value)).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(_md_cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


VERDICT_CLASSES = {"reproduced": "good", "holds": "good", "not reproduced": "bad", "fails": "bad",
                   "inconclusive": "unsure", "no cells": "none",
                   "other data": "other"}


def _html_cell(column: str, value: Any) -> str:
    text = "—" if is_missing(value) else str(value)
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
        row: dict[str, Any] = {"figure": display_label(first["figure"]), "unit": unit, "reported": reported}
        for label in labels:
            match = group[group["reading"].fillna("").astype(str) == label] if has_readings else group
            text = match.iloc[0]["reproduced_text"] if not match.empty else "—"
            delta = match.iloc[0]["delta"] if not match.empty else math.nan
            head, dhead = ((f"ours {label} (mean ± std, n)", f"Δ {label} (pts)") if label
                           else ("reproduced (mean ± std, n)", "Δ (pts)"))
            row[head] = "—" if is_missing(text) else text
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
            out[column] = [_num(float(v) * 100 if not is_missing(v) else v, 2) for v in out[column]]
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


def cells_frame(table: pd.DataFrame) -> pd.DataFrame:
    columns = [c for c in CELL_COLUMNS if c in table and not table[c].map(lambda v: is_missing(v) or v == "").all()]
    frame = table[columns].copy()
    if "device" in frame and "device_name" in table:
        frame["device"] = [d if is_missing(n) or str(n) == str(d) else f"{d} ({n})" for d, n in zip(table["device"], table["device_name"])]
    return frame


def unique_texts(rows: pd.DataFrame, column: str) -> list[str]:
    if column not in rows:
        return []
    return list(dict.fromkeys(str(v) for v in rows[column] if not is_missing(v) and v != ""))
