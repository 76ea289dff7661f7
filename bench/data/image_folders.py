"""Datasets that are folders of image files (ImageNet, OpenImages, Caltech-256, ...): indexed from the
file list, decoded in the loader's workers or on the device, registered with ``register_image_folder``."""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from bench.data.dataset_registry import (DEFAULT_STREAM_SIZE, SPLITS, not_found, register,
                                         stream_transform, targets_of)
from bench.data.images import ImageSet, StreamedImageSet
from bench.errors import BenchError

# --------------------------------------------------------------------------- image folders


class ImageFiles(Dataset):
    """Every image file under a folder, at any depth, sorted by path; label -1 (an unlabeled pool)."""

    def __init__(self, folder: Path, transform: Callable[[Any], torch.Tensor] | None) -> None:
        from torchvision.datasets.folder import IMG_EXTENSIONS

        self.folder = folder
        self.transform = transform
        self.files = sorted(
            Path(dirpath, name)
            for dirpath, _, names in os.walk(folder, followlinks=True)
            for name in names
            if name.lower().endswith(IMG_EXTENSIONS)
        )
        self.targets = [-1] * len(self.files)
        self.loader: Callable[[str], Any] | None = None  # a decoder of a path; None: PIL

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        if self.loader is not None:
            image = self.loader(str(self.files[index]))
            return (image if self.transform is None else self.transform(image)), -1
        with Image.open(self.files[index]) as image:
            return (image.copy() if self.transform is None else self.transform(image)), -1


@dataclass(frozen=True)
class _FolderSpec:
    """A dataset that is a folder of images under ``<root>/<name>``.

    Labeled: a torchvision ImageFolder (one subfolder per class) at ``<root>/<name>/<splits[split]>``.
    Unlabeled (``splits`` None): a pool of every image under ``<root>/<name>``, train split only,
    targets -1 and num_classes 0 (a transfer set for distillation).
    """

    name: str
    splits: Mapping[str, str] | None
    how: str

    def folder(self, split: str, root: Path) -> Path:
        if self.splits is None:
            if split != "train":
                raise BenchError(f"dataset {self.name!r} is an unlabeled pool: it has only a 'train' split, not {split!r}")
            return root / self.name
        return root / self.name / self.splits[split]

    def build(self, split: str, root: Path, transform: Callable | None) -> Dataset:
        """The ImageFolder (or pool) of ``split``; missing folder, classes or images -> DataNotFoundError."""
        folder = self.folder(split, root)
        if not folder.is_dir():
            raise not_found(self.name, [folder], self.how)
        if self.splits is None:
            pool = ImageFiles(folder, transform)
            if len(pool) == 0:
                raise not_found(self.name, [folder], self.how, "no image files")
            return pool
        from torchvision.datasets import ImageFolder

        try:
            return ImageFolder(str(folder), transform=transform)
        except FileNotFoundError as exc:  # no class folders, or class folders without images
            raise not_found(self.name, [folder], self.how, str(exc).split(".")[0]) from None

    def locate(self, split: str, root: Path) -> Path:
        """Found exactly when :meth:`build` succeeds: it lists the files, as ``bench run`` does."""
        self.build(split, root, None)
        return self.folder(split, root)

    def load(self, split: str, root: Path, image_size: int | None) -> ImageSet:
        size = image_size or DEFAULT_STREAM_SIZE
        dataset = self.build(split, root, stream_transform(size))
        num_classes = 0 if self.splits is None else len(dataset.classes)
        return StreamedImageSet(dataset, targets_of(dataset), num_classes, 3, size, self.name)

    def prefetch(self, root: Path) -> None:
        raise BenchError(f"dataset {self.name!r}: {self.how} (data root {root})")


def register_image_folder(name: str, *, splits: Mapping[str, str] | None = None, how: str | None = None) -> None:
    """Register a dataset that is a folder of images under ``<root>/<name>``.

    With ``splits`` (e.g. ``{"train": "train", "test": "val"}``) it is labeled: an ImageFolder per
    split. Without, it is an unlabeled pool (any nesting, targets -1, num_classes 0, train only).
    ``how`` tells the user how to get the data when it is missing.
    """
    if splits is not None and set(splits) != set(SPLITS):
        raise ValueError(f"image folder {name!r}: splits must map exactly {SPLITS}, got {sorted(splits)}")
    layout = (
        " and ".join(f"<root>/{name}/{sub}" for sub in splits.values()) + " (one subfolder per class)"
        if splits is not None
        else f"<root>/{name} (any nested layout)"
    )
    spec = _FolderSpec(name, None if splits is None else dict(splits), how or f"put the images under {layout}")
    register(name, spec.load, spec.locate, spec.prefetch, SPLITS if splits is not None else ("train",))


register_image_folder(
    "imagenet",
    splits={"train": "train", "test": "val"},
    how="ImageNet cannot be downloaded automatically: get ILSVRC2012 from image-net.org and put the "
    "train and val images as one folder per class under <root>/imagenet/train and <root>/imagenet/val",
)
register_image_folder(
    "openimages",
    how="OpenImages cannot be downloaded automatically: put any images (any nested layout) under <root>/openimages",
)
# nguyen2021's TensorFlow datasets. TFDS gives both only a "train" split, so the test folder is
# the user's held-out part; ImageFolder numbers classes per folder, hence "the same class folders".
register_image_folder(
    "tf_flowers",
    splits={"train": "train", "test": "test"},
    how="tf_flowers cannot be downloaded automatically: get flower_photos.tgz (the TFDS tf_flowers source, "
    "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz; 3,670 photos in "
    "daisy/ dandelion/ roses/ sunflowers/ tulips/) and put one folder per class under <root>/tf_flowers/train "
    "and <root>/tf_flowers/test, the same 5 class folders in both. It has no official split: from the single "
    "flower_photos folder, move the 5 class folders to <root>/tf_flowers/train and then move a held-out part "
    "of each (e.g. 20% of its images) into <root>/tf_flowers/test/<class>",
)
register_image_folder(
    "cats_vs_dogs",
    splits={"train": "train", "test": "test"},
    how="cats_vs_dogs cannot be downloaded automatically: get kagglecatsanddogs_5340.zip (the TFDS cats_vs_dogs "
    "source, https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/"
    "kagglecatsanddogs_5340.zip), delete its corrupt images (empty or undecodable files; TFDS drops 1,738) and "
    "put its two class folders PetImages/Cat and PetImages/Dog under <root>/cats_vs_dogs/train, then move a "
    "held-out part of each (e.g. 20% of its images) into <root>/cats_vs_dogs/test/Cat and "
    "<root>/cats_vs_dogs/test/Dog: it has no official split",
)


def decoded_dataset(dataset: Dataset) -> Dataset:
    """A copy of a streamed dataset whose items are whole decoded uint8 RGB images [3, H, W]
    (the imagenet recipe crops them): image folders decode with ``recipe.decode_image``
    (libjpeg-turbo, PIL for the rest), other torchvision sets through their PIL image."""
    from bench.data.recipe import ToTensorRGB, decode_image

    return _with_loader(dataset, decode_image, ToTensorRGB())


def file_bytes_dataset(dataset: Dataset) -> Dataset | None:
    """A copy of a streamed dataset whose items are its image files' bytes (uint8 [n]), for a
    decoder of whole batches; None when a part is not a folder of files."""
    from torchvision.io import read_file

    return _with_loader(dataset, read_file, None) if _folders_only(dataset) else None


def _folders_only(dataset: Dataset) -> bool:
    from torchvision.datasets import DatasetFolder

    if isinstance(dataset, ConcatDataset):
        return all(_folders_only(part) for part in dataset.datasets)
    if isinstance(dataset, Subset):
        return _folders_only(dataset.dataset)
    return isinstance(dataset, (DatasetFolder, ImageFiles))


def _with_loader(dataset: Dataset, loader: Callable[[str], Any], transform: Callable[[Any], Any] | None) -> Dataset:
    """A copy of ``dataset`` (through ConcatDataset and Subset) with ``transform``, and ``loader``
    reading the files of image folders."""
    import copy

    from torchvision.datasets import DatasetFolder

    if isinstance(dataset, ConcatDataset):
        return ConcatDataset([_with_loader(part, loader, transform) for part in dataset.datasets])
    if isinstance(dataset, Subset):
        return Subset(_with_loader(dataset.dataset, loader, transform), dataset.indices)
    out = copy.copy(dataset)
    out.transform = transform  # type: ignore[attr-defined]
    if isinstance(out, (DatasetFolder, ImageFiles)):
        out.loader = loader
    return out


def with_recipe(data: ImageSet, recipe: str, decode_device: str | None = None) -> ImageSet:
    """The set as the cell's recipe serves it: a streamed set under ``imagenet`` decodes whole
    images and crops them in the loader (bench/data/recipe.py); anything else as loaded. With
    ``decode_device`` (a GPU) an image folder's batches are decoded there in one call each and
    cropped there; the loader's workers only read the files and draw the boxes."""
    if recipe == "pad_crop" or not isinstance(data, StreamedImageSet):
        return data
    return StreamedImageSet(data.dataset, data.targets, data.num_classes, data.channels, data.size, data.name,
                            decoded=decoded_dataset(data.dataset),
                            files=None if decode_device is None else file_bytes_dataset(data.dataset), decode_device=decode_device)
