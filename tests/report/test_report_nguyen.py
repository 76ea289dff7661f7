"""nguyen2021 in reports: the analog's `stand_in:` mapping, readings per varying axis and per metric,
figures without stand-in cells, and the paper matrix's cells against the figure selectors."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.errors import ConfigError
from bench.matrix.schema import load_matrix
from bench.report.paper_figures import load_paper, select_rows
from bench.report.stand_in import check_stand_in, plan_table
from bench.matrix.plan import expand
from bench.report.build import build_report
from bench.report.targets import Target, resolve_targets, stage_axes
from bench.report.figures import figure_rows
from bench.report.paper_views import PAPER_VIEWS
from bench.report.plots import plot_accuracy_vs_classes

from tests.conftest import ROOT
ANALOG = ROOT / "matrices" / "nguyen2021-analog.yaml"
PAPER_MATRIX = ROOT / "matrices" / "nguyen2021.yaml"
NAME = "nguyen2021-analog"

# Table 1 "Cropping only" stand-in (stage augmentation, augment [crop]): test_acc per seed.
CROP = {0.01: [0.60, 0.62, 0.64], 0.1: [0.80, 0.81, 0.85]}


def _row(stage: str, seed: int, test_acc: float, **fields) -> dict:
    """A row as bench.results.collect writes it: lists as comma-joined text, parents as role.field."""
    row = {"matrix": NAME, "id": "", "stage": stage,
           "method": "linear_probe", "arch": "small_cnn", "dataset": "fashion_mnist", "unlabeled": np.nan,
           "label_fraction": 0.1, "seed": seed, "augment": "", "task_classes": np.nan, "test_acc": test_acc,
           "val_acc": test_acc, "test_agreement": np.nan, "encoder.id": "ad0af1b23abc", "encoder.stage": "pretrain",
           "encoder.method": "simclr", "encoder.arch": "small_cnn", "encoder.dataset": "fashion_mnist",
           "train_images_per_s": 1000.0, "device": "cpu"}
    row.update(fields)
    return row


def results_table() -> pd.DataFrame:
    rows = []
    for fraction, accs in CROP.items():
        rows += [_row("augmentation", seed, acc, label_fraction=fraction, augment="crop") for seed, acc in enumerate(accs)]
    # Other augmentation sets, which the crop stand-in must not pick up (one has crop in it).
    rows += [_row("augmentation", seed, 0.30, label_fraction=0.01, augment="crop,flip") for seed in range(3)]
    rows += [_row("augmentation", seed, 0.20, label_fraction=0.1, augment="flip") for seed in range(3)]
    # Table 2 students: test accuracy and agreement with the teacher.
    for stage, accs, agree in (("student_same", [0.70, 0.72, 0.74], [0.90, 0.92, 0.94]),
                               ("student_other", [0.50, 0.55, 0.60], [0.60, 0.62, 0.64])):
        rows += [_row(stage, seed, acc, method="kd", test_agreement=ag, frozen_backbone=True, head="64")
                 for seed, (acc, ag) in enumerate(zip(accs, agree))]
    # Table 4: tasks of the first k classes of two datasets.
    for dataset, base in (("fashion_mnist", 0.9), ("digits", 0.8)):
        for k in (2, 5, 10):
            rows += [_row("classes", seed, base - k / 100 + seed / 1000, dataset=dataset, task_classes=k,
                          augment="crop,flip") for seed in range(3)]
    # A cell of another matrix matching the same selector must not count.
    rows.append({**_row("augmentation", 0, 0.99, label_fraction=0.01, augment="crop"), "matrix": "other"})
    frame = pd.DataFrame(rows)
    frame["id"] = [f"{i:012x}" for i in range(len(frame))]
    return frame


def _analog_rows(table: pd.DataFrame, stand_in: dict | None = None):
    matrix = load_matrix(ANALOG)
    paper = load_paper("nguyen2021")
    mapping = check_stand_in(matrix.stand_in if stand_in is None else stand_in, str(ANALOG), paper)
    rows = figure_rows(table, NAME, paper, mapping, stage_axes(matrix.model_dump()))
    return {r.figure.id: r for r in rows}


def _target(tmp_path: Path, stand_in: dict | None = None) -> Target:
    matrix = load_matrix(ANALOG)
    return Target(NAME, tmp_path, "nguyen2021", str(ANALOG), matrix.description, [],
                  "test", dict(matrix.stand_in) if stand_in is None else stand_in, stage_axes(matrix.model_dump()))


# ----------------------------------------------------------------------------- stand-in readings


def test_stand_in_gives_one_reading_per_label_fraction() -> None:
    rows = _analog_rows(results_table())
    crop = rows["nguyen2021/table1/crop"]
    assert crop.mapping == ("nguyen2021/table1/crop", {"stage": "augmentation", "augment": [["crop"]]})
    assert [r.label for r in crop.readings] == ["at 1% labels", "at 10% labels"]
    for reading, (fraction, accs) in zip(crop.readings, CROP.items()):
        assert reading.group == {"label_fraction": fraction}
        assert reading.result["n"] == 3
        assert reading.result["mean"] == pytest.approx(np.mean(accs))
        assert reading.result["std"] == pytest.approx(np.std(accs, ddof=1))
        assert len(reading.cells) == 3 and set(reading.cells["label_fraction"]) == {fraction}
    # No figure averages the two label fractions together, nor picks up [crop, flip] or another matrix.
    assert len(crop.cells) == 6 and set(crop.cells["augment"]) == {"crop"} and set(crop.cells["matrix"]) == {NAME}
    # [flip] is done at 10% only: one reading, still named by its label fraction (the matrix's axis).
    flip = rows["nguyen2021/table1/flip"]
    assert [(r.label, r.result["n"]) for r in flip.readings] == [("at 10% labels", 3)]
    assert flip.readings[0].result["mean"] == pytest.approx(0.20)


def test_table2_shows_accuracy_and_agreement_and_table4_one_reading_per_dataset() -> None:
    rows = _analog_rows(results_table())
    same = rows["nguyen2021/table2/resnet50->resnet50"]
    assert [(r.label, r.metric) for r in same.readings] == [("test_acc", "test_acc"), ("test_agreement", "test_agreement")]
    assert [r.result["mean"] for r in same.readings] == [pytest.approx(0.72), pytest.approx(0.92)]
    other = rows["nguyen2021/table2/resnet50->vgg16"]
    assert [r.result["mean"] for r in other.readings] == [pytest.approx(0.55), pytest.approx(0.62)]
    cats = rows["nguyen2021/table4/cats_vs_dogs"]
    assert [r.label for r in cats.readings] == ["on fashion_mnist", "on digits"]
    assert [r.result["mean"] for r in cats.readings] == [pytest.approx(0.88 + 0.001), pytest.approx(0.78 + 0.001)]
    assert rows["nguyen2021/table4/dtd"].readings[0].result["mean"] == pytest.approx(0.80 + 0.001)  # 10 classes
    assert "first 2 classes" in cats.data_note and "Cats vs Dogs" in cats.data_note


def test_report_tables_read_paper_then_ours_per_reading(tmp_path: Path) -> None:
    out = tmp_path / NAME
    build_report(results_table(), _target(tmp_path), out)
    md = (out / "report.md").read_text()
    assert "| figure | unit | reported | ours at 1% labels (mean ± std, n) | Δ at 1% labels (pts) | verdict at 1% labels | " \
           "ours at 10% labels (mean ± std, n) |" in md
    # other data than ImageNet: the numbers and Δ are shown, the verdict is "other data", never reproduced or not
    assert ("| Cropping only | % | 84.00 | 62.00 ± 2.00 (n=3) | -22.00 | other data | 82.00 ± 2.65 (n=3) | -2.00 "
            "| other data |") in md
    assert "ours test_agreement (mean ± std, n)" in md and "92.00 ± 2.00 (n=3)" in md
    assert "## Stand-in mapping" in md and "{stage=student_same}" in md
    assert "no stand-in in `stand_in:` for cifar100 (100 classes), food101 (101 classes)" in md
    # The CSV: one row per (figure, reading), numbers in %.
    t1 = pd.read_csv(out / "table-1.csv")
    crop = t1[t1["id"] == "nguyen2021/table1/crop"].set_index("reading")
    assert crop.loc["at 1% labels", "reproduced"] == pytest.approx(62.0)
    assert crop.loc["at 10% labels", "reproduced"] == pytest.approx(82.0)
    assert crop.loc["at 10% labels", "reading_group"] == "label_fraction=0.1"
    assert crop.loc["at 10% labels", "stand_in"] == "{stage=augmentation, augment=[[crop]]}"
    t4 = pd.read_csv(out / "table-4.csv").set_index("id")
    assert t4.loc["nguyen2021/table4/food101", "n"] == 0 and pd.isna(t4.loc["nguyen2021/table4/food101", "reproduced"])
    for name in ("table-1.png", "table-2.png", "table-4.png"):
        assert (out / name).stat().st_size > 5000 and f"]({name})" in md


# ----------------------------------------------------------------------------- no stand-in cells


def test_a_stand_in_that_matches_no_cell_says_so(tmp_path: Path) -> None:
    stand_in = {"nguyen2021/table1/crop": {"stage": "augmentation", "augment": [["crop"]], "label_fraction": 0.5},
                "nguyen2021/table1/flip": {"stage": "augmentation", "augment": [["flip"]]}}
    rows = _analog_rows(results_table(), stand_in)
    crop = rows["nguyen2021/table1/crop"]
    assert crop.n == 0 and crop.result["n"] == 0 and math.isnan(crop.result["mean"])
    assert "matches no done cell" in crop.mapping_note and "label_fraction=0.5" in crop.mapping_note
    assert crop.data_note == crop.mapping_note
    # Mapped elsewhere: only the mapping counts, so an unmapped figure has nothing either, and says why.
    color = rows["nguyen2021/table1/color"]
    assert color.n == 0 and color.mapping is None and "maps no cells to nguyen2021/table1/color" in color.data_note
    assert rows["nguyen2021/table1/flip"].n == 3

    out = tmp_path / NAME
    build_report(results_table(), _target(tmp_path, stand_in), out)
    md = (out / "report.md").read_text()
    assert "no done cell matches the stand-in of Cropping only ({stage=augmentation, augment=[[crop]], label_fraction=0.5})" in md
    assert "no stand-in in `stand_in:` for Color distortion only" in md
    assert "left out: Table 2, Table 4" in md  # no mapped cells at all: the tables are left out, and said so


def test_bad_stand_in_sections_name_the_field() -> None:
    paper = load_paper("nguyen2021")
    with pytest.raises(ConfigError, match=r"stand_in\.nguyen2021/table9/\*.*matches no figure"):
        check_stand_in({"nguyen2021/table9/*": {"stage": "x"}}, "m.yaml", paper)
    with pytest.raises(ConfigError, match=r"stand_in\.nguyen2021/table1/crop\.no_such_field.*unknown field"):
        check_stand_in({"nguyen2021/table1/crop": {"no_such_field": 1}}, "m.yaml", paper)
    with pytest.raises(ConfigError, match=r"stand_in\.nguyen2021/table1/crop.*seed"):
        check_stand_in({"nguyen2021/table1/crop": {"stage": "augmentation", "seed": 0}}, "m.yaml", paper)
    # A glob maps every figure it matches; an exact id wins over it.
    mapping = {"nguyen2021/table1/*": {"stage": "augmentation"}, "nguyen2021/table1/none": {"stage": "augmentation", "augment": [[]]}}
    rows = _analog_rows(results_table(), mapping)
    assert rows["nguyen2021/table1/color"].mapping[0] == "nguyen2021/table1/*"
    assert rows["nguyen2021/table1/none"].mapping[0] == "nguyen2021/table1/none"
    assert rows["nguyen2021/table1/color"].readings[0].result["n"] == 3  # every augmentation cell, per label fraction


# ----------------------------------------------------------------------------- the matrices


def test_paper_matrix_cells_match_the_figure_selectors() -> None:
    """Every nguyen2021 figure selects exactly one planned cell of matrices/nguyen2021.yaml, with the
    report's own matching code (select_rows on collect-like rows), and no two figures the same cell."""
    matrix = load_matrix(PAPER_MATRIX)
    paper = load_paper("nguyen2021")
    assert paper.matrix == matrix.name
    table = plan_table(expand(matrix), matrix.name)
    chosen = {}
    for fig in paper.figures:
        rows = select_rows(table, fig.matrix, fig.cells.select)
        assert len(rows) == 1, (fig.id, len(rows))
        chosen[fig.id] = rows.iloc[0]
    assert len({row["id"] for row in chosen.values()}) == len(paper.figures)
    assert chosen["nguyen2021/table2/resnet50->vgg16"]["teacher.augment"] == "crop,flip,color"
    assert {chosen[f"nguyen2021/table4/{d}"]["batch_size"] for d in ("dtd", "food101")} == {64}
    assert chosen["nguyen2021/table1/none"]["augment"] == ""


def test_analog_stand_ins_match_its_planned_cells() -> None:
    matrix = load_matrix(ANALOG)
    paper = load_paper("nguyen2021")
    mapping = check_stand_in(matrix.stand_in, str(ANALOG), paper)
    table = plan_table(expand(matrix), matrix.name)
    counts = {glob: len(select_rows(table, matrix.name, sel)) for glob, sel in mapping.items()}
    assert all(counts[f"nguyen2021/table1/{a}"] == 6 for a in ("crop", "flip", "color", "crop+color", "crop+flip",
                                                                "crop+flip+color", "none"))  # 2 label fractions x 3 seeds
    assert counts["nguyen2021/table2/resnet50->resnet50"] == counts["nguyen2021/table2/resnet50->vgg16"] == 3
    assert all(counts[f"nguyen2021/table4/{d}"] == 6 for d in ("cats_vs_dogs", "tf_flowers", "dtd"))  # 2 datasets x 3 seeds
    # The planned ids do not depend on the stand_in section (it is data, never part of a cell).
    bare = matrix.model_copy(update={"stand_in": {}})
    assert [c.id for c in expand(bare)] == list(table["id"])


def test_a_results_folder_report_reads_stand_in_from_the_matrix_file(tmp_path: Path) -> None:
    (tmp_path / "plans").mkdir()
    plan = {"cells": [], "matrix": NAME, "paper": "nguyen2021", "sets": [], "source": str(ANALOG)}
    (tmp_path / "plans" / f"{NAME}.json").write_text(json.dumps(plan))
    (target,) = resolve_targets(str(tmp_path), None)
    assert target.stand_in["nguyen2021/table2/resnet50->vgg16"] == {"stage": "student_other"}
    assert "label_fraction" in target.stage_axes["augmentation"] and "seed" in target.stage_axes["classes"]


def test_nguyen_plots_come_from_the_registry(tmp_path: Path) -> None:
    view = PAPER_VIEWS["nguyen2021"]
    assert view.plot("Table 4")[0] is plot_accuracy_vs_classes
    assert view.plot("Table 3")[0] is PAPER_VIEWS["khose2021"].default  # a table without an entry: generic bars
    rows = list(_analog_rows(results_table()).values())
    t4 = [r for r in rows if r.figure.table == "Table 4"]
    assert plot_accuracy_vs_classes(t4, "t", tmp_path / "t4.png") == tmp_path / "t4.png"
    nothing = [r for r in _analog_rows(results_table().iloc[0:0]).values() if r.figure.table == "Table 4"]
    assert plot_accuracy_vs_classes(nothing, "t", tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
