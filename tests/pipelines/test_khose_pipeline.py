"""matrices/khose2021.yaml end to end on a stand-in CIFAR-10: digits upsampled to 32x32 RGB,
written in torchvision's CIFAR-10 pickle layout. No pretrained weights (none can be downloaded
here), one epoch, the 10% label fraction, MobileNetV3 students of all three teachers."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from bench.cli import main
from bench.results.collect import collect
from bench.data.datasets import clear_cache, load_dataset
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def write_fake_cifar10(root: Path) -> None:
    digits = load_dataset("digits", "train", image_size=32)
    extra = load_dataset("digits", "test", image_size=32)
    images = torch.cat([digits.served(), extra.served()]).expand(-1, 3, -1, -1).numpy()
    labels = torch.cat([digits.targets, extra.targets]).tolist()
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rows = images.reshape(len(images), -1)
    split = 1500
    for i, chunk in enumerate(np.array_split(np.arange(split), 5), 1):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({"data": rows[chunk], "labels": [labels[j] for j in chunk]}, f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": rows[split:], "labels": labels[split:]}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)


def test_khose2021_matrix_runs_self_distillation_and_compression(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_cifar10(tmp_path / "data")
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    clear_cache()
    code = main(["run", str(ROOT / "matrices" / "khose2021.yaml"), "--results", str(tmp_path / "runs"),
                 "--data-root", str(tmp_path / "data"), "--set", "pretrained=false", "--set", "epochs=1",
                 "--set", "label_fraction=0.1", "--only", "mobilenetv3_large_100"])  # the MobileNet students, their teachers
    clear_cache()
    assert code == 0
    table = collect(tmp_path / "runs")
    students = table[table.stage == "student"]
    assert sorted(students["teacher.arch"]) == ["efficientnet_b5", "mobilenetv3_large_100", "resnet18"]
    assert (table.label_fraction == 0.1).all() and len(table) == 6
    assert (students.lr == 0.001).all()
    assert set(table[table.stage == "teacher"].protocol) == {"resplit_4_1_1"}
    assert table.val_acc.notna().all() and table.train_acc.notna().all()
