"""Datasets torchvision reads and checks itself (CIFAR pickles, ...), registered by spec: where each
split is, how torchvision verifies it, and how to prefetch it."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from bench.data.dataset_registry import (DEFAULT_STREAM_SIZE, PREFETCH_HINT, in_memory, not_found, register,
                                         stratified_split, stream_transform, targets_of)
from bench.data.images import ImageSet, StreamedImageSet
from bench.errors import BenchError

# --------------------------------------------------------------------------- torchvision datasets


@dataclass(frozen=True)
class _VisionSpec:
    """A torchvision dataset kept in ``<root>/<name>/`` (its torchvision root).

    ``marker`` is a path under that folder that exists once the data is there: we check it before
    constructing the torchvision class, which may otherwise create folders (Caltech256 does).
    ``parts`` maps our split to the constructor kwargs of the torchvision splits concatenated
    into it. ``test_size`` is set when the dataset has no official split (we then split the one
    dataset with :func:`stratified_split`).
    """

    name: str
    torchvision_class: str
    marker: str
    parts: Mapping[str, tuple[Mapping[str, Any], ...]]
    in_memory: bool = False
    test_size: float | None = None

    def folder(self, root: Path) -> Path:
        return root / self.name

    def hint(self) -> str:
        return f"{PREFETCH_HINT}, or torchvision.datasets.{self.torchvision_class}(<root>/{self.name}, download=True)"

    def build(self, split: str, root: Path, transform: Callable | None) -> Dataset:
        """The torchvision dataset(s) for ``split``, never downloading; missing -> DataNotFoundError."""
        import torchvision.datasets as tvd

        folder = self.folder(root)
        if not (folder / self.marker).exists():
            raise not_found(self.name, [folder], self.hint(), f"no {self.marker}")
        cls = getattr(tvd, self.torchvision_class)
        kwargs = {} if transform is None else {"transform": transform}
        try:
            parts = [cls(str(folder), download=False, **part, **kwargs) for part in self.parts[split]]
        except FileNotFoundError as exc:
            raise not_found(self.name, [folder], self.hint(), f"missing {exc.filename or exc}") from None
        except RuntimeError as exc:
            if "not found" not in str(exc).lower():
                raise
            raise not_found(self.name, [folder], self.hint(), f"torchvision: {str(exc).split('.')[0]}") from None
        dataset: Dataset = parts[0] if len(parts) == 1 else ConcatDataset(parts)
        if self.test_size is not None:
            try:
                keep = stratified_split(targets_of(dataset).numpy(), self.test_size, split)
            except BenchError as error:  # found, but not a dataset bench can split: no download mends it
                raise BenchError(f"dataset {self.name!r} at {folder}: {error}") from None
            dataset = Subset(dataset, keep.tolist())
        return dataset

    def locate(self, split: str, root: Path) -> Path:
        """Found exactly when :meth:`build` succeeds (a marker alone could be a half-extracted archive)."""
        self.build(split, root, None)
        return self.folder(root)

    def num_classes(self, dataset: Dataset) -> int:
        while isinstance(dataset, (ConcatDataset, Subset)):
            dataset = dataset.datasets[0] if isinstance(dataset, ConcatDataset) else dataset.dataset
        names = getattr(dataset, "classes", None) or getattr(dataset, "categories")
        return len(names)

    def load(self, split: str, root: Path, image_size: int | None) -> ImageSet:
        if self.in_memory:
            return self._load_in_memory(split, root, image_size)
        size = image_size or DEFAULT_STREAM_SIZE
        dataset = self.build(split, root, stream_transform(size))
        return StreamedImageSet(dataset, targets_of(dataset), self.num_classes(dataset), 3, size, self.name)

    def _load_in_memory(self, split: str, root: Path, image_size: int | None) -> ImageSet:
        """CIFAR-style: ``.data`` is uint8 HWC numpy, converted once to NCHW."""
        parts = self.build(split, root, None)
        datasets = parts.datasets if isinstance(parts, ConcatDataset) else [parts]
        images = torch.cat([torch.from_numpy(np.asarray(d.data)).permute(0, 3, 1, 2) for d in datasets])
        return in_memory(self.name, images, targets_of(parts), self.num_classes(parts), image_size)

    def prefetch(self, root: Path) -> None:
        import torchvision.datasets as tvd

        cls = getattr(tvd, self.torchvision_class)
        folder = self.folder(root)
        folder.mkdir(parents=True, exist_ok=True)
        for split_parts in self.parts.values():
            for part in split_parts:
                cls(str(folder), download=True, **part)


_WHOLE: tuple[Mapping[str, Any], ...] = ({},)
_VISION_SPECS = (
    _VisionSpec("cifar10", "CIFAR10", "cifar-10-batches-py", {"train": ({"train": True},), "test": ({"train": False},)}, in_memory=True),
    _VisionSpec("cifar100", "CIFAR100", "cifar-100-python", {"train": ({"train": True},), "test": ({"train": False},)}, in_memory=True),
    # No official split: fixed stratified 80/20 split of all 30607 images (257 classes incl. clutter).
    _VisionSpec("caltech256", "Caltech256", "caltech256/256_ObjectCategories", {"train": _WHOLE, "test": _WHOLE}, test_size=0.2),
    # Official train and val are merged into our train (2040 images); test is the official 6149.
    _VisionSpec("flowers102", "Flowers102", "flowers-102/jpg", {"train": ({"split": "train"}, {"split": "val"}), "test": ({"split": "test"},)}),
    # Partition 1; official train and val merged into our train (3760), test 1880.
    _VisionSpec("dtd", "DTD", "dtd/dtd", {"train": ({"split": "train"}, {"split": "val"}), "test": ({"split": "test"},)}),
    _VisionSpec("food101", "Food101", "food-101/images", {"train": ({"split": "train"},), "test": ({"split": "test"},)}),
    _VisionSpec("oxford_pets", "OxfordIIITPet", "oxford-iiit-pet/images", {"train": ({"split": "trainval"},), "test": ({"split": "test"},)}),
)
for _spec in _VISION_SPECS:
    register(_spec.name, _spec.load, _spec.locate, _spec.prefetch)


