"""Small datasets loaded into memory at their native size: scikit-learn's digits (bundled with it)
and MNIST-style IDX files (MNIST, Fashion-MNIST; Debian's package and torchvision's layout too)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.data.dataset_registry import (PREFETCH_HINT, in_memory, not_found, register,
                                         stratified_split)
from bench.data.idx import read_idx
from bench.data.images import ImageSet
from bench.errors import BenchError

# --------------------------------------------------------------------------- digits


def _load_digits(split: str, root: Path, image_size: int | None) -> ImageSet:
    """scikit-learn's 8x8 digits (1797 images, ships with sklearn, so ``root`` is unused).

    No official split: we use a fixed stratified 75/25 split (train_test_split, test_size=0.25,
    stratify=y, random_state=0): 1347 train, 450 test. Pixel values 0..16 are scaled to 0..255.
    """
    from sklearn.datasets import load_digits

    _locate_digits(split, root)
    bunch = load_digits()
    pixels = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    keep = stratified_split(bunch.target, 0.25, split)
    images = torch.from_numpy(pixels[keep]).unsqueeze(1)
    return in_memory("digits", images, torch.from_numpy(bunch.target[keep]).long(), 10, image_size)


def _locate_digits(split: str, root: Path) -> Path:
    """The ``digits.csv.gz`` inside scikit-learn that ``load_digits`` reads (``root`` is unused)."""
    from importlib.resources import files

    path = Path(str(files("sklearn.datasets.data") / "digits.csv.gz"))
    if not path.is_file():
        raise not_found("digits", [path], "reinstall scikit-learn, which ships it")
    return path


def _prefetch_nothing(root: Path) -> None:
    """digits ships with scikit-learn."""


register("digits", _load_digits, _locate_digits, _prefetch_nothing)


# --------------------------------------------------------------------------- MNIST-style IDX files

_IDX_STEMS: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _idx_file(folder: Path, stem: str) -> Path | None:
    """The plain file if present (no gunzip needed), else the ``.gz``."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True)
class _IdxSpec:
    """An MNIST-style dataset of IDX files and the folders it may be found in."""

    name: str
    torchvision_class: str  # also the folder torchvision downloads into: <root>/<class>/raw
    system_dirs: tuple[Path, ...] = ()
    extra_hint: str = ""

    def places(self, root: Path) -> list[Path]:
        return [root / self.name, root / self.torchvision_class / "raw", *self.system_dirs]

    def hint(self) -> str:
        how = f"{PREFETCH_HINT}, or torchvision.datasets.{self.torchvision_class}(<root>, download=True)"
        return f"{how}{self.extra_hint}"

    def find(self, split: str, root: Path) -> tuple[Path, Path]:
        """The (images, labels) files of ``split``: from the first of :meth:`places` that has both."""
        image_stem, label_stem = _IDX_STEMS[split]
        places = self.places(root)
        for folder in places:
            images_file, labels_file = _idx_file(folder, image_stem), _idx_file(folder, label_stem)
            if images_file is not None and labels_file is not None:
                return images_file, labels_file
        raise not_found(self.name, places, self.hint(), f"no {image_stem}[.gz] with {label_stem}[.gz]")

    def locate(self, split: str, root: Path) -> Path:
        return self.find(split, root)[0].parent

    def load(self, split: str, root: Path, image_size: int | None) -> ImageSet:
        return self._from_files(*self.find(split, root), image_size)

    def _from_files(self, images_file: Path, labels_file: Path, image_size: int | None) -> ImageSet:
        images, labels = read_idx(images_file), read_idx(labels_file)
        if images.dtype != np.uint8 or images.ndim != 3:
            raise BenchError(f"{images_file}: expected uint8 images [N, H, W], got {images.dtype} {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise BenchError(f"{labels_file}: expected {len(images)} labels, got shape {labels.shape}")
        if len(labels) and (labels.min() < 0 or labels.max() > 9):
            raise BenchError(f"{labels_file}: labels outside 0..9")
        tensor = torch.from_numpy(images).unsqueeze(1)
        return in_memory(self.name, tensor, torch.from_numpy(labels.astype(np.int64)), 10, image_size)

    def prefetch(self, root: Path) -> None:
        import torchvision.datasets as tvd

        cls = getattr(tvd, self.torchvision_class)
        for train in (True, False):
            cls(str(root), train=train, download=True)


_IDX_SPECS = (
    _IdxSpec("mnist", "MNIST"),
    _IdxSpec(
        "fashion_mnist",
        "FashionMNIST",
        system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
        extra_hint=", or `apt-get install dataset-fashion-mnist`",
    ),
)
for _spec in _IDX_SPECS:
    register(_spec.name, _spec.load, _spec.locate, _spec.prefetch)


