"""bench check: a baseline written with --update passes; regressions and missing cells fail."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench.report.gate import compare, group_key
from bench.cli import main
from bench.results.store import atomic_write_json, read_json

TINY = Path(__file__).resolve().parents[1] / "fixtures" / "tiny.yaml"


@pytest.fixture(scope="session")
def tiny_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny-check") / "results"
    assert main(["run", str(TINY), "--results", str(root)]) == 0
    return root


@pytest.fixture()
def results(tiny_results: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny results, free to edit."""
    copy = tmp_path / "results"
    shutil.copytree(tiny_results, copy)
    return copy


@pytest.fixture()
def baseline(results: Path, tmp_path: Path) -> Path:
    path = tmp_path / "baselines" / "tiny.csv"
    assert main(["check", str(results), "--baseline", str(path), "--update"]) == 0
    return path


def _cells(results: Path) -> dict[str, dict]:
    """cell id -> config of every cell of the tiny results."""
    return {p.name: read_json(p / "config.json") for p in (results / "cells").iterdir()}


def _cell(results: Path, stage: str, n_per_class: object = None) -> Path:
    for cell_id, config in _cells(results).items():
        if config["stage"] == stage and (n_per_class is None or config.get("n_per_class") == n_per_class):
            return results / "cells" / cell_id
    raise AssertionError(f"no {stage} cell")


def _shift(cell: Path, delta: float) -> None:
    result = read_json(cell / "result.json")
    result["test_acc"] += delta
    atomic_write_json(cell / "result.json", result)


def test_update_writes_baseline_then_check_passes(results: Path, baseline: Path, capsys: pytest.CaptureFixture) -> None:
    frame = pd.read_csv(baseline, dtype={"id": str})
    assert len(frame) == 4 and set(frame["matrix"]) == {"tiny"}
    assert {"matrix", "id", "stage", "arch", "seed", "teacher.arch", "metric", "value", "n"} <= set(frame.columns)
    assert set(frame["id"]) == set(_cells(results))
    assert (frame["check_metric"] == "test_acc").all() and (frame["metric"] == "final").all() and (frame["n"] == 1).all()
    teacher = _cell(results, "teacher").name
    assert frame.set_index("id").loc[teacher, "value"] == pytest.approx(read_json(results / "cells" / teacher / "result.json")["test_acc"])
    capsys.readouterr()
    assert main(["check", str(results), "--baseline", str(baseline)]) == 0
    out = capsys.readouterr().out
    assert "OK" in out and "4 cells" in out


def test_worse_result_fails_and_names_the_cell(results: Path, baseline: Path, capsys: pytest.CaptureFixture) -> None:
    worse = _cell(results, "finetune", 5)
    _shift(worse, -0.2)
    capsys.readouterr()
    assert main(["check", str(results), "--baseline", str(baseline)]) == 1
    out = capsys.readouterr().out
    regressed = [line for line in out.splitlines() if "REGRESSED" in line]
    assert len(regressed) == 1 and worse.name in regressed[0]
    assert "delta -0.2000" in regressed[0]
    assert "MISSING" not in out


def test_missing_cell_fails(results: Path, baseline: Path, capsys: pytest.CaptureFixture) -> None:
    gone = _cell(results, "finetune", "all")
    (gone / "DONE").unlink()
    capsys.readouterr()
    assert main(["check", str(results), "--baseline", str(baseline)]) == 1
    out = capsys.readouterr().out
    missing = [line for line in out.splitlines() if "MISSING" in line]
    assert len(missing) == 1 and gone.name in missing[0]


def test_tolerance_is_respected(results: Path, baseline: Path, capsys: pytest.CaptureFixture) -> None:
    cell = _cell(results, "teacher")
    _shift(cell, -0.01)
    assert main(["check", str(results), "--baseline", str(baseline), "--tolerance", "0.02"]) == 0
    assert main(["check", str(results), "--baseline", str(baseline), "--tolerance", "0.005"]) == 1
    assert cell.name in capsys.readouterr().out


def test_improvement_is_a_note_not_a_failure(results: Path, baseline: Path, capsys: pytest.CaptureFixture) -> None:
    cell = _cell(results, "student")
    _shift(cell, +0.1)
    capsys.readouterr()
    assert main(["check", str(results), "--baseline", str(baseline)]) == 0
    out = capsys.readouterr().out
    assert "improved" in out and cell.name in out


def test_missing_baseline_is_a_one_line_user_error(results: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["check", str(results), "--baseline", str(tmp_path / "nope.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--update" in err


# ----------------------------------------------------------------------- over seeds (no training)


def _table(values: dict[int, float], stage: str = "teacher") -> pd.DataFrame:
    return pd.DataFrame([{"matrix": "m", "id": f"{stage}{seed}", "stage": stage, "method": "supervised", "arch": "a",
                          "dataset": "digits", "seed": seed, "test_acc": value} for seed, value in values.items()])


def test_seeds_of_one_config_share_a_group() -> None:
    table = _table({0: 0.5, 1: 0.6})
    columns = ["stage", "method", "arch", "dataset", "seed"]
    keys = {group_key(row, columns) for _, row in table.iterrows()}
    assert len(keys) == 1
    other = _table({0: 0.5}, stage="student")
    assert group_key(other.iloc[0], columns) not in keys


def _baseline(table: pd.DataFrame) -> pd.DataFrame:
    from bench.report.gate import build_baseline

    return build_baseline(table, "m", "test_acc")


def test_mean_over_seeds_with_standard_error_allowance() -> None:
    # Baseline seeds 0.80 / 0.90: mean 0.85, std 0.0707, n 2. Same spread now, so the allowance is
    # 0.02 + 2 * sqrt(2 * 0.005 / 2) = 0.02 + 0.1414 = 0.1614.
    base = _baseline(_table({0: 0.80, 1: 0.90}))
    assert list(base["n"]) == [2, 2]
    within = compare(base, _table({0: 0.70, 1: 0.80}), "test_acc", 0.02)      # mean drop 0.10
    assert within["failures"] == [] and len(within["checked"]) == 1
    beyond = compare(base, _table({0: 0.62, 1: 0.72}), "test_acc", 0.02)      # mean drop 0.18
    assert len(beyond["failures"]) == 1 and "REGRESSED" in beyond["failures"][0]
    assert "teacher0" in beyond["failures"][0] and "teacher1" in beyond["failures"][0]
    # A single seed on each side: the allowance is just the tolerance.
    single = _baseline(_table({0: 0.80}))
    assert compare(single, _table({0: 0.785}), "test_acc", 0.02)["failures"] == []
    assert len(compare(single, _table({0: 0.775}), "test_acc", 0.02)["failures"]) == 1


def test_new_seeds_missing_from_the_baseline_cannot_hide_a_regression() -> None:
    base = _baseline(_table({0: 0.80}))
    now = _table({0: 0.70, 1: 0.83, 2: 0.83, 3: 0.83, 4: 0.83})  # seed 0 regressed; seeds 1-4 are new
    result = compare(base, now, "test_acc", 0.02)
    assert len(result["failures"]) == 1 and "REGRESSED" in result["failures"][0] and "teacher0" in result["failures"][0]
    assert any("not in the baseline" in note for note in result["notes"])


# ----------------------------------------------------------------------- a config field added later


def test_a_config_column_added_later_still_compares_every_group(results: Path, baseline: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture) -> None:
    """A new field with a neutral default keeps the cell ids, but gives RESULTS a config column the
    baseline lacks (so a group recomputed from RESULTS would match no baseline group)."""
    import bench.results.collect
    import bench.matrix.config

    read_cells = bench.results.collect.read_cells

    def with_new_field(root: Path) -> tuple[pd.DataFrame, dict[str, str]]:
        table, unreadable = read_cells(root)
        return table.assign(label_smoothing=0.0, **{"teacher.label_smoothing": 0.0}), unreadable

    monkeypatch.setattr(bench.matrix.config, "FIELD_NAMES", (*bench.matrix.config.FIELD_NAMES, "label_smoothing"))
    monkeypatch.setattr(bench.results.collect, "read_cells", with_new_field)
    capsys.readouterr()
    assert main(["check", str(results), "--baseline", str(baseline)]) == 0
    assert "OK — 4 cells (4 configs)" in capsys.readouterr().out
    worse = _cell(results, "student")
    _shift(worse, -0.2)
    assert main(["check", str(results), "--baseline", str(baseline)]) == 1
    regressed = [line for line in capsys.readouterr().out.splitlines() if "REGRESSED" in line]
    assert len(regressed) == 1 and worse.name in regressed[0]


def test_compare_never_passes_on_nothing() -> None:
    base = _baseline(_table({0: 0.80}))
    result = compare(base.iloc[0:0], _table({0: 0.80}), "test_acc", 0.02)
    assert result["checked"] == [] and len(result["failures"]) == 1 and "NOTHING" in result["failures"][0]
    # a table without the metric column at all: MISSING, not skipped
    result = compare(base, _table({0: 0.80}).drop(columns="test_acc"), "test_acc", 0.02)
    assert result["checked"] == [] and len(result["failures"]) == 1
    assert result["failures"][0].startswith("MISSING   m/teacher0") and "has no test_acc" in result["failures"][0]
