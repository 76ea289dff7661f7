"""Data distillation (Radosavovic et al. 2018): multi-transform pseudo-labels as their own stage,
and a student trained on a fixed labeled:pseudo share of every minibatch."""
from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from bench.cli import main
from bench.matrix.config import CellConfig
from bench.data.images import JoinedImageSet, TensorImageSet
from bench.data.multi_transform import fixed_crop, rescale, transforms_of
from bench.errors import ConfigError
from bench.matrix.schema import load_matrix
from bench.methods.annotate import ensemble_probabilities, select
from bench.methods.data_distill import fixed_share_order, labeled_per_batch
from bench.matrix.plan import expand
from tests.conftest import write_matrix

DD = {
    "name": "dd",
    "defaults": {"dataset": "digits", "arch": "menghani_mlp", "protocol": "official", "val_fraction": 0.1,
                 "label_fraction": 0.1, "seed": 0, "split_seed": 0, "batch_size": 32, "lr": 0.05},
    "stages": {
        "teacher": {"method": "supervised", "set": {"epochs": 40, "lr": 0.1}},
        "annotate": {"method": "annotate", "needs": {"teacher": "teacher"},
                     "set": {"epochs": 0, "annotate_scales": [0.9, 1.1], "annotate_crops": ["center"],
                             "pseudo_selection": "threshold", "pseudo_threshold": 0.5}},
        "student": {"method": "data_distill", "needs": {"annotation": "annotate"},
                    "set": {"epochs": 2, "labeled_share": 0.25}, "axes": {"seed": [0, 1]}},
    },
}


@pytest.fixture(scope="module")
def dd_results(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[Path]]]:
    folder = tmp_path_factory.mktemp("dd")
    results = folder / "runs"
    assert main(["run", str(write_matrix(folder, DD)), "--results", str(results)]) == 0
    cells: dict[str, list[Path]] = {}
    for config in sorted((results / "cells").glob("*/config.json")):
        cells.setdefault(json.loads(config.read_text())["stage"], []).append(config.parent)
    return results, cells


def _config(**fields) -> CellConfig:
    return CellConfig(stage="a", method="annotate", arch="menghani_mlp", dataset="digits", **fields)


# ----------------------------------------------------------------------------- transforms


def test_transform_set_is_named_and_flip_is_a_field() -> None:
    names = [t.name for t in transforms_of(_config(annotate_scales=(0.8, 1.0, 1.2), annotate_crops=("center",)))]
    assert names == ["identity", "scale0.8", "scale1.2", "crop_center0.875"]  # 1.0 is identity, not twice
    flipped = [t.name for t in transforms_of(_config(annotate_scales=(0.8,), annotate_flip=True))]
    assert flipped == ["identity", "scale0.8", "identity+flip", "scale0.8+flip"]
    x = torch.rand(2, 1, 12, 12)
    for t in transforms_of(_config(annotate_scales=(0.7, 1.3), annotate_crops=("top_left",), annotate_flip=True)):
        assert t.apply(x).shape == x.shape, t.name


def test_rescale_and_crops_match_torchvision() -> None:
    x = torch.rand(3, 3, 20, 20)
    up = TF.center_crop(TF.resize(x, [24, 24], antialias=True), [20, 20])
    assert torch.allclose(rescale(1.2)(x), up, atol=1e-5)
    down = TF.pad(TF.resize(x, [16, 16], antialias=True), [2, 2, 2, 2])
    assert torch.allclose(rescale(0.8)(x), down, atol=1e-5)
    corner = TF.resize(TF.crop(x, 0, 4, 16, 16), [20, 20], antialias=True)  # top-right 16x16
    assert torch.allclose(fixed_crop("top_right", 0.8)(x), corner, atol=1e-5)
    centre = TF.resize(TF.center_crop(x, [16, 16]), [20, 20], antialias=True)
    assert torch.allclose(fixed_crop("center", 0.8)(x), centre, atol=1e-5)


def test_ensemble_is_the_mean_of_the_per_transform_softmaxes() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5))
    x = torch.rand(4, 1, 8, 8)
    transforms = transforms_of(_config(annotate_scales=(1.25,), annotate_flip=True))
    direct = (F.softmax(model(x), 1) + F.softmax(model(rescale(1.25)(x)), 1)
              + F.softmax(model(x.flip(-1)), 1) + F.softmax(model(rescale(1.25)(x).flip(-1)), 1)) / 4
    assert torch.allclose(ensemble_probabilities(model, transforms, x), direct, atol=1e-6)
    # not the softmax of the mean logits (a different, also plausible, ensemble)
    logits = torch.stack([model(t.apply(x)) for t in transforms]).mean(0)
    assert not torch.allclose(direct, F.softmax(logits, 1), atol=1e-4)


# ----------------------------------------------------------------------------- selection


def test_threshold_keeps_exactly_the_confident() -> None:
    labels = torch.tensor([0, 1, 1, 2, 0])
    confidence = torch.tensor([0.9, 0.4, 0.7, 0.69, 0.7])
    kept = select(labels, confidence, _config(pseudo_threshold=0.7), torch.full((3,), 1 / 3))
    assert kept.tolist() == [0, 2, 4]
    assert select(labels, confidence, _config(), torch.full((3,), 1 / 3)).tolist() == [0, 1, 2, 3, 4]  # 0 keeps all


def test_quota_keeps_the_labeled_prior_most_confident_first() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (600,), generator=generator)
    confidence = torch.rand(600, generator=generator)
    prior = torch.tensor([0.5, 0.3, 0.2])
    kept = select(labels, confidence, _config(pseudo_selection="quota", pseudo_keep=0.25), prior)
    counts = torch.bincount(labels[kept], minlength=3)
    assert counts.tolist() == [75, 45, 30]  # 150 kept, split 50/30/20
    for cls in range(3):  # within a class, none left out is more confident than one kept
        mine = labels == cls
        kept_mask = torch.zeros(600, dtype=torch.bool)
        kept_mask[kept] = True
        assert confidence[mine & kept_mask].min() >= confidence[mine & ~kept_mask].max()


# ----------------------------------------------------------------------------- batches


@pytest.mark.parametrize(("share", "batch"), [(0.6, 10), (0.25, 32), (0.5, 7)])
def test_every_batch_has_exactly_the_labeled_share(share: float, batch: int) -> None:
    labeled = torch.arange(0, 23)
    pseudo = torch.arange(100, 261)
    k = labeled_per_batch(share, batch)
    assert k == round(share * batch)
    seen_labeled: list[int] = []
    for epoch in range(3):
        order = fixed_share_order(labeled, pseudo, batch, share, seed=4, epoch=epoch)
        assert len(order) % batch == 0
        batches = order.view(-1, batch)
        assert len(batches) == math.ceil(len(pseudo) / (batch - k))  # an epoch is a pass over the pseudo set
        assert ((batches < 100).sum(1) == k).all()  # exactly k labeled in every batch, the last one too
        assert set(order[order >= 100].tolist()) == set(pseudo.tolist())  # every pseudo item each epoch
        seen_labeled += order[order < 100].tolist()
        assert torch.equal(order, fixed_share_order(labeled, pseudo, batch, share, seed=4, epoch=epoch))  # resumable
    # the labeled set is cycled across epochs: each item as often as any other, up to one pass
    counts = torch.bincount(torch.tensor(seen_labeled), minlength=23)
    assert counts.max() - counts.min() <= 1


def test_joined_sets_keep_order_and_labels() -> None:
    a = TensorImageSet(torch.zeros(3, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 1, 2]), 3, "a")
    b = TensorImageSet(torch.full((2, 1, 4, 4), 7, dtype=torch.uint8), torch.tensor([5, 6]), 7, "b")
    joined = JoinedImageSet(a, b)
    (images, targets, idx), = joined.batches(torch.tensor([4, 0, 3, 2]), 8)
    assert images[:, 0, 0, 0].tolist() == [7, 0, 7, 0] and targets.tolist() == [6, 0, 5, 2] and idx.tolist() == [4, 0, 3, 2]


# ----------------------------------------------------------------------------- the pipeline


def test_annotate_runs_once_for_all_students_and_reports_its_pseudo_labels(dd_results) -> None:
    results, cells = dd_results
    (annotate,) = cells["annotate"]
    assert len(cells["student"]) == 2
    r = json.loads((annotate / "result.json").read_text())
    assert r["transforms"] == ["identity", "scale0.9", "scale1.1", "crop_center0.875"]
    assert 0 < r["coverage"] <= 1 and r["pseudo_kept"] == round(r["coverage"] * r["pool_size"])
    assert 0.5 < r["pseudo_acc"] <= 1  # digits' hidden labels
    assert 0 < r["test_acc"] <= 1
    assert sum(c["kept"] for c in r["pseudo_per_class"].values()) == r["pseudo_kept"]
    artifact = torch.load(annotate / "artifacts" / "pseudo_labels.pt", weights_only=True)
    assert len(artifact["items"]) == r["pseudo_kept"] and (artifact["confidence"] >= 0.5).all()
    assert not (annotate / "model.pt").exists() and not (annotate / "checkpoint.pt").exists()
    for student in cells["student"]:
        config = json.loads((student / "config.json").read_text())
        assert config["deps"]["annotation"] == annotate.name and "teacher" in config["deps"]
    # a second run finds everything done and runs nothing again
    mtime = (annotate / "DONE").stat().st_mtime_ns
    assert main(["run", str(results.parent / "m.yaml"), "--results", str(results)]) == 0
    assert (annotate / "DONE").stat().st_mtime_ns == mtime


def test_students_train_on_their_share_and_beat_nothing_by_chance(dd_results) -> None:
    _, cells = dd_results
    accuracies = [json.loads((s / "result.json").read_text())["test_acc"] for s in cells["student"]]
    assert all(0.5 < a <= 1 for a in accuracies), accuracies  # far above chance (0.1) in 2 epochs
    assert accuracies[0] != accuracies[1]  # two seeds, two students of one annotation


def test_fields_stay_on_their_stages_and_new_defaults_change_no_id() -> None:
    cells = expand(load_matrix_dict(DD))
    teacher = next(c for c in cells if c.stage == "teacher")
    assert teacher.config.labeled_share is None and teacher.config.annotate_scales == ()
    changed = {**DD, "stages": {**DD["stages"], "student": {**DD["stages"]["student"], "set": {"epochs": 2, "labeled_share": 0.5}}}}
    again = expand(load_matrix_dict(changed))
    assert {c.id for c in again if c.stage != "student"} == {c.id for c in cells if c.stage != "student"}
    assert {c.id for c in again if c.stage == "student"}.isdisjoint({c.id for c in cells if c.stage == "student"})


def test_a_student_without_its_share_is_refused_when_planned() -> None:
    student = {**DD["stages"]["student"], "set": {"epochs": 2}}
    with pytest.raises(ConfigError, match="method 'data_distill' needs the field 'labeled_share'"):
        expand(load_matrix_dict({**DD, "stages": {**DD["stages"], "student": student}}))


def load_matrix_dict(matrix: dict) -> object:
    import tempfile

    return load_matrix(write_matrix(Path(tempfile.mkdtemp()), matrix))


def test_a_killed_annotate_cell_resumes_and_never_leaves_a_half_written_artifact(tmp_path: Path) -> None:
    matrix = {**DD, "stages": {"teacher": DD["stages"]["teacher"], "annotate": {
        **DD["stages"]["annotate"], "set": {**DD["stages"]["annotate"]["set"], "batch_size": 1,
                                            "annotate_scales": [0.9, 1.1, 0.8, 1.2, 0.7, 1.3], "annotate_flip": True}}}}
    path = write_matrix(tmp_path, matrix)
    results = tmp_path / "runs"
    assert main(["run", str(path), "--results", str(results), "--only", "teacher"]) == 0
    # the same command, saving its partial annotation every 2 batches instead of every 200, and
    # pausing 50 ms after each save so the whole pass takes ~30 s: the kill lands before its end
    code = ("import sys, time, bench.methods.annotate as a; a.CHUNK_BATCHES = 2; save = a.atomic_torch_save; "
            "a.atomic_torch_save = lambda *args, **kw: (save(*args, **kw), time.sleep(0.05)); "
            "from bench.cli import main; "
            f"sys.exit(main(['run', {str(path)!r}, '--results', {str(results)!r}]))")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    cell = None
    while time.monotonic() < deadline and cell is None:
        found = [c.parent for c in (results / "cells").glob("*/checkpoint.pt")
                 if json.loads((c.parent / "config.json").read_text())["stage"] == "annotate"]
        cell = found[0] if found else None
        time.sleep(0.05)
    assert cell is not None, "the annotate cell never saved its partial state"
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 143, out
    assert not (cell / "DONE").exists() and not (cell / "artifacts" / "pseudo_labels.pt").exists()
    partial = torch.load(cell / "checkpoint.pt", weights_only=True)
    assert 0 < partial["done"] < partial["labels"].numel()
    assert main(["run", str(path), "--results", str(results)]) == 0
    artifact = torch.load(cell / "artifacts" / "pseudo_labels.pt", weights_only=True)
    # the resumed annotation is the uninterrupted one
    fresh = tmp_path / "fresh"
    assert main(["run", str(path), "--results", str(fresh)]) == 0
    again = torch.load(fresh / "cells" / cell.name / "artifacts" / "pseudo_labels.pt", weights_only=True)
    for key in ("items", "labels", "confidence"):
        assert torch.equal(artifact[key], again[key]), key


def test_the_paper_scale_matrix_plans_its_grid() -> None:
    from tests.conftest import ROOT

    cells = expand(load_matrix(ROOT / "matrices" / "radosavovic2018.yaml"))
    by_stage: dict[str, list] = {}
    for cell in cells:
        by_stage.setdefault(cell.stage, []).append(cell)
    assert {(c.config.dataset, c.config.label_fraction) for c in by_stage["teacher"]} == {
        (d, f) for d in ("cifar10", "imagenet") for f in (0.1, 0.25)}
    assert {c.config.label_fraction for c in by_stage["upper_bound"]} == {1.0} and len(by_stage["upper_bound"]) == 2
    (multi,) = {tuple(t.name for t in transforms_of(c.config)) for c in by_stage["annotate_multi"]}
    assert multi == ("identity", "scale0.8", "scale0.9", "scale1.1", "scale1.2",
                     "identity+flip", "scale0.8+flip", "scale0.9+flip", "scale1.1+flip", "scale1.2+flip")
    assert {tuple(t.name for t in transforms_of(c.config)) for c in by_stage["annotate_single"]} == {("identity",)}
    for stage in ("self_training", "data_distill", "data_distill_init"):
        assert {(c.config.arch, c.config.labeled_share) for c in by_stage[stage]} == {("resnet50", 0.6)}
    assert {c.config.init for c in by_stage["data_distill_init"]} == {"teacher"}
    assert all(c.config.labeled_share is None for c in by_stage["teacher"] + by_stage["annotate_multi"])


# ----------------------------------------------------------------------------- a checked annotation

TINY_DISTILL = Path(__file__).resolve().parents[1] / "fixtures" / "tiny-distill.yaml"


@pytest.fixture(scope="module")
def annotated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/fixtures/tiny-distill.yaml run up to its annotation (the student not yet)."""
    results = tmp_path_factory.mktemp("annotated") / "runs"
    assert main(["run", str(TINY_DISTILL), "--results", str(results), "--only", "annotate"]) == 0
    return results


def _shorter_labels(a: dict) -> dict:
    return {**a, "labels": a["labels"][:-3]}


def _label_outside(a: dict) -> dict:
    labels = a["labels"].clone()
    labels[0] = 10
    return {**a, "labels": labels}


def _item_outside(a: dict) -> dict:
    items = a["items"].clone()
    items[0] = 100_000
    return {**a, "items": items}


def _other_classes(a: dict) -> dict:
    return {**a, "classes": 100}


def _other_pool(a: dict) -> dict:  # the same items, from a pool listed in another order
    return {**a, "pool": "f" * 16}


def _float_labels(a: dict) -> dict:
    return {**a, "labels": a["labels"].float()}


@pytest.mark.parametrize("damage, says", [
    (_shorter_labels, "labels has shape"), (_label_outside, "outside the 10 classes"),
    (_item_outside, "outside the pool"), (_other_classes, "classes 100, expected 10"),
    (_other_pool, "pool ffff"), (_float_labels, "labels is float32")])
def test_pseudo_labels_that_do_not_fit_are_a_one_line_error_naming_the_file(
        annotated: Path, tmp_path: Path, damage, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    results = tmp_path / "runs"
    import shutil
    shutil.copytree(annotated, results)
    (artifact,) = results.glob("cells/*/artifacts/pseudo_labels.pt")
    torch.save(damage(torch.load(artifact, weights_only=True)), artifact)
    capsys.readouterr()
    assert main(["run", str(TINY_DISTILL), "--results", str(results)]) == 1
    err = capsys.readouterr().err
    (failed,) = [line for line in err.splitlines() if line.startswith("  failed ")]
    assert f"{artifact}: " in failed and says in failed and "rm " in failed, failed
    assert "Traceback" not in err and len(list(results.glob("cells/*/DONE"))) == 2  # teacher, annotation: no student
