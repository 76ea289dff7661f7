"""Collect every done cell of a results folder into one pandas table (CSV and parquet).

One row per (matrix, cell): every resolved config field as a column, each dependency's fields
as ``role.field``, then the final metrics, wall time, throughput and parameter count.

Results folders live on shared file systems that anyone can write to. A cell marked done whose
``config.json`` or ``result.json`` is missing, unreadable, not JSON, not a JSON object, or holds a
non-number where a metric belongs is left out of the table with one warning line on stderr naming
the cell and how to rerun it, so one broken cell does not hide everyone's results;
:func:`read_cells` also returns the reasons (``bench check`` reports such cells as MISSING). A
metric that was not measured may be ``null`` (strict JSON) or ``NaN`` (older files): both are NaN.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import shlex
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from bench.results.collect_cache import CollectCache, Entry
from bench.errors import BenchError
from bench.results.store import JsonProblem, Store, atomic_write_bytes, file_signature, parse_json, write_cache

# result.json fields that are numbers, or null when not measured (val_acc without a validation split)
NUMERIC_RESULTS = ("test_acc", "val_acc", "train_acc", "test_loss", "val_loss", "train_loss", "selected_epoch",
                   "epochs_run", "wall_seconds", "train_seconds", "train_images_per_s", "infer_images_per_s",
                   "params", "flops", "peak_memory_mb")
RESERVED = ("matrix", "id", "plan_order")  # columns collect sets itself; a cell's files cannot override them
JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
              float: "a number", type(None): "null"}


class FileProblem(Exception):
    """What is wrong with one file of a cell, as a phrase ("result.json is missing")."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        super().__init__(f"{path.name} {problem}")


class UnreadableCell(BenchError):
    """A cell marked done whose files cannot be used; the message says what is wrong and how to rerun it."""

    def __init__(self, cell_id: str, problem: str, fix: str) -> None:
        self.cell_id = cell_id
        super().__init__(f"{problem}; {fix}")


def read_json_file(path: Path) -> Any:
    """The JSON value in ``path``, or :class:`FileProblem` (missing, unreadable, not UTF-8, corrupt)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileProblem(path, "is missing") from None
    except OSError as error:
        raise FileProblem(path, f"is unreadable ({error.strerror or type(error).__name__})") from None
    try:
        return parse_json(path, data)
    except JsonProblem as problem:
        raise FileProblem(path, f"is {problem.problem}") from None


def _json_object(path: Path) -> dict[str, Any]:
    value = read_json_file(path)
    if not isinstance(value, dict):
        raise FileProblem(path, f"is not a JSON object (it holds {JSON_TYPES.get(type(value), 'something else')})")
    return value


def _config(path: Path) -> dict[str, Any]:
    config = _json_object(path)
    deps = config.get("deps", {})
    if not isinstance(deps, dict) or not all(isinstance(v, str) for v in deps.values()):
        raise FileProblem(path, "has deps that are not a mapping of role to cell id")
    return config


def _result(path: Path) -> dict[str, Any]:
    """result.json with its metrics as floats (NaN where null)."""
    result = _json_object(path)
    for key in NUMERIC_RESULTS:
        value = result.get(key)
        if value is None:
            result[key] = math.nan
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FileProblem(path, f"has {key} = {json.dumps(value)[:40]}, not a number or null")
    return result


def _printable(value: Any) -> bool:
    """A plan's text that can go into a one-line command (a plan file is as untrusted as the rest)."""
    return isinstance(value, str) and 0 < len(value) <= 1000 and value.isprintable()


def rerun_command(store: Store, cell_id: str, *remove: str, what: str = "it") -> str:
    """``rerun it with: rm <the cell's files> && bench run <its matrix> --results <root>``, from a plan that has the cell."""
    try:
        plans = [p for p in store.plans().values() if isinstance(p, dict)]
    except BenchError:  # a corrupt plan file: still say what to remove
        plans = []
    plan = next((p for p in plans if any(isinstance(c, dict) and c.get("id") == cell_id for c in p.get("cells") or [])), {})
    source, sets = plan.get("source"), plan.get("sets") or []
    run = ["bench", "run", source if _printable(source) else "MATRIX", "--results", str(store.root)]
    for assignment in sets if isinstance(sets, list) else []:
        run += ["--set", assignment] if _printable(assignment) else []
    smoke = plan.get("smoke")
    if isinstance(smoke, dict):  # a rehearsal's cells: the same shortening makes the same ids
        run += ["--smoke"] + [f"--smoke-{key.replace('_', '-')}={value or 0}" for key, value in sorted(smoke.items())
                              if isinstance(value, int) or value is None]
    files = [str(store.cell(cell_id).path / name) for name in remove]
    return f"rerun {what} with: {shlex.join(['rm', '-f', *files])} && {shlex.join(run)}"


def read_cell_files(store: Store, cell_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config, result) of a done cell, or :class:`UnreadableCell` saying which file is wrong and how to rerun."""
    cell = store.cell(cell_id)
    try:
        return _config(cell.config), _result(cell.result)
    except FileProblem as problem:
        remove = ("DONE", "config.json") if problem.path == cell.config else ("DONE",)  # a bad config is not rewritten
        raise UnreadableCell(cell_id, f"marked done but {problem}", rerun_command(store, cell_id, *remove)) from None


DepConfigs = dict[str, tuple[dict[str, Any] | None, Any]]
"""dependency id -> (its config as shown, or None when absent; the signature of its config.json as read)."""


def read_cell(store: Store, cell_id: str, dep_configs: DepConfigs | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config fields with the dependencies' fields as ``role.field``, result) of a done cell;
    list and object values as text (:func:`_normalise`), as the table holds them.

    Raises :class:`UnreadableCell`. A dependency whose config.json is absent (a partial copy of a
    folder) or damaged leaves its columns empty: one damaged file costs one row (the damaged cell's,
    left out with its own warning), never its healthy dependants'.
    ``dep_configs`` remembers the dependencies' configs across calls (one teacher serves many
    students: its config.json is read once per collect, not once per student).
    """
    row, result, _ = _read_cell(store, cell_id, {} if dep_configs is None else dep_configs)
    return row, result


def _read_cell(store: Store, cell_id: str, dep_configs: DepConfigs) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """:func:`read_cell`, and the ids of the dependencies whose configs it read."""
    config, result = read_cell_files(store, cell_id)
    deps: dict[str, str] = config.pop("deps", {})
    row = _shown({k: v for k, v in config.items() if k not in RESERVED})
    result = _shown(result)
    for role, dep_id in sorted(deps.items()):
        row[f"{role}.id"] = dep_id
        try:
            dep = store.cell(dep_id)
        except BenchError:  # not a cell id (the store refuses names that could leave the folder)
            raise UnreadableCell(cell_id, f"marked done but config.json has deps.{role} = {json.dumps(dep_id)[:40]}, "
                                 "not a cell id", rerun_command(store, cell_id, "DONE", "config.json")) from None
        if dep_id not in dep_configs:
            signature = file_signature(dep.config)  # before reading: a file rewritten meanwhile is read again next time
            try:
                dep_configs[dep_id] = _shown(_config(dep.config)), signature
            except FileProblem:  # the damaged cell is left out (with its own warning), not its healthy dependants
                dep_configs[dep_id] = None, signature
        dep_config = dep_configs[dep_id][0]
        if dep_config is not None:
            row.update({f"{role}.{key}": value for key, value in dep_config.items() if key != "deps"})
    return row, result, sorted(set(deps.values()))


def _shown(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` as the table holds them: lists and objects as text (:func:`_normalise`)."""
    return {k: _normalise(v) if type(v) in _COMPOUND else v for k, v in values.items()}


_PRINTED: set[tuple[str, str]] = set()  # (cell folder, message) printed and not yet repeated by an ingest


def warn_unreadable(store: Store, problems: dict[str, str], ingest: bool = False) -> None:
    """One ``bench: warning:`` line per unreadable cell. ``ingest``: leave out a line printed since the
    last ingest (``bench collect`` ingests right after collecting: one warning per cell, not two)."""
    for cell_id, message in problems.items():
        key = (str(store.cell(cell_id).path), message)
        if ingest and key in _PRINTED:
            _PRINTED.discard(key)
            continue
        print(f"bench: warning: cell {cell_id}: {message}", file=sys.stderr)
        if not ingest:
            _PRINTED.add(key)


_COMPOUND = (list, tuple, dict)


def _normalise(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return json.dumps(value, sort_keys=True) if isinstance(value, dict) else value


def _one_type_per_column(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns mixing kinds of values (``"cpu"`` and ``5`` from a hand-edited file) as text, which parquet can hold."""
    for column in frame.columns[frame.dtypes == object]:
        kinds = {type(v) for v in frame[column] if not (v is None or (isinstance(v, float) and math.isnan(v)))}
        if len(kinds) > 1:
            frame[column] = frame[column].map(lambda v: v if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
    return frame


def read_cells(root: str | Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """(all readable done cells, one row per matrix they are in; unreadable done cell id -> why and how to rerun it).

    Cells unchanged since the last collect come from its cache (bench/results/collect_cache.py) unread."""
    store = Store(root)
    membership = store.membership()
    rows = []
    problems: dict[str, str] = {}
    dep_configs: DepConfigs = {}
    cache = CollectCache.load(store.root)
    done = store.done_cell_ids()
    for cell_id in done:
        signature = store.cell(cell_id).signature()  # before reading, as for the dependencies
        entry = cache.get(store, cell_id, signature)
        if entry is None:
            try:
                row, result, deps = _read_cell(store, cell_id, dep_configs)
            except UnreadableCell as error:
                problems[cell_id] = str(error)
                continue
            cache.put(cell_id, Entry(signature, {dep: dep_configs[dep][1] for dep in deps}, row, result))
        else:
            row, result = entry.row, entry.result
        base = {**row, **{k: v for k, v in result.items() if k not in row and k not in RESERVED}, "id": cell_id}
        for matrix, position, _ in membership.get(cell_id, [("", 0, None)]):
            rows.append({"matrix": matrix, "plan_order": position, **base})
    cache.keep_only(set(done) - set(problems))
    cache.save()
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame, problems
    frame = _one_type_per_column(frame)
    if "n_per_class" in frame:
        frame["n_per_class"] = frame["n_per_class"].map(_n_per_class)
    leading = ["matrix", "id", "stage", "method", "arch", "dataset", "unlabeled", "label_fraction", "n_per_class", "seed", "test_acc", "val_acc", "train_acc"]
    ordered = [c for c in leading if c in frame] + [c for c in frame.columns if c not in leading]
    frame = frame.sort_values(["matrix", "plan_order", "id"], kind="stable").reset_index(drop=True)
    return frame[[c for c in ordered if c != "plan_order"]], problems


def _n_per_class(value: Any) -> Any:
    if pd.isna(value) or value == "all":
        return value
    try:
        return str(int(value))
    except (TypeError, ValueError):
        return str(value)


def collect(root: str | Path) -> pd.DataFrame:
    """All readable done cells (a cell in several matrices gets one row per matrix); warns about the others."""
    frame, problems = read_cells(root)
    warn_unreadable(Store(root), problems)
    return frame


TABLES_STATE = ".results-tables.json"  # what write_tables last wrote: the table's digest, the files' signatures


def _digest(frame: pd.DataFrame) -> str | None:
    """A digest of the table's columns, types and values (26 ms for 10,000 rows here, against
    0.5 s to write both files); None when pandas cannot hash a column (then the files are written)."""
    try:
        values = pd.util.hash_pandas_object(frame, index=False).values
    except TypeError:
        return None
    head = json.dumps([list(map(str, frame.columns)), list(map(str, frame.dtypes))]).encode()
    return hashlib.sha256(head + values.tobytes()).hexdigest()


def write_tables(frame: pd.DataFrame, root: str | Path) -> tuple[Path, Path]:
    """results.csv and results.parquet in the results folder, each written atomically; skipped
    when both are still as the last call wrote them for the very same table."""
    root = Path(root)
    csv_path, parquet_path = root / "results.csv", root / "results.parquet"
    state_path = root / TABLES_STATE
    digest = _digest(frame)
    try:
        last = json.loads(state_path.read_bytes())
    except (OSError, ValueError):
        last = None

    def state() -> dict[str, Any]:
        return {"digest": digest, "csv": file_signature(csv_path), "parquet": file_signature(parquet_path)}

    if digest is not None and last == state():
        return csv_path, parquet_path
    atomic_write_bytes(csv_path, frame.to_csv(index=False).encode())
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    atomic_write_bytes(parquet_path, buffer.getvalue())
    if digest is not None:
        write_cache(state_path, json.dumps(state()).encode())  # refused: the tables are written every time
    return csv_path, parquet_path


SUMMARY_COLUMNS = ["matrix", "id", "stage", "method", "arch", "teacher.arch", "dataset", "unlabeled", "label_fraction",
                   "n_per_class", "seed", "train_acc", "val_acc", "test_acc", "selection", "wall_seconds",
                   "train_images_per_s", "infer_images_per_s", "params"]


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns worth reading in a terminal."""
    columns = [c for c in SUMMARY_COLUMNS if c in frame and not frame[c].isna().all()]
    return frame[columns]
