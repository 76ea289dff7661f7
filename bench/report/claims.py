"""The papers' claims (orderings they state, ``bench.report.paper_figures.Claim``) judged on a matrix's cells.

For each comparison (one value of the claim's ``per`` columns) the difference higher − lower of
the metric is taken per seed where both sides have the seed (seed-paired), and its 95% t-interval
over those seeds decides: the claim **holds** when the interval lies above 0, **fails** when it
lies below, and is **inconclusive** when it straddles 0 or fewer than 2 seeds pair up (the
interval is ``bench.report.verdicts.interval``'s: t for few seeds, a bootstrap for many). Without any
common seed, the two sides' means are compared unpaired (Welch's interval). An inconclusive
paired comparison says about how many seeds in all would decide it if the mean and spread of its
paired differences held (``to_decide``, as a reading's ``seeds_needed``: ``bench.report.verdicts``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
from scipy import stats

from bench.report.paper_figures import Claim, seed_key, select_rows
from bench.matrix.selectors import as_text
from bench.report.verdicts import LEVEL, MAX_SEEDS, MIN_SEEDS, interval, seeds_to_decide


@dataclass
class Side:
    mean: float
    std: float
    n: int


@dataclass
class ClaimReading:
    """One comparison of a claim: where (the ``per`` values), both sides and the verdict."""

    claim: Claim
    where: dict[str, str]
    higher: Side
    lower: Side
    difference: float
    low: float
    high: float
    pairs: int
    interval: str  # "paired t", "Welch t", or "" when there is none
    verdict: str   # holds | fails | inconclusive | no cells
    to_decide: int | None = None  # inconclusive and paired: about how many seeds in all would decide it


def _per_seed(rows: pd.DataFrame, metric: str) -> pd.Series:
    values = pd.to_numeric(rows[metric], errors="coerce")
    seeds = rows["seed"].map(seed_key) if "seed" in rows else pd.Series("", index=rows.index)
    return values.groupby(seeds).mean().dropna()


def _side(values: pd.Series) -> Side:
    n = len(values)
    return Side(float(values.mean()) if n else math.nan, float(values.std(ddof=1)) if n > 1 else math.nan, n)


def _interval(higher: pd.Series, lower: pd.Series) -> tuple[float, float, float, int, str, int | None]:
    """(difference, low, high, pairs, kind, seeds to decide) of higher − lower at ``LEVEL``; the
    seeds are those whose t-interval would exclude 0 if the paired differences' mean and spread
    held (None unpaired, or when no number up to ``bench.report.verdicts.MAX_SEEDS`` would)."""
    common = higher.index.intersection(lower.index)
    if len(common):
        diff = (higher[common] - lower[common]).to_numpy()
        found = interval(diff)
        spread = float(diff.std(ddof=1)) if len(diff) > 1 else math.nan
        needed = seeds_to_decide(float(diff.mean()), spread, len(diff), reported=0.0, tolerance=0.0)
        return float(diff.mean()), found.low, found.high, len(diff), f"paired {found.method or 't'}", needed
    if len(higher) < 2 or len(lower) < 2:
        mean = float(higher.mean() - lower.mean()) if len(higher) and len(lower) else math.nan
        return mean, math.nan, math.nan, 0, "Welch t", None
    result = stats.ttest_ind(higher.to_numpy(), lower.to_numpy(), equal_var=False)
    ci = result.confidence_interval(LEVEL)
    return float(higher.mean() - lower.mean()), float(ci.low), float(ci.high), 0, "Welch t", None


def verdict(low: float, high: float) -> str:
    if math.isnan(low) or math.isnan(high):
        return "inconclusive"
    if low > 0:
        return "holds"
    if high < 0:
        return "fails"
    return "inconclusive"


def _gains(rows: pd.DataFrame, table: pd.DataFrame, matrix: str, claim: Claim) -> pd.DataFrame:
    """``rows`` with the metric replaced by each cell's gain over its ``gain_over`` parent (relative
    or absolute); a cell whose parent is not in the table is left out."""
    column = f"{claim.gain_over}.id"
    if rows.empty or column not in rows:
        return rows.iloc[0:0]
    mine = table[table["matrix"] == matrix] if "matrix" in table else table
    parents = pd.to_numeric(mine.drop_duplicates("id").set_index("id")[claim.metric], errors="coerce")
    base = rows[column].map(parents)
    value = pd.to_numeric(rows[claim.metric], errors="coerce") - base
    if claim.gain == "relative":
        value = value / base.where(base != 0)
    out = rows.assign(**{claim.metric: value})
    return out[out[claim.metric].notna()]


def _groups(rows: pd.DataFrame, columns: list[str]) -> list[dict[str, str]]:
    if not columns or rows.empty:
        return [{}]
    keys = rows[columns].map(as_text).drop_duplicates()
    return [dict(zip(columns, values)) for values in keys.itertuples(index=False)]


def _within(rows: pd.DataFrame, where: dict[str, str]) -> pd.DataFrame:
    mask = pd.Series(True, index=rows.index)
    for column, value in where.items():
        mask &= rows[column].map(as_text) == value
    return rows[mask]


def evaluate(claim: Claim, table: pd.DataFrame, matrix: str) -> list[ClaimReading]:
    """The claim judged on ``matrix``'s rows of ``table``, one reading per comparison."""
    if table.empty:
        higher = lower = table
    else:
        higher, lower = select_rows(table, matrix, claim.higher), select_rows(table, matrix, claim.lower)
        if claim.gain_over:
            higher, lower = (_gains(side, table, matrix, claim) for side in (higher, lower))
    # a side whose selector fixes a per column is the same in every comparison
    grouped = {"higher": [c for c in claim.per if c not in claim.higher and c in higher],
               "lower": [c for c in claim.per if c not in claim.lower and c in lower]}
    keys = [c for c in claim.per if c in grouped["higher"] or c in grouped["lower"]]
    # the comparisons: every value the grouped sides take (a side fixed on a key has one)
    sides = [rows for rows, name in ((higher, "higher"), (lower, "lower")) if set(keys) <= set(grouped[name])]
    readings = []
    for where in _groups(pd.concat(sides) if sides else higher.iloc[0:0], keys):
        mine_h = _within(higher, {k: v for k, v in where.items() if k in grouped["higher"]})
        mine_l = _within(lower, {k: v for k, v in where.items() if k in grouped["lower"]})
        h, lo = _per_seed(mine_h, claim.metric), _per_seed(mine_l, claim.metric)
        if h.empty or lo.empty:
            readings.append(ClaimReading(claim, where, _side(h), _side(lo), math.nan, math.nan, math.nan, 0, "", "no cells"))
            continue
        difference, low, high, pairs, kind, needed = _interval(h, lo)
        judged = verdict(low, high)
        readings.append(ClaimReading(claim, where, _side(h), _side(lo), difference, low, high, pairs, kind, judged,
                                     needed if judged == "inconclusive" else None))
    # a comparison one side has no cells for is not a reading, unless the claim has no other
    judged = [r for r in readings if r.verdict != "no cells"]
    return judged or readings[:1]


def _where_text(where: dict[str, str]) -> str:
    """"on fashion_mnist, 1% labels, 5 classes"; unset columns left out."""
    parts = []
    for column, value in where.items():
        if value == "":
            continue
        if column == "label_fraction":
            try:
                parts.append(f"{float(value) * 100:g}% labels")
                continue
            except ValueError:
                pass
        parts.append({"dataset": f"on {value}", "task_classes": f"{value} classes"}.get(column, f"{column} {value}"))
    return ", ".join(parts) or "all cells"


def _pct(value: float) -> str:
    return "—" if math.isnan(value) else f"{value * 100:.2f}"


def _side_text(side: Side) -> str:
    if side.n == 0:
        return "—"
    spread = "" if math.isnan(side.std) else f" ± {side.std * 100:.2f}"
    return f"{side.mean * 100:.2f}{spread} (n={side.n})"


def _to_decide(reading: ClaimReading) -> str:
    """What would decide an inconclusive comparison: "≈N seeds", or why more seeds would not."""
    if reading.verdict != "inconclusive":
        return "—"
    if reading.to_decide:
        return f"≈{reading.to_decide} seeds"
    if reading.pairs < 2:
        return f"≥{MIN_SEEDS} seeds common to both sides"  # one pair, or no seed in common
    return f"over {MAX_SEEDS} seeds (Δ near 0)"


def claims_frame(readings: list[ClaimReading]) -> pd.DataFrame:
    """One row per comparison, accuracies in %, for the report."""
    rows: list[dict[str, Any]] = []
    for r in readings:
        interval = "—" if math.isnan(r.low) else f"[{_pct(r.low)}, {_pct(r.high)}]"
        rows.append({
            "claim": r.claim.statement, "where": _where_text(r.where),
            "higher side": _side_text(r.higher), "lower side": _side_text(r.lower),
            "Δ (pts)": "—" if math.isnan(r.difference) else f"{r.difference * 100:+.2f}",
            f"{LEVEL:.0%} interval": interval + (f" ({r.interval}, {r.pairs} pairs)" if r.interval.startswith("paired") else
                                                  f" ({r.interval})" if r.interval else ""),
            "verdict": r.verdict, "to decide": _to_decide(r),
        })
    return pd.DataFrame(rows)


def summary(readings: list[ClaimReading]) -> str:
    """"k of n comparisons hold, m fail, j inconclusive" (those without cells left out)."""
    judged = [r for r in readings if r.verdict != "no cells"]
    counts = {v: sum(r.verdict == v for r in judged) for v in ("holds", "fails", "inconclusive")}
    text = f"{counts['holds']} of {len(judged)} comparisons hold, {counts['fails']} fail, {counts['inconclusive']} inconclusive"
    empty = len(readings) - len(judged)
    return text + (f"; {empty} without cells in this matrix" if empty else "")
