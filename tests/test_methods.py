"""Each method learns on tiny real data (accuracy well above chance), and feeds on what its paper says."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.collect import collect
from bench.config import CellConfig
from bench.context import CellContext
from bench.methods import METHODS
from bench.runtime import Runtime
from bench.store import Store
from tests.conftest import write_matrix

CHANCE = 0.1  # digits has 10 balanced classes

KD_MATRIX = {
    "name": "kdtest",
    "defaults": {"dataset": "digits", "image_size": 16, "protocol": "resplit_4_1_1", "label_fraction": 0.2,
                 "epochs": 4, "lr": 0.05, "batch_size": 64, "schedule": "constant"},
    "axes": {"seed": [0]},
    "stages": {
        "teacher": {"method": "supervised", "axes": {"arch": ["menghani_mlp"]}},
        "student": {"method": "kd", "needs": {"teacher": "teacher"}, "axes": {"arch": ["menghani_mlp"], "augment": [[], ["crop"]]},
                    "set": {"alpha": 0.3, "crop_padding": 1}},
    },
}


@pytest.fixture(scope="module")
def kd_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kd")
    assert main(["run", str(write_matrix(root, KD_MATRIX)), "--results", str(root / "runs")]) == 0
    return root / "runs"


@pytest.fixture(scope="module")
def kd_results(kd_runs: Path) -> pd.DataFrame:
    return collect(kd_runs)


def test_supervised_teacher_learns(kd_results: pd.DataFrame) -> None:
    teacher = kd_results[kd_results.stage == "teacher"].iloc[0]
    assert teacher.test_acc > CHANCE + 0.5
    assert teacher.val_acc > CHANCE + 0.5


def test_kd_students_learn_with_and_without_augmentation(kd_results: pd.DataFrame) -> None:
    students = kd_results[kd_results.stage == "student"]
    assert len(students) == 2
    assert (students.test_acc > CHANCE + 0.5).all()


def test_blind_and_finetune_learn(tiny_results: Path) -> None:
    table = collect(tiny_results)
    blind = table[table.stage == "student"].iloc[0]
    assert blind.method == "blind" and blind.test_acc > CHANCE + 0.15  # never saw a digit
    finetuned = table[(table.stage == "finetune") & (table.n_per_class == "all")].iloc[0]
    assert finetuned.test_acc > blind.test_acc and finetuned.test_acc > CHANCE + 0.5


def _context(root: Path, config: CellConfig, cell_id: str) -> CellContext:
    return CellContext(config, cell_id, Store(root), Runtime(device="cpu"))


def test_blind_student_trains_only_on_the_unlabeled_pool(tiny_results: Path) -> None:
    store = Store(tiny_results)
    student_id = next(i for i in store.cell_ids() if store.cell(i).config.read_text().count('"blind"'))
    config = CellConfig.model_validate_json(store.cell(student_id).config.read_text())
    training = METHODS.get("blind")(_context(tiny_results, config, student_id))
    assert training.source.name == "fashion_mnist"
    assert len(training.indices) == config.unlabeled_limit
    assert training.visible_targets is not None and bool((training.visible_targets == -1).all())
    assert training.train_eval is None


def test_kd_hides_unlabeled_labels_and_caches_teacher_logits_only_without_augmentation(kd_runs: Path, kd_results: pd.DataFrame) -> None:
    runs = kd_runs
    teacher_id = kd_results[kd_results.stage == "teacher"].id.iloc[0]
    cached = list((runs / "cells" / teacher_id / "artifacts").glob("logits-*.pt"))
    assert len(cached) == 1  # the augmented student computed its targets online
    student = kd_results[(kd_results.stage == "student") & (kd_results.augment == "")].iloc[0]
    config = CellConfig.model_validate_json((runs / "cells" / student.id / "config.json").read_text())
    ctx = _context(runs, config, student.id)
    training = METHODS.get("kd")(ctx)
    splits = ctx.splits()
    assert len(training.indices) == len(splits.train)  # labeled ∪ unlabeled
    visible = training.visible_targets
    assert visible is not None
    assert bool((visible[splits.unlabeled] == -1).all())
    assert torch.equal(visible[splits.labeled], splits.source.targets[splits.labeled])
