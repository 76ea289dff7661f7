"""A cell killed with SIGKILL at any moment leaves nothing half-written, and resumes exactly."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import write_matrix

MATRIX = {
    "name": "resume",
    "defaults": {"dataset": "digits", "image_size": 16, "protocol": "official", "val_fraction": 0.1,
                 "epochs": 5, "lr": 0.05, "batch_size": 32, "augment": ["crop", "flip"], "crop_padding": 1},
    "axes": {"seed": [3]},
    "stages": {
        "teacher": {"method": "supervised", "axes": {"arch": ["menghani_cnn"]}},
        "student": {"method": "kd", "needs": {"teacher": "teacher"}, "set": {"epochs": 3},
                    "axes": {"arch": ["menghani_cnn"]}},
    },
}
TIMING = {"train_images_per_s", "epoch_seconds"}


def bench(matrix: Path, results: Path, *more: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.cli", "run", str(matrix), "--results", str(results), *more],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def epochs_done(results: Path, stage: str) -> int:
    for config in (results / "cells").glob("*/config.json"):
        if json.loads(config.read_text())["stage"] == stage and (config.parent / "metrics.json").exists():
            return len(json.loads((config.parent / "metrics.json").read_text()))
    return 0


def kill_when(process: subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, "run ended before it could be killed"
        assert time.monotonic() < deadline, "timed out waiting for progress"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()


def metrics_of(results: Path) -> dict[str, list[dict[str, float]]]:
    out = {}
    for cell in sorted((results / "cells").iterdir()):
        rows = json.loads((cell / "metrics.json").read_text())
        out[cell.name] = [{k: v for k, v in row.items() if k not in TIMING} for row in rows]
    return out


def test_sigkill_then_rerun_gives_the_same_metrics_as_an_uninterrupted_run(tmp_path: Path) -> None:
    matrix = write_matrix(tmp_path, MATRIX)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert bench(matrix, reference).wait() == 0

    run = bench(matrix, killed)
    kill_when(run, lambda: epochs_done(killed, "teacher") >= 2)
    cells = list((killed / "cells").iterdir())
    assert cells and not any((c / "DONE").exists() for c in cells)
    assert not any((c / "result.json").exists() for c in cells)
    torch.load(next(c for c in cells if (c / "checkpoint.pt").exists()) / "checkpoint.pt", weights_only=False)  # loads whole

    run = bench(matrix, killed)  # resumes the teacher, then is killed inside the student
    kill_when(run, lambda: epochs_done(killed, "student") >= 1)

    assert bench(matrix, killed).wait() == 0
    assert metrics_of(killed) == metrics_of(reference)
    for cell in (killed / "cells").iterdir():
        assert (cell / "DONE").exists()
        ours, theirs = (json.loads((r / "cells" / cell.name / "result.json").read_text()) for r in (killed, reference))
        for key in ("test_acc", "val_acc", "train_acc", "selected_epoch"):
            assert ours[key] == theirs[key], key
    assert "resuming from epoch" in "".join(p.read_text() for p in (killed / "cells").glob("*/log.txt"))


def test_kill_after_the_last_checkpoint_but_before_metrics_and_done(tmp_path: Path) -> None:
    """The narrowest window: every epoch checkpointed, metrics.json one epoch behind, no result."""
    matrix = write_matrix(tmp_path, {**MATRIX, "stages": {"teacher": MATRIX["stages"]["teacher"]}, "defaults": {**MATRIX["defaults"], "epochs": 2}})
    results = tmp_path / "runs"
    assert bench(matrix, results, "--keep-checkpoints").wait() == 0  # as a kill before DONE would leave it
    cell = next((results / "cells").iterdir())
    complete = json.loads((cell / "metrics.json").read_text())
    result = json.loads((cell / "result.json").read_text())
    for name in ("DONE", "result.json", "model.pt"):
        (cell / name).unlink()
    (cell / "metrics.json").write_text(json.dumps(complete[:-1]))
    leftover = cell / ".checkpoint.pt.abc123.tmp"  # what a kill inside an atomic write leaves
    leftover.write_bytes(b"partial")
    assert bench(matrix, results).wait() == 0
    assert not leftover.exists()
    assert json.loads((cell / "metrics.json").read_text()) == complete
    again = json.loads((cell / "result.json").read_text())
    assert (cell / "DONE").exists() and again["test_acc"] == result["test_acc"] and again["selected_epoch"] == 2



def test_best_val_selects_the_earliest_of_tied_epochs_and_never_test() -> None:
    from bench.training.engine import select_epoch

    rows = [{"epoch": e, "val_acc": v, "test_acc": t} for e, v, t in [(1, 0.5, 0.1), (2, 0.7, 0.2), (3, 0.7, 0.9), (4, 0.6, 0.95)]]
    assert select_epoch(rows, "best_val") is rows[1]
    assert select_epoch(rows, "final") is rows[-1]


# A pipeline stopped after a cell that trains nothing (a Computation: no model.pt) continues: one
# tiny matrix per Computation method, the stage that runs it named.
COMPUTED_PARENTS = {"annotate": ("tiny-distill.yaml", "annotate")}


def test_every_computation_method_has_a_continue_test() -> None:
    from bench.methods import METHODS  # noqa: F401  (registers every method's requirement)
    from bench.matrix.requirements import REQUIREMENTS

    assert set(COMPUTED_PARENTS) == {name for name, needs in REQUIREMENTS.items() if not needs.trains}


@pytest.mark.parametrize("method", sorted(COMPUTED_PARENTS))
def test_a_finished_computation_is_a_valid_done_parent(method: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from bench.cli import main
    from tests.conftest import ROOT

    matrix_file, stage = COMPUTED_PARENTS[method]
    matrix = str(ROOT / "tests" / "fixtures" / matrix_file)
    results = tmp_path / "runs"
    assert main(["run", matrix, "--results", str(results), "--only", stage]) == 0
    parents = [c.parent for c in (results / "cells").glob("*/config.json") if json.loads(c.read_text())["method"] == method]
    assert parents and all((p / "DONE").exists() and not (p / "model.pt").exists() for p in parents)
    capsys.readouterr()
    assert main(["run", matrix, "--results", str(results)]) == 0, capsys.readouterr().err
    cells = list((results / "cells").iterdir())
    assert cells and all((c / "DONE").exists() for c in cells)


def test_a_checkpoint_of_another_model_is_never_loaded(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A checkpoint whose model does not fit the cell (another architecture, a damaged state) is
    passed over for the epoch before; when neither fits, one line names the file and what differs."""
    from bench.cli import main

    teacher = {**MATRIX, "defaults": {**MATRIX["defaults"], "augment": [], "epochs": 3},
               "stages": {"teacher": {"method": "supervised", "axes": {"arch": ["menghani_mlp"]}}}}
    matrix = write_matrix(tmp_path, teacher)
    results = tmp_path / "runs"
    assert main(["run", str(matrix), "--results", str(results), "--keep-checkpoints"]) == 0  # as a kill before DONE leaves it
    (cell,) = (results / "cells").iterdir()
    for name in ("DONE", "result.json", "model.pt"):
        (cell / name).unlink()
    state = torch.load(cell / "checkpoint.pt", weights_only=True)
    first = next(iter(state["model"]))
    wrong = {**state, "model": {**state["model"], first: torch.zeros(3, 3)}}
    torch.save(wrong, cell / "checkpoint.pt")
    capsys.readouterr()
    assert main(["run", str(matrix), "--results", str(results)]) == 0
    assert f"checkpoint.pt: {first} has shape (3, 3)" in capsys.readouterr().err  # resumed from checkpoint.prev.pt
    for name in ("DONE", "result.json", "model.pt"):
        (cell / name).unlink()
    torch.save(wrong, cell / "checkpoint.pt")
    torch.save({**wrong, "epoch": 99}, cell / "checkpoint.prev.pt")
    assert main(["run", str(matrix), "--results", str(results)]) == 1
    (failed,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("  failed ")]
    assert f"checkpoint.pt: {first} has shape (3, 3)" in failed and "checkpoint.prev.pt: epoch 99, expected 0 to 2" in failed, failed
    assert f"delete {cell / 'checkpoint.pt'}" in failed
