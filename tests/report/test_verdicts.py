"""Intervals over seeds and the reproduced / not reproduced / inconclusive verdict (bench/report/verdicts.py),
as reproduce() and the report apply them."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.errors import ConfigError
from bench.report.paper_figures import Figure, parse_paper, reproduce
from bench.report.verdicts import Interval, interval, seeds_to_decide, verdict

T_975_2 = 4.302652729911275  # Student's t, 97.5% quantile, 2 degrees of freedom


def test_t_interval_by_hand() -> None:
    found = interval([0.70, 0.72, 0.74])  # mean 0.72, sd 0.02
    half = T_975_2 * 0.02 / math.sqrt(3)
    assert found.method == "t"
    assert (found.low, found.high) == (pytest.approx(0.72 - half), pytest.approx(0.72 + half))
    assert math.isnan(interval([0.5]).low) and interval([0.5]).method == ""


def test_bootstrap_from_ten_seeds_is_reproducible_and_near_the_t_interval() -> None:
    values = np.random.default_rng(0).normal(0.8, 0.01, size=12)
    a, b = interval(values), interval(values)
    assert a.method == "bootstrap" and (a.low, a.high) == (b.low, b.high)
    assert a.low < values.mean() < a.high
    half = 2.200985160082949 * values.std(ddof=1) / math.sqrt(12)  # t(0.975, 11)
    assert a.high - a.low == pytest.approx(2 * half, rel=0.35)


@pytest.mark.parametrize(("found", "n", "expected"), [
    (Interval(0.83, 0.85, "t"), 3, "reproduced"),           # inside 0.84 ± 0.02
    (Interval(0.70, 0.75, "t"), 3, "not reproduced"),       # wholly below
    (Interval(0.87, 0.90, "t"), 3, "not reproduced"),       # wholly above
    (Interval(0.80, 0.84, "t"), 3, "inconclusive"),         # straddles the lower edge
    (Interval(0.83, 0.85, "t"), 2, "inconclusive"),         # too few seeds, however tight
    (Interval(math.nan, math.nan, ""), 1, "inconclusive"),
])
def test_each_verdict(found: Interval, n: int, expected: str) -> None:
    assert verdict(0.84, 0.02, found, n) == expected


def test_seeds_to_decide() -> None:
    # mean 0.835 (0.015 inside the band's edge), sd 0.02: t_{n-1} * 0.02 / sqrt(n) < 0.015 from n = 10
    assert seeds_to_decide(0.835, 0.02, 3, 0.84, 0.02) == 10
    assert seeds_to_decide(0.82, 0.02, 3, 0.84, 0.02) is None  # exactly on the edge: no number decides
    assert seeds_to_decide(0.80, 0.01, 1, 0.84, 0.02) is None  # one seed: the spread is unknown


def test_reproduce_judges_values_and_seed_paired_gains() -> None:
    fig = Figure.model_validate({"id": "p/x", "source": "s", "table": "T", "label": "x", "metric": "test_acc",
                                 "metric_definition": "d", "value": 0.84, "kind": "value", "matrix": "m",
                                 "cells": {"select": {"stage": "s"}}})
    rows = [{"matrix": "m", "stage": "s", "seed": seed, "test_acc": acc} for seed, acc in enumerate([0.835, 0.84, 0.845])]
    result = reproduce(fig, pd.DataFrame(rows))
    assert result["verdict"] == "reproduced" and result["interval"] == "t" and result["tolerance"] == 0.02
    gain = fig.model_copy(update={"kind": "absolute_gain", "value": 0.05,
                                  "cells": fig.cells.model_copy(update={"baseline": {"stage": "b"}})})
    rows += [{"matrix": "m", "stage": "b", "seed": seed, "test_acc": acc} for seed, acc in enumerate([0.70, 0.70, 0.70])]
    judged = reproduce(gain, pd.DataFrame(rows))
    assert judged["paired"] is True and judged["verdict"] == "not reproduced"  # gains 0.135-0.145, far above 0.05 ± 0.02
    assert reproduce(fig, pd.DataFrame(rows[:0], columns=["matrix", "stage", "seed", "test_acc"]))["verdict"] == "no cells"


def test_tolerances_are_data() -> None:
    text = """paper: p
title: t
citation: c
matrix: m
tolerances: {value: 0.05}
figures:
  - {id: p/a, source: s, table: T, label: a, metric: test_acc, metric_definition: d, value: 0.5, kind: value,
     cells: {select: {stage: s}}}
  - {id: p/b, source: s, table: T, label: b, metric: test_acc, metric_definition: d, value: 0.5, kind: value,
     tolerance: 0.01, cells: {select: {stage: s}}}
  - {id: p/c, source: s, table: T, label: c, metric: test_acc, metric_definition: d, value: 0.1, kind: relative_gain,
     cells: {select: {stage: s}, baseline: {stage: b}}}
"""
    paper = parse_paper(text, "p.yaml")
    assert [f.band for f in paper.figures] == [0.05, 0.01, 0.02]  # the paper's, the figure's, the kind's default


def test_the_report_puts_verdicts_first_and_colours_them(tmp_path: Path) -> None:
    from bench.report.build import build_report
    from tests.report.test_report_nguyen import _target, results_table

    build_report(results_table(), _target(tmp_path), tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert md.index("## Verdicts") < md.index("## Stand-in mapping") < md.index("## Table 1")
    verdicts = pd.read_csv(tmp_path / "verdicts.csv")
    crop = verdicts[(verdicts["id"] == "nguyen2021/table1/crop")].set_index("reading")
    # 0.60, 0.62, 0.64 at 1% labels against a reported 84% (ImageNet): other data, so shown with its interval, not judged
    assert crop.loc["at 1% labels", "verdict"] == "other data"
    assert crop.loc["at 1% labels", "ci_low"] == pytest.approx(62 - T_975_2 * 2 / math.sqrt(3))
    assert set(verdicts["verdict"]) <= {"other data", "no cells"}
    others = int((verdicts["verdict"] == "other data").sum())
    line = next(line for line in md.splitlines() if line.startswith("**Summary"))
    assert f"comparable: 0 reproduced, 0 not, 0 inconclusive; on other data: {others} (shape only)" in line
    page = (tmp_path / "report.html").read_text()
    assert '<td class="verdict other">other data</td>' in page and "td.other{" in page
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["counts"]["other data"] == others and summary["summary"] in line


def test_cost_line_sums_wall_time_and_what_shared_parents_saved() -> None:
    from bench.report.sections import cost_line

    rows = pd.DataFrame([
        {"id": "t", "wall_seconds": 600.0, "device": "cuda:0"},
        {"id": "s1", "wall_seconds": 60.0, "device": "cpu", "teacher.id": "t"},
        {"id": "s2", "wall_seconds": 60.0, "device": "cpu", "teacher.id": "t"},
        {"id": "s3", "wall_seconds": 60.0, "device": "cpu", "teacher.id": "t"},
        {"id": "f", "wall_seconds": 30.0, "device": "cpu", "teacher.id": "t", "student.id": "s1"},
    ])
    # the teacher serves 4 cells (3 students and a fine-tune): it would have run 4 times, so 3 x 600 s
    assert cost_line(rows) == ("Compute: 5 cells, 13.5 min of wall time in all (0.17 GPU-hours on CUDA); 1 shared parents "
                               "(teachers, encoders, annotations) saved about 30.0 min: each ran once for all its "
                               "dependants instead of once per dependant.")


def _verdicts(*rows: tuple[str, str, str, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["matrix", "id", "reading", "verdict"])


def test_the_gate_fails_on_a_lost_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from bench.report import verdict_gate as verdict_check
    from bench.cli import main

    base = _verdicts(("m", "p/a", "", "reproduced"), ("m", "p/b", "at 1% labels", "reproduced"),
                     ("m", "p/c", "", "inconclusive"))
    now = _verdicts(("m", "p/a", "", "reproduced"), ("m", "p/b", "at 1% labels", "inconclusive"),
                    ("m", "p/c", "", "reproduced"))
    failures, notes = verdict_check.lost(base, now)
    assert failures == ["LOST VERDICT m p/b (at 1% labels): reproduced -> inconclusive"]
    assert notes == ["newly reproduced: m p/c"]
    assert verdict_check.lost(base, now.iloc[[1, 2]])[0][0] == "LOST VERDICT m p/a: reproduced -> gone"

    path = tmp_path / "verdicts.csv"
    monkeypatch.setattr(verdict_check, "current_verdicts", lambda results: base)
    assert main(["check", str(tmp_path), "--verdicts", str(path), "--update"]) == 0
    assert verdict_check.read_verdicts(path).equals(base)
    assert main(["check", str(tmp_path), "--verdicts", str(path)]) == 0
    monkeypatch.setattr(verdict_check, "current_verdicts", lambda results: now)
    assert main(["check", str(tmp_path), "--verdicts", str(path)]) == 1
    assert "LOST VERDICT m p/b (at 1% labels)" in capsys.readouterr().out


def test_a_damaged_verdict_baseline_is_one_line(tmp_path: Path) -> None:
    from bench.errors import BenchError
    from bench.report.verdict_gate import read_verdicts

    path = tmp_path / "v.csv"
    path.write_text("matrix,id,reading,verdict\nm,p/a,,great\n")
    with pytest.raises(BenchError, match=r"v.csv: line 2, column verdict: 'great' is not a verdict"):
        read_verdicts(path)
    path.write_text("matrix,id\nm,p/a\n")
    with pytest.raises(BenchError, match="no column reading, verdict"):
        read_verdicts(path)


def test_gpu_hours_count_every_rank_of_a_data_parallel_cell() -> None:
    from bench.report.sections import cost_line

    rows = pd.DataFrame([{"id": "t", "wall_seconds": 1800.0, "device": "cuda", "ranks": 4},
                         {"id": "s", "wall_seconds": 1800.0, "device": "cuda", "ranks": 1}])
    assert "(2.50 GPU-hours on CUDA)" in cost_line(rows)  # 0.5 h on 4 GPUs + 0.5 h on 1


@pytest.mark.parametrize("content, says", [
    ("matrix,id,reading,verdict\nm,p/a,,reproduced\nm,p/a,,inconclusive\n", "line 3: reading m p/a () again, first at line 2"),
    ("matrix,id,reading,verdict\nm,p/a,x,reproduced\nm,p/a,x,reproduced\n", "line 3: reading m p/a (x) again"),
    (b"matrix,id,reading,verdict\nm,p/\xff,,reproduced\n", "not UTF-8"),
    (None, "is a folder, not a verdict baseline"),
    ("", "empty file"),
    ("matrix,id,reading,verdict\nm,p/a,reproduced\n", "line 2: 3 fields, but the header has 4"),
    ("matrix,id,reading,verdict\n,p/a,,reproduced\n", "line 2, column matrix: empty"),
    ('matrix,id,reading,verdict\nm,"p/a,,reproduced\n', "2 fields, but the header"),
    ("matrix,id,reading,verdict,verdict\nm,p/a,,reproduced,reproduced\n", "appear twice"),
])
def test_a_malformed_verdict_baseline_never_passes_the_gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys,
                                                            content: str | bytes | None, says: str) -> None:
    """A reading listed twice (reproduced, then inconclusive) must not let a lost verdict pass:
    every malformed verdict file is one line and exit 2, never OK and never a traceback."""
    from bench.report import verdict_gate as verdict_check
    from bench.cli import main

    path = tmp_path / "verdicts.csv"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    monkeypatch.setattr(verdict_check, "current_verdicts", lambda results: _verdicts(("m", "p/a", "", "inconclusive")))
    capsys.readouterr()
    assert main(["check", str(tmp_path), "--verdicts", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"bench: {path}") and says in err, err


def test_a_baseline_that_is_a_folder_is_one_line(tmp_path: Path, capsys) -> None:
    from bench.cli import main

    (tmp_path / "base.csv").mkdir()
    assert main(["check", str(tmp_path), "--baseline", str(tmp_path / "base.csv")]) == 2
    err = capsys.readouterr().err
    assert err == f"bench: {tmp_path / 'base.csv'}: is a folder, not a baseline; pass the CSV file\n"


RULES_PAPER = """paper: p
title: t
citation: c
matrix: m
figures:
  - {id: p/acc, source: s, table: T, label: acc, metric: test_acc, metric_definition: d, value: 0.70, kind: value,
     cells: {select: {stage: s}}}
  - {id: p/gain, source: s, table: T, label: gain, metric: test_acc, metric_definition: d, value: 0.05,
     kind: absolute_gain, cells: {select: {stage: s}, baseline: {stage: b}},
     transfers: {form: gain, why: "a gain over the paper's own baseline"}}
  - {id: p/raw-gain, source: s, table: T, label: raw, metric: test_acc, metric_definition: d, value: 0.05,
     kind: absolute_gain, cells: {select: {stage: s}, baseline: {stage: b}}}
"""


def _rules_rows(matrix: str) -> pd.DataFrame:
    after = [{"matrix": matrix, "stage": "s", "seed": s, "test_acc": a} for s, a in enumerate([0.700, 0.702, 0.698])]
    before = [{"matrix": matrix, "stage": "b", "seed": s, "test_acc": a} for s, a in enumerate([0.650, 0.652, 0.648])]
    return pd.DataFrame(after + before)


def test_a_stand_in_judges_only_what_transfers() -> None:
    from bench.report.figures import figure_rows, table_frame

    paper = parse_paper(RULES_PAPER, "p.yaml")
    own = table_frame(figure_rows(_rules_rows("m"), "m", paper)).set_index("id")
    assert list(own["verdict"]) == ["reproduced"] * 3  # the paper's own matrix: every reading is judged
    analog = table_frame(figure_rows(_rules_rows("analog"), "analog", paper)).set_index("id")
    # the absolute accuracy and the gain that declares no `transfers` keep their numbers but get no verdict
    assert analog.loc["p/acc", "verdict"] == "other data" and analog.loc["p/raw-gain", "verdict"] == "other data"
    assert analog.loc["p/acc", "reproduced"] == pytest.approx(70.0) and analog.loc["p/acc", "ci_low"] < 70.0
    assert analog.loc["p/gain", "verdict"] == "reproduced"
    assert analog.loc["p/gain", "transfers"] == "gain: a gain over the paper's own baseline"
    declined = RULES_PAPER.replace("form: gain, why: \"a gain", "form: none, why: \"headroom differs; a gain")
    reviewed = table_frame(figure_rows(_rules_rows("analog"), "analog", parse_paper(declined, "p.yaml"))).set_index("id")
    assert reviewed.loc["p/gain", "verdict"] == "other data"  # reviewed and found not to carry over
    assert pd.isna(analog.loc["p/acc", "seeds_needed"])  # no "to decide": more seeds would not make it comparable


def test_an_absolute_value_cannot_declare_it_transfers() -> None:
    text = RULES_PAPER.replace("kind: value,", "kind: value, transfers: {form: gain, why: w},")
    with pytest.raises(ConfigError, match="does not transfer"):
        parse_paper(text, "p.yaml")
    with pytest.raises(ConfigError, match="why"):
        parse_paper(RULES_PAPER.replace("why: \"a gain over the paper's own baseline\"", "why: ''"), "p.yaml")


def test_the_summary_line_counts_comparable_other_data_and_claims_apart() -> None:
    from bench.report.verdicts import summary_counts, summary_line

    counts = summary_counts(["reproduced", "not reproduced", "not reproduced", "inconclusive", "other data",
                             "other data", "no cells"], ["holds", "fails", "inconclusive", "inconclusive", "no cells"])
    assert summary_line(counts) == ("comparable: 1 reproduced, 2 not, 1 inconclusive; on other data: 2 (shape only); "
                                    "claims: 1 hold, 1 fail, 2 inconclusive")
