"""View banks that fit ImageNet (issue 24, point 4): random-resized-crop views replayed bit for bit
from stored boxes (in-memory and streamed sets), top-k soft labels with FKD's renormalisation,
and the bank's checks, resume and memory-mapped reads covering both."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bench.cell import view_bank
from bench.cell.bank_views import BankSpec
from bench.cli import main
from bench.data.image_folders import with_recipe
from bench.data.images import ImageSet, StreamedImageSet, TensorImageSet
from bench.errors import BenchError
from bench.training.interface import Batch
from bench.training.runtime import Runtime
from bench.seeding import derived_generator
from bench.cell.soft_labels import rebuild, top_k
from bench.results.store import read_json
from bench.cell.view_bank import BankedTeacher, bank_path, load_or_build
from tests.conftest import write_matrix

SIZE, CLASSES = 16, 7
ALONE = Runtime(device="cpu", infer_batch_size=1)  # one image per forward, as the checks recompute them


class Recording(nn.Module):
    """A linear teacher that remembers the bytes of every view it was shown."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(3 * SIZE * SIZE, CLASSES)
        self.seen: set[bytes] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.update(row.numpy().tobytes() for row in x)
        return self.linear(x.flatten(1))


def _spec(top: int | None = None, precision: str = "float32", views: int = 4) -> BankSpec:
    return BankSpec(("crop", "flip"), 4, views, 0, precision, "imagenet", top)


def _in_memory() -> TensorImageSet:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (12, 3, 40, 30), generator=g, dtype=torch.uint8)  # native 40x30, served at 16
    return TensorImageSet(images, torch.arange(12) % CLASSES, CLASSES, "noise").resized(SIZE)


@pytest.fixture(scope="module")
def streamed(tmp_path_factory: pytest.TempPathFactory) -> StreamedImageSet:
    """A folder of JPEGs of several sizes (smooth gradients with noise), under the imagenet recipe."""
    from torchvision.datasets import ImageFolder
    from torchvision.io import encode_jpeg

    from bench.data.dataset_registry import stream_transform

    root = tmp_path_factory.mktemp("jpegs")
    g = torch.Generator().manual_seed(1)
    for k, (h, w) in enumerate([(60, 80), (75, 50), (48, 64), (90, 60), (64, 64), (50, 70)]):
        folder = root / f"c{k % 2}"
        folder.mkdir(exist_ok=True)
        ramp = torch.linspace(0, 1, w)[None, None, :] * torch.linspace(0.3, 1, h)[None, :, None] * torch.rand(3, 1, 1, generator=g)
        image = (ramp * 200 + torch.rand(3, h, w, generator=g) * 55).to(torch.uint8)
        (folder / f"{k}.JPEG").write_bytes(encode_jpeg(image, quality=90).numpy().tobytes())
    data = ImageFolder(str(root), transform=stream_transform(SIZE))
    return with_recipe(StreamedImageSet(data, torch.tensor(data.targets), 2, 3, SIZE, "jpegs"), "imagenet")  # type: ignore[return-value]


def _replay_matches_the_teachers_views(source: ImageSet, spec: BankSpec, folder: Path, workers: int) -> None:
    items = torch.arange(len(source))
    teacher = Recording()
    path = bank_path(folder, source, items, spec, ALONE)
    bank = load_or_build(teacher, source, items, spec, ALONE, 4, path, lambda m: None)
    assert len(teacher.seen) == len(items) * spec.views  # every view distinct
    banked = BankedTeacher(bank, len(source), spec, torch.device("cpu"), seed=3)
    for epoch in (0, 1):
        order = items[torch.randperm(len(items), generator=derived_generator(3, epoch, "order"))]
        crops = banked.crops(epoch, order)
        assert len({tuple(b) for b in crops.boxes.tolist()}) > len(items) // 2 and crops.flips.any() and not crops.flips.all()
        for images, targets, idx in source.batches(order, 5, workers, crops):
            view = banked.view(images, torch.Generator(), idx)
            assert view.shape == (len(idx), 3, SIZE, SIZE)
            assert all(row.numpy().tobytes() in teacher.seen for row in view)  # bit for bit a view the teacher saw
            got = banked.targets(Batch((view,), targets, idx))
            with torch.no_grad():
                logits = torch.cat([teacher.linear(v[None].flatten(1)) for v in view])
            want = logits if spec.top_k is None else rebuild(*top_k(logits, spec.top_k), CLASSES)
            assert torch.allclose(got, want, rtol=0, atol=1e-5) if spec.top_k else torch.equal(got, want)


@pytest.mark.parametrize("top", [None, 3])
def test_in_memory_replay_is_the_view_the_teacher_saw(tmp_path: Path, top: int | None) -> None:
    _replay_matches_the_teachers_views(_in_memory(), _spec(top), tmp_path, workers=0)


def test_streamed_replay_is_the_view_the_teacher_saw(streamed: StreamedImageSet, tmp_path: Path) -> None:
    """Built with the views cut in the loader (decoded once per image); replayed by a worker
    process handed each image's stored box and flip."""
    _replay_matches_the_teachers_views(streamed, _spec(3), tmp_path, workers=1)


def test_top_k_keeps_the_top_logits_and_the_rests_mass_at_t1() -> None:
    """C = 5, k = 2 by hand: the rest's value is log((e^0.5 + e^-1 + e^-2) / 3); at T = 1 the
    top two probabilities are the teacher's, each other class gets (1 - their sum) / 3 (FKD)."""
    logits = torch.tensor([[1.0, 2.0, 0.5, -1.0, -2.0]])
    values, index = top_k(logits, 2)
    rest = math.log((math.exp(0.5) + math.exp(-1.0) + math.exp(-2.0)) / 3)
    assert index.dtype == torch.int16 and index.tolist() == [[1, 0]]
    assert torch.allclose(values, torch.tensor([[2.0, 1.0, rest]]))
    rebuilt = rebuild(values, index, 5)
    assert torch.allclose(rebuilt, torch.tensor([[1.0, 2.0, rest, rest, rest]]))
    z = sum(math.exp(v) for v in (1.0, 2.0, 0.5, -1.0, -2.0))
    p1, p0 = math.exp(2.0) / z, math.exp(1.0) / z
    want = torch.tensor([[p0, p1, (1 - p0 - p1) / 3, (1 - p0 - p1) / 3, (1 - p0 - p1) / 3]])
    assert torch.allclose(rebuilt.softmax(1), want, atol=1e-7)
    at_t4 = (rebuilt / 4).softmax(1)[0]
    assert math.isclose(at_t4[1] / at_t4[0], math.exp((2.0 - 1.0) / 4), rel_tol=1e-6)  # the top ratios at any T
    with pytest.raises(BenchError, match="bank_top_k 5: the teacher has 5 classes"):
        top_k(logits, 5)


def test_pad_crop_banks_keep_their_keys_and_bytes_are_stated_with_top_k() -> None:
    plain = BankSpec(("crop", "flip"), 4, 10, 0, "float16")
    assert plain.describe() == "augment=crop,flip|padding=4|views=10|seed=0|float16" and not plain.boxes
    assert _spec(5).describe().endswith("|recipe=imagenet|top_k=5") and _spec(5).boxes
    full = view_bank.bank_bytes(1_281_167, 10, 1000, "float16")
    topk = view_bank.bank_bytes(1_281_167, 10, 1000, "float16", top_k=5, boxes=True)
    assert full == 1_281_167 * 10 * (2000 + 5) and topk == 1_281_167 * 10 * (6 * 2 + 5 * 2 + 10)  # 25.6 GB vs 0.41 GB
    assert topk < full / 60


def _parts(path: Path) -> dict[str, list[Path]]:
    shards = path.with_name(path.name.replace(".pt", ".shards"))
    return {part: sorted(shards.glob(f"{part}-*.npy")) for part in ("params", "indices", "logits")}


def test_a_bank_of_other_parameters_is_rebuilt_in_one_line_and_read_memory_mapped(tmp_path: Path) -> None:
    source, items, spec = _in_memory(), torch.arange(12), _spec(3)
    path = bank_path(tmp_path, source, items, spec, ALONE)
    teacher = Recording()
    bank = load_or_build(teacher, source, items, spec, ALONE, 4, path, lambda m: None)
    for part in ("params", "indices", "logits"):
        assert all(isinstance(shard, np.memmap) for shard in bank[part].shards)  # type: ignore[attr-defined]
    assert bank["logits"].shape == (12, 4, 4) and bank["indices"].shape == (12, 4, 3) and bank["params"].shape == (12, 4, 5)  # type: ignore[attr-defined]
    shards = path.with_name(path.name.replace(".pt", ".shards"))
    meta = read_json(shards / "meta.json")
    assert meta["recipe"] == "imagenet" and meta["top_k"] == 3 and meta["classes"] == CLASSES
    first = _parts(path)
    for damage, reason in (
        (lambda: (shards / "meta.json").write_text(json.dumps({**meta, "top_k": 4})), "made for other top_k"),
        (lambda: (shards / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "recipe"})), "made for other recipe"),
        (lambda: np.save(first["params"][0], np.zeros((4, 4, 4), np.int16)), "shard params-00000.npy"),
        (lambda: np.save(first["indices"][0], np.zeros((4, 4, 3), np.int64)), "shard indices-00000.npy"),
    ):
        damage()
        said: list[str] = []
        again = load_or_build(teacher, source, items, spec, ALONE, 4, path, said.append)
        assert sum(reason in line and "building it again" in line for line in said) == 1, said
        assert all(torch.equal(again[p].all(), bank[p].all()) for p in ("params", "indices", "logits"))  # type: ignore[attr-defined]


def test_a_killed_build_of_boxes_and_top_k_resumes_equal_to_an_uninterrupted_one(streamed: StreamedImageSet, tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(view_bank, "CHUNK_BATCHES", 1)  # a shard per inference batch of 1 image: 6 shards
    items, spec = torch.arange(len(streamed)), _spec(2, "float16", views=3)
    teacher = Recording()

    class Killed(Exception):
        pass

    calls = {"n": 0}

    class DiesInTheThirdShard(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls["n"] += 1
            if calls["n"] > 2 * spec.views + 1:  # a forward per view and image: into the third image
                raise Killed
            return teacher(x)

    path = bank_path(tmp_path, streamed, items, spec, ALONE)
    with pytest.raises(Killed):
        load_or_build(DiesInTheThirdShard(), streamed, items, spec, ALONE, 2, path, lambda m: None)
    written = _parts(path)
    assert [len(written[p]) for p in ("params", "indices", "logits")] == [2, 2, 2] and not path.exists()
    said: list[str] = []
    resumed = load_or_build(teacher, streamed, items, spec, ALONE, 2, path, said.append)
    assert any("resuming the view bank at image 2/6" in line for line in said), said
    whole = load_or_build(teacher, streamed, items, spec, ALONE, 2, tmp_path / "other" / path.name, lambda m: None)
    for part in ("params", "indices", "logits"):
        assert torch.equal(resumed[part].all(), whole[part].all())  # type: ignore[attr-defined]


MATRIX = {
    "name": "rrcbank",
    "defaults": {"dataset": "digits", "image_size": 16, "epochs": 2, "batch_size": 64, "lr": 0.05, "recipe": "imagenet"},
    "stages": {
        "teacher": {"method": "supervised", "set": {"augment": ["crop", "flip"], "epochs": 1}, "axes": {"arch": ["menghani_cnn"]}},
        "student": {"method": "kd", "needs": {"teacher": "teacher"},
                    "set": {"augment": ["crop", "flip"], "temperature": 4.0, "teacher_targets": "bank", "bank_views": 3,
                            "bank_top_k": 5},
                    "axes": {"arch": ["menghani_mlp"]}},
    },
}


def test_a_matrix_with_an_imagenet_top_k_bank_plans_costs_and_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    matrix = write_matrix(tmp_path, MATRIX)
    assert main(["plan", str(matrix), "--cost"]) == 0
    out = capsys.readouterr().out
    assert "view banks" in out and "1.35 k x 3 random-resized crops top-5 logits, float16" in out, out
    results = tmp_path / "runs"
    assert main(["run", str(matrix), "--results", str(results)]) == 0
    teacher = next(p.parent for p in (results / "cells").glob("*/config.json") if read_json(p)["stage"] == "teacher")
    bank = next(teacher.glob("artifacts/bank-*.pt"))
    meta = read_json(bank.with_name(bank.name.replace(".pt", ".shards")) / "meta.json")
    assert (meta["recipe"], meta["top_k"], meta["views"], meta["classes"]) == ("imagenet", 5, 3, 10)
    student = next(p.parent for p in (results / "cells").glob("*/config.json") if read_json(p)["stage"] == "student")
    losses = [row["train_loss"] for row in json.loads((student / "metrics.json").read_text())]
    assert losses[1] < losses[0] and "view bank of 1347 images x 3 views built" in (student / "log.txt").read_text()
