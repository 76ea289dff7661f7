"""The dataset registry: every dataset is a loader ``(split, root, image_size) -> ImageSet``.

Rules every loader keeps:

* ``split`` is ``"train"`` or ``"test"``: the dataset's official split where it has one, else a
  fixed, deterministic, stratified split documented at the loader (``digits``, ``caltech256``).
* Nothing is ever downloaded at load time. Missing data raises :class:`DataNotFoundError` with
  one line naming the dataset, the places searched and how to get it. Downloading is the
  separate, explicit :func:`prefetch_dataset` (for ``bench prefetch``), which downloads only
  what :func:`locate_dataset` does not find.
* Every loader first runs its dataset's locator (the path search, and for torchvision sets the
  torchvision constructor's own checks), so "found by ``bench prefetch``" and "found by
  ``bench run``" are one and the same search.
* Small datasets (digits, MNIST, Fashion-MNIST, CIFAR) load into memory at their native size
  unless ``image_size`` is given; large ones stream from disk as RGB resized to ``image_size``
  (default 224) with Resize + CenterCrop.
* Targets come from the dataset's index (file lists, label files), never by decoding images.

Layout under the data root (argument, else ``$BENCH_DATA``, else ``~/.cache/bench/data``):
each dataset lives in ``<root>/<name>/``, laid out as torchvision writes it when given that
folder as its root (e.g. ``<root>/cifar10/cifar-10-batches-py``). MNIST-style sets are also
found in torchvision's own layout (``<root>/MNIST/raw``) and, for Fashion-MNIST, in Debian's
``dataset-fashion-mnist`` package. ImageNet is ``<root>/imagenet/{train,val}`` class folders;
OpenImages is any tree of images under ``<root>/openimages``.
"""
from __future__ import annotations

import functools
import os
import tarfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from bench.data.idx import read_idx
from bench.data.images import ImageSet, StreamedImageSet, TensorImageSet
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
# Fixed split for datasets without an official one (see _stratified_split).
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


# --------------------------------------------------------------------------- public API


def default_root() -> Path:
    """``$BENCH_DATA`` if set, else ``~/.cache/bench/data``."""
    return Path(os.environ.get("BENCH_DATA") or DEFAULT_ROOT).expanduser()


def resolve_root(root: str | Path | None = None) -> Path:
    """The data root as an absolute path (so cache keys and messages are unambiguous)."""
    return (Path(root).expanduser() if root is not None else default_root()).absolute()


def dataset_names() -> list[str]:
    return DATASETS.names()


def load_dataset(name: str, split: str, root: str | Path | None = None, image_size: int | None = None) -> ImageSet:
    """Load one split of a registered dataset; repeated calls in a process share one object.

    The returned set is cached and shared: treat it as read-only.
    """
    DATASETS.get(name)  # unknown names fail here, with the list of known ones
    if split not in SPLITS:
        raise BenchError(f"dataset {name!r}: unknown split {split!r}; known: {', '.join(SPLITS)}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0):
        raise BenchError(f"dataset {name!r}: image_size must be a positive integer, got {image_size!r}")
    return _load_cached(name, split, resolve_root(root), image_size)


def clear_cache() -> None:
    """Forget the in-memory sets (tests; a long-lived process that changed files on disk)."""
    _load_cached.cache_clear()


def dataset_splits(name: str) -> tuple[str, ...]:
    """The splits ``name`` has: ``SPLITS``, or only ``("train",)`` for an unlabeled pool."""
    return DATASET_SPLITS.get(name)


def locate_dataset(name: str, root: str | Path | None = None, splits: Sequence[str] | None = None) -> dict[str, Path]:
    """Where :func:`load_dataset` finds each of ``splits`` (default: all the dataset has), without loading it.

    Runs the loader's own search, so it raises the very :class:`DataNotFoundError` (a
    :class:`MissingData`) that ``load_dataset`` would. It decodes no image, but for torchvision
    sets it runs the torchvision constructor (its integrity checks; CIFAR reads its batches).
    """
    locate = LOCATORS.get(name)
    resolved = resolve_root(root)
    return {split: locate(split, resolved) for split in (dataset_splits(name) if splits is None else splits)}


def prefetch_dataset(name: str, root: str | Path | None = None, splits: Sequence[str] | None = None) -> dict[str, Path]:
    """Make ``splits`` of ``name`` loadable from ``root``; returns where each is found.

    Data :func:`locate_dataset` already finds (under ``root``, in Debian's package, bundled with
    scikit-learn) is not downloaded again. Otherwise it is downloaded where the loader looks
    (needs internet). A failed download, or a dataset that cannot be downloaded automatically,
    is one BenchError line naming the dataset and what to do.
    """
    resolved = resolve_root(root)
    try:
        return locate_dataset(name, resolved, splits)
    except MissingData as missing:
        places = missing.places
    try:
        PREFETCHERS.get(name)(resolved)
    except DOWNLOAD_ERRORS as exc:
        where = ", ".join(str(p) for p in places)
        raise download_failed(f"dataset {name}", short_reason(exc), f"put the files under {where}") from None
    try:
        return locate_dataset(name, resolved, splits)
    except DataNotFoundError as still:
        raise BenchError(f"dataset {name}: downloaded, but bench still does not find it: {still}") from None


def short_reason(exc: BaseException) -> str:
    """``Type: first sentence of the message``, bounded; a URLError shows its reason, not ``<urlopen error ...>``."""
    from urllib.error import HTTPError, URLError

    detail = exc.reason if isinstance(exc, URLError) and not isinstance(exc, HTTPError) else exc
    first = str(detail).strip().split("\n")[0].split(". ")[0]
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 3] + "..."


def download_failed(what: str, reason: str, alternative: str) -> BenchError:
    """The one line for a failed download: what, why, and the two ways to get it (shared with weights)."""
    return BenchError(f"{what}: download failed ({reason}); download it on a machine with internet with "
                      f"`bench prefetch MATRIX`, or {alternative}")


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, split: str, root: Path, image_size: int | None) -> ImageSet:
    return DATASETS.get(name)(split, root, image_size)


def _register(name: str, loader: DatasetLoader, locate: Locator, prefetch: Prefetcher,
              splits: tuple[str, ...] = SPLITS) -> None:
    DATASETS.register(name)(loader)
    LOCATORS.register(name)(locate)
    PREFETCHERS.register(name)(prefetch)
    DATASET_SPLITS.register(name)(splits)


# --------------------------------------------------------------------------- helpers


def _not_found(name: str, places: Sequence[Path], how: str, detail: str = "") -> MissingData:
    where = ", ".join(str(p) for p in places)
    extra = f" ({detail})" if detail else ""
    return MissingData(f"dataset {name!r} not found under {where}{extra} (set BENCH_DATA or data_root); {how}", places)


def _stratified_split(targets: np.ndarray, test_size: float, split: str) -> np.ndarray:
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


def _targets_of(dataset: Dataset) -> torch.Tensor:
    """int64 labels of a dataset from its index (no image decoding)."""
    if isinstance(dataset, ConcatDataset):
        return torch.cat([_targets_of(part) for part in dataset.datasets])
    if isinstance(dataset, Subset):
        return _targets_of(dataset.dataset)[torch.as_tensor(list(dataset.indices), dtype=torch.int64)]
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


def _in_memory(name: str, images: torch.Tensor, targets: torch.Tensor, num_classes: int, image_size: int | None) -> TensorImageSet:
    data = TensorImageSet(images.contiguous(), targets, num_classes, name)
    return data if image_size is None else data.resized(image_size)


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
    keep = _stratified_split(bunch.target, 0.25, split)
    images = torch.from_numpy(pixels[keep]).unsqueeze(1)
    return _in_memory("digits", images, torch.from_numpy(bunch.target[keep]).long(), 10, image_size)


def _locate_digits(split: str, root: Path) -> Path:
    """The ``digits.csv.gz`` inside scikit-learn that ``load_digits`` reads (``root`` is unused)."""
    from importlib.resources import files

    path = Path(str(files("sklearn.datasets.data") / "digits.csv.gz"))
    if not path.is_file():
        raise _not_found("digits", [path], "reinstall scikit-learn, which ships it")
    return path


def _prefetch_nothing(root: Path) -> None:
    """digits ships with scikit-learn."""


_register("digits", _load_digits, _locate_digits, _prefetch_nothing)


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
        raise _not_found(self.name, places, self.hint(), f"no {image_stem}[.gz] with {label_stem}[.gz]")

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
        return _in_memory(self.name, tensor, torch.from_numpy(labels.astype(np.int64)), 10, image_size)

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
    _register(_spec.name, _spec.load, _spec.locate, _spec.prefetch)


# --------------------------------------------------------------------------- torchvision datasets


@dataclass(frozen=True)
class _VisionSpec:
    """A torchvision dataset kept in ``<root>/<name>/`` (its torchvision root).

    ``marker`` is a path under that folder that exists once the data is there: we check it before
    constructing the torchvision class, which may otherwise create folders (Caltech256 does).
    ``parts`` maps our split to the constructor kwargs of the torchvision splits concatenated
    into it. ``test_size`` is set when the dataset has no official split (we then split the one
    dataset with :func:`_stratified_split`).
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
            raise _not_found(self.name, [folder], self.hint(), f"no {self.marker}")
        cls = getattr(tvd, self.torchvision_class)
        kwargs = {} if transform is None else {"transform": transform}
        try:
            parts = [cls(str(folder), download=False, **part, **kwargs) for part in self.parts[split]]
        except FileNotFoundError as exc:
            raise _not_found(self.name, [folder], self.hint(), f"missing {exc.filename or exc}") from None
        except RuntimeError as exc:
            if "not found" not in str(exc).lower():
                raise
            raise _not_found(self.name, [folder], self.hint(), f"torchvision: {str(exc).split('.')[0]}") from None
        dataset: Dataset = parts[0] if len(parts) == 1 else ConcatDataset(parts)
        if self.test_size is not None:
            try:
                keep = _stratified_split(_targets_of(dataset).numpy(), self.test_size, split)
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
        return StreamedImageSet(dataset, _targets_of(dataset), self.num_classes(dataset), 3, size, self.name)

    def _load_in_memory(self, split: str, root: Path, image_size: int | None) -> ImageSet:
        """CIFAR-style: ``.data`` is uint8 HWC numpy, converted once to NCHW."""
        parts = self.build(split, root, None)
        datasets = parts.datasets if isinstance(parts, ConcatDataset) else [parts]
        images = torch.cat([torch.from_numpy(np.asarray(d.data)).permute(0, 3, 1, 2) for d in datasets])
        return _in_memory(self.name, images, _targets_of(parts), self.num_classes(parts), image_size)

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
    _register(_spec.name, _spec.load, _spec.locate, _spec.prefetch)


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
            raise _not_found(self.name, [folder], self.how)
        if self.splits is None:
            pool = ImageFiles(folder, transform)
            if len(pool) == 0:
                raise _not_found(self.name, [folder], self.how, "no image files")
            return pool
        from torchvision.datasets import ImageFolder

        try:
            return ImageFolder(str(folder), transform=transform)
        except FileNotFoundError as exc:  # no class folders, or class folders without images
            raise _not_found(self.name, [folder], self.how, str(exc).split(".")[0]) from None

    def locate(self, split: str, root: Path) -> Path:
        """Found exactly when :meth:`build` succeeds: it lists the files, as ``bench run`` does."""
        self.build(split, root, None)
        return self.folder(split, root)

    def load(self, split: str, root: Path, image_size: int | None) -> ImageSet:
        size = image_size or DEFAULT_STREAM_SIZE
        dataset = self.build(split, root, stream_transform(size))
        num_classes = 0 if self.splits is None else len(dataset.classes)
        return StreamedImageSet(dataset, _targets_of(dataset), num_classes, 3, size, self.name)

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
    _register(name, spec.load, spec.locate, spec.prefetch, SPLITS if splits is not None else ("train",))


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
