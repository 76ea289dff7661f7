"""Each method learns on tiny real data (accuracy well above chance), and feeds on what its paper
says: the teacher targets it is given, and the crops it trains on."""
from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

import bench.cell.teacher_targets
from bench.cli import main
from bench.results.collect import collect
from bench.matrix.config import CellConfig, cell_id
from bench.cell.context import CellContext
from bench.errors import BenchError
from bench.data.augment import random_crop
from bench.training.inference import outputs_key, predict
from bench.methods import METHODS
from bench.training.interface import Batch
from bench.training.runtime import Runtime
from bench.results.store import Store
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
    student = kd_results[(kd_results.stage == "student") & (kd_results.augment == "")].iloc[0]
    config = CellConfig.model_validate_json((runs / "cells" / student.id / "config.json").read_text())
    ctx = _context(runs, config, student.id)
    splits = ctx.splits()
    cached = {p.name for p in (runs / "cells" / teacher_id / "artifacts").glob("logits-*.pt")}
    # once each: the plain student's targets on its items and the teacher's test-set logits that every
    # student's test_agreement shares; the augmented student computed its targets online
    assert cached == {f"logits-{outputs_key(source, items, 'transform=none', ctx.runtime)}.pt"
                      for source, items in ((splits.source, splits.train), (splits.test_source, splits.test))}
    training = METHODS.get("kd")(ctx)
    assert len(training.indices) == len(splits.train)  # labeled ∪ unlabeled
    visible = training.visible_targets
    assert visible is not None
    assert bool((visible[splits.unlabeled] == -1).all())
    assert torch.equal(visible[splits.labeled], splits.source.targets[splits.labeled])


# ------------------------------------------------------------------ teacher targets: cache and online

TEACHER_MATRIX = {
    "name": "teacher-cache",
    "defaults": {"dataset": "digits", "image_size": 8, "epochs": 1, "lr": 0.05, "batch_size": 64,
                 "schedule": "constant", "label_fraction": 0.5},
    "stages": {"teacher": {"method": "supervised", "axes": {"arch": ["menghani_mlp"]}}},
}


@pytest.fixture(scope="module")
def teacher_cell(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A done teacher (one epoch on 8x8 digits, ~1 s): its results folder and id."""
    root = tmp_path_factory.mktemp("teacher-cache")
    assert main(["run", str(write_matrix(root, TEACHER_MATRIX)), "--results", str(root / "runs")]) == 0
    (teacher_id,) = Store(root / "runs").cell_ids()
    return root / "runs", teacher_id


def student_context(teacher_cell: tuple[Path, str], **fields: Any) -> CellContext:
    """The context of a kd student of ``teacher_cell`` (never run; only its teacher targets are asked for)."""
    runs, teacher_id = teacher_cell
    teacher = json.loads(Store(runs).cell(teacher_id).config.read_text())
    config = CellConfig.model_validate({**teacher, "stage": "student", "method": "kd", "deps": {"teacher": teacher_id}, **fields})
    return _context(runs, config, cell_id(config))


def logit_caches(teacher_cell: tuple[Path, str]) -> list[Path]:
    runs, teacher_id = teacher_cell
    return sorted(Store(runs).cell(teacher_id).artifacts.glob("logits-*.pt"))


def batch_of(ctx: CellContext, items: torch.Tensor, view: Callable[[torch.Tensor], torch.Tensor] = lambda x: x) -> Batch:
    """The batch the engine would build for ``items``: ``view`` of their uint8 images, in [0, 1]."""
    images, targets, idx = next(ctx.splits().source.batches(items, len(items)))
    return Batch((view(images).float() / 255,), targets, idx)


def shuffled(items: torch.Tensor) -> torch.Tensor:
    return items[torch.randperm(len(items), generator=torch.Generator().manual_seed(0))]


def test_cached_teacher_logits_are_the_teachers_own_forward(teacher_cell: tuple[Path, str]) -> None:
    """Served by item index from the cache, the targets are bit for bit what the teacher computes
    for those items (CPU, float32), so a student without augmentation loses nothing by the cache."""
    ctx = student_context(teacher_cell)
    splits = ctx.splits()
    targets = ctx.teacher_logits("teacher", splits.source, splits.train)
    assert len(logit_caches(teacher_cell)) == 1
    teacher = ctx.dependency_model("teacher")
    test_logits = predict(teacher, splits.test_source, splits.test, ctx.config.batch_size, ctx.runtime)
    runs, teacher_id = teacher_cell
    recorded = json.loads(Store(runs).cell(teacher_id).result.read_text())["test_acc"]
    assert (test_logits.argmax(1) == splits.test_source.targets[splits.test]).float().mean().item() == recorded  # its weights
    own = predict(teacher, splits.source, splits.train, ctx.config.batch_size, ctx.runtime)
    row = {int(item): k for k, item in enumerate(splits.train)}
    for items in shuffled(splits.train).split(100):  # batches in a training order, not the cache's
        expected = own[[row[int(item)] for item in items]]
        assert torch.equal(targets(batch_of(ctx, items)), expected)


def test_teacher_logits_cache_is_reused_not_recomputed(teacher_cell: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A second student of the same teacher and items reads the stored logits: no forward pass,
    and the file is not rewritten."""
    ctx = student_context(teacher_cell)
    splits = ctx.splits()
    first = ctx.teacher_logits("teacher", splits.source, splits.train)
    (cache,) = logit_caches(teacher_cell)
    written = cache.stat().st_mtime_ns

    def recompute(*args: Any, **kwargs: Any) -> torch.Tensor:
        raise AssertionError("teacher logits recomputed although they are cached")

    monkeypatch.setattr(bench.cell.teacher_targets, "predict", recompute)
    second = student_context(teacher_cell, seed=1).teacher_logits("teacher", splits.source, splits.train)
    batch = batch_of(ctx, shuffled(splits.train)[:100])
    assert torch.equal(second(batch), first(batch))
    assert logit_caches(teacher_cell) == [cache] and cache.stat().st_mtime_ns == written


def test_augmented_student_gets_the_teacher_online_on_its_own_batch(teacher_cell: tuple[Path, str]) -> None:
    """With augmentation the targets are the teacher's outputs on the augmented images the student
    sees, not the cached ones of the plain images, and nothing is stored."""
    ctx = student_context(teacher_cell, augment=["crop"], crop_padding=1)
    splits = ctx.splits()
    caches = logit_caches(teacher_cell)
    online = ctx.teacher_logits("teacher", splits.source, splits.train)
    items = shuffled(splits.train)[:100]
    batch = batch_of(ctx, items, lambda x: random_crop(x, torch.Generator().manual_seed(0), 1))
    got = online(batch)
    teacher = ctx.dependency_model("teacher")

    def teacher_on(images: torch.Tensor) -> torch.Tensor:  # in the online teacher's inference batches: bitwise the same on any CPU
        return torch.cat([teacher(chunk) for chunk in images.split(ctx.runtime.inference_batch(len(images)))])

    with torch.no_grad():
        assert torch.equal(got, teacher_on(batch.images))
        assert not torch.equal(got, teacher_on(batch_of(ctx, items).images))
    assert logit_caches(teacher_cell) == caches


# ------------------------------------------------------------------ the training crop ("crop" in augment)


def known_images(n: int, height: int, width: int) -> torch.Tensor:
    """uint8 [n, 2, h, w]: channel 0 numbers the pixels 1..h*w (so a crop's offset can be read
    off), channel 1 tells the samples apart (so a crop from a neighbour's image shows)."""
    pixels = torch.arange(1, height * width + 1).view(height, width)
    sample = torch.arange(n) % 200 + 1
    return torch.stack([pixels.expand(n, -1, -1), sample[:, None, None].expand(-1, height, width)], 1).to(torch.uint8)


def crop_offsets(crop: torch.Tensor, image: torch.Tensor, padding: int) -> list[tuple[int, int]]:
    """Every (dy, dx) in [0, 2p]² at which the image zero-padded by p, sliced to its own size, is ``crop``."""
    c, h, w = image.shape
    padded = torch.zeros(c, h + 2 * padding, w + 2 * padding, dtype=image.dtype)
    padded[:, padding:padding + h, padding:padding + w] = image
    span = range(2 * padding + 1)
    return [(dy, dx) for dy in span for dx in span if torch.equal(padded[:, dy:dy + h, dx:dx + w], crop)]


def test_random_crop_is_the_padded_image_at_every_offset_in_range() -> None:
    """Each sample is its own zero-padded image sliced at an offset in [0, 2p] on both axes, all
    channels alike; over many draws every offset occurs; one seed gives the same crops (resume)."""
    padding = 2
    images = known_images(800, 6, 7)
    crops = random_crop(images, torch.Generator().manual_seed(0), padding)
    assert crops.shape == images.shape and crops.dtype == torch.uint8
    offsets = [crop_offsets(crop, image, padding) for crop, image in zip(crops, images)]
    assert all(len(found) == 1 for found in offsets)
    counts = Counter(found[0] for found in offsets)
    span = range(2 * padding + 1)
    assert set(counts) == {(dy, dx) for dy in span for dx in span}
    assert torch.equal(random_crop(images, torch.Generator().manual_seed(0), padding), crops)


def test_random_crop_without_padding_is_the_identity() -> None:
    images = known_images(16, 6, 7)
    assert torch.equal(random_crop(images, torch.Generator().manual_seed(0), 0), images)


def _fewer_rows(stored: dict) -> dict:
    return {**stored, "logits": stored["logits"][:-5]}


def _other_items(stored: dict) -> dict:  # the same rows, said to be of another (reordered) item list
    return {**stored, "items": "0" * 16}


def _other_classes(stored: dict) -> dict:
    return {**stored, "classes": 7, "logits": stored["logits"][:, :7]}


def _bare_tensor(stored: dict) -> torch.Tensor:  # a cache without its key, items and class count
    return stored["logits"]


def _half(stored: dict) -> dict:
    return {**stored, "logits": stored["logits"].half()}


@pytest.mark.parametrize("damage, says", [(_fewer_rows, "logits has shape"), (_other_items, "items 0000"),
                                          (_other_classes, "classes 7, expected 10"), (_bare_tensor, "not an artifact"),
                                          (_half, "float16, expected float32")])
def test_a_logits_cache_that_does_not_fit_is_rebuilt_saying_so(teacher_cell: tuple[Path, str], damage: Callable, says: str) -> None:
    """A cache with fewer rows, of another item list, another class count, dtype or without its
    record is never indexed: it is recomputed, one line says why, and the targets are the teacher's."""
    lines: list[str] = []
    ctx = student_context(teacher_cell)
    ctx.progress = lines.append
    splits = ctx.splits()
    first = ctx.teacher_logits("teacher", splits.source, splits.train)
    (cache,) = logit_caches(teacher_cell)
    torch.save(damage(torch.load(cache, weights_only=True)), cache)
    again = ctx.teacher_logits("teacher", splits.source, splits.train)
    assert [line for line in lines if str(cache) in line] == [lines[-1]] and says in lines[-1] and "recomputing" in lines[-1], lines
    batch = batch_of(ctx, shuffled(splits.train)[:100])
    assert torch.equal(again(batch), first(batch))
    stored = torch.load(cache, weights_only=True)
    assert stored["classes"] == 10 and stored["logits"].shape == (len(splits.train), 10)


def test_a_parent_model_of_another_shape_is_a_one_line_error_naming_it(teacher_cell: tuple[Path, str], tmp_path: Path) -> None:
    runs, teacher_id = teacher_cell
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    model = Store(copy).cell(teacher_id).model
    weights = torch.load(model, weights_only=True)
    first = next(iter(weights))
    torch.save({**weights, first: torch.zeros(3, *weights[first].shape[1:])}, model)
    ctx = student_context((copy, teacher_id))
    with pytest.raises(BenchError) as error:
        ctx.dependency_model("teacher")
    message = str(error.value)
    assert message.startswith(f"{model}: {first} has shape (3,") and "rm " in message and "\n" not in message, message
