"""A cell's data: its labeled train set, its splits (a task's classes, a rehearsal's cut), the
unlabeled pool it may draw from and the pool data distillation labels.

Each is loaded lazily and once, so a method only pays for what it uses.
"""
from __future__ import annotations

from functools import cached_property

import torch

from bench.data.datasets import load_dataset

from bench.data.image_folders import with_recipe
from bench.data.images import ImageSet, TensorImageSet
from bench.data.splits import Splits, make_splits
from bench.errors import BenchError
from bench.matrix.config import CellConfig
from bench.matrix.smoke import cut as smoke_cut
from bench.results.store import Store
from bench.training.runtime import Runtime


def match_channels(images: ImageSet, channels: int) -> ImageSet:
    """Make an unlabeled pool's channels match the labeled data (RGB -> luma, grey -> RGB)."""
    if images.channels == channels:
        return images
    if not isinstance(images, TensorImageSet):
        raise BenchError(f"dataset {images.name!r} has {images.channels} channels, the labeled data {channels}")
    x = images.images
    if channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        x = (x.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    else:
        x = x.expand(-1, channels, -1, -1).contiguous()
    return images.with_images(x)


def _first_classes(splits: Splits, k: int) -> Splits:
    """A task of the dataset's first ``k`` classes: every index set keeps those items only."""
    def keep(items: torch.Tensor | None, targets: torch.Tensor) -> torch.Tensor | None:
        if items is None or len(items) == 0:
            return items
        return items[(targets[items] >= 0) & (targets[items] < k)]

    s, t = splits.source.targets, splits.test_source.targets
    # the unlabeled part keeps its items of those classes too (its labels are hidden from the loss)
    return Splits(splits.source, splits.test_source, keep(splits.train, s), keep(splits.labeled, s), keep(splits.unlabeled, s),
                  keep(splits.val, s), keep(splits.test, t), keep(splits.few, s))


def _limited(items: torch.Tensor, config: CellConfig) -> torch.Tensor:
    """``unlabeled_limit`` of ``items`` (sorted), drawn with the cell's seed; all when unset (a
    rehearsal's share of them: ``bench.matrix.smoke.cut``)."""
    limit = config.unlabeled_limit
    if limit is None or limit >= len(items):
        return smoke_cut(items, config)
    generator = torch.Generator().manual_seed(config.seed)
    return smoke_cut(torch.sort(items[torch.randperm(len(items), generator=generator)[:limit]]).values, config)


def _rehearsed(splits: Splits, config: CellConfig) -> Splits:
    """A rehearsal cell's splits: each index set cut to a few batches, the training items the
    labeled and unlabeled ones kept (as in the whole splits)."""
    labeled, unlabeled = smoke_cut(splits.labeled, config), smoke_cut(splits.unlabeled, config)
    train = torch.sort(torch.cat([labeled, unlabeled])).values
    few = None if splits.few is None else smoke_cut(splits.few, config)
    return Splits(splits.source, splits.test_source, train, labeled, unlabeled, smoke_cut(splits.val, config),
                  smoke_cut(splits.test, config), few)


class CellData:
    """The data of one cell, as its config names it."""

    def __init__(self, config: CellConfig, store: Store, runtime: Runtime) -> None:
        self.config = config
        self.store = store
        self.runtime = runtime

    def load(self, name: str, split: str) -> ImageSet:
        """A dataset's split at the cell's image size, with the cell's recipe."""
        data = load_dataset(name, split, root=self.runtime.data_root, image_size=self.config.image_size)
        # on a GPU an image folder's batches are decoded there (nvjpeg, batched); on the CPU in the loader's workers
        gpu = self.runtime.device if self.runtime.device.startswith("cuda") else None
        return with_recipe(data, self.config.recipe, decode_device=gpu)

    @cached_property
    def labeled_train(self) -> ImageSet:
        return self.load(self.config.dataset, "train")

    @property
    def num_classes(self) -> int:
        return self.config.task_classes or self.labeled_train.num_classes

    @cached_property
    def splits(self) -> Splits:
        c = self.config
        test = self.load(c.dataset, "test")
        splits = make_splits(self.labeled_train, test, self.store.root / "splits", c.dataset, c.protocol,
                             c.val_fraction, c.label_fraction, c.n_per_class, c.effective_split_seed)
        splits = splits if c.task_classes is None else _first_classes(splits, c.task_classes)
        return splits if c.smoke_batches is None else _rehearsed(splits, c)

    def unlabeled_pool(self, config: CellConfig | None = None) -> tuple[ImageSet, torch.Tensor]:
        """The out-of-distribution pool and the items of it a cell uses (``unlabeled_limit``, drawn
        with the cell's seed): this cell's, or that of ``config`` (a dependency's, the same data)."""
        c = config or self.config
        assert c.unlabeled is not None
        pool = match_channels(self.load(c.unlabeled, "train"), self.labeled_train.channels)
        return pool, _limited(torch.arange(len(pool)), c)

    def distillation_pool(self, config: CellConfig | None = None) -> tuple[ImageSet, torch.Tensor, bool]:
        """The pool data distillation labels, and whether it is in-distribution: the rest of the
        labeled train split (its labels hidden) when ``unlabeled`` is unset, else that dataset's
        train split as ``unlabeled_pool``. ``config``: the annotate cell's, when a student asks."""
        c = config or self.config
        if c.unlabeled is None:
            splits = self.splits
            return splits.source, _limited(splits.unlabeled, c), True
        pool, items = self.unlabeled_pool(c)
        return pool, items, c.unlabeled == c.dataset
