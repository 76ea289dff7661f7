"""Did we reproduce a reported figure, and how sure are we: intervals over seeds and a verdict.

The interval is a 95% confidence interval of the mean over seeds: Student's t for fewer than
``BOOTSTRAP_FROM`` seeds (a bootstrap of 3 values says little), ``scipy.stats.bootstrap`` (BCa,
fixed seed, so a report is reproducible) from there on. The verdict is an equivalence test in
the TOST spirit, against a tolerance band around the reported value (data: per paper and kind,
per figure where it says so):

* **reproduced** when the whole interval lies inside the band,
* **not reproduced** when the whole interval lies outside it,
* **inconclusive** otherwise, and whenever fewer than ``MIN_SEEDS`` seeds ran: then the report
  says roughly how many seeds would decide it, assuming the spread stays what it is.

On a stand-in (other data or models) an absolute reading is not comparable: its verdict is
**other data** (``bench.report.figures``), shown but counted apart. ``summary_line`` is the one
line a report, ``bench run`` and an index page give for a matrix.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95
MIN_SEEDS = 3
BOOTSTRAP_FROM = 10
MAX_SEEDS = 100  # beyond this many, "more seeds" is not an answer


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    method: str  # "t", "bootstrap", or "" when there is none


def interval(values: np.ndarray | list[float]) -> Interval:
    """95% interval of the mean of ``values`` (NaN bounds for fewer than two)."""
    arr = np.asarray(values, dtype=float)
    if arr.size < 2:
        return Interval(math.nan, math.nan, "")
    if arr.size < BOOTSTRAP_FROM or np.ptp(arr) == 0:
        half = _t_half(float(arr.std(ddof=1)), arr.size)
        return Interval(float(arr.mean()) - half, float(arr.mean()) + half, "t")
    result = stats.bootstrap((arr,), np.mean, confidence_level=LEVEL, method="BCa", random_state=0)
    return Interval(float(result.confidence_interval.low), float(result.confidence_interval.high), "bootstrap")


def _t_half(std: float, n: int) -> float:
    return float(stats.t.ppf(0.5 + LEVEL / 2, n - 1)) * std / math.sqrt(n)


def verdict(reported: float, tolerance: float, found: Interval, n: int) -> str:
    if n < MIN_SEEDS or math.isnan(found.low):
        return "inconclusive"
    low, high = reported - tolerance, reported + tolerance
    if low <= found.low and found.high <= high:
        return "reproduced"
    if found.high < low or found.low > high:
        return "not reproduced"
    return "inconclusive"


def seeds_to_decide(mean: float, std: float, n: int, reported: float, tolerance: float) -> int | None:
    """About how many seeds in all would make the t-interval decide, if mean and spread held;
    None when no number would (the mean sits on the band's edge) or the spread is unknown."""
    if math.isnan(mean) or math.isnan(std) or n < 2:
        return None
    room = abs(tolerance - abs(mean - reported))  # inside: to the edge; outside: past the edge
    if room == 0:
        return None
    for seeds in range(max(n, MIN_SEEDS), MAX_SEEDS + 1):
        if _t_half(std, seeds) < room:
            return seeds
    return None


def summary_counts(figure_verdicts: Iterable[str], claim_verdicts: Iterable[str]) -> dict[str, int]:
    """How many readings and claim comparisons got each verdict ("no cells" left out)."""
    figures, claims = Counter(figure_verdicts), Counter(claim_verdicts)
    return {"reproduced": figures["reproduced"], "not reproduced": figures["not reproduced"],
            "inconclusive": figures["inconclusive"], "other data": figures["other data"],
            "holds": claims["holds"], "fails": claims["fails"], "claims inconclusive": claims["inconclusive"]}


def summary_line(counts: dict[str, int]) -> str:
    """"comparable: a reproduced, b not, c inconclusive; on other data: d (shape only); claims: e hold,
    f fail, g inconclusive": what a reader can act on, comparable readings apart from the rest."""
    return (f"comparable: {counts['reproduced']} reproduced, {counts['not reproduced']} not, "
            f"{counts['inconclusive']} inconclusive; on other data: {counts['other data']} (shape only); "
            f"claims: {counts['holds']} hold, {counts['fails']} fail, {counts['claims inconclusive']} inconclusive")
