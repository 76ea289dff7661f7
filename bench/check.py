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
``--update``). Cells of RESULTS not in the baseline are noted and ignored. Cells whose baseline
value is empty (metric not measured) are only checked for presence.

Exit codes: 0 all within tolerance (one summary line), 1 regressions or missing cells (each
listed: baseline, now, delta), 2 user errors (e.g. no baseline file: run with ``--update``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.errors import BenchError
from bench.store import atomic_write_bytes

GATE_METRIC = "check_metric"  # which result column the gate compares ("metric" is a cell field)

METRICS = ("test_acc", "val_acc", "train_acc")


# --------------------------------------------------------------------------- config columns and groups


def config_columns(frame: pd.DataFrame) -> list[str]:
    """Config columns of a collected table: the cell fields, then ``role.field`` (and ``role.id``)."""
    from bench.config import FIELD_NAMES

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


def describe(row: pd.Series | dict[str, Any]) -> str:
    """A short human description of a cell from its config columns."""
    get = (lambda k: row.get(k)) if isinstance(row, dict) else (lambda k: row[k] if k in row.index else None)

    def present(value: Any) -> bool:
        return value is not None and not (isinstance(value, float) and math.isnan(value)) and str(value) not in ("", "nan", "None")

    parts = [str(get(k)) for k in ("stage", "method", "arch") if present(get(k))]
    if present(get("teacher.arch")):
        parts.append(f"<- {get('teacher.arch')}")
    if present(get("dataset")):
        parts.append(f"on {get('dataset')}" + (f"+{get('unlabeled')}" if present(get("unlabeled")) else ""))
    for key, label in (("label_fraction", "labels="), ("n_per_class", "n="), ("seed", "seed ")):
        if key == "label_fraction" and present(get(key)) and str(get(key)) in ("1", "1.0"):
            continue  # all labels: the default, not worth a word
        if present(get(key)):
            parts.append(f"{label}{get(key)}")
    return " ".join(parts)


# --------------------------------------------------------------------------- baseline I/O


def _collect(results: Path) -> pd.DataFrame:
    from bench.collect import collect

    if not results.is_dir():
        raise BenchError(f"{results}: no such results folder")
    return collect(results)


def build_baseline(table: pd.DataFrame, matrix: str, metric: str) -> pd.DataFrame:
    """Baseline rows (one per done cell of ``matrix``) from a collected table."""
    mine = table[table["matrix"] == matrix] if not table.empty else table
    if mine.empty:
        raise BenchError(f"no finished cells of matrix {matrix!r} to write a baseline from")
    if metric not in mine or pd.to_numeric(mine[metric], errors="coerce").isna().all():
        raise BenchError(f"metric {metric} is empty for every cell of {matrix!r}; choose another --metric")
    mine = _with_groups(mine.reset_index(drop=True))
    columns = config_columns(mine)
    out = mine[["matrix", "id", "group", *columns]].copy()
    out[GATE_METRIC] = metric
    out["value"] = pd.to_numeric(mine[metric], errors="coerce")
    out["n"] = out.groupby("group")["id"].transform("count")
    return out


def write_baseline(frame: pd.DataFrame, path: Path) -> None:
    atomic_write_bytes(path, frame.to_csv(index=False, float_format="%.10g").encode())


def read_baseline(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise BenchError(f"{path}: no baseline file; create it with `bench check RESULTS --baseline {path} --update`")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise BenchError(f"{path}: not a readable baseline CSV ({str(error).strip().splitlines()[0]})") from None
    missing = [c for c in ("matrix", "id", "group", GATE_METRIC, "value") if c not in frame.columns]
    if missing:
        raise BenchError(f"{path}: not a baseline file (missing columns: {', '.join(missing)}); rewrite it with --update")
    frame["value"] = pd.to_numeric(frame["value"].replace("", np.nan), errors="coerce")
    return frame


# --------------------------------------------------------------------------- comparison


def _stats(values: pd.Series) -> tuple[float, float, int]:
    values = pd.to_numeric(values, errors="coerce").dropna().astype(float)
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    return float(values.mean()), float(values.std(ddof=1)) if n > 1 else 0.0, n


def compare(baseline: pd.DataFrame, table: pd.DataFrame, metric: str, tolerance: float) -> dict[str, list[str]]:
    """Problems and notes of ``table`` (collected RESULTS) against ``baseline`` rows of ``metric``.

    Returns ``failures`` (MISSING / REGRESSED lines), ``notes`` (improvements, extra cells) and
    ``checked`` (one entry per compared group), all as text lines.
    """
    matrices = sorted(set(baseline["matrix"]))
    current = table[table["matrix"].isin(matrices)] if not table.empty else table
    current = _with_groups(current.reset_index(drop=True)) if not current.empty else current
    done = set(zip(current["matrix"], current["id"])) if not current.empty else set()
    failures: list[str] = []
    notes: list[str] = []
    checked: list[str] = []

    for _, row in baseline.iterrows():
        if (row["matrix"], row["id"]) not in done:
            value = "—" if math.isnan(row["value"]) else f"{row['value']:.4f}"
            failures.append(f"MISSING   {row['matrix']}/{row['id']} {describe(row.to_dict())}: baseline {value}, "
                            f"now not a done cell of {row['matrix']}'s plan in RESULTS")

    for (matrix, group), base in baseline.groupby(["matrix", "group"], sort=False):
        b_mean, b_std, b_n = _stats(base["value"])
        if b_n == 0:
            continue
        now = current[(current["matrix"] == matrix) & (current["group"] == group) & current["id"].isin(base["id"])] \
            if not current.empty else current  # cells the baseline doesn't know (new seeds) must not dilute it
        if now.empty or metric not in now:
            continue  # every cell of the group is already reported MISSING
        c_mean, c_std, c_n = _stats(now[metric])
        if c_n == 0:
            failures.append(f"MISSING   {matrix}/{' '.join(now['id'])} {describe(base.iloc[0].to_dict())}: "
                            f"no {metric} in RESULTS")
            continue
        allowed = tolerance + 2 * math.sqrt(b_std**2 / b_n + c_std**2 / c_n)
        delta = c_mean - b_mean
        ids = " ".join(dict.fromkeys(list(base["id"]) + list(now["id"])))
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


def _update_matrix(table: pd.DataFrame, baseline_path: Path, requested: str | None) -> str:
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


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "check", help="compare a results folder with a baseline CSV; exit 1 on regressions or missing cells",
        description="Exit 0 when every baseline cell is done and within tolerance, 1 otherwise. Per group of seeds, "
                    "a drop larger than tolerance + 2*sqrt(s_b^2/n_b + s_now^2/n_now) is a regression.")
    p.add_argument("results", metavar="RESULTS", help="results folder")
    p.add_argument("--baseline", required=True, help="baseline CSV (results/baselines/<matrix>.csv)")
    p.add_argument("--tolerance", type=float, default=0.02, help="absolute tolerance on the metric (default 0.02)")
    p.add_argument("--metric", default="test_acc", choices=METRICS, help="metric to compare (default test_acc)")
    p.add_argument("--update", action="store_true", help="write/overwrite the baseline from RESULTS and exit 0")
    p.add_argument("--matrix", help="--update: matrix to take (default: the baseline file's stem, or the only matrix)")


from bench.cli import command  # noqa: E402  (bench.cli imports this module lazily)


@command("check")
def check_command(args: argparse.Namespace) -> int:
    results, path = Path(args.results), Path(args.baseline)
    if not args.tolerance >= 0:
        raise BenchError(f"--tolerance must be >= 0, not {args.tolerance}")
    table = _collect(results)
    if args.update:
        matrix = _update_matrix(table, path, args.matrix)
        frame = build_baseline(table, matrix, args.metric)
        write_baseline(frame, path)
        from bench.store import Store

        plans = Store(results).plans()
        planned = {c["id"] for c in plans.get(matrix, {}).get("cells", [])}
        not_done = planned - set(frame["id"])
        if not_done:
            print(f"bench check: note: {len(not_done)} planned cell(s) of {matrix} are not done and not in the baseline: "
                  f"{', '.join(sorted(not_done))}", file=sys.stderr)
        print(f"bench check: wrote {path}: {len(frame)} cells ({frame['group'].nunique()} configs) of {matrix}, "
              f"{args.metric}")
        return 0

    baseline = read_baseline(path)
    rows = baseline[baseline[GATE_METRIC] == args.metric]
    if rows.empty:
        have = ", ".join(sorted(set(baseline[GATE_METRIC]))) or "none"
        raise BenchError(f"{path}: no {args.metric} baseline (it has: {have}); use --metric or --update")
    outcome = compare(rows, table, args.metric, args.tolerance)
    for note in outcome["notes"]:
        print(f"note: {note}")
    where = f"{path} ({args.metric}, tolerance {args.tolerance:g})"
    if outcome["failures"]:
        print(f"bench check: FAILED against {where}: {len(outcome['failures'])} problem(s)")
        for line in outcome["failures"]:
            print(f"  {line}")
        return 1
    print(f"bench check: OK — {len(rows)} cells ({len(outcome['checked'])} configs) of "
          f"{', '.join(sorted(set(rows['matrix'])))} within tolerance of {where}")
    return 0
