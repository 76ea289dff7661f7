"""Packing cells into jobs and splitting a cell over ranks: the parts that need no cluster."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.training import data_parallel
from bench.errors import BenchError, ConfigError
from bench.executors.profile import load_profile
from bench.executors.slurm import make_packs
from bench.matrix.schema import load_matrix
from bench.matrix.plan import expand
from tests.conftest import ROOT


def _cells(stage: str):
    return [c for c in expand(load_matrix(ROOT / "matrices" / "ci.yaml")) if c.stage == stage]


def _profile(tmp_path: Path, text: str):
    path = tmp_path / "p.yaml"
    path.write_text("partition: debug\n" + text)
    return load_profile(str(path))


@pytest.mark.parametrize(("setting", "sizes"), [("cells_per_job: 1", [1] * 8), ("cells_per_job: 3", [3, 3, 2]),
                                                 ("cells_per_job: auto\narray_parallelism: 3", [3, 3, 2]),
                                                 ("cells_per_job: auto\narray_parallelism: 16", [1] * 8)])
def test_packs_hold_every_cell_once_in_jobs_of_the_asked_size(tmp_path: Path, setting: str, sizes: list[int]) -> None:
    cells = _cells("finetune")
    parents = {c.id: (c.config.deps["student"],) for c in cells}
    packs = make_packs(cells, parents, _profile(tmp_path, setting))
    assert [len(p) for p in packs] == sizes
    assert sorted(c.id for p in packs for c in p) == sorted(c.id for c in cells)


def test_cells_waiting_for_the_same_parents_share_a_pack(tmp_path: Path) -> None:
    cells = _cells("finetune")  # two fine-tunes per student, planned student by student or not
    parents = {c.id: (c.config.deps["student"],) for c in cells}
    shuffled = cells[1::2] + cells[0::2]
    for pack in make_packs(shuffled, parents, _profile(tmp_path, "cells_per_job: 2")):
        assert len({parents[c.id] for c in pack}) == 1


def test_profile_fields_for_packing_and_ranks_are_checked_with_the_file_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        _profile(tmp_path, "cells_per_job: 0\n")
    assert "p.yaml" in str(error.value) and "cells_per_job" in str(error.value)
    with pytest.raises(ConfigError):
        _profile(tmp_path, "stages: {teacher: {tasks_per_node: 0}}\n")
    profile = _profile(tmp_path, "stages: {teacher: {tasks_per_node: 4, nodes: 2, cells_per_job: auto}}\n")
    assert (profile.for_stage("teacher").tasks_per_node, profile.for_stage("teacher").nodes) == (4, 2)
    assert profile.for_stage("student").tasks_per_node == 1 and profile.for_stage("student").cells_per_job == 1


@pytest.mark.parametrize(("items", "batch", "world"), [(100, 16, 2), (97, 16, 2), (33, 8, 4), (17, 16, 4), (5, 4, 4)])
def test_rank_shards_of_each_batch_make_up_the_global_batch(items: int, batch: int, world: int) -> None:
    order = torch.randperm(items, generator=torch.Generator().manual_seed(0))
    sizes = data_parallel.global_batch_sizes(items, batch)
    per_rank = [list(torch.split(data_parallel.shard_order(order, batch, r, world), batch // world)) for r in range(world)]
    for step, size in enumerate(sizes):
        got = [b[step] for b in per_rank if step < len(b)]  # a rank whose shard of the last batch is empty has none
        union = torch.cat(got)
        assert sorted(union.tolist()) == sorted(order[step * batch: step * batch + size].tolist())
        weights = [data_parallel.share_weight(len(b), size, world) for b in got]
        assert sum(weights) == pytest.approx(world)  # averaged over ranks: the global batch's mean
        # a method needing 2 images per step: shards of 1 sit out, the others' weights still make a mean
        usable = data_parallel.usable_items(size, world, 2)
        assert usable == sum(len(b) for b in got if len(b) >= 2)
        if usable:
            assert sum(data_parallel.share_weight(len(b), usable, world) for b in got if len(b) >= 2) == pytest.approx(world)


def test_a_global_batch_that_does_not_split_over_the_ranks_is_refused() -> None:
    data_parallel.check_batch(64, 4)
    with pytest.raises(BenchError, match="batch_size: 30 does not split over 4 ranks"):
        data_parallel.check_batch(30, 4)


def test_the_gpu_check_without_cuda_says_so_in_one_line_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    import subprocess

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the check would run")
    done = subprocess.run(["bash", str(ROOT / "slurm" / "gpu-check.sh")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [done.stdout.strip()] and "no CUDA device here" in done.stdout


@pytest.mark.slow
def test_the_gpu_check_as_a_dry_run_on_the_cpu_compares_every_ci_cell_and_gates(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from bench.cli import main

    assert main(["doctor", "--gpu", "--device", "cpu", "--results", str(tmp_path)]) == 0
    out = capfd.readouterr().out
    table = out[out.index("beside the CPU"):out.index("results under")]
    rows = [line for line in table.splitlines()[2:] if line.strip()]
    assert len(rows) == 14  # every cell of ci.yaml, with its rate on both sides and its accuracy beside the baseline
    assert all(float(line.split()[6]) > 0 for line in rows)  # a ratio of two measured rates (never asserted: it is timing)
    # both runs on this CPU: the same accuracies; the committed baseline is another machine's (~2 pts apart at most)
    assert all(float(line.split()[-3]) == float(line.split()[-2]) for line in rows)
    assert all(abs(float(line.split()[-1])) <= 0.03 for line in rows)
    assert "bench check: OK" in out


def test_precision_on_each_device() -> None:
    from bench.training.runtime import Runtime

    assert Runtime(device="cpu").amp_label == "False" and not Runtime(device="cpu").scales_loss
    amp = Runtime(device="cpu", amp=True)
    assert amp.amp_label == "bfloat16" and not amp.scales_loss and amp.describe()["precision"] == "bfloat16"
    with amp.autocast():
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16


TINY = ROOT / "tests" / "fixtures" / "tiny.yaml"


@pytest.mark.parametrize("text, field, says", [
    ("tasks_per_node: 3\n", "tasks_per_node", "3 ranks do not divide stage teacher's batch_size 64"),
    ("nodes: 128\n", "nodes", "128 ranks exceed stage teacher's batch_size 64"),
    ("stages:\n  student: {tasks_per_node: 3}\n", "stages.student.tasks_per_node", "do not divide stage student's batch_size 64"),
])
def test_ranks_that_do_not_split_a_stages_batch_are_refused_before_anything_is_queued(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, field: str, says: str) -> None:
    from bench.cli import main

    profile = tmp_path / "p.yaml"
    profile.write_text("partition: debug\n" + text)
    results = tmp_path / "runs"
    code = main(["run", str(TINY), "--executor", "slurm", "--profile", str(profile), "--results", str(results)])
    err = capsys.readouterr().err
    (line,) = [line for line in err.splitlines() if line.startswith("bench: ")]
    assert code == 2 and line.startswith(f"bench: {profile}: {field}: ") and says in line and "Traceback" not in err, err
    assert not list(results.glob("cells/*/slurm.json")) and not (results / "slurm").exists()


@pytest.mark.parametrize("content", ['{"job_id": 5}', "[1, 2]", "{nope", '{"job_id": "12", "folder": "/x", "submitted": "soon"}',
                                     '{"job_id": "12; rm -rf /", "folder": "/x", "submitted": 1.0}', "\xff"])
def test_a_damaged_slurm_record_is_one_warning_in_status_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                      content: str) -> None:
    from bench.cli import main

    results = tmp_path / "runs"
    teacher = next(c for c in expand(load_matrix(TINY)) if c.stage == "teacher")
    record = results / "cells" / teacher.id / "slurm.json"
    record.parent.mkdir(parents=True)
    record.write_bytes(content.encode("latin-1"))
    (record.parent / "failure.json").write_text('{"reason": ["not", "text"]}')
    assert main(["status", str(TINY), "--results", str(results)]) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("bench: ")]
    assert "Traceback" not in err and len(warnings) == 2, err
    assert warnings[0].startswith(f"bench: warning: {record}: ") and "the cell counts as not submitted" in warnings[0]
    assert warnings[1].startswith(f"bench: warning: {record.parent / 'failure.json'}: its reason is not text")
