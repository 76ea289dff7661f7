"""What every dataset kind shares: the registries a dataset joins (its loader, where it is found,
how to put it on disk, its splits), the one-line errors for missing data and failed downloads, and
the helpers the kinds build on (stratified splits, targets from an index, loaders of streamed
sets). The kinds register themselves: ``bench.data.in_memory_sets`` (digits, MNIST-style IDX
files), ``bench.data.torchvision_sets`` (CIFAR, ...) and ``bench.data.image_folders``;
``bench.data.datasets`` is the API over them."""
from __future__ import annotations

import tarfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from bench.data.images import ImageSet, TensorImageSet
from bench.errors import BenchError, DataNotFoundError
from bench.registry import Registry

DatasetLoader = Callable[[str, Path, int | None], ImageSet]
Locator = Callable[[str, Path], Path]
"""``(split, root) -> where the loader reads that split from``, else :class:`MissingData`."""
Prefetcher = Callable[[Path], None]

DATASETS: Registry[DatasetLoader] = Registry("dataset")
# Filled alongside DATASETS so every dataset has one of each: where it is found, how to put it
# on disk, and which of SPLITS it has (an unlabeled pool has only "train").
LOCATORS: Registry[Locator] = Registry("dataset")
PREFETCHERS: Registry[Prefetcher] = Registry("dataset")
DATASET_SPLITS: Registry[tuple[str, ...]] = Registry("dataset")

SPLITS = ("train", "test")
DEFAULT_STREAM_SIZE = 224
DEFAULT_ROOT = Path("~/.cache/bench/data")
PREFETCH_HINT = "get it with `bench prefetch MATRIX` on a machine with internet"
# Fixed split for datasets without an official one (see stratified_split).
SPLIT_SEED = 0
# What a failed download raises: urllib's URLError/HTTPError, socket timeouts and resets, a disk
# error (all OSError), torchvision's RuntimeError on a failed integrity check, and truncated or
# garbled archives. Anything else is a bug and keeps its traceback.
DOWNLOAD_ERRORS: tuple[type[BaseException], ...] = (
    OSError, RuntimeError, EOFError, ValueError, tarfile.TarError, zipfile.BadZipFile,
)
REASON_LIMIT = 160


class MissingData(DataNotFoundError):
    """A dataset not found, with the places searched (so a failed download can say where to put it)."""

    def __init__(self, message: str, places: Sequence[Path]) -> None:
        super().__init__(message)
        self.places = tuple(places)



def register(name: str, loader: DatasetLoader, locate: Locator, prefetch: Prefetcher,
              splits: tuple[str, ...] = SPLITS) -> None:
    DATASETS.register(name)(loader)
    LOCATORS.register(name)(locate)
    PREFETCHERS.register(name)(prefetch)
    DATASET_SPLITS.register(name)(splits)



def not_found(name: str, places: Sequence[Path], how: str, detail: str = "") -> MissingData:
    where = ", ".join(str(p) for p in places)
    extra = f" ({detail})" if detail else ""
    return MissingData(f"dataset {name!r} not found under {where}{extra} (set BENCH_DATA or data_root); {how}", places)


def stratified_split(targets: np.ndarray, test_size: float, split: str) -> np.ndarray:
    """Indices of ``split`` in a fixed stratified split: sklearn train_test_split, random_state=0.

    Sorted, so streamed sets read files in directory order.
    """
    from sklearn.model_selection import train_test_split

    classes, counts = np.unique(targets, return_counts=True)
    test_count = int(np.ceil(test_size * len(targets)))
    if len(targets) == 0 or counts.min() < 2 or test_count < len(classes) or len(targets) - test_count < len(classes):
        raise BenchError(f"{len(targets)} images in {len(classes)} classes (the smallest with {counts.min() if len(counts) else 0}) "
                         f"cannot be split {1 - test_size:g}:{test_size:g} with every class on both sides: each class "
                         f"needs 2 images or more, and each side as many images as there are classes")
    train, test = train_test_split(
        np.arange(len(targets)), test_size=test_size, stratify=targets, random_state=SPLIT_SEED
    )
    return np.sort(train if split == "train" else test)


def targets_of(dataset: Dataset) -> torch.Tensor:
    """int64 labels of a dataset from its index (no image decoding)."""
    if isinstance(dataset, ConcatDataset):
        return torch.cat([targets_of(part) for part in dataset.datasets])
    if isinstance(dataset, Subset):
        return targets_of(dataset.dataset)[torch.as_tensor(list(dataset.indices), dtype=torch.int64)]
    for attr in ("targets", "_labels", "y"):
        if hasattr(dataset, attr):
            return torch.as_tensor(list(getattr(dataset, attr)), dtype=torch.int64)
    raise TypeError(f"{type(dataset).__name__} exposes no labels (targets, _labels or y)")


class _ToRGB:
    """PIL image -> RGB (grayscale/CMYK/palette files occur in Caltech, ImageNet, OpenImages).

    A class, not a lambda, so DataLoader workers can pickle it.
    """

    def __call__(self, image: Any) -> Any:
        return image if image.mode == "RGB" else image.convert("RGB")


def stream_transform(size: int) -> Callable[[Any], torch.Tensor]:
    """PIL image -> uint8 [3, size, size]: shorter side to ``size``, then center crop."""
    from torchvision import transforms as T

    return T.Compose([_ToRGB(), T.Resize(size), T.CenterCrop(size), T.PILToTensor()])


def in_memory(name: str, images: torch.Tensor, targets: torch.Tensor, num_classes: int, image_size: int | None) -> TensorImageSet:
    data = TensorImageSet(images.contiguous(), targets, num_classes, name)
    return data if image_size is None else data.resized(image_size)


