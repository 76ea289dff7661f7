"""Hostile results folders (shared, untrusted file systems): garbage baselines, broken done cells,
a corrupted mlflow.db, strict-JSON nulls. Each ends in one line that names the file or cell, the
documented exit code, and no traceback."""
from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest

from bench.cli import main
from bench.results.collect import read_cells
from bench.results.store import read_json

CLI = [sys.executable, "-c", "import sys; from bench.cli import main; sys.exit(main(sys.argv[1:]))"]
TINY = Path(__file__).resolve().parents[1] / "fixtures" / "tiny.yaml"


@pytest.fixture()
def results(tiny_results: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny results (no weights), free to damage."""
    copy = tmp_path / "results"
    shutil.copytree(tiny_results, copy, ignore=shutil.ignore_patterns("*.pt", "mlflow.db", "mlartifacts"))
    return copy


@pytest.fixture()
def baseline(results: Path, tmp_path: Path) -> Path:
    path = tmp_path / "tiny.csv"
    assert main(["check", str(results), "--baseline", str(path), "--update"]) == 0
    return path


def bench(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``bench ARGV`` in-process: (exit code, stdout, stderr), after asserting that no traceback was printed."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def only_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def cell_of(results: Path, stage: str, n_per_class: object = None) -> Path:
    for folder in sorted((results / "cells").iterdir()):
        config = read_json(folder / "config.json")
        if config["stage"] == stage and (n_per_class is None or config.get("n_per_class") == n_per_class):
            return folder
    raise AssertionError(f"no {stage} cell")


# ----------------------------------------------------------------------- 1. a garbage baseline


def edit_baseline(path: Path, line: int, column: str, value: str) -> None:
    """Set ``column`` of the record on CSV line ``line`` (header = line 1)."""
    rows = list(csv.reader(io.StringIO(path.read_text(), newline="")))
    rows[line - 1][rows[0].index(column)] = value
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    path.write_text(buffer.getvalue())


@pytest.mark.parametrize(("column", "value", "says"), [
    ("value", "abc", "'abc' is not a number"),
    ("value", "", "empty"),
    ("value", "nan", "'nan' is not a number"),
    ("value", "-5", "-5 is not an accuracy in [0, 1]"),
    ("matrix", "", "empty"),
    ("id", " ", "empty"),
    ("group", "", "empty"),
])
def test_garbage_baseline_value_fails_naming_line_and_column(
        results: Path, baseline: Path, capsys: pytest.CaptureFixture[str], column: str, value: str, says: str) -> None:
    edit_baseline(baseline, 3, column, value)
    code, out, err = bench(capsys, "check", str(results), "--baseline", str(baseline))
    assert code == 2 and "OK" not in out
    line = only_line(err)
    assert line.startswith(f"bench: {baseline}: line 3, column {column}: {says}"), line


def test_a_bad_last_row_is_found_too(results: Path, baseline: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    edit_baseline(baseline, 5, "value", "0.9x")  # the last row
    code, _, err = bench(capsys, "check", str(results), "--baseline", str(baseline))
    assert code == 2 and f"{baseline}: line 5, column value: '0.9x' is not a number" in only_line(err)


@pytest.mark.parametrize(("damage", "says"), [
    (lambda text: text + "tiny,abc\n", "line 6: 2 fields, but the header has"),
    (lambda text: text + text.splitlines()[2] + "\n", "line 6: cell tiny/"),
    (lambda text: text.splitlines()[0] + "\n", "no test_acc baseline (it has: none)"),
    (lambda text: "", "empty file, not a baseline"),
    (lambda text: text.replace(",check_metric,", ",check_metric,value,", 1), "column(s) value appear twice"),
])
def test_malformed_baseline_is_one_line_exit_2(results: Path, baseline: Path, capsys: pytest.CaptureFixture[str],
                                                damage: Callable[[str], str], says: str) -> None:
    baseline.write_text(damage(baseline.read_text()))
    code, out, err = bench(capsys, "check", str(results), "--baseline", str(baseline))
    assert code == 2 and "OK" not in out
    line = only_line(err)
    assert line.startswith(f"bench: {baseline}: ") and says in line, line


def test_update_refuses_a_cell_without_the_metric(results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cell = cell_of(results, "finetune", 5)
    result = read_json(cell / "result.json")
    result["test_acc"] = None
    (cell / "result.json").write_text(json.dumps(result))
    path = tmp_path / "new.csv"
    code, _, err = bench(capsys, "check", str(results), "--baseline", str(path), "--update")
    assert code == 2 and not path.exists()
    line = only_line(err)
    assert f"test_acc of 1 cell(s) of 'tiny' cannot be a baseline: {cell.name} (no value)" in line
    # every cell without it: choose another metric
    code, _, err = bench(capsys, "check", str(results), "--baseline", str(path), "--update", "--metric", "val_acc")
    assert code == 2 and not path.exists() and "metric val_acc is empty for every cell" in only_line(err)


def test_a_baseline_written_by_update_reads_back_with_every_group_compared(
        results: Path, baseline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench.report.gate import read_baseline

    frame = read_baseline(baseline)
    assert list(frame.index) == [2, 3, 4, 5] and frame["value"].between(0, 1).all()
    code, out, _ = bench(capsys, "check", str(results), "--baseline", str(baseline))
    assert code == 0 and "OK — 4 cells (4 configs)" in out


# ----------------------------------------------------------------------- 3. a done cell that cannot be read


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    def damage(cell: Path) -> None:
        (cell / name).write_bytes(data)
    return damage


def _remove(name: str) -> Callable[[Path], None]:
    return lambda cell: (cell / name).unlink()


def _directory(name: str) -> Callable[[Path], None]:
    def damage(cell: Path) -> None:
        (cell / name).unlink()
        (cell / name).mkdir()
    return damage


DAMAGES = {
    "result missing": (_remove("result.json"), "marked done but result.json is missing", ("DONE",)),
    "result unreadable": (_directory("result.json"), "marked done but result.json is unreadable (Is a directory)", ("DONE",)),
    "result corrupt": (_write("result.json", b'{"test_acc": 0.5,'), "marked done but result.json is corrupt JSON", ("DONE",)),
    "result truncated": (_write("result.json", b""), "marked done but result.json is corrupt JSON", ("DONE",)),
    "result a list": (_write("result.json", b"[0.5]"), "marked done but result.json is not a JSON object (it holds an array)", ("DONE",)),
    "result binary": (_write("result.json", b"\xff\xfe\x00garbage"), "marked done but result.json is not UTF-8 text", ("DONE",)),
    "result metric text": (_write("result.json", b'{"test_acc": "abc"}'), 'marked done but result.json has test_acc = "abc", not a number',
                           ("DONE",)),
    "config missing": (_remove("config.json"), "marked done but config.json is missing", ("DONE", "config.json")),
    "config corrupt": (_write("config.json", b"{nope"), "marked done but config.json is corrupt JSON", ("DONE", "config.json")),
    "config a string": (_write("config.json", b'"x"'), "marked done but config.json is not a JSON object (it holds a string)",
                        ("DONE", "config.json")),
}


@pytest.mark.parametrize("name", list(DAMAGES))
def test_broken_done_cell_is_skipped_by_collect_and_missing_for_check(
        results: Path, baseline: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    damage, says, removed = DAMAGES[name]
    cell = cell_of(results, "finetune", "all")  # a leaf: no other cell needs it
    damage(cell)
    rerun = f"rerun it with: rm -f {' '.join(str(cell / f) for f in removed)} && bench run {TINY} --results {results}"

    code, out, err = bench(capsys, "collect", str(results), "--no-mlflow")
    assert code == 0
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and warnings[0].startswith(f"bench: warning: cell {cell.name}: "), warnings
    assert says in warnings[0] and warnings[0].endswith(rerun), warnings[0]
    table = pd.read_csv(results / "results.csv", dtype={"id": str})
    assert len(table) == 3 and cell.name not in set(table["id"])  # everyone else's results are still there

    code, out, err = bench(capsys, "check", str(results), "--baseline", str(baseline))
    assert code == 1 and "OK" not in out
    missing = [line for line in out.splitlines() if "MISSING" in line]
    assert len(missing) == 1 and cell.name in missing[0] and says in missing[0] and missing[0].endswith(rerun)
    assert f"warning: cell {cell.name}: {says}" in only_line(err)


def test_report_names_the_broken_cell(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cell = cell_of(results, "student")
    (cell / "result.json").write_text("[]")
    code, out, err = bench(capsys, "report", str(results))
    assert code == 0 and str(results / "report" / "tiny" / "report.md") in out.split()
    assert f"bench: warning: cell {cell.name}: marked done but result.json is not a JSON object" in only_line(err)
    assert f"rm -f {cell / 'DONE'} && bench run {TINY} --results {results}" in err
    report = (results / "report" / "tiny" / "report.md").read_text()
    assert f"Left out, marked done but unreadable: `{cell.name}` (marked done but result.json" in report
    assert len(pd.read_csv(results / "report" / "tiny" / "cells.csv")) == 3


@pytest.mark.parametrize("command", ["collect", "report", "ingest"])
def test_a_broken_parent_config_costs_one_row_not_its_dependants(results: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    """One damaged file costs one row: the teacher whose config.json is damaged is left out with a
    warning; its student and fine-tunes stay, with the teacher's columns empty."""
    teacher = cell_of(results, "teacher")
    (teacher / "config.json").write_text("{")
    table, problems = read_cells(results)
    assert sorted(table["stage"]) == ["finetune", "finetune", "student"]
    assert list(problems) == [teacher.name] and problems[teacher.name].startswith("marked done but config.json is corrupt JSON")
    student = table[table["stage"] == "student"].iloc[0]
    assert student["teacher.id"] == teacher.name and ("teacher.arch" not in table or pd.isna(student["teacher.arch"]))
    args = [command, str(results)] + (["--no-mlflow"] if command == "collect" else [])
    code, _, err = bench(capsys, *args)
    assert code == 0 and err.count("bench: warning: cell ") == 1 and f"cell {teacher.name}: marked done but config.json" in err, err
    if command == "collect":
        assert "3 rows ->" in err
    if command == "report":
        assert len(pd.read_csv(results / "report" / "tiny" / "cells.csv")) == 3


def test_ingest_skips_a_broken_cell_and_collect_warns_once(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mlflow import MlflowClient

    cell = cell_of(results, "finetune", 5)
    (cell / "result.json").unlink()
    code, _, err = bench(capsys, "collect", str(results))  # tables, then MLflow
    assert code == 0
    assert err.count(f"bench: warning: cell {cell.name}: marked done but result.json is missing") == 1
    assert "3 created, 0 updated, 0 skipped, 1 unreadable (not ingested)" in err
    code, _, err = bench(capsys, "ingest", str(results))  # on its own it says why
    assert code == 0 and f"bench: warning: cell {cell.name}: marked done but result.json is missing" in err
    client = MlflowClient(tracking_uri=f"sqlite:///{results.resolve()}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("bench/tiny").experiment_id])
    assert len(runs) == 3 and cell.name not in {r.data.tags["bench.cell_id"] for r in runs}


# ----------------------------------------------------------------------- 4. a corrupted mlflow.db


def test_random_bytes_mlflow_db_is_one_line_after_the_tables(results: Path) -> None:
    db = results / "mlflow.db"
    db.write_bytes(bytes(range(256)) * 400)
    run = subprocess.run([*CLI, "collect", str(results)], capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 2 and "Traceback" not in run.stderr + run.stdout
    last = run.stderr.strip().splitlines()[-1]
    assert last == (f"bench: {db.resolve()}: not a usable MLflow database (file is not a database); the results are "
                    f"safe on disk: move it aside (`mv {db.resolve()} {db.resolve()}.broken`) and run "
                    f"`bench ingest {results}` to rebuild it from the results folder")
    assert len(pd.read_csv(results / "results.csv")) == 4 and (results / "results.parquet").is_file()


def test_truncated_mlflow_db_then_rebuilt_as_told(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ingest", str(results)]) == 0
    db = results / "mlflow.db"
    with db.open("r+b") as handle:
        handle.truncate(db.stat().st_size // 20)
    code, _, err = bench(capsys, "ingest", str(results))
    assert code == 2
    line = only_line(err)
    assert line.startswith(f"bench: {db.resolve()}: not a usable MLflow database (database disk image is malformed)")
    assert "move it aside" in line and f"`bench ingest {results}`" in line
    db.rename(db.with_name("mlflow.db.broken"))  # as told; then a new process (MLflow caches its store per URI)
    again = subprocess.run([*CLI, "ingest", str(results)], capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0 and "4 created, 0 updated, 0 skipped" in again.stderr


def test_a_folder_in_place_of_mlflow_db_fails_at_once(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = results / "mlflow.db"
    db.mkdir()  # sqlite would say "unable to open database file" only after MLflow's ~100 s of retries
    code, _, err = bench(capsys, "ingest", str(results))
    assert code == 2
    assert only_line(err) == (f"bench: {db.resolve()}: not a usable MLflow database (not a file); the results are safe "
                              f"on disk: move it aside (`mv {db.resolve()} {db.resolve()}.broken`) and run "
                              f"`bench ingest {results}` to rebuild it from the results folder")


# ----------------------------------------------------------------------- 5. strict JSON: null for a metric not measured


HAND_ID = "0123456789ab"
HAND_CONFIG = """{"stage": "teacher", "method": "supervised", "arch": "menghani_mlp", "pretrained": false,
 "dataset": "digits", "unlabeled": null, "unlabeled_limit": null, "image_size": 16, "protocol": "official",
 "val_fraction": 0.0, "label_fraction": 1.0, "n_per_class": null, "seed": 0, "epochs": 2, "batch_size": 64,
 "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0005, "schedule": "constant", "step_gamma": 0.1,
 "temperature": 1.0, "alpha": 0.0, "augment": [], "crop_padding": 4, "metric": "final", "deps": {}}"""
HAND_METRICS = """[
 {"epoch": 1, "epoch_seconds": 0.5, "lr": 0.05, "test_acc": 0.5, "train_acc": 0.6, "train_loss": 1.5,
  "val_acc": null, "val_loss": null, "train_images_per_s": null},
 {"epoch": 2, "epoch_seconds": 0.5, "lr": 0.05, "test_acc": 0.75, "train_acc": 0.8, "train_loss": 0.5,
  "val_acc": null, "val_loss": null, "train_images_per_s": 1000.0}
]"""
HAND_RESULT = """{"cell_id": "0123456789ab", "selection": "final", "selected_epoch": 2, "epochs_run": 2,
 "test_acc": 0.75, "train_acc": 0.8, "val_acc": null, "test_loss": 0.6, "train_loss": 0.5, "val_loss": null,
 "wall_seconds": 1.5, "train_seconds": 1.0, "train_images_per_s": 1000.0, "infer_images_per_s": null,
 "params": 31260, "flops": null, "peak_memory_mb": null, "peak_memory_kind": null,
 "device": "cpu", "device_name": "cpu", "host": "hand", "torch": "2", "cuda": null, "git_commit": null}"""


@pytest.fixture()
def hand_results(tmp_path: Path) -> Path:
    """A results folder written by hand, with strict-JSON nulls where a metric was not measured."""
    root = tmp_path / "hand"
    cell = root / "cells" / HAND_ID
    cell.mkdir(parents=True)
    for name, text in (("config.json", HAND_CONFIG), ("metrics.json", HAND_METRICS), ("result.json", HAND_RESULT),
                       ("DONE", "")):
        (cell / name).write_text(text)
    (root / "plans").mkdir()
    (root / "plans" / "hand.json").write_text(json.dumps(
        {"matrix": "hand", "source": "hand.yaml", "paper": None, "sets": [],
         "cells": [{"id": HAND_ID, "stage": "teacher", "describe": "by hand"}]}))
    return root


def test_nulls_are_nan_for_collect_check_and_report(hand_results: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = bench(capsys, "collect", str(hand_results), "--no-mlflow")
    assert code == 0 and "warning" not in err
    table = pd.read_parquet(hand_results / "results.parquet")
    assert table.loc[0, "test_acc"] == 0.75 and pd.isna(table.loc[0, "val_acc"]) and table["val_acc"].dtype == float
    assert pd.isna(table.loc[0, "flops"]) and table.loc[0, "params"] == 31260

    path = tmp_path / "hand.csv"
    assert bench(capsys, "check", str(hand_results), "--baseline", str(path), "--update")[0] == 0
    code, out, _ = bench(capsys, "check", str(hand_results), "--baseline", str(path))
    assert code == 0 and "OK — 1 cells (1 configs)" in out
    code, _, err = bench(capsys, "check", str(hand_results), "--baseline", str(path), "--update", "--metric", "val_acc")
    assert code == 2 and "metric val_acc is empty for every cell of 'hand'" in only_line(err)

    code, out, err = bench(capsys, "report", str(hand_results))
    assert code == 0 and "warning" not in err
    cells = pd.read_csv(hand_results / "report" / "hand" / "cells.csv", dtype={"id": str})
    assert cells.loc[0, "id"] == HAND_ID and cells.loc[0, "test_acc"] == 0.75 and "val_acc" not in cells


def test_a_metric_now_null_is_missing_for_check(results: Path, baseline: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cell = cell_of(results, "teacher")
    result = read_json(cell / "result.json")
    result["test_acc"] = None
    (cell / "result.json").write_text(json.dumps(result))
    code, out, _ = bench(capsys, "check", str(results), "--baseline", str(baseline))
    assert code == 1
    missing = [line for line in out.splitlines() if "MISSING" in line]
    assert len(missing) == 1 and cell.name in missing[0] and missing[0].endswith("now done, but its result.json has no test_acc")


def test_nulls_are_not_logged_to_mlflow(hand_results: Path) -> None:
    from mlflow import MlflowClient

    from bench.results.ingest import ingest

    from bench.results.tracking import EPOCH_PREFIX

    summary = ingest(hand_results)
    assert summary.created == 1
    client = MlflowClient(tracking_uri=summary.tracking_uri)
    run = client.get_run(summary.runs[("hand", HAND_ID)])
    assert run.data.metrics["test_acc"] == 0.75 and run.data.metrics["params"] == 31260
    assert not {"val_acc", "flops", "infer_images_per_s", EPOCH_PREFIX + "val_acc", EPOCH_PREFIX + "val_loss"} & set(run.data.metrics)
    history = client.get_metric_history(run.info.run_id, EPOCH_PREFIX + "test_acc")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.5), (2, 0.75)]
    speed = client.get_metric_history(run.info.run_id, EPOCH_PREFIX + "train_images_per_s")
    assert [(m.step, m.value) for m in speed] == [(2, 1000.0)]  # the null epoch is skipped, not zero


def test_a_column_of_mixed_kinds_still_writes_parquet(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cell = cell_of(results, "teacher")
    result = read_json(cell / "result.json")
    result["device_name"] = 5  # a hand-edited file: text elsewhere
    (cell / "result.json").write_text(json.dumps(result))
    assert bench(capsys, "collect", str(results), "--no-mlflow")[0] == 0
    table = pd.read_parquet(results / "results.parquet")
    assert set(table["device_name"]) == {"5", "cpu"}
