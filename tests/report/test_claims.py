"""Claims as data (bench/report/papers/*.yaml `claims:`) judged on a results table (bench/report/claims.py)."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from bench.report.claims import claims_frame, evaluate, summary
from bench.errors import ConfigError
from bench.report.paper_figures import Claim, load_paper, parse_paper

CLAIM = Claim(id="p/x", source="Sec. 1", statement="distillation beats the teacher",
              higher={"stage": "student"}, lower={"stage": "teacher"}, per=("label_fraction",))


def _rows(stage: str, fraction: float, accuracies: list[float], seeds: list[int] | None = None) -> list[dict]:
    seeds = seeds if seeds is not None else list(range(len(accuracies)))
    return [{"matrix": "m", "stage": stage, "label_fraction": fraction, "seed": seed, "test_acc": acc}
            for seed, acc in zip(seeds, accuracies)]


def test_paired_t_interval_by_hand() -> None:
    # differences per seed 0.02, 0.04, 0.03: mean 0.03, sd 0.01, t(0.975, 2) = 4.302653
    table = pd.DataFrame(_rows("teacher", 0.1, [0.70, 0.71, 0.72]) + _rows("student", 0.1, [0.72, 0.75, 0.75]))
    (reading,) = evaluate(CLAIM, table, "m")
    half = 4.302652729911275 * 0.01 / math.sqrt(3)
    assert reading.difference == pytest.approx(0.03)
    assert (reading.low, reading.high) == (pytest.approx(0.03 - half), pytest.approx(0.03 + half))
    assert reading.pairs == 3 and reading.interval == "paired t" and reading.verdict == "holds"
    assert reading.higher.n == 3 and reading.higher.mean == pytest.approx(0.74)


def test_each_verdict() -> None:
    fails = pd.DataFrame(_rows("teacher", 0.1, [0.80, 0.81, 0.82]) + _rows("student", 0.1, [0.70, 0.70, 0.71]))
    assert [r.verdict for r in evaluate(CLAIM, fails, "m")] == ["fails"]
    mixed = pd.DataFrame(_rows("teacher", 0.1, [0.70, 0.80, 0.75]) + _rows("student", 0.1, [0.75, 0.74, 0.76]))
    assert [r.verdict for r in evaluate(CLAIM, mixed, "m")] == ["inconclusive"]
    one_seed = pd.DataFrame(_rows("teacher", 0.1, [0.5]) + _rows("student", 0.1, [0.9]))
    (reading,) = evaluate(CLAIM, one_seed, "m")
    assert reading.verdict == "inconclusive" and reading.difference == pytest.approx(0.4) and math.isnan(reading.low)
    assert [r.verdict for r in evaluate(CLAIM, pd.DataFrame(_rows("teacher", 0.1, [0.5])), "m")] == ["no cells"]


def test_unpaired_sides_use_welch() -> None:
    table = pd.DataFrame(_rows("teacher", 0.1, [0.70, 0.71, 0.72], [0, 1, 2]) + _rows("student", 0.1, [0.80, 0.82, 0.81], [3, 4, 5]))
    (reading,) = evaluate(CLAIM, table, "m")
    assert reading.interval == "Welch t" and reading.pairs == 0 and reading.verdict == "holds"
    assert reading.difference == pytest.approx(0.10)


def test_one_reading_per_group_and_a_fixed_side_serves_every_group() -> None:
    bound = Claim(id="p/y", source="s", statement="stays below the bound", higher={"stage": "bound", "label_fraction": 1.0},
                  lower={"stage": "student"}, per=("label_fraction",))
    table = pd.DataFrame(_rows("bound", 1.0, [0.9, 0.91]) + _rows("student", 0.01, [0.7, 0.72]) + _rows("student", 0.1, [0.89, 0.93]))
    readings = evaluate(bound, table, "m")
    assert [(r.where, r.verdict) for r in readings] == [({"label_fraction": "0.01"}, "holds"), ({"label_fraction": "0.1"}, "inconclusive")]
    assert readings[1].difference == pytest.approx(-0.005)
    frame = claims_frame(readings)
    assert list(frame["where"]) == ["1% labels", "10% labels"]
    assert summary(readings) == "1 of 2 comparisons hold, 0 fail, 1 inconclusive"


def test_claims_validate_and_the_shipped_ones_load() -> None:
    paper = load_paper("radosavovic2018")
    assert not paper.figures and len(paper.claims) == 5
    assert {c.id.split("/")[0] for c in paper.claims} == {"radosavovic2018"}
    bad = """paper: p\ntitle: t\ncitation: c\nmatrix: m\nclaims:\n  - {id: p/a, source: s, statement: x, higher: {stage: []}, lower: {stage: t}}\n"""
    with pytest.raises(ConfigError, match="claims.0.higher"):
        parse_paper(bad, "p.yaml")
    with pytest.raises(ConfigError, match="figures or claims"):
        parse_paper("paper: p\ntitle: t\ncitation: c\nmatrix: m\n", "p.yaml")


def test_the_report_judges_the_claims_first(tmp_path: Path) -> None:
    from bench.report.build import build_report
    from bench.report.targets import Target

    table = pd.DataFrame([{**row, "id": f"{i:012x}", "method": "x", "arch": "a", "dataset": "d"} for i, row in enumerate(
        _rows("teacher", 0.1, [0.70, 0.71, 0.72]) + _rows("data_distill", 0.1, [0.72, 0.75, 0.75]))])
    target = Target(matrix="m", results=tmp_path, paper="radosavovic2018", paper_reason="a test")
    build_report(table, target, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert md.index("## Claims") < md.index("## All cells")
    assert "**1 of 1 comparisons hold, 0 fail, 0 inconclusive; 4 without cells in this matrix.**" in md
    claims = pd.read_csv(tmp_path / "claims.csv")
    assert claims.loc[claims["verdict"] == "holds", "claim"].tolist() == [
        "Data distillation beats the supervised model trained on the labeled subset"]


def test_a_claim_on_gains_over_each_cells_own_teacher() -> None:
    fewer = Claim(id="p/g", source="s", statement="distillation gains more with fewer labels", metric="val_acc",
                  higher={"method": "kd", "teacher.label_fraction": 0.1}, lower={"method": "kd", "teacher.label_fraction": 0.5},
                  per=("arch",), gain_over="teacher")
    rows = []
    for seed in range(3):
        for lf, teacher_acc, student_acc in ((0.1, 0.50, 0.55 + 0.01 * seed), (0.5, 0.80, 0.81)):
            tid = f"t{lf}{seed}"
            rows.append({"matrix": "m", "id": tid, "method": "supervised", "arch": "a", "seed": seed, "val_acc": teacher_acc})
            rows.append({"matrix": "m", "id": f"s{lf}{seed}", "method": "kd", "arch": "a", "seed": seed, "val_acc": student_acc,
                         "teacher.id": tid, "teacher.label_fraction": lf})
    (reading,) = evaluate(fewer, pd.DataFrame(rows), "m")
    # relative gains: (0.55, 0.56, 0.57) / 0.5 - 1 = 10%, 12%, 14% against 0.01 / 0.8 = 1.25%
    assert reading.higher.mean == pytest.approx(0.12) and reading.lower.mean == pytest.approx(0.0125)
    assert reading.verdict == "holds" and reading.pairs == 3
    absolute = fewer.model_copy(update={"gain": "absolute"})
    assert evaluate(absolute, pd.DataFrame(rows), "m")[0].higher.mean == pytest.approx(0.06)


def test_an_inconclusive_comparison_says_how_many_seeds_would_decide_it() -> None:
    # differences per seed 0.01, -0.01, 0.03: mean 0.01, sd 0.02; the t-interval excludes 0 once
    # t(0.975, n-1) * 0.02 / sqrt(n) < 0.01, first at n = 18 (t(0.975, 17) = 2.1098: 0.00995)
    table = pd.DataFrame(_rows("teacher", 0.1, [0.70, 0.72, 0.70]) + _rows("student", 0.1, [0.71, 0.71, 0.73]))
    (reading,) = evaluate(CLAIM, table, "m")
    assert reading.verdict == "inconclusive" and reading.difference == pytest.approx(0.01)
    assert reading.to_decide == 18
    assert 2.1098 * 0.02 / math.sqrt(18) < 0.01 < 2.1199 * 0.02 / math.sqrt(17)
    assert claims_frame([reading])["to decide"].tolist() == ["≈18 seeds"]
    # as many seeds again with the same differences decide it: the estimate is what it says
    more = pd.DataFrame(_rows("teacher", 0.1, [0.70, 0.72, 0.70] * 6, list(range(18)))
                        + _rows("student", 0.1, [0.71, 0.71, 0.73] * 6, list(range(18))))
    assert [r.verdict for r in evaluate(CLAIM, more, "m")] == ["holds"]
    # decided, unpaired, a zero mean: no count, and the column says why
    decided = pd.DataFrame(_rows("teacher", 0.1, [0.70, 0.71, 0.72]) + _rows("student", 0.1, [0.72, 0.75, 0.75]))
    unpaired = pd.DataFrame(_rows("teacher", 0.1, [0.70], [0]) + _rows("student", 0.1, [0.71], [1]))
    flat = pd.DataFrame(_rows("teacher", 0.1, [0.70, 0.72, 0.71]) + _rows("student", 0.1, [0.71, 0.71, 0.71]))
    readings = [r for t in (decided, unpaired, flat) for r in evaluate(CLAIM, t, "m")]
    assert [r.to_decide for r in readings] == [None, None, None]
    assert claims_frame(readings)["to decide"].tolist() == ["—", "≥3 seeds common to both sides", "over 100 seeds (Δ near 0)"]
