"""The command line as a user meets it: one-line errors with exit 2, plan, run, skip, collect."""
from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.results.collect import collect
from tests.conftest import ROOT, TINY, write_matrix


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("content,field", [
    ("name: x\nstages: {t: {method: supervised, axes: {label_fraction: [2]}}}\n", "stages.t.axes.label_fraction[0]"),
    ("name: x\nstages: {s: {method: kd, needs: {teacher: nope}}}\n", "stages.s.needs.teacher"),
    ("name: x\n  bad: [\n", "line"),
])
def test_bad_matrix_is_one_line_exit_2_and_nothing_done(tmp_path: Path, content: str, field: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    result = run_cli("run", str(path), "--results", str(tmp_path / "runs"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith(f"bench: {path}: {field}")
    assert not (tmp_path / "runs" / "cells").exists()


def test_missing_matrix_file(tmp_path: Path) -> None:
    result = run_cli("plan", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2 and result.stderr.strip() == f"bench: {tmp_path / 'nope.yaml'}: no such matrix file"


def test_missing_dataset_fails_with_where_to_get_it_and_marks_nothing_done(tmp_path: Path) -> None:
    matrix = write_matrix(tmp_path, {"name": "c", "defaults": {"dataset": "cifar10", "epochs": 1},
                                     "stages": {"t": {"method": "supervised", "axes": {"arch": ["menghani_mlp"]}}}})
    result = run_cli("run", str(matrix), "--results", str(tmp_path / "runs"), "--data-root", str(tmp_path / "empty"))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert "cifar10" in message and str(tmp_path / "empty") in message and "prefetch" in message
    assert not list((tmp_path / "runs").glob("cells/*/DONE"))


def test_pretrained_weights_offline_fail_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    matrix = write_matrix(tmp_path, {"name": "p", "defaults": {"dataset": "digits", "epochs": 1, "pretrained": True},
                                     "stages": {"t": {"method": "supervised", "axes": {"arch": ["resnet18"]}}}})
    env_home = tmp_path / "hf"
    result = subprocess.run([sys.executable, "-m", "bench.cli", "run", str(matrix), "--results", str(tmp_path / "runs")],
                            capture_output=True, text=True, cwd=ROOT,
                            env={**__import__("os").environ, "HF_HOME": str(env_home), "TORCH_HOME": str(env_home)})
    assert result.returncode == 2, result.stderr
    assert "resnet18" in result.stderr and "bench prefetch" in result.stderr and "Traceback" not in result.stderr


def test_plan_prints_cells_and_counts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(ROOT / "matrices" / "demo.yaml")]) == 0
    out = capsys.readouterr().out
    assert "demo: 42 cells (teacher 6, student 12, finetune 24)" in out
    assert "n=all" in out and "teacher:" in out


def tiny_copy(tiny_results: Path, tmp_path: Path) -> Path:
    """A private copy of the session's tiny results, for a test that writes into its folder."""
    return Path(shutil.copytree(tiny_results, tmp_path / "runs"))


def test_rerun_skips_done_cells_and_collect_writes_tables(tiny_results: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tiny_copy(tiny_results, tmp_path)
    capsys.readouterr()
    assert main(["run", str(TINY), "--results", str(results)]) == 0
    err = capsys.readouterr().err
    assert err.count(": already done") == 4
    assert main(["collect", str(results)]) == 0
    table = pd.read_parquet(results / "results.parquet")
    assert len(table) == 4 and set(table.stage) == {"teacher", "student", "finetune"}
    for column in ("id", "arch", "label_fraction", "seed", "lr", "epochs", "test_acc", "train_acc", "wall_seconds",
                   "train_images_per_s", "infer_images_per_s", "params", "teacher.arch"):
        assert column in table, column
    assert pd.read_csv(results / "results.csv").shape == table.shape
    umask = os.umask(0)
    os.umask(umask)
    for path in (results / "results.csv", next((results / "cells").glob("*/result.json"))):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # readable by colleagues as the umask allows


def plan_rows(out: str) -> dict[str, list[str]]:
    """Cell id -> its row of `bench plan`'s table."""
    rows = (line.split() for line in out.splitlines())
    return {row[0]: row for row in rows if row and re.fullmatch(r"[0-9a-f]{12}", row[0])}


def test_only_selects_a_cell_and_what_it_needs(capsys: pytest.CaptureFixture[str]) -> None:
    demo = str(ROOT / "matrices" / "demo.yaml")
    assert main(["plan", demo]) == 0
    rows = plan_rows(capsys.readouterr().out)
    finetune = next(cell for cell, row in rows.items() if row[1] == "finetune")
    needs = {field.split(":")[1] for field in rows[finetune] if ":" in field}  # student:<id> teacher:<id>
    assert main(["plan", demo, "--only", finetune[:8]]) == 0  # the first characters of an id
    out = capsys.readouterr().out
    assert set(plan_rows(out)) == {finetune, *needs} and len(needs) == 2
    assert "demo: 3 cells (teacher 1, student 1, finetune 1)" in out
    assert main(["plan", demo, "--only", "blind"]) == 0
    assert "demo: 18 cells (teacher 6, student 12)" in capsys.readouterr().out


def test_a_set_variant_keeps_its_own_plan(tiny_results: Path, tmp_path: Path) -> None:
    results = tiny_copy(tiny_results, tmp_path)
    assert main(["run", str(TINY), "--results", str(results), "--set", "epochs=1"]) == 0
    plans = sorted(p.stem for p in (results / "plans").glob("*.json"))
    assert plans[0] == "tiny" and plans[1].startswith("tiny@") and len(plans) == 2
    table = collect(results)
    assert (table.matrix == "tiny").sum() == 4 and table.matrix.str.startswith("tiny@").sum() == 4
    assert set(table[table.matrix == "tiny"].epochs) == {3}


def test_a_closed_pipe_ends_the_output_quietly(tmp_path: Path) -> None:
    """`bench plan M | head -1`: the reader leaves early; bench stops without a traceback. The plan
    (2,000 cells, ~200 KB) is larger than a pipe holds, so bench is still writing when it closes."""
    matrix = write_matrix(tmp_path, {"name": "wide", "defaults": {"dataset": "digits", "epochs": 1},
                                     "axes": {"seed": list(range(2000))},
                                     "stages": {"teacher": {"method": "supervised", "set": {"arch": "menghani_mlp"}}}})
    with subprocess.Popen([sys.executable, "-m", "bench", "plan", str(matrix)], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline()
        process.stdout.close()  # as head does after its line
        stderr = process.stderr.read().decode()
    assert b"stage" in first
    assert process.returncode == 141 and stderr == ""


CANCEL_MATRIX = {
    "name": "cancel-me",
    "defaults": {"dataset": "digits", "image_size": 8, "label_fraction": 0.5, "epochs": 1},
    "stages": {
        "teacher": {"method": "supervised", "axes": {"arch": ["menghani_cnn"]}},
        "student": {"method": "kd", "needs": {"teacher": "teacher"}, "axes": {"arch": ["menghani_mlp", "wide_mlp"]}},
    },
}


def test_cancel_only_stops_the_matched_cells_jobs_and_never_a_packed_neighbour_unasked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """SLURM cancels whole jobs: `--only` one student of a job of two leaves the job queued and
    says why (`--whole-jobs` cancels it), and a student's teacher is never cancelled with it."""
    import time

    import bench.executors.slurm as slurm
    from bench.commands import cluster
    from bench.matrix.schema import load_matrix
    from bench.matrix.plan import expand

    matrix = write_matrix(tmp_path, CANCEL_MATRIX)
    cells = {c.config.arch: c.id for c in expand(load_matrix(matrix))}
    students = [cells["menghani_mlp"], cells["wide_mlp"]]
    jobs = {cells["menghani_cnn"]: ("RUNNING", slurm.JobRecord("10", "f", time.time(), [])),
            **{s: ("PENDING", slurm.JobRecord("11", "f", time.time(), students)) for s in students}}
    monkeypatch.setattr(slurm, "job_states", lambda store, ids: {i: jobs[i] for i in ids if i in jobs})
    cancelled: list[list[str]] = []
    monkeypatch.setattr(cluster.subprocess, "run", lambda argv, **_: cancelled.append(argv[1:]) or subprocess.CompletedProcess(argv, 0, "", ""))
    args = ["cancel", str(matrix), "--results", str(tmp_path / "runs")]

    assert main([*args, "--only", students[0]]) == 0
    out = capsys.readouterr().out
    assert cancelled == [] and "job 11 left queued" in out and students[1] in out and "--whole-jobs" in out
    assert main([*args, "--only", students[0], "--whole-jobs"]) == 0
    assert cancelled == [["11"]] and students[1] in capsys.readouterr().out
    assert main([*args, "--only", "student"]) == 0  # both of job 11's cells: cancelled, their running teacher not
    assert cancelled[-1] == ["11"]
    assert main(args) == 0
    assert cancelled[-1] == ["10", "11"]
