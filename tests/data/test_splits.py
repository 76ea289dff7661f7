"""Split protocols, stratification, manifests written once and verified on reuse."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.data.datasets import load_dataset
from bench.data.splits import make_splits
from bench.errors import BenchError


def digits_splits(tmp_path: Path, **kw):
    args = dict(protocol="official", val_fraction=0.0, label_fraction=1.0, n_per_class=None, seed=0) | kw
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    return make_splits(train, test, tmp_path, "digits", **args)


def test_resplit_4_1_1_is_a_stratified_partition_of_everything(tmp_path: Path) -> None:
    s = digits_splits(tmp_path, protocol="resplit_4_1_1")
    n = len(s.source)
    assert n == 1797
    parts = [s.train, s.val, s.test]
    assert sum(len(p) for p in parts) == n
    assert len(torch.unique(torch.cat(parts))) == n
    assert abs(len(s.train) / n - 4 / 6) < 0.01 and abs(len(s.val) / n - 1 / 6) < 0.01
    for part in parts:  # every class in every part, in proportion
        counts = torch.bincount(s.source.targets[part], minlength=10).float()
        assert (counts / counts.sum() - 0.1).abs().max() < 0.02


def test_label_fraction_is_stratified_and_disjoint_from_unlabeled(tmp_path: Path) -> None:
    s = digits_splits(tmp_path, label_fraction=0.1)
    assert len(set(s.labeled.tolist()) & set(s.unlabeled.tolist())) == 0
    assert len(s.labeled) + len(s.unlabeled) == len(s.train)
    per_class = torch.bincount(s.source.targets[s.labeled], minlength=10)
    assert per_class.min() >= 13 and per_class.max() <= 14  # 10% of ~135 per class


def test_n_per_class_takes_exactly_n_of_each_class(tmp_path: Path) -> None:
    s = digits_splits(tmp_path, n_per_class=7)
    assert s.few is not None
    assert torch.bincount(s.source.targets[s.few], minlength=10).tolist() == [7] * 10
    assert set(s.few.tolist()) <= set(s.labeled.tolist())
    assert torch.equal(digits_splits(tmp_path / "all", n_per_class="all").few, s.labeled)


def test_seed_changes_the_split_and_manifest_is_reused(tmp_path: Path) -> None:
    a = digits_splits(tmp_path, label_fraction=0.2, seed=0)
    b = digits_splits(tmp_path, label_fraction=0.2, seed=1)
    assert not torch.equal(a.labeled, b.labeled)
    manifests = sorted(tmp_path.glob("*.json"))
    assert len(manifests) == 2
    before = manifests[0].stat().st_mtime_ns
    again = digits_splits(tmp_path, label_fraction=0.2, seed=0)
    assert torch.equal(a.labeled, again.labeled)
    assert manifests[0].stat().st_mtime_ns == before  # written once, not re-drawn


def test_edited_manifest_is_an_error_not_a_silent_resample(tmp_path: Path) -> None:
    digits_splits(tmp_path, label_fraction=0.2)
    path = next(tmp_path.glob("*.json"))
    manifest = json.loads(path.read_text())
    manifest["indices"]["labeled"][0] = manifest["indices"]["unlabeled"][0]
    path.write_text(json.dumps(manifest))
    with pytest.raises(BenchError, match="checksum mismatch"):
        digits_splits(tmp_path, label_fraction=0.2)


def test_changed_dataset_is_detected(tmp_path: Path) -> None:
    digits_splits(tmp_path)
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    from bench.data.images import TensorImageSet

    shrunk = TensorImageSet(train.images[:-1], train.targets[:-1], 10, "digits")
    with pytest.raises(BenchError, match="dataset changed"):
        make_splits(shrunk, test, tmp_path, "digits", "official", 0.0, 1.0, None, 0)
