"""The SLURM executor against a real single-node SLURM (slurm/local-cluster.sh), not mocked."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.collect import collect
from tests.conftest import ROOT, TINY, write_matrix
from tests.test_resume import MATRIX as SLOW_MATRIX, epochs_done, metrics_of

pytestmark = pytest.mark.slurm
COMPARED = ["id", "stage", "arch", "test_acc", "val_acc", "train_acc", "selected_epoch", "params"]


@pytest.fixture(scope="module", autouse=True)
def cluster() -> None:
    started = subprocess.run(["bash", str(ROOT / "slurm" / "local-cluster.sh"), "start"], capture_output=True, text=True)
    assert started.returncode == 0, started.stderr + started.stdout


def bench(*args: str) -> int:
    return main(list(args))


def wait_for(predicate, timeout: float = 240, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def sacct_times(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,Start,End", *sum((["-j", j.split("_")[0]] for j in job_ids), [])],
                         capture_output=True, text=True, check=True).stdout
    return {line.split("|")[0]: tuple(line.split("|")[1:]) for line in out.splitlines() if line}


def test_slurm_gives_the_local_table_and_students_wait_for_teachers(tmp_path: Path, tiny_results: Path) -> None:
    results = tmp_path / "slurm-runs"
    assert bench("run", str(TINY), "--executor", "slurm", "--profile", "local", "--results", str(results)) == 0
    ours, local = collect(results), collect(tiny_results)
    assert len(ours) == 4
    cols = [c for c in COMPARED if c in ours]
    assert ours[cols].sort_values("id").reset_index(drop=True).equals(local[cols].sort_values("id").reset_index(drop=True))
    records = {c.name: json.loads((c / "slurm.json").read_text())["job_id"] for c in (results / "cells").iterdir()}
    times = sacct_times(list(records.values()))
    stage = {row.id: row.stage for row in ours.itertuples()}
    teacher_end = max(times[records[i]][1] for i in records if stage[i] == "teacher")
    student_start = min(times[records[i]][0] for i in records if stage[i] == "student")
    finetune_start = min(times[records[i]][0] for i in records if stage[i] == "finetune")
    student_end = max(times[records[i]][1] for i in records if stage[i] == "student")
    assert teacher_end <= student_start and student_end <= finetune_start


def test_preempted_cell_resumes_with_the_same_metrics(tmp_path: Path) -> None:
    matrix = write_matrix(tmp_path, {**SLOW_MATRIX, "stages": {"teacher": SLOW_MATRIX["stages"]["teacher"]}})
    reference, preempted = tmp_path / "reference", tmp_path / "preempted"
    assert bench("run", str(matrix), "--results", str(reference)) == 0
    assert bench("run", str(matrix), "--executor", "slurm", "--results", str(preempted), "--no-wait") == 0
    cell = next((preempted / "cells").iterdir())
    job_id = json.loads((cell / "slurm.json").read_text())["job_id"]
    wait_for(lambda: epochs_done(preempted, "teacher") >= 2, what="two epochs")
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)  # what SLURM sends on preemption / time limit
    wait_for(lambda: (cell / "DONE").exists(), timeout=300, what="the requeued job to finish")
    assert metrics_of(preempted) == metrics_of(reference)
    log = (cell / "log.txt").read_text()
    assert "resuming from epoch" in log
    restarts = subprocess.run(["sacct", "-j", job_id, "-n", "-P", "-o", "State", "-D"], capture_output=True, text=True).stdout
    assert "REQUEUED" in restarts or "PREEMPTED" in restarts, restarts


def test_cancelled_cell_shows_in_status_and_is_resubmitted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    matrix = write_matrix(tmp_path, {**SLOW_MATRIX, "stages": {"teacher": SLOW_MATRIX["stages"]["teacher"]}})
    results = tmp_path / "runs"
    args = [str(matrix), "--results", str(results)]
    assert bench("run", *args, "--executor", "slurm", "--no-wait") == 0
    assert bench("run", *args, "--executor", "slurm", "--no-wait") == 0  # already queued: nothing new
    capsys.readouterr()
    cell = next((results / "cells").iterdir())
    first_job = json.loads((cell / "slurm.json").read_text())["job_id"]
    assert bench("cancel", *args) == 0
    assert first_job in capsys.readouterr().out

    def status() -> str:
        bench("status", *args)
        return capsys.readouterr().out

    wait_for(lambda: "cancelled" in status(), what="status to show cancelled")
    assert bench("run", *args, "--executor", "slurm") == 0
    assert (cell / "DONE").exists()
    assert json.loads((cell / "slurm.json").read_text())["job_id"] != first_job
    assert "done" in status()


def test_gpu_request_on_a_gpu_less_partition_names_the_profile_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "gpu.yaml"
    profile.write_text((ROOT / "slurm" / "local.yaml").read_text().replace("gpus_per_node: 0", "gpus_per_node: 1"))
    code = bench("run", str(TINY), "--executor", "slurm", "--profile", str(profile), "--results", str(tmp_path / "r"))
    err = capsys.readouterr().err
    assert code == 2
    assert f"{profile}: gpus_per_node:" in err and "no GPUs" in err and "Traceback" not in err
    assert not (tmp_path / "r" / "cells").exists() or not list((tmp_path / "r" / "cells").glob("*/DONE"))


def test_a_failed_teacher_holds_back_only_its_own_students(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench.matrix import load_matrix
    from bench.plan import expand
    from bench.runner import prepare_cell
    from bench.store import Store

    spec = {"name": "iso", "defaults": {"dataset": "digits", "image_size": 8, "epochs": 1, "lr": 0.05},
            "stages": {"teacher": {"method": "supervised", "axes": {"arch": ["menghani_mlp", "menghani_cnn"]}},
                       "student": {"method": "kd", "needs": {"teacher": "teacher"}, "axes": {"arch": ["menghani_mlp"]}}}}
    matrix = write_matrix(tmp_path, spec)
    results = tmp_path / "runs"
    cells = expand(load_matrix(matrix))
    broken = next(c for c in cells if c.stage == "teacher" and c.config.arch == "menghani_cnn")
    prepare_cell(Store(results), broken.id, broken.config)
    (results / "cells" / broken.id / "checkpoint.pt").write_bytes(b"not a checkpoint")  # this teacher will fail
    assert bench("run", str(matrix), "--executor", "slurm", "--results", str(results)) == 1
    err = capsys.readouterr().err
    assert "1 failed, 1 blocked" in err
    done = {c.id for c in cells if (results / "cells" / c.id / "DONE").exists()}
    healthy_student = next(c for c in cells if c.stage == "student" and c.config.deps["teacher"] != broken.id)
    assert done == {healthy_student.id, healthy_student.config.deps["teacher"]}
