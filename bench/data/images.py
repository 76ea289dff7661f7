"""Image sets as the engine sees them: uint8 images and int64 targets, addressed by index.

Small datasets live in memory as one uint8 tensor (fast batched indexing, augmentation on the
device); large ones stream from disk through a DataLoader. Both hand the engine uint8 batches
of shape [B, C, H, W], so training code never cares which it got.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset


class ImageSet:
    """Base: ``targets`` (int64 [N], -1 where unknown), ``num_classes``, ``channels``, ``size``."""

    targets: torch.Tensor
    num_classes: int
    channels: int
    size: int
    name: str

    def __len__(self) -> int:
        return int(self.targets.numel())

    def batches(
        self, indices: torch.Tensor, batch_size: int, workers: int = 0, crop: Any = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield (uint8 images, targets, indices) for ``indices`` in the given order; ``crop``: the
        imagenet recipe's training crops (bench/data/recipe.py: a ``CropKey`` drawing them, or a
        view bank's ``ReplayCrops`` giving them), or None."""
        raise NotImplementedError

    def views(self, indices: torch.Tensor, batch_size: int, workers: int, draw: Any
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield (uint8 views [B, K, C, size, size], their params int16 [B, K, 5], indices): a
        view bank's K random-resized crops of each image (``recipe.ViewDraw``), each cropped
        where and as the student's replay of it will be."""
        from bench.errors import BenchError

        raise BenchError(f"{self.name}: a view bank of the imagenet recipe needs an in-memory or streamed set")


@dataclass
class TensorImageSet(ImageSet):
    """All images in memory as uint8 [N, C, H, W] at their native size.

    ``out_size`` (a side length) resizes each batch as it is taken, never the whole set: CIFAR
    at 224 px for an ImageNet model holds 50,000 32x32 images (150 MB), not 7.5 GB, and a batch
    is resized exactly as the whole set was before (bilinear, rounded to uint8; interpolation
    is per image), so results are unchanged."""

    images: torch.Tensor
    targets: torch.Tensor
    num_classes: int
    name: str = ""
    out_size: int | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"{self.name}: images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.images.shape[0] != self.targets.shape[0]:
            raise ValueError(f"{self.name}: {self.images.shape[0]} images but {self.targets.shape[0]} targets")
        self.targets = self.targets.to(torch.int64)

    @property
    def channels(self) -> int:  # type: ignore[override]
        return int(self.images.shape[1])

    @property
    def native_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def size(self) -> int:  # type: ignore[override]
        return self.out_size or self.native_size

    def batches(self, indices: torch.Tensor, batch_size: int, workers: int = 0, crop: Any = None):
        """``crop`` (recipe imagenet): random-resized crops of the native images at ``size``."""
        # index_select, not images[idx]: advanced indexing of a uint8 tensor is ~3x slower here
        # (128 of 60,000 28x28 images: 23 vs 72 us), a tenth of an MLP student's epoch
        for start in range(0, len(indices), batch_size):
            idx = indices[start : start + batch_size]
            native = self.images.index_select(0, idx)
            images = resize_uint8(native, self.size) if crop is None else crop.on_batch(native, start, idx, self.size)
            yield images, self.targets.index_select(0, idx), idx

    def views(self, indices: torch.Tensor, batch_size: int, workers: int, draw: Any):
        for start in range(0, len(indices), batch_size):
            idx = indices[start : start + batch_size]
            yield (*draw.on_batch(self.images.index_select(0, idx), idx, self.size), idx)

    def served(self, indices: torch.Tensor | None = None) -> torch.Tensor:
        """The images (all, or ``indices``) as batches serve them: uint8 at ``size`` (the whole
        set at 224 px is what ``out_size`` avoids: for small sets and tests)."""
        return resize_uint8(self.images if indices is None else self.images.index_select(0, indices), self.size)

    def resized(self, size: int) -> "TensorImageSet":
        """The same images served at ``size`` px (resized batch by batch), e.g. digits 8x8 -> 28x28."""
        return TensorImageSet(self.images, self.targets, self.num_classes, self.name,
                              None if size == self.native_size else size)

    def with_images(self, images: torch.Tensor) -> "TensorImageSet":
        """Other native images (same count and targets) served at this set's size."""
        return TensorImageSet(images, self.targets, self.num_classes, self.name, self.out_size)


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [N, C, H, W] -> [N, C, size, size], bilinear (align_corners=False), rounded; on the
    images' device. The identity at their own size."""
    if images.shape[-2:] == (size, size):
        return images
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False)
    return x.round_().clamp_(0, 255).to(torch.uint8)


class _Plan:
    """The batch sampler of a set's one DataLoader: the batches of keys to load next, set in the
    main process before each pass, so the workers persist across epochs and evaluation passes."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _RecipeItems(Dataset):
    """Items keyed (index, crop key or None) of a dataset of whole decoded uint8 images: a
    training crop (bench/data/recipe.py) with a key, the evaluation resize + centre crop without."""

    def __init__(self, decoded: Dataset, size: int) -> None:
        self.decoded, self.size = decoded, size

    def __len__(self) -> int:
        return len(self.decoded)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, Any]) -> tuple[Any, int]:
        from bench.data.recipe import eval_crop

        index, crop = key  # crop: a CropKey, a bank view's Crop, a bank's ViewDraw, or None
        image, target = self.decoded[index]
        return (eval_crop(image, self.size) if crop is None else crop.cut(image, index, self.size)), target


class _RecipeFiles(Dataset):
    """Items keyed (index, crop key or None) of a dataset whose items are image files' bytes: the
    bytes, the training box and flip drawn from the header's size (zeros and no flip for the
    evaluation crop), the label. The main process decodes and crops them (``decode_device``)."""

    def __init__(self, files: Dataset) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, Any]) -> tuple[torch.Tensor, torch.Tensor, bool, int]:
        from bench.data.recipe import header_size

        index, crop = key  # crop: a CropKey, a view bank's Crop, or None
        data, target = self.files[index]
        if crop is None:
            return data, torch.zeros(4, dtype=torch.int64), False, target
        return (data, *crop.box_and_flip(index, *header_size(data)), target)


def _collate_files(items: list[tuple[torch.Tensor, torch.Tensor, bool, int]]) -> tuple[torch.Tensor, ...]:
    """A batch of files as one tensor through the worker pipe: the bytes end to end, their lengths, boxes, flips, labels."""
    datas, boxes, flips, targets = zip(*items)
    return (torch.cat(datas), torch.tensor([len(data) for data in datas]), torch.stack(boxes), torch.tensor(flips),
            torch.tensor(targets))


def _decoded_crops(batch: tuple[torch.Tensor, ...], crop: Any, size: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of ``_collate_files`` decoded in one call on ``device`` and cropped there (the
    training crop when ``crop`` is a key, else the evaluation crop): uint8 [B, 3, size, size]."""
    from bench.data.recipe import decode_batch, eval_crop, train_crop

    data, lengths, boxes, flips, targets = batch
    images = decode_batch(list(data.split(lengths.tolist())), device)
    if crop is None:
        return torch.stack([eval_crop(image, size) for image in images]), targets
    return torch.stack([train_crop(image, box, bool(flip), size) for image, box, flip in zip(images, boxes, flips)]), targets


class _ByIndex(Dataset):
    """A dataset read with keys (index, crop key) that ignores the crop key (the pad-crop recipe:
    the loader serves fixed-size images, the engine crops)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __getitem__(self, key: tuple[int, Any]):
        return self.dataset[key[0]]


class StreamedImageSet(ImageSet):
    """A map-style dataset whose items are (uint8 tensor [C, H, W] of a fixed size, label).

    With ``decoded`` (items: whole decoded uint8 RGB images; recipe ``imagenet``) batches are
    crops made in the loader's workers: training crops when ``batches`` gets a crop key, else
    the evaluation crop. With ``files`` (items: the files' bytes) and ``decode_device`` the
    workers only read the files and draw the boxes; the main process decodes each batch in one
    call on that device (the GPU's batched decoder) and crops it there: the same crops, and on
    the CPU the same pixels. One DataLoader per workers is kept, its workers persistent."""

    def __init__(self, dataset: Dataset, targets: torch.Tensor, num_classes: int, channels: int, size: int, name: str,
                 decoded: Dataset | None = None, files: Dataset | None = None, decode_device: str | None = None) -> None:
        self.dataset = dataset
        self.decoded = decoded
        self.files = files if decode_device is not None else None
        self.decode_device = decode_device if files is not None else None
        self.targets = targets.to(torch.int64)
        self.num_classes = num_classes
        self.channels = channels
        self.size = size
        self.name = name
        self._loaders: dict[tuple[int, bool], tuple[DataLoader, _Plan]] = {}
        self._busy: set[tuple[int, bool]] = set()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_loaders": {}, "_busy": set()}  # workers are this process's own

    def _loader(self, workers: int, persistent: bool, on_device: bool) -> tuple[DataLoader, _Plan]:
        """``on_device``: the workers read files for the main process to decode (``files``)."""
        if persistent and (workers, on_device) in self._loaders:
            return self._loaders[workers, on_device]
        plan = _Plan()
        if on_device:
            items, collate = _RecipeFiles(self.files), _collate_files
        else:
            items, collate = _ByIndex(self.dataset) if self.decoded is None else _RecipeItems(self.decoded, self.size), None
        loader = DataLoader(items, batch_sampler=plan, num_workers=workers, collate_fn=collate,
                            pin_memory=torch.cuda.is_available(), persistent_workers=persistent and workers > 0)
        if persistent:
            self._loaders[workers, on_device] = (loader, plan)
        return loader, plan

    def batches(self, indices: torch.Tensor, batch_size: int, workers: int = 0, crop: Any = None):
        """``crop``: a training crop key (recipe imagenet; bench.data.recipe.CropKey) or None.
        The kept loader serves one pass at a time; a pass begun while another is alive (not
        exhausted) gets a loader of its own."""
        per_item = [None] * len(indices) if crop is None else crop.item_keys(indices)
        on_device = self.files is not None
        for start, batch in self._load(indices, per_item, batch_size, workers, on_device):
            images, targets = _decoded_crops(batch, crop, self.size, self.decode_device) if on_device else batch  # type: ignore[arg-type]
            yield images, targets.to(torch.int64), indices[start : start + batch_size]

    def views(self, indices: torch.Tensor, batch_size: int, workers: int, draw: Any):
        """Decoded once per image in the worker, cropped K times there (``ViewDraw.cut``; a
        bank's build, once per teacher, so never on the device)."""
        if self.decoded is None:
            yield from super().views(indices, batch_size, workers, draw)
            return
        for start, ((views, params), _) in self._load(indices, [draw] * len(indices), batch_size, workers, on_device=False):
            yield views, params, indices[start : start + batch_size]

    def _load(self, indices: torch.Tensor, crops: list[Any], batch_size: int, workers: int,
              on_device: bool) -> Iterator[tuple[int, Any]]:
        """(position of the batch in the pass, the loader's collated batch) for keys (index, crop)."""
        kept = (workers, on_device)
        busy = kept in self._busy
        loader, plan = self._loader(workers, persistent=not busy, on_device=on_device)
        keys = list(zip(indices.tolist(), crops))
        plan.batches = [keys[start : start + batch_size] for start in range(0, len(keys), batch_size)]
        if not busy:
            self._busy.add(kept)
        try:
            yield from zip(range(0, len(indices), batch_size), loader)
        finally:
            if not busy:
                self._busy.discard(kept)


Loader = Callable[..., ImageSet]


class JoinedImageSet(ImageSet):
    """Two image sets as one: indices below ``len(first)`` are ``first``'s, the rest ``second``'s
    (shifted). Data distillation trains on labeled images and a pool from another dataset in the
    same batches. Both must have the same channels and size; targets keep each set's labels."""

    def __init__(self, first: ImageSet, second: ImageSet, name: str = "") -> None:
        if (first.channels, first.size) != (second.channels, second.size):
            raise ValueError(f"cannot join {first.name} ({first.channels}x{first.size}px) and "
                             f"{second.name} ({second.channels}x{second.size}px)")
        self.first, self.second = first, second
        self.targets = torch.cat([first.targets, second.targets])
        self.num_classes = first.num_classes
        self.channels, self.size = first.channels, first.size
        self.name = name or f"{first.name}+{second.name}"

    def batches(self, indices: torch.Tensor, batch_size: int, workers: int = 0, crop: Any = None):
        cut = len(self.first)
        for start in range(0, len(indices), batch_size):
            idx = indices[start : start + batch_size]
            mine, positions = idx < cut, torch.arange(start, start + len(idx))
            served = [(mask, torch.cat([batch for batch, _, _ in part.batches(idx[mask] - shift, int(mask.sum()), workers,
                                                                              None if crop is None else crop.part(positions[mask]))]))
                      for part, mask, shift in ((self.first, mine, 0), (self.second, ~mine, cut)) if mask.any()]
            # on the device of the parts' batches (a GPU when a streamed part decodes there)
            images = torch.empty((len(idx), self.channels, self.size, self.size), dtype=torch.uint8, device=served[0][1].device)
            for mask, batch in served:
                images[mask.to(images.device)] = batch.to(images.device)
            yield images, self.targets[idx], idx
