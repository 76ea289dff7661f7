"""The view bank: a student's teacher targets are the teacher's logits on the very view it sees,
computed once per teacher, resumable, shared by its students."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.matrix.config import CellConfig
from bench.cell.context import CellContext
from bench.data.augment import augment
from bench.training.interface import Batch
from bench.training.runtime import Runtime
from bench.seeding import derived_generator
from bench.results.store import Store, read_json
from bench.cell import view_bank
from bench.cell.view_bank import BankedTeacher, BankSpec, bank_path, load_or_build
from tests.conftest import write_matrix

MATRIX = {
    "name": "bank",
    "defaults": {"dataset": "digits", "image_size": 16, "protocol": "official", "epochs": 2, "lr": 0.05, "batch_size": 64},
    "stages": {
        "teacher": {"method": "supervised", "axes": {"arch": ["menghani_cnn"]}},
        "student": {"method": "kd", "needs": {"teacher": "teacher"},
                    "set": {"augment": ["crop", "flip"], "crop_padding": 2, "temperature": 4.0, "label_fraction": 0.5,
                            "teacher_targets": "bank", "bank_views": 3},
                    "axes": {"arch": ["menghani_mlp", "menghani_cnn"]}},
    },
}


@pytest.fixture(scope="module")
def banked_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bank")
    results = folder / "runs"
    assert main(["run", str(write_matrix(folder, MATRIX)), "--results", str(results)]) == 0
    return results


def _cells(results: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for config in sorted((results / "cells").glob("*/config.json")):
        out.setdefault(read_json(config)["stage"], []).append(config.parent)
    return out


def _teacher_and_spec(results: Path, precision: str) -> tuple[CellContext, BankSpec]:
    student = _cells(results)["student"][0]
    config = CellConfig.model_validate(read_json(student / "config.json"))
    ctx = CellContext(config, student.name, Store(results), Runtime(device="cpu"))
    spec = BankSpec(tuple(config.augment), config.crop_padding, config.bank_views, config.bank_seed, precision)
    return ctx, spec


def test_two_students_of_one_teacher_build_its_bank_once(banked_run: Path) -> None:
    cells = _cells(banked_run)
    banks = list(cells["teacher"][0].glob("artifacts/bank-*.pt"))
    assert len(banks) == 1 and not list(cells["teacher"][0].glob("artifacts/*partial*"))
    logs = [(s / "log.txt").read_text() for s in cells["student"]]
    assert sum("view bank of" in log for log in logs) == 1  # the first student built it, the second loaded it
    bank = torch.load(banks[0], weights_only=True)
    shards = sorted(banks[0].with_name(banks[0].name.replace(".pt", ".shards")).glob("logits-*.npy"))
    logits = np.load(shards[0], mmap_mode="r")
    assert logits.dtype == np.float16 and logits.shape[1] == MATRIX["stages"]["student"]["set"]["bank_views"]
    assert bank["dy"].max() <= 4 and bank["flip"].any() and not bank["flip"].all()  # offsets within 2 * padding, flips drawn


@pytest.mark.parametrize(("precision", "tolerance"), [("float32", 0.0), ("float16", 2e-3)])
def test_a_students_targets_are_the_teachers_logits_on_the_view_it_sees(banked_run: Path, tmp_path: Path,
                                                                       precision: str, tolerance: float) -> None:
    ctx, spec = _teacher_and_spec(banked_run, precision)
    splits = ctx.splits()
    teacher = ctx.frozen_model("teacher")
    # one image per forward, as recomputed below: a CPU's GEMM may round differently at another batch size (1 ulp here)
    alone = Runtime(device="cpu", infer_batch_size=1)
    path = bank_path(tmp_path, splits.source, splits.train, spec, alone)
    bank = load_or_build(teacher, splits.source, splits.train, spec, alone, 64, path, lambda m: None)
    banked = BankedTeacher(bank, len(splits.source), spec, torch.device("cpu"))
    idx = splits.train[torch.randperm(len(splits.train), generator=torch.Generator().manual_seed(1))[:50]]
    images = next(splits.source.batches(idx, len(idx)))[0]  # at the cell's image_size
    view = banked.view(images, derived_generator(5, 0, "augment"), idx)
    assert view.shape == (50, 1, 16, 16) and view.dtype == torch.float32
    got = banked.targets(Batch((view,), splits.source.targets[idx], idx))
    with torch.no_grad():
        recomputed = torch.cat([teacher(image[None]) for image in view])
    scale = recomputed.abs().max().item()
    assert (got - recomputed).abs().max().item() <= tolerance * scale  # float32: exactly; float16: its rounding
    # and the views are the cell's augmentation: with one stored view per image equal to a fresh draw
    assert not torch.equal(view, images.float() / 255)


def test_bank_views_are_crops_and_flips_as_the_cells_own_augmentation_makes() -> None:
    images = torch.randint(0, 256, (6, 1, 8, 8), dtype=torch.uint8)
    spec = BankSpec(("crop", "flip"), 2, 1, 0, "float32")
    generator = torch.Generator().manual_seed(3)
    dy = torch.randint(0, 5, (6,), generator=generator)
    dx = torch.randint(0, 5, (6,), generator=generator)
    flip = torch.rand(6, generator=generator) < 0.5
    replayed = view_bank.apply_params(images, dy, dx, flip, spec)
    fresh = augment(images, ("crop", "flip"), torch.Generator().manual_seed(3), 2).float() / 255
    assert torch.equal(replayed, fresh)  # same draws, same order: the same views


def test_a_killed_bank_build_resumes_and_ends_equal_to_an_uninterrupted_one(banked_run: Path, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, spec = _teacher_and_spec(banked_run, "float32")
    splits = ctx.splits()
    teacher = ctx.frozen_model("teacher")
    monkeypatch.setattr(view_bank, "CHUNK_BATCHES", 2)
    calls = {"n": 0}

    class Killed(Exception):
        pass

    class DiesAfterAWhile(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls["n"] += 1
            if calls["n"] > 2 * 2 * spec.views + 1:  # into the third chunk of two batches
                raise Killed
            return teacher(x)

    dies_after_a_while = DiesAfterAWhile()

    path = bank_path(tmp_path, splits.source, splits.train, spec, ctx.runtime)
    with pytest.raises(Killed):
        load_or_build(dies_after_a_while, splits.source, splits.train, spec, ctx.runtime, 32, path, lambda m: None)
    partial = path.with_name(path.name.replace(".pt", ".shards"))
    assert len(list(partial.glob("logits-*.npy"))) == 2 and not path.exists()  # two shards of two batches written
    said: list[str] = []
    resumed = load_or_build(teacher, splits.source, splits.train, spec, ctx.runtime, 32, path, said.append)
    assert any("resuming the view bank at image 128/" in line for line in said), said
    whole = load_or_build(teacher, splits.source, splits.train, spec, ctx.runtime, 32, tmp_path / "other" / path.name, lambda m: None)
    assert all(torch.equal(resumed[k], whole[k]) for k in ("items", "dy", "dx", "flip"))
    assert torch.equal(resumed["logits"].all(), whole["logits"].all())


def test_banked_students_learn_and_online_ids_leave_the_bank_fields_out(banked_run: Path) -> None:
    from bench.matrix.config import id_payload

    for student in _cells(banked_run)["student"]:
        assert json.loads((student / "result.json").read_text())["test_acc"] > 0.5  # chance is 0.1
    config = read_json(_cells(banked_run)["student"][0] / "config.json")
    assert {"teacher_targets", "bank_views"} <= set(id_payload(CellConfig.model_validate(config)))
    online = CellConfig.model_validate({**config, "teacher_targets": "online", "bank_views": 10})
    assert not {"teacher_targets", "bank_views", "bank_seed", "bank_precision"} & set(id_payload(online))


def test_a_bank_refuses_the_colour_distortion_it_cannot_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = json.loads(json.dumps(MATRIX))
    spec["stages"]["student"]["set"]["augment"] = ["crop", "color"]
    assert main(["plan", str(write_matrix(tmp_path, spec))]) == 2
    assert "a view bank replays crop and flip only" in capsys.readouterr().err


def test_plan_cost_counts_teacher_passes_per_mode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Online: a pass per student epoch; bank: bank_views passes per bank, shared by the students
    with the same items (seeds of one split); no augmentation: one cached pass per teacher."""
    from bench.matrix.schema import load_matrix
    from bench.matrix.plan import expand
    from bench.matrix.plan_cost import teacher_passes

    matrix = {
        "name": "cost", "defaults": {"dataset": "digits", "image_size": 8, "split_seed": 0},
        "stages": {
            "teacher": {"method": "supervised", "set": {"epochs": 2}, "axes": {"arch": ["menghani_cnn"]}},
            "student": {"method": "kd", "needs": {"teacher": "teacher"},
                        "set": {"epochs": 7, "augment": ["crop", "flip"], "bank_views": 3},
                        "axes": {"seed": [0, 1, 2], "teacher_targets": ["online", "bank"]}},
            "plain": {"method": "kd", "needs": {"teacher": "teacher"}, "set": {"epochs": 7}, "axes": {"seed": [0, 1]}},
        },
    }
    cells = expand(load_matrix(write_matrix(tmp_path, matrix)))
    costs = {cost.stage: cost for cost in teacher_passes(cells)}
    augmented, plain = costs["student"], costs["plain"]
    assert augmented.students == 6 and plain.students == 2
    assert augmented.online == 6 * 7 and augmented.bank == 3  # three seeds of one split: one bank
    assert augmented.configured == 3 * 7 + 3  # the online half, and the bank the other half shares
    assert (plain.online, plain.bank, plain.configured) == (1, 1, 1)  # the logits cache, once
    assert main(["plan", str(tmp_path / "m.yaml"), "--cost"]) == 0
    out = capsys.readouterr().out
    assert "teacher forwards" in out and "0.071" in out  # bank / online of the augmented stage: 3 / 42


def test_a_bank_is_read_memory_mapped_and_a_mismatched_one_is_rebuilt_in_one_line(banked_run: Path, tmp_path: Path) -> None:
    """Logits stay in memory-mapped shards (a batch's rows are gathered); a bank whose meta,
    parameters or shards are not what the student needs is rebuilt, saying why in one line."""
    ctx, spec = _teacher_and_spec(banked_run, "float32")
    splits = ctx.splits()
    teacher = ctx.frozen_model("teacher")
    path = bank_path(tmp_path, splits.source, splits.train, spec, ctx.runtime)
    bank = load_or_build(teacher, splits.source, splits.train, spec, ctx.runtime, 32, path, lambda m: None)
    assert all(isinstance(shard, np.memmap) for shard in bank["logits"].shards)
    rows, views = torch.tensor([0, len(splits.train) - 1, 5]), torch.tensor([1, 0, 2])
    assert torch.equal(bank["logits"].rows(rows, views), bank["logits"].all()[rows, views])
    shards = path.with_name(path.name.replace(".pt", ".shards"))
    meta = read_json(shards / "meta.json")
    assert meta["items"] == len(splits.train) and meta["views"] == spec.views and meta["dtype"] == "float32"
    for damage, reason in ((lambda: (shards / "meta.json").write_text(json.dumps({**meta, "views": 9})), "made for other views"),
                           (lambda: np.save(shards / "logits-00000.npy", np.zeros((3, 3, 3), np.float32)), "shard logits-00000.npy")):
        damage()
        said: list[str] = []
        again = load_or_build(teacher, splits.source, splits.train, spec, ctx.runtime, 32, path, said.append)
        assert sum(reason in line and "building it again" in line for line in said) == 1, said
        assert torch.equal(again["logits"].all(), bank["logits"].all())


def test_bank_size_is_stated_from_its_shape() -> None:
    """ImageNet: 1.28 M images x 10 views x 1000 classes in float16 is 25.6 GB of logits."""
    assert view_bank.bank_bytes(1_281_167, 10, 1000, "float16") == 1_281_167 * 10 * (2000 + 5)
