"""Rehearsals (``bench run --smoke``), the cost of a matrix (``bench plan --cost``) and the
stoppers a rehearsal at paper scale found: one-image batches, the training-set evaluation,
checkpoints left behind, reports of --set runs, a dataset too small to split."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import timm
import torch
import torchvision.datasets as tvd

from bench.cli import main
from bench.results.collect import collect
from bench.matrix.config import CellConfig
from bench.matrix.cost_estimate import estimate, items_of
from bench.data.datasets import clear_cache
from bench.training.engine import train_eval_items
from bench.matrix.schema import load_matrix
from bench.matrix.plan import expand
from bench.matrix.plan import structural_key
from bench.matrix.smoke import MARKER, Smoke
from tests.conftest import ROOT, TINY, write_matrix
from tests.paper_fixtures import cifar_md5_lists, plant_timm_weights, write_paper_data, write_simclr_encoder

PAPER_MATRICES = ("khose2021", "menghani2019", "radosavovic2018", "nguyen2021")


def test_a_rehearsal_shortens_every_cell_and_leaves_the_real_ids_alone() -> None:
    matrix = load_matrix(ROOT / "matrices" / "menghani2019.yaml")
    real, smoke = expand(matrix), expand(matrix, smoke=Smoke())
    assert len(real) == len(smoke) and [structural_key(c) for c in real] == [structural_key(c) for c in smoke]
    assert not {c.id for c in real} & {c.id for c in smoke}
    for r, s in zip(real, smoke):
        assert s.config.smoke_batches == 2 and s.config.batch_size == min(r.config.batch_size, 8)
        assert s.config.epochs == min(r.config.epochs, 1)
        assert s.config.model_copy(update={"epochs": r.config.epochs, "batch_size": r.config.batch_size,
                                           "smoke_batches": None, "deps": r.config.deps}) == r.config
    imagenet_teacher = next(s for s in smoke if s.stage == "teacher" and s.config.dataset == "imagenet")
    assert imagenet_teacher.config.epochs == 0  # evaluated as it is, never trained by a rehearsal
    assert [c.id for c in expand(matrix)] == [c.id for c in real]  # planning a rehearsal changes nothing else


def test_rehearsal_and_real_results_never_share_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "r"
    assert main(["run", str(TINY), "--smoke", "--results", str(results), "--only", "teacher"]) == 0
    assert (results / MARKER).is_file()
    assert "tiny@smoke" in json.loads((results / "plans" / "tiny@smoke.json").read_text())["matrix"]
    out = capsys.readouterr()
    assert "the same work at the rates this rehearsal measured" in out.out and "GPU-hours" in out.out
    table = collect(results)
    assert (table["smoke_batches"] == 2).all() and (table["epochs_run"] == 1).all()
    assert main(["run", str(TINY), "--results", str(results)]) == 2
    assert "a rehearsal's folder" in capsys.readouterr().err
    assert main(["check", str(results), "--baseline", str(tmp_path / "b.csv"), "--update"]) == 2
    assert "never a baseline" in capsys.readouterr().err
    real = tmp_path / "real"
    assert main(["run", str(TINY), "--results", str(real), "--only", "teacher"]) == 0
    assert main(["run", str(TINY), "--smoke", "--results", str(real)]) == 2
    assert "holds real results" in capsys.readouterr().err


def test_a_rehearsal_without_results_goes_beside_the_real_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_RESULTS", str(tmp_path / "runs"))
    assert main(["run", str(TINY), "--smoke", "--only", "teacher"]) == 0
    assert (tmp_path / "runs-smoke" / MARKER).is_file() and not (tmp_path / "runs").exists()


def test_cost_counts_the_items_each_method_trains_on() -> None:
    khose = {c.stage + str(c.config.label_fraction) + c.config.arch: c for c in expand(load_matrix(ROOT / "matrices" / "khose2021.yaml"))}
    teacher = khose["teacher0.1resnet18"].config
    items = items_of(teacher)
    assert items is not None and math.isclose(items.train, 40_000) and math.isclose(items.labeled, 4_000)
    works = {w.cell.id: w for w in estimate(list(khose.values()))}
    assert math.isclose(works[khose["teacher0.1resnet18"].id].train_images, 30 * 4_000)
    student = works[khose["student0.1resnet18"].id]
    assert math.isclose(student.train_images, 30 * 40_000)  # kd trains on the whole training split
    assert math.isclose(student.teacher_images, 30 * 40_000)  # online teacher: one pass per epoch
    assert student.flops > 0 and student.gpu_seconds > 0 and student.disk_kept > 0


def test_plan_cost_prints_gpu_hours_disk_and_memory(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(ROOT / "matrices" / "nguyen2021.yaml"), "--cost"]) == 0
    out = capsys.readouterr().out
    assert "GPU-hours are FLOPs-based" in out
    header = next(line for line in out.splitlines() if "host memory / cell" in line)
    assert "disk kept" in header
    linear = next(line for line in out.splitlines() if line.split()[:1] == ["linear"] and "B" in line)
    assert linear.endswith("MB")  # CIFAR-100 probed at 224 px stays 32 px in memory (batches are resized)
    student = next(line for line in out.splitlines() if line.split()[:1] == ["student"] and "B" in line)
    assert student.split()[-2:] == ["1.71", "GB"]  # a VGG16 student: weights, gradients and momentum


def test_train_accuracy_on_a_fixed_subset() -> None:
    config = CellConfig(stage="t", method="supervised", arch="menghani_mlp", dataset="digits", train_eval_items=100)
    items = torch.arange(0, 1000, 3)
    source = object()
    _, first = train_eval_items((source, items), config)
    _, again = train_eval_items((source, items), config)
    assert len(first) == 100 and torch.equal(first, again) and set(first.tolist()) <= set(items.tolist())
    assert train_eval_items((source, items), config.model_copy(update={"train_eval_items": None}))[1] is items


def test_a_one_image_last_batch_no_longer_ends_a_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = timm.create_model("mobilenetv3_small_050", num_classes=10).train()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        model(torch.zeros(1, 3, 32, 32))  # what killed the cell: its final maps are 1x1 at 32 px
    path = write_matrix(tmp_path, {
        "name": "single", "defaults": {"dataset": "digits", "image_size": 32, "epochs": 1, "lr": 0.01,
                                       "batch_size": 673, "schedule": "constant"},  # 1,347 = 2 x 673 + 1
        "stages": {"teacher": {"method": "supervised", "set": {"arch": "mobilenetv3_small_050"}}}})
    assert main(["run", str(path), "--results", str(tmp_path / "r")]) == 0
    err = capsys.readouterr()
    assert "batch 3 of 1 image left out of each epoch" in err.out + err.err


def test_a_done_cell_keeps_no_checkpoint_unless_asked(tmp_path: Path) -> None:
    assert main(["run", str(TINY), "--results", str(tmp_path / "a"), "--only", "teacher"]) == 0
    cell = next((tmp_path / "a" / "cells").iterdir())
    assert (cell / "model.pt").is_file() and not (cell / "checkpoint.pt").exists() and not (cell / "checkpoint.prev.pt").exists()
    assert main(["run", str(TINY), "--results", str(tmp_path / "b"), "--only", "teacher", "--keep-checkpoints"]) == 0
    cell = next((tmp_path / "b" / "cells").iterdir())
    assert (cell / "checkpoint.pt").is_file()


def test_the_report_of_a_set_run_is_found_by_matrix_name_and_lists_its_overrides(tmp_path: Path) -> None:
    results = tmp_path / "r"
    assert main(["run", str(TINY), "--results", str(results), "--set", "epochs=1", "--only", "teacher"]) == 0
    assert main(["report", str(TINY), "--results", str(results)]) == 0
    report = next((results / "report").glob("tiny@*/report.md")).read_text()
    assert "Not the matrix as written" in report and "`--set epochs=1`" in report


@pytest.fixture(scope="module")
def paper_fixtures(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every paper matrix's data in its real format, planted timm weights and the SimCLR encoder."""
    root = tmp_path_factory.mktemp("paper")
    write_paper_data(root / "data")
    plant_timm_weights(root / "hf" / "hub", ["efficientnet_b5", "resnet18", "mobilenetv3_large_100", "mobilenetv2_100",
                                             "resnet50", "vgg16"])
    write_simclr_encoder(root / "home" / ".cache" / "bench" / "simclr" / "r50_1x_sk0.pt")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", PAPER_MATRICES)
def test_each_paper_matrix_rehearses_end_to_end(name: str, paper_fixtures: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Plan, run every cell for two batches, collect and report, on data in its real formats."""
    monkeypatch.setenv("HF_HOME", str(paper_fixtures / "hf"))
    monkeypatch.setenv("HOME", str(paper_fixtures / "home"))
    for dataset, cls in (("cifar10", tvd.CIFAR10), ("cifar100", tvd.CIFAR100)):
        for key, value in cifar_md5_lists(paper_fixtures / "data", dataset).items():
            monkeypatch.setattr(cls, key, value)  # torchvision's md5 check, on our files' sums
    clear_cache()
    results = tmp_path / "rehearsal"
    code = main(["run", str(ROOT / "matrices" / f"{name}.yaml"), "--smoke", "--results", str(results),
                 "--data-root", str(paper_fixtures / "data")])
    clear_cache()
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    planned = json.loads((results / "plans" / f"{name}@smoke.json").read_text())["cells"]
    table = collect(results)
    assert len(table) == len(planned)
    real = expand(load_matrix(ROOT / "matrices" / f"{name}.yaml"))
    rehearsed = {structural_key(c) for c in expand(load_matrix(ROOT / "matrices" / f"{name}.yaml"), smoke=Smoke())}
    assert len(rehearsed) == len(planned) and all(structural_key(c) in rehearsed for c in real)  # every cell rehearsed
    assert (table["smoke_batches"] == 2).all()
    assert (results / "report" / f"{name}@smoke" / "report.html").is_file()
    assert "the same work at the rates this rehearsal measured" in out.out
    assert out.out.rstrip().splitlines()[-1].split()[0] == "all"  # it ends on the cost of the real run


def test_a_global_epochs_set_says_it_trains_an_evaluate_as_is_stage(capsys: pytest.CaptureFixture[str]) -> None:
    menghani = str(ROOT / "matrices" / "menghani2019.yaml")
    assert main(["plan", menghani, "--set", "epochs=1"]) == 0
    assert "makes stage 'teacher' train, which the matrix evaluates as it is (epochs: 0)" in capsys.readouterr().err
    assert main(["plan", menghani, "--set", "student.epochs=1"]) == 0
    assert "makes stage" not in capsys.readouterr().err


def test_a_dataset_that_does_not_fit_in_memory_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """CIFAR-100 resized to 224 px asked the allocator for 6 GB in the pre-run check: a traceback."""
    import bench.data.datasets as ds

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: "
                           "you tried to allocate 6020726784 bytes.")

    monkeypatch.setattr(ds, "load_dataset", refuse)
    assert main(["run", str(TINY), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "does not fit in this machine's memory" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_status_of_a_rehearsal_finds_its_cells(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BENCH_RESULTS", str(tmp_path / "runs"))
    assert main(["run", str(TINY), "--smoke", "--only", "teacher"]) == 0
    capsys.readouterr()
    assert main(["status", str(TINY), "--smoke"]) == 0
    assert "tiny: 3 not started, 1 done;" in capsys.readouterr().out
    assert main(["status", str(TINY)]) == 0  # the real cells: none run
    assert "tiny: 4 not started;" in capsys.readouterr().out
