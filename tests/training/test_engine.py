"""The engine on its own, in seconds: a two-layer model on a tiny in-memory set through
``train`` directly (no command line, no dataset, no method)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.data.images import TensorImageSet
from bench.matrix.config import CellConfig
from bench.models.zoo import Normalized
from bench.results.store import Store
from bench.training.engine import EvalSets, Outcome, train
from bench.training.interface import Batch, Training, classify
from bench.training.runtime import Runtime

ITEMS = 20  # trained on, in batches of 8: 8, 8 and a short last batch of 4
TIMING = {"train_images_per_s", "epoch_seconds"}
CELL, OTHER = "c0c0c0c0c0c0", "d0d0d0d0d0d0"


def _data() -> TensorImageSet:
    """28 images of 4x4, two classes told apart by brightness (20 to train on, 8 to test)."""
    generator = torch.Generator().manual_seed(0)
    targets = torch.arange(28) % 2
    images = (torch.rand(28, 1, 4, 4, generator=generator) * 120 + 120 * targets.view(-1, 1, 1, 1)).to(torch.uint8)
    return TensorImageSet(images, targets, 2, "tiny")


def _model() -> Normalized:
    torch.manual_seed(0)
    # dropout draws from the global RNG: an exact resume must restore it
    return Normalized(nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 2)), (0.5,), (0.25,))


def _config(**fields: object) -> CellConfig:
    defaults: dict[str, object] = {"stage": "s", "method": "supervised", "arch": "menghani_mlp", "dataset": "digits",
                                   "epochs": 3, "batch_size": 8, "lr": 0.1, "schedule": "cosine",
                                   "augment": ("crop", "flip"), "crop_padding": 1}
    return CellConfig(**{**defaults, **fields})


def _untimed(row: dict[str, float | None]) -> dict[str, float | None]:
    """A metrics row without its timings, NaN as metrics.json writes it (null)."""
    return {k: None if v is None or math.isnan(v) else v for k, v in row.items() if k not in TIMING}


class Recorded:
    """A method's step that records the size of every batch it is given."""

    def __init__(self, model: nn.Module) -> None:
        self.sizes: list[int] = []
        self.step = classify(model, lambda logits, batch: F.cross_entropy(logits, batch.targets))

    def __call__(self, batch: Batch) -> torch.Tensor:
        self.sizes.append(len(batch.indices))
        return self.step(batch)


def _run(tmp_path: Path, config: CellConfig, cell: str = CELL, min_batch: int = 1,
         lines: list[str] | None = None) -> tuple[Outcome, Normalized, Recorded]:
    data, model = _data(), _model()
    step = Recorded(model)
    training = Training(model, data, torch.arange(ITEMS), step, train_eval=(data, torch.arange(ITEMS)), min_batch=min_batch)
    evals = EvalSets(None, (data, torch.arange(ITEMS, 28)))
    say = (lines if lines is not None else []).append
    outcome = train(config, training, evals, Store(tmp_path).cell(cell), Runtime(device="cpu"), say)
    return outcome, model, step


def test_every_epoch_trains_is_measured_and_written(tmp_path: Path) -> None:
    initial = {k: v.clone() for k, v in _model().inner.state_dict().items()}
    outcome, model, step = _run(tmp_path, _config())
    assert [row["epoch"] for row in outcome.metrics] == [1, 2, 3]
    assert step.sizes == [8, 8, 4] * 3
    for row in outcome.metrics:
        assert {"train_acc", "val_acc", "test_acc", "train_loss", "test_loss", "lr", *TIMING} <= set(row)
        assert math.isnan(row["val_acc"]) and 0.0 <= row["test_acc"] <= 1.0 and row["train_loss"] > 0
    assert outcome.metrics[0]["lr"] == pytest.approx(0.1) and outcome.metrics[2]["lr"] < outcome.metrics[1]["lr"]  # cosine
    assert outcome.selected is outcome.metrics[-1]  # metric: final
    cell = Store(tmp_path).cell(CELL)
    written = json.loads(cell.metrics.read_text())
    assert [_untimed(row) for row in written] == [_untimed(row) for row in outcome.metrics]
    saved = torch.load(cell.model, weights_only=True)
    assert saved.keys() == initial.keys() and all(torch.equal(saved[k], v) for k, v in model.inner.state_dict().items())
    assert any(not torch.equal(saved[k], initial[k]) for k in initial)  # it trained
    assert torch.load(cell.checkpoint, weights_only=True)["epoch"] == 2
    assert math.isfinite(outcome.infer_images_per_s) and outcome.train_seconds > 0


def test_min_batch_leaves_a_short_last_batch_out_saying_so_once(tmp_path: Path) -> None:
    lines: list[str] = []
    outcome, _, step = _run(tmp_path, _config(), min_batch=5, lines=lines)
    assert step.sizes == [8, 8] * 3
    assert [line for line in lines if "left out" in line] == \
           ["  batch 3 of 4 image(s) left out of each epoch (the method's step needs 5)"]
    # the loss and rate count the images that trained
    assert all(row["train_images_per_s"] == pytest.approx(16 / row["epoch_seconds"]) for row in outcome.metrics)
    _, _, enough = _run(tmp_path, _config(), cell=OTHER, min_batch=4)
    assert enough.sizes == [8, 8, 4] * 3


def test_an_untrained_cell_is_evaluated_as_it_is(tmp_path: Path) -> None:
    initial = _model().inner.state_dict()
    outcome, model, step = _run(tmp_path, _config(epochs=0))
    assert step.sizes == []
    (row,) = outcome.metrics
    assert row["epoch"] == 0 and math.isnan(row["train_loss"]) and row["lr"] == 0.0
    assert 0.0 <= row["test_acc"] <= 1.0 and 0.0 <= row["train_acc"] <= 1.0
    cell = Store(tmp_path).cell(CELL)
    saved = torch.load(cell.model, weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in initial.items())
    assert not cell.checkpoint.exists()
    assert [_untimed(r) for r in json.loads(cell.metrics.read_text())] == [_untimed(row)]


class Killed(Exception):
    """Stands for a kill right after an epoch's checkpoint was written."""


def test_a_resumed_cell_ends_with_the_weights_and_metrics_of_an_uninterrupted_one(tmp_path: Path) -> None:
    whole, whole_model, _ = _run(tmp_path, _config(), cell=OTHER)

    def killed_after_epoch_2(line: str) -> None:
        if line.startswith("  epoch 2/3"):
            raise Killed

    with pytest.raises(Killed):
        data, model = _data(), _model()
        training = Training(model, data, torch.arange(ITEMS), Recorded(model), train_eval=(data, torch.arange(ITEMS)))
        train(_config(), training, EvalSets(None, (data, torch.arange(ITEMS, 28))), Store(tmp_path).cell(CELL),
              Runtime(device="cpu"), killed_after_epoch_2)
    torch.manual_seed(123)  # the process that resumes is another one: its global RNG is elsewhere
    lines: list[str] = []
    resumed, resumed_model, step = _run(tmp_path, _config(), cell=CELL, lines=lines)
    assert "  resuming from epoch 2/3" in lines
    assert step.sizes == [8, 8, 4]  # the last epoch only
    whole_state, resumed_state = whole_model.inner.state_dict(), resumed_model.inner.state_dict()
    assert all(torch.equal(whole_state[k], resumed_state[k]) for k in whole_state)
    assert [_untimed(row) for row in whole.metrics] == [_untimed(row) for row in resumed.metrics]
