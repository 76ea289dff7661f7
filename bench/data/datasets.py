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
from collections.abc import Sequence
from pathlib import Path

from bench.data import image_folders, in_memory_sets, torchvision_sets  # noqa: F401  (each kind registers its datasets)
from bench.data.dataset_registry import (DATASET_SPLITS, DATASETS, DEFAULT_ROOT, DOWNLOAD_ERRORS, LOCATORS, PREFETCHERS,
                                         REASON_LIMIT, SPLITS, MissingData)
from bench.data.images import ImageSet
from bench.errors import BenchError, DataNotFoundError

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


