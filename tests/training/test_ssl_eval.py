"""Weighted kNN and the logistic-regression probe on toy features; the tf_flowers / cats_vs_dogs folders."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data.datasets import load_dataset, prefetch_dataset
from bench.errors import BenchError, DataNotFoundError
from bench.training.ssl_eval import knn_accuracy, knn_predict, linear_probe_accuracy


def _clusters(per_class: int, classes: int, dim: int, spread: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points around orthogonal centres (basis vectors x 10): class c is around 10 e_c."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(per_class)
    centres = 10 * torch.eye(classes, dim)
    return centres[labels] + spread * torch.randn(len(labels), dim, generator=g), labels


def _random(n: int, dim: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g), torch.randint(0, classes, (n,), generator=g)


def _lightly_knn(test: torch.Tensor, train: torch.Tensor, labels: torch.Tensor, classes: int, k: int, t: float) -> torch.Tensor:
    """lightly.utils.benchmarking.knn.knn_predict, transcribed: one full similarity matrix, one-hot votes."""
    test, train = torch.nn.functional.normalize(test, dim=1), torch.nn.functional.normalize(train, dim=1)
    weight, index = (test @ train.T).topk(k, dim=-1)
    one_hot = torch.zeros(test.shape[0] * k, classes).scatter(-1, labels[index].view(-1, 1), 1.0)
    scores = (one_hot.view(test.shape[0], k, classes) * (weight / t).exp().unsqueeze(-1)).sum(1)
    return scores.argsort(dim=-1, descending=True)[:, 0]


# --------------------------------------------------------------------------- kNN


def test_knn_is_perfect_on_separated_clusters_even_with_k_above_the_train_size() -> None:
    """k=200 > 90 train points: every point votes, but exp(sim/T) lets the own cluster win."""
    train, train_y = _clusters(30, 3, 8, 1.0, seed=0)
    test, test_y = _clusters(20, 3, 8, 1.0, seed=1)
    assert knn_accuracy(train, train_y, test, test_y, k=200) == 1.0
    # Labels permuted within the train set break it: the result depends on the labels.
    assert knn_accuracy(train, train_y.roll(30), test, test_y, k=200) == 0.0


def test_knn_matches_the_direct_full_matrix_computation() -> None:
    train, train_y = _random(500, 16, 10, seed=0)
    test, _ = _random(300, 16, 10, seed=1)
    for k, t in ((1, 0.1), (20, 0.07), (200, 0.1)):
        expected = _lightly_knn(test, train, train_y, 10, k, t)
        assert torch.equal(knn_predict(train, train_y, test, k=k, temperature=t, chunk=64), expected)
    nearest = (torch.nn.functional.normalize(test, dim=1) @ torch.nn.functional.normalize(train, dim=1).T).argmax(1)
    assert torch.equal(knn_predict(train, train_y, test, k=1), train_y[nearest])


def test_knn_chunking_and_oversized_k_change_nothing() -> None:
    train, train_y = _random(200, 8, 4, seed=2)
    test, test_y = _random(101, 8, 4, seed=3)
    whole = knn_predict(train, train_y, test, k=50, chunk=10**6)
    for chunk in (1, 7, 100):
        assert torch.equal(knn_predict(train, train_y, test, k=50, chunk=chunk), whole)
    assert torch.equal(knn_predict(train, train_y, test, k=10**6), knn_predict(train, train_y, test, k=200))
    accuracy = knn_accuracy(train, train_y, test, test_y, k=50, chunk=7)
    assert accuracy == pytest.approx((whole == test_y).double().mean().item())


def test_knn_does_not_overflow_at_small_temperature() -> None:
    """exp(1 / 0.005) overflows float32; the per-row shift keeps the references' argmax."""
    train, train_y = _random(300, 8, 5, seed=4)
    test, _ = _random(50, 8, 5, seed=5)
    expected = _lightly_knn(test.double(), train.double(), train_y, 5, 20, 0.005)
    assert torch.equal(knn_predict(train, train_y, test, k=20, temperature=0.005), expected)


def test_knn_rejects_unlabeled_targets_and_bad_arguments() -> None:
    train, train_y = _random(20, 4, 2, seed=6)
    with pytest.raises(ValueError, match="non-negative"):
        knn_accuracy(train, train_y, train, torch.full((20,), -1))
    with pytest.raises(ValueError, match="width"):
        knn_accuracy(train, train_y, train[:, :3], train_y)
    with pytest.raises(ValueError, match="num_classes"):
        knn_predict(train, train_y, train, num_classes=1)
    with pytest.raises(ValueError, match="k must"):
        knn_predict(train, train_y, train, k=0)


# --------------------------------------------------------------------------- linear probe


def test_linear_probe_separates_clusters_and_is_deterministic() -> None:
    train, train_y = _clusters(50, 4, 16, 1.5, seed=7)
    test, test_y = _clusters(50, 4, 16, 1.5, seed=8)
    accuracy = linear_probe_accuracy(train, train_y, test.numpy(), test_y.numpy())
    assert accuracy >= 0.95
    assert linear_probe_accuracy(train, train_y, test, test_y) == accuracy


def test_linear_probe_on_random_labels_is_near_chance() -> None:
    """4 classes, 2000 test points: chance is 0.25 with a standard deviation of ~0.01."""
    train, train_y = _random(600, 32, 4, seed=9)
    test, test_y = _random(2000, 32, 4, seed=10)
    assert 0.20 <= linear_probe_accuracy(train, train_y, test, test_y) <= 0.30


def test_linear_probe_needs_two_classes() -> None:
    train, _ = _random(10, 4, 2, seed=11)
    with pytest.raises(ValueError, match="two classes"):
        linear_probe_accuracy(train, torch.zeros(10, dtype=torch.long), train, torch.zeros(10, dtype=torch.long))


# --------------------------------------------------------------------------- datasets


def _write_png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


FLOWERS = ("daisy", "dandelion", "roses", "sunflowers", "tulips")


@pytest.mark.parametrize(("name", "classes"), [("tf_flowers", FLOWERS), ("cats_vs_dogs", ("Cat", "Dog"))])
def test_image_folder_datasets_load_one_folder_per_class(tmp_path: Path, name: str, classes: tuple[str, ...]) -> None:
    for c, cls in enumerate(classes):
        for i in range(2):
            _write_png(tmp_path / name / "train" / cls / f"{i}.png", seed=10 * c + i)
    train = load_dataset(name, "train", root=tmp_path, image_size=16)
    assert train.num_classes == len(classes) and len(train) == 2 * len(classes)
    assert train.targets.tolist() == [c for c in range(len(classes)) for _ in range(2)]
    images, targets, _ = next(train.batches(torch.arange(len(train)), batch_size=len(train)))
    assert images.shape == (len(train), 3, 16, 16) and images.dtype == torch.uint8
    assert torch.equal(targets, train.targets)
    # No test folder yet: the error says where it looked and how to lay the split out.
    with pytest.raises(DataNotFoundError, match=rf"{name}/test.*no official split") as err:
        load_dataset(name, "test", root=tmp_path, image_size=16)
    assert str(tmp_path / name / "test") in str(err.value)
    with pytest.raises(BenchError, match=rf"{name}.*cannot be downloaded automatically"):
        prefetch_dataset(name, tmp_path)
