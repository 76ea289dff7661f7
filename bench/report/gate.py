"""``bench check``: compare a results folder with a committed baseline; fail on regressions.

Usage::

    bench check RESULTS --baseline results/baselines/<matrix>.csv [--tolerance 0.02] [--metric test_acc]
    bench check RESULTS --baseline results/baselines/<matrix>.csv --update [--matrix NAME]

Baseline file (CSV, written atomically by ``--update``): one row per done cell of one matrix, with
columns ``matrix, id, group, <config columns>, check_metric, value, n``. ``id`` is the cell id (a hash of
its whole config, seed included); the config columns are the cell's own fields and its
dependencies' fields as ``role.field``; ``group`` is a short hash of the config *without* the seed
(and without ``id``, ``role.id`` and ``role.seed``), so the seeds of one configuration share a
group; ``value`` is the cell's metric and ``n`` the number of cells (seeds) in its group.

Rule. Cells are matched by (matrix, id). A baseline cell that is not done in RESULTS is MISSING
(failure). Metrics are compared per group, over seeds: with baseline mean ``b`` (std ``s_b`` over
``n_b`` seeds) and current mean ``c`` (std ``s_c`` over the ``n_c`` done cells of the same group in
RESULTS; std uses ddof=1, and is 0 for one seed), the allowed drop is::

    allowed = tolerance + 2 * sqrt(s_b**2 / n_b + s_c**2 / n_c)

i.e. the absolute tolerance plus two standard errors of the difference of the two means (with one
seed on each side it is just the tolerance). ``c < b - allowed`` is a REGRESSION (failure, every
cell of the group is named); ``c > b + allowed`` an improvement (a note, not a failure; consider
``--update``). Cells of RESULTS not in the baseline are noted and ignored.

The current cells of a baseline group are the baseline's own (matrix, id) pairs, never a group
recomputed from RESULTS: a config field added later (with a default, so ids are unchanged) adds a
column to RESULTS that the baseline lacks and would change every recomputed group. A done cell of
the baseline whose files cannot be read (see :mod:`bench.results.collect`), or whose metric is null, is
MISSING with the reason. No group is ever left out: each is compared, or all its cells are MISSING.

Baselines come from shared folders, so the gate cannot pass on garbage: an empty or non-numeric
``value`` (or one outside [0, 1]: every metric is an accuracy), an empty ``matrix``, ``id``,
``group`` or ``check_metric``, a ragged or duplicated row is a one-line error naming the file, the
CSV line and the column (exit 2), and a baseline without rows for the metric asked is an error
too. ``--update`` refuses to write a cell without a value for the metric.

Exit codes: 0 all within tolerance (one summary line), 1 regressions or missing cells (each
listed: baseline, now, delta), 2 user errors (e.g. no baseline file: run with ``--update``).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.results.metrics import GATE_METRIC, METRICS  # noqa: F401 (part of this module's interface)
from bench.matrix.plan import describe_fields as describe
from bench.results.store import atomic_write_bytes


# --------------------------------------------------------------------------- config columns and groups


def config_columns(frame: pd.DataFrame) -> list[str]:
    """Config columns of a collected table: the cell fields, then ``role.field`` (and ``role.id``)."""
    from bench.matrix.config import FIELD_NAMES

    fields = [f for f in FIELD_NAMES if f != "deps"]
    own = [f for f in fields if f in frame.columns]
    roles = sorted(c for c in frame.columns if "." in c and (c.rpartition(".")[2] in fields or c.endswith(".id")))
    return own + roles


def _excluded_from_group(column: str) -> bool:
    last = column.rpartition(".")[2]
    return column == "id" or last in ("seed", "id")


def _normal(value: Any) -> Any:
    """A JSON-stable form of a cell value: None for empty, ints for integral numbers."""
    if isinstance(value, (np.generic,)):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return value


def group_key(row: pd.Series, columns: list[str]) -> str:
    """A short hash of a row's config without seed/ids: cells differing only by seed share it."""
    key = {c: _normal(row[c]) for c in columns if not _excluded_from_group(c)}
    key = {c: v for c, v in key.items() if v is not None}
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _with_groups(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    columns = config_columns(frame)
    frame["group"] = [group_key(row, columns) for _, row in frame.iterrows()] if not frame.empty else []
    return frame


# --------------------------------------------------------------------------- baseline I/O


def collect_results(results: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """The collected table and, per done cell that cannot be read, why (warned about on stderr)."""
    from bench.results.collect import read_cells, warn_unreadable
    from bench.results.store import Store

    if not results.is_dir():
        raise BenchError(f"{results}: no such results folder")
    table, unreadable = read_cells(results)
    warn_unreadable(Store(results), unreadable)
    return table, unreadable


def _accuracy_problem(value: float) -> str | None:
    """Why ``value`` cannot be a baseline metric (every gate metric is an accuracy), or None."""
    if math.isnan(value):
        return "no value"
    if not 0.0 <= value <= 1.0:
        return f"{value:g} is not an accuracy in [0, 1]"
    return None


def build_baseline(table: pd.DataFrame, matrix: str, metric: str) -> pd.DataFrame:
    """Baseline rows (one per done cell of ``matrix``) from a collected table; every cell needs a value."""
    mine = table[table["matrix"] == matrix] if not table.empty else table
    if mine.empty:
        raise BenchError(f"no finished cells of matrix {matrix!r} to write a baseline from")
    values = pd.to_numeric(mine[metric], errors="coerce") if metric in mine else pd.Series(math.nan, index=mine.index)
    if values.isna().all():
        raise BenchError(f"metric {metric} is empty for every cell of {matrix!r}; choose another --metric")
    bad = [f"{cell_id} ({problem})" for cell_id, value in zip(mine["id"], values)
           if (problem := _accuracy_problem(float(value))) is not None]
    if bad:
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise BenchError(f"{metric} of {len(bad)} cell(s) of {matrix!r} cannot be a baseline: {', '.join(bad[:10])}{more}; "
                         f"rerun them, or choose another --metric")
    mine = _with_groups(mine.reset_index(drop=True))
    columns = config_columns(mine)
    out = mine[["matrix", "id", "group", *columns]].copy()
    out[GATE_METRIC] = metric
    out["value"] = values.to_numpy()
    out["n"] = out.groupby("group")["id"].transform("count")
    return out


def write_baseline(frame: pd.DataFrame, path: Path) -> None:
    atomic_write_bytes(path, frame.to_csv(index=False, float_format="%.10g").encode())


KEY_COLUMNS = ("matrix", "id", "group", GATE_METRIC)


def shown(text: str) -> str:
    """Text from a baseline file as it is when short and on one line, else a bounded repr."""
    return text if len(text) <= 60 and text.isprintable() else repr(text[:40])


def _number(text: str) -> tuple[float, str | None]:
    """A baseline value and what is wrong with it (None when it is an accuracy)."""
    text = text.strip()
    if not text:
        return math.nan, "empty"
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        return math.nan, f"{text[:40]!r} is not a number"
    return value, _accuracy_problem(value)


def _records(text: str, path: Path, rerun: str) -> list[tuple[int, list[str]]]:
    """(CSV line where it starts, fields) of every non-blank record; a quoted field may span lines."""
    reader = csv.reader(io.StringIO(text, newline=""))
    records = []
    try:
        while True:
            line = reader.line_num + 1
            record = next(reader, None)
            if record is None:
                return records
            if record:
                records.append((line, record))
    except csv.Error as error:
        raise BenchError(f"{path}: line {reader.line_num}: not a readable baseline CSV ({error}); {rerun}") from None


def parse_baseline(text: str, path: Path) -> pd.DataFrame:
    """Baseline rows indexed by their CSV line number, ``value`` as floats; :class:`BenchError` naming
    the line and column of the first thing that is not a usable baseline."""
    rerun = f"fix it or rewrite it with `bench check RESULTS --baseline {path} --update`"
    header, body = gate_records(text, path, "baseline", [*KEY_COLUMNS, "value"], rerun)
    rows = [record for _, record in body]
    lines = [line for line, _ in body]
    frame = pd.DataFrame(rows, columns=header, index=pd.Index(lines, name="line"), dtype=str)
    first: dict[tuple[str, str, str], int] = {}
    values = []
    for line, row in frame.iterrows():
        for column in KEY_COLUMNS:
            if not row[column].strip():
                raise BenchError(f"{path}: line {line}, column {column}: empty; {rerun}")
        key = (row["matrix"], row["id"], row[GATE_METRIC])
        if key in first:
            raise BenchError(f"{path}: line {line}: cell {shown(key[0])}/{shown(key[1])} ({shown(key[2])}) again, "
                             f"first at line {first[key]}; {rerun}")
        first[key] = line
        value, problem = _number(row["value"])
        if problem is not None:
            raise BenchError(f"{path}: line {line}, column value: {problem}; {rerun}")
        values.append(value)
    frame["value"] = pd.Series(values, index=frame.index, dtype=float)
    return frame


def read_gate_file(path: Path, what: str, create: str) -> str:
    """The text of a gate's file (a baseline, a verdict baseline): one line naming it when it is
    missing, a folder, unreadable or not UTF-8, never a traceback."""
    if path.is_dir():
        raise BenchError(f"{path}: is a folder, not a {what}; pass the CSV file")
    if not path.is_file():
        raise BenchError(f"{path}: no {what} file; {create}")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except OSError as error:
        raise BenchError(f"{path}: unreadable ({error.strerror or type(error).__name__})") from None
    except UnicodeDecodeError:
        raise BenchError(f"{path}: not a readable {what} CSV (not UTF-8 text)") from None


def gate_records(text: str, path: Path, what: str, columns: list[str], rerun: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line, fields)]) of a gate's CSV: one line naming the file and line when it is
    empty, lacks one of ``columns``, repeats a column or has a record of another length."""
    records = _records(text, path, rerun)
    if not records:
        raise BenchError(f"{path}: empty file, not a {what}; {rerun}")
    (header_line, header), body = records[0], records[1:]
    missing = [c for c in columns if c not in header]
    if missing:
        raise BenchError(f"{path}: not a {what} file (no column {', '.join(missing)}); rewrite it with --update")
    doubled = sorted({c for c in header if header.count(c) > 1})
    if doubled:
        raise BenchError(f"{path}: line {header_line}: column(s) {', '.join(doubled)} appear twice; {rerun}")
    for line, record in body:
        if len(record) != len(header):
            raise BenchError(f"{path}: line {line}: {len(record)} fields, but the header has {len(header)}; {rerun}")
    return header, body


def read_baseline(path: Path) -> pd.DataFrame:
    return parse_baseline(read_gate_file(path, "baseline", f"create it with `bench check RESULTS --baseline {path} --update`"), path)


# --------------------------------------------------------------------------- comparison


def _stats(values: pd.Series | list[float]) -> tuple[float, float, int]:
    values = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").dropna().astype(float)
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    return float(values.mean()), float(values.std(ddof=1)) if n > 1 else 0.0, n


def compare(baseline: pd.DataFrame, table: pd.DataFrame, metric: str, tolerance: float,
            unreadable: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Problems and notes of ``table`` (collected RESULTS) against ``baseline`` rows of ``metric``.

    ``unreadable``: cell id -> why a done cell of RESULTS could not be read (its MISSING reason).
    Returns ``failures`` (MISSING / REGRESSED lines), ``notes`` (improvements, extra cells) and
    ``checked`` (one entry per compared group), all as text lines.
    """
    unreadable = unreadable or {}
    matrices = sorted(set(baseline["matrix"]))
    current = table[table["matrix"].isin(matrices)] if not table.empty else table
    values = pd.to_numeric(current[metric], errors="coerce") if metric in current else [math.nan] * len(current)
    now: dict[tuple[str, str], float] = dict(zip(zip(current["matrix"], current["id"]), values)) if not current.empty else {}
    failures: list[str] = []
    notes: list[str] = []
    checked: list[str] = []
    if baseline.empty:
        failures.append(f"NOTHING   compared: the baseline has no {metric} rows")

    for (matrix, group), base in baseline.groupby(["matrix", "group"], sort=False):
        found: list[float] = []  # by (matrix, id): cells the baseline doesn't know (new seeds) must not dilute it
        for _, row in base.iterrows():
            value = now.get((matrix, row["id"]))
            if value is not None and not math.isnan(value):
                found.append(value)
                continue
            why = (unreadable.get(row["id"]) or f"not a done cell of {matrix}'s plan in RESULTS") if value is None \
                else f"done, but its result.json has no {metric}"
            failures.append(f"MISSING   {matrix}/{row['id']} {describe(row.to_dict())}: baseline {row['value']:.4f}, now {why}")
        if not found:
            continue  # every cell of the group is reported MISSING just above
        b_mean, b_std, b_n = _stats(base["value"])
        c_mean, c_std, c_n = _stats(found)
        allowed = tolerance + 2 * math.sqrt(b_std**2 / b_n + c_std**2 / c_n)
        delta = c_mean - b_mean
        ids = " ".join(dict.fromkeys(base["id"]))
        what = describe({k: v for k, v in base.iloc[0].to_dict().items() if k != "seed"} if b_n > 1 or c_n > 1
                        else base.iloc[0].to_dict())
        seeds = f" (mean over seeds: baseline n={b_n}, now n={c_n})" if b_n > 1 or c_n > 1 else ""
        line = (f"{matrix}/{ids} {what}: baseline {b_mean:.4f}, now {c_mean:.4f}, delta {delta:+.4f}, "
                f"allowed ±{allowed:.4f}{seeds}")
        checked.append(line)
        if delta < -allowed:
            failures.append("REGRESSED " + line)
        elif delta > allowed:
            notes.append("improved  " + line + " (not a failure; consider --update)")

    if not current.empty:
        known = set(zip(baseline["matrix"], baseline["id"]))
        extra = [f"{m}/{i}" for m, i in zip(current["matrix"], current["id"]) if (m, i) not in known]
        if extra:
            notes.append(f"{len(extra)} done cell(s) not in the baseline, ignored: {', '.join(extra)}")
    return {"failures": failures, "notes": notes, "checked": checked}


# --------------------------------------------------------------------------- command line


def matrix_to_update(table: pd.DataFrame, baseline_path: Path, requested: str | None) -> str:
    names = sorted(set(table["matrix"])) if not table.empty else []
    if requested:
        if requested not in names:
            raise BenchError(f"no finished cells of matrix {requested!r} in RESULTS (matrices: {', '.join(names) or 'none'})")
        return requested
    if baseline_path.stem in names:
        return baseline_path.stem
    named = [n for n in names if n]
    if len(named) == 1:
        return named[0]
    raise BenchError(f"RESULTS holds {len(named)} matrices ({', '.join(named) or 'none'}) and none is named "
                     f"{baseline_path.stem!r}; pass --matrix NAME")
