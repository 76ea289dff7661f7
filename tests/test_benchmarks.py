"""Speed, measured with pytest-benchmark (never asserted): run with
``python -m pytest tests/test_benchmarks.py --benchmark-enable -o addopts=''`` and compare the
rows of each group; in the default suite each runs once as a smoke test."""
from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from bench.data.augment import augment
from bench.data.datasets import load_dataset
from bench.models import create_model

BATCH = 128


@pytest.fixture(scope="module")
def fashion() -> torch.Tensor:
    return load_dataset("fashion_mnist", "train").images[:8192]


class PilImages(Dataset):
    """The per-sample path our in-memory batches replace: PIL image -> transforms -> tensor."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = [Image.fromarray(x[0].numpy()) for x in images]
        self.transform = v2.Compose([v2.PILToTensor(), v2.RandomCrop(28, padding=4), v2.RandomHorizontalFlip()])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(self.images[i])


@pytest.mark.benchmark(group="data: one epoch of 8192 augmented 28x28 images")
def test_batched_in_memory_augmentation(benchmark, fashion: torch.Tensor) -> None:
    def epoch() -> int:
        generator = torch.Generator().manual_seed(0)
        order = torch.randperm(len(fashion), generator=generator)
        seen = 0
        for start in range(0, len(order), BATCH):
            x = augment(fashion[order[start:start + BATCH]], ("crop", "flip"), generator, 4)
            seen += x.float().div_(255).shape[0]
        return seen

    assert benchmark(epoch) == len(fashion)


@pytest.mark.benchmark(group="data: one epoch of 8192 augmented 28x28 images")
def test_per_sample_pil_dataloader(benchmark, fashion: torch.Tensor) -> None:
    loader = DataLoader(PilImages(fashion), batch_size=BATCH, shuffle=True, num_workers=0)

    def epoch() -> int:
        return sum(batch.float().div_(255).shape[0] for batch in loader)

    assert benchmark(epoch) == len(fashion)


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    return create_model("menghani_cnn", 10, 1, 28).eval()


@pytest.mark.benchmark(group="kd: teacher targets for 4096 images")
def test_teacher_logits_from_cache(benchmark, teacher: torch.nn.Module, fashion: torch.Tensor) -> None:
    images = fashion[:4096].float() / 255
    with torch.no_grad():
        table = torch.cat([teacher(images[i:i + BATCH]) for i in range(0, len(images), BATCH)])
    order = torch.randperm(len(images))

    def lookup() -> int:
        return sum(table[order[i:i + BATCH]].shape[0] for i in range(0, len(order), BATCH))

    assert benchmark(lookup) == len(images)


@pytest.mark.benchmark(group="kd: teacher targets for 4096 images")
def test_teacher_logits_recomputed(benchmark, teacher: torch.nn.Module, fashion: torch.Tensor) -> None:
    images = fashion[:4096].float() / 255

    def recompute() -> int:
        with torch.no_grad():
            return sum(teacher(images[i:i + BATCH]).shape[0] for i in range(0, len(images), BATCH))

    assert benchmark.pedantic(recompute, rounds=3, iterations=1) == len(images)
