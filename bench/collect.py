"""Collect every done cell of a results folder into one pandas table (CSV and parquet).

One row per (matrix, cell): every resolved config field as a column, each dependency's fields
as ``role.field``, then the final metrics, wall time, throughput and parameter count.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from bench.store import Store, atomic_write_bytes, read_json


def _row(store: Store, cell_id: str, seen: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Config fields of a cell with its dependencies' fields prefixed by role."""
    if cell_id in seen:
        return seen[cell_id]
    config = read_json(store.cell(cell_id).config)
    deps: dict[str, str] = config.pop("deps", {})
    row: dict[str, Any] = dict(config)
    for role, dep_id in sorted(deps.items()):
        row[f"{role}.id"] = dep_id
        dep = store.cell(dep_id)
        if dep.config.exists():
            for key, value in read_json(dep.config).items():
                if key != "deps":
                    row[f"{role}.{key}"] = value
    seen[cell_id] = row
    return row


def _normalise(value: Any) -> Any:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def collect(root: str | Path) -> pd.DataFrame:
    """All done cells; a cell in several matrices gets one row per matrix."""
    store = Store(root)
    membership = store.membership()
    seen: dict[str, dict[str, Any]] = {}
    rows = []
    for cell_id in store.cell_ids():
        cell = store.cell(cell_id)
        if not cell.is_done():
            continue
        base = {"id": cell_id, **_row(store, cell_id, seen), **read_json(cell.result)}
        for matrix, position, _ in membership.get(cell_id, [("", 0, None)]):
            rows.append({"matrix": matrix, "plan_order": position, **base})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame = frame.map(_normalise)
    if "n_per_class" in frame:
        frame["n_per_class"] = frame["n_per_class"].map(lambda v: v if pd.isna(v) or v == "all" else str(int(v)))
    leading = ["matrix", "id", "stage", "method", "arch", "dataset", "unlabeled", "label_fraction", "n_per_class", "seed", "test_acc", "val_acc", "train_acc"]
    ordered = [c for c in leading if c in frame] + [c for c in frame.columns if c not in leading]
    frame = frame.sort_values(["matrix", "plan_order", "id"], kind="stable").reset_index(drop=True)
    return frame[[c for c in ordered if c != "plan_order"]]


def write_tables(frame: pd.DataFrame, root: str | Path) -> tuple[Path, Path]:
    """results.csv and results.parquet in the results folder, each written atomically."""
    root = Path(root)
    csv_path, parquet_path = root / "results.csv", root / "results.parquet"
    atomic_write_bytes(csv_path, frame.to_csv(index=False).encode())
    import io

    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    atomic_write_bytes(parquet_path, buffer.getvalue())
    return csv_path, parquet_path


SUMMARY_COLUMNS = ["matrix", "id", "stage", "method", "arch", "teacher.arch", "dataset", "unlabeled", "label_fraction",
                   "n_per_class", "seed", "train_acc", "val_acc", "test_acc", "selection", "wall_seconds",
                   "train_images_per_s", "infer_images_per_s", "params"]


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns worth reading in a terminal."""
    columns = [c for c in SUMMARY_COLUMNS if c in frame and not frame[c].isna().all()]
    return frame[columns]
