"""Reported paper figures: the YAML files validate, and reproduce() computes what a report shows."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from bench.errors import BenchError, ConfigError
from bench.report.paper_figures import Figure, all_papers, figures_for_matrix, load_paper, parse_paper, reproduce, select_rows

PAPERS = ("khose2021", "menghani2019", "nguyen2021", "radosavovic2018")


def _row(matrix: str, select: dict, seed: int, **metrics: float) -> dict:
    return {"matrix": matrix, **select, "seed": seed, **metrics}


def _figure(kind: str = "value", baseline: dict | None = None, value: float = 0.5, **select) -> Figure:
    cells = {"select": select or {"stage": "student", "arch": "s"}}
    if baseline is not None:
        cells["baseline"] = baseline
    return Figure.model_validate(
        {
            "id": "demo/x", "source": "Table 0", "table": "Table 0", "label": "x", "metric": "test_acc",
            "metric_definition": "not stated", "value": value, "kind": kind, "matrix": "demo", "cells": cells,
        }
    )


# ----------------------------------------------------------------------------- the data files


def test_all_papers_load_and_validate() -> None:
    papers = all_papers()
    assert [p.paper for p in papers] == list(PAPERS)
    for paper in papers:
        assert paper.figures or paper.claims, paper.paper
        assert load_paper(paper.paper) == paper
        assert all(fig.matrix == paper.matrix for fig in paper.figures)


def test_figure_ids_are_unique_and_prefixed() -> None:
    ids = [fig.id for paper in all_papers() for fig in paper.figures]
    assert len(ids) == len(set(ids))
    for paper in all_papers():
        assert all(fig.id.startswith(paper.paper + "/") for fig in paper.figures)


def test_every_value_is_in_range() -> None:
    for paper in all_papers():
        for fig in paper.figures:
            if fig.kind == "value":
                assert 0.0 <= fig.value <= 1.0, fig.id
            elif fig.kind == "absolute_gain":
                assert -1.0 <= fig.value <= 1.0, fig.id
            else:
                assert -1.0 < fig.value < 1.0, fig.id  # a fraction, never a percentage
            assert fig.metric_definition.strip(), fig.id
            assert (fig.cells.baseline is None) == (fig.kind == "value"), fig.id


def test_expected_coverage() -> None:
    menghani = load_paper("menghani2019")
    tables = pd.Series([fig.table for fig in menghani.figures]).value_counts().to_dict()
    assert tables == {"Table 1": 12, "Table 2": 3, "Table 3": 6, "Table 4": 6}
    # Table 4's n=20 / n=60 columns are placeholders in the paper and must not be recorded.
    assert not [f for f in menghani.figures if f.table == "Table 4" and f.cells.select.get("n_per_class") in (20, 60)]
    assert menghani.figure("menghani2019/table1/cnn->mlp/finetune").value == 0.9816
    assert menghani.figure("menghani2019/table1/cnn->mlp/finetune").cells.select["n_per_class"] == "all"

    khose = load_paper("khose2021")
    gain = khose.figure("khose2021/sec4.1/mnet->mnet/10/val_gain")
    assert (gain.kind, gain.value) == ("relative_gain", 0.0937)
    assert khose.figure("khose2021/sec4.2/enet->mnet/25/val_gain").value == -0.0409

    nguyen = load_paper("nguyen2021")
    assert {f.table for f in nguyen.figures} == {"Table 1", "Table 2", "Table 4"}
    assert sorted(tuple(f.cells.select["augment"][0]) for f in nguyen.figures if f.table == "Table 1") == sorted(
        [("crop",), ("flip",), ("color",), ("crop", "color"), ("crop", "flip"), ("crop", "flip", "color"), ()]
    )


def test_figures_for_matrix() -> None:
    khose = figures_for_matrix("khose2021")
    assert khose and all(fig.id.startswith("khose2021/") for fig in khose)
    assert len(figures_for_matrix("menghani2019")) == len(load_paper("menghani2019").figures)
    assert figures_for_matrix("no-such-matrix") == []


def test_unknown_paper_is_a_bench_error() -> None:
    with pytest.raises(BenchError, match="no-such-paper"):
        load_paper("no-such-paper")
    with pytest.raises(BenchError, match="known: khose2021"):
        load_paper("../papers/khose2021")


# ----------------------------------------------------------------------------- validation errors

GOOD = """
paper: demo
title: A demo paper
citation: Nobody. 2024.
matrix: demo
figures:
  - id: demo/t1/a
    source: Table 1, row 1
    table: Table 1
    label: a
    metric: test_acc
    metric_definition: not stated
    value: 0.5
    kind: value
    cells:
      select: {stage: teacher, arch: resnet18}
"""


def test_good_yaml_parses_and_inherits_the_matrix() -> None:
    paper = parse_paper(GOOD)
    assert paper.figures[0].matrix == "demo"


def test_unknown_key_raises_naming_the_field() -> None:
    bad = GOOD.replace("    kind: value\n", "    kind: value\n    colour: red\n")
    with pytest.raises(ConfigError, match=r"figures\.0\.colour: unknown field") as err:
        parse_paper(bad, "demo.yaml")
    assert isinstance(err.value, BenchError)
    assert err.value.field == "figures.0.colour"
    assert "demo.yaml" in str(err.value)


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("value: 0.5", "value: 50.0", "figures.0"),  # a percentage, not a fraction
        ("kind: value", "kind: relative_gain", "figures.0"),  # a gain without a baseline
        ("metric: test_acc", "metric: top1", "figures.0.metric"),
        ("{stage: teacher, arch: resnet18}", "{stage: teacher, seed: 0}", "figures.0.cells.select"),
        ("{stage: teacher, arch: resnet18}", "{stage: teacher, flag: null}", "figures.0.cells.select"),
        ("{stage: teacher, arch: resnet18}", "{stage: teacher, augment: []}", "figures.0.cells.select"),
        ("{stage: teacher, arch: resnet18}", "{stage: teacher, augment: [[[crop]]]}", "figures.0.cells.select"),
        ("    source: Table 1, row 1\n", "", "figures.0.source"),
    ],
)
def test_invalid_figures_name_the_field(old: str, new: str, field: str) -> None:
    assert old in GOOD
    with pytest.raises(ConfigError) as err:
        parse_paper(GOOD.replace(old, new), "demo.yaml")
    assert err.value.field.startswith(field), str(err.value)


def test_duplicate_ids_are_rejected() -> None:
    figure = GOOD[GOOD.index("  - id:"):]
    with pytest.raises(ConfigError, match="appears twice"):
        parse_paper(GOOD + figure)


# ----------------------------------------------------------------------------- reproduce()


def test_relative_gain_from_two_rows_is_exact() -> None:
    fig = load_paper("khose2021").figure("khose2021/sec4.1/mnet->mnet/10/val_gain")
    table = pd.DataFrame(
        [
            _row("khose2021", fig.cells.select, 0, val_acc=0.5073),
            _row("khose2021", fig.cells.baseline, 0, val_acc=0.4638),
        ]
    )
    out = reproduce(fig, table)
    assert out["mean"] == (0.5073 - 0.4638) / 0.4638
    assert out["mean"] == pytest.approx(0.093790, abs=1e-6)
    assert (out["n"], out["paired"], out["reported"]) == (1, True, 0.0937) and math.isnan(out["std"])  # one seed: no std


def test_gain_is_paired_per_seed() -> None:
    fig = _figure("absolute_gain", baseline={"stage": "teacher", "arch": "t"}, value=0.1)
    rows = [_row("demo", {"stage": "student", "arch": "s"}, seed, test_acc=acc) for seed, acc in [(0, 0.7), (1, 0.8), (2, 0.9)]]
    rows += [_row("demo", {"stage": "teacher", "arch": "t"}, seed, test_acc=acc) for seed, acc in [(0, 0.6), (1, 0.6), (3, 0.1)]]
    out = reproduce(fig, pd.DataFrame(rows))
    gains = [0.7 - 0.6, 0.8 - 0.6]  # only seeds 0 and 1 are on both sides
    assert out["n"] == 2 and out["paired"] is True
    assert out["mean"] == pytest.approx(sum(gains) / 2)
    assert out["std"] == pytest.approx(pd.Series(gains).std(ddof=1))


def test_gain_falls_back_to_means_without_common_seeds() -> None:
    fig = _figure("relative_gain", baseline={"stage": "teacher", "arch": "t"}, value=0.1)
    rows = [_row("demo", {"stage": "student", "arch": "s"}, s, test_acc=a) for s, a in [(1, 0.6), (2, 0.8)]]
    rows += [_row("demo", {"stage": "teacher", "arch": "t"}, 0, test_acc=0.5)]
    out = reproduce(fig, pd.DataFrame(rows))
    assert out["mean"] == pytest.approx((0.7 - 0.5) / 0.5)
    assert (out["n"], out["std"], out["paired"], out["n_select"], out["n_baseline"]) == (1, 0.0, False, 2, 1)


def test_value_is_mean_std_n_over_seeds() -> None:
    fig = _figure(stage="finetune", n_per_class="all", label_fraction=0.1)
    select = {"stage": "finetune", "n_per_class": "all", "label_fraction": 1 / 10}
    rows = [_row("demo", select, s, test_acc=a) for s, a in [(0, 0.9), (1, 0.8), (2, 0.7)]]
    rows.append(_row("demo", {**select, "n_per_class": 10}, 0, test_acc=0.1))  # other cell
    rows.append(_row("other", select, 0, test_acc=0.1))  # other matrix
    rows.append(_row("demo", select, 3, test_acc=float("nan")))  # a failed run has no metric
    out = reproduce(fig, pd.DataFrame(rows))
    assert out["n"] == 3
    assert out["mean"] == pytest.approx(0.8)
    assert out["std"] == pytest.approx(0.1)
    one = reproduce(fig, pd.DataFrame(rows[:1]))
    assert (one["n"], one["mean"]) == (1, 0.9) and math.isnan(one["std"])


def test_numbers_compare_as_floats_and_strings_as_strings() -> None:
    table = pd.DataFrame(
        {
            "matrix": ["demo"] * 4,
            "n_per_class": [10, "10", "all", None],
            "label_fraction": [0.1, 0.30000000000000004, 0.3, 1.0],
        }
    )
    assert list(select_rows(table, "demo", {"n_per_class": 10}).index) == [0, 1]
    assert list(select_rows(table, "demo", {"n_per_class": "all"}).index) == [2]
    assert list(select_rows(table, "demo", {"n_per_class": ""}).index) == [3]
    assert list(select_rows(table, "demo", {"label_fraction": 0.3}).index) == [1, 2]
    assert list(select_rows(table, "demo", {"n_per_class": 10.0}).index) == [0, 1]
    assert select_rows(table, "demo", {"absent": 1}).empty


def test_lists_and_bools_match_like_cell_fields() -> None:
    table = pd.DataFrame(
        {
            "matrix": ["demo"] * 7,
            # as a planner cell holds it, a tuple, collect's comma-joined text, a Python repr, empties
            "augment": [["crop", "flip"], ("flip", "crop"), [], "['crop', 'flip']", "crop", "flip,crop", None],
            "pretrained": [True, False, True, "true", 1, False, False],
        }
    )
    assert list(select_rows(table, "demo", {"augment": [["crop", "flip"]]}).index) == [0, 1, 3, 5]
    assert list(select_rows(table, "demo", {"augment": [["crop"]]}).index) == [4]
    assert list(select_rows(table, "demo", {"augment": [[]]}).index) == [2, 6]
    # one selector language with the matrices: a list is any of its items
    assert list(select_rows(table, "demo", {"augment": [["crop"], []]}).index) == [2, 4, 6]
    assert list(select_rows(table, "demo", {"pretrained": True}).index) == [0, 2, 3]


def test_missing_cell_gives_n_zero() -> None:
    fig = load_paper("menghani2019").figure("menghani2019/table1/cnn->mlp/finetune")
    table = pd.DataFrame([_row("menghani2019", {**fig.cells.select, "teacher.arch": "menghani_mlp"}, 0, test_acc=0.9)])
    out = reproduce(fig, table)
    assert out["n"] == 0 and math.isnan(out["mean"])
    # a column the selection needs is missing: no match either
    assert reproduce(fig, table.drop(columns=["student.method"]))["n"] == 0
    # the metric column is missing
    assert reproduce(fig, pd.DataFrame([_row("menghani2019", fig.cells.select, 0, val_acc=0.9)]))["n"] == 0
    # an empty table
    assert reproduce(fig, pd.DataFrame())["n"] == 0
    gain = load_paper("menghani2019").figure("menghani2019/sec6/caltech256/finetune-vs-teacher")
    only_after = pd.DataFrame([_row("menghani2019", gain.cells.select, 0, test_acc=0.76)])
    out = reproduce(gain, only_after)
    assert out["n"] == 0 and out["n_select"] == 1 and out["n_baseline"] == 0
