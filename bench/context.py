"""What a method can ask for about its cell: data splits, the unlabeled pool, models, teachers.

Everything is loaded lazily and once, so a method only pays for what it uses.
"""
from __future__ import annotations

import contextlib
import hashlib
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from bench.config import CellConfig
from bench.data.datasets import load_dataset
from bench.data.images import ImageSet, TensorImageSet
from bench.data.splits import Splits, make_splits
from bench.errors import BenchError
from bench.methods import Batch
from bench.methods.distill import TeacherFn
from bench.models import Normalized, create_model, normalization
from bench.runtime import Runtime
from bench.store import Store, UnreadableFile, atomic_torch_save, load_tensors, read_json


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
    return TensorImageSet(x, images.targets, images.num_classes, images.name)


def build_model(config: CellConfig, num_classes: int, in_chans: int, image_size: int) -> Normalized:
    torch.manual_seed(config.seed)
    inner = create_model(config.arch, num_classes=num_classes, in_chans=in_chans, image_size=image_size, pretrained=config.pretrained)
    mean, std = normalization(config.arch, in_chans)
    return Normalized(inner, mean, std)


class CellContext:
    """One cell's view of its data and dependencies."""

    def __init__(self, config: CellConfig, cell_id: str, store: Store, runtime: Runtime) -> None:
        self.config = config
        self.cell_id = cell_id
        self.store = store
        self.runtime = runtime

    def _load(self, name: str, split: str) -> ImageSet:
        return load_dataset(name, split, root=self.runtime.data_root, image_size=self.config.image_size)

    @cached_property
    def labeled_train(self) -> ImageSet:
        return self._load(self.config.dataset, "train")

    @property
    def num_classes(self) -> int:
        return self.labeled_train.num_classes

    def splits(self) -> Splits:
        return self._splits

    @cached_property
    def _splits(self) -> Splits:
        c = self.config
        test = self._load(c.dataset, "test")
        return make_splits(self.labeled_train, test, self.store.root / "splits", c.dataset, c.protocol,
                           c.val_fraction, c.label_fraction, c.n_per_class, c.seed)

    def unlabeled_pool(self) -> tuple[ImageSet, torch.Tensor]:
        """The out-of-distribution pool and the items of it this cell uses (``unlabeled_limit``)."""
        assert self.config.unlabeled is not None
        pool = match_channels(self._load(self.config.unlabeled, "train"), self.labeled_train.channels)
        items = torch.arange(len(pool))
        limit = self.config.unlabeled_limit
        if limit is not None and limit < len(pool):
            generator = torch.Generator().manual_seed(self.config.seed)
            items = torch.sort(torch.randperm(len(pool), generator=generator)[:limit]).values
        return pool, items

    def new_model(self) -> Normalized:
        data = self.labeled_train
        return build_model(self.config, self.num_classes, data.channels, data.size)

    def dependency_config(self, role: str) -> CellConfig:
        dep_id = self._dep_id(role)
        return CellConfig.model_validate(read_json(self.store.cell(dep_id).config))

    def _dep_id(self, role: str) -> str:
        try:
            return self.config.deps[role]
        except KeyError:
            raise BenchError(f"cell {self.cell_id}: method {self.config.method!r} needs a {role!r} dependency; add it to the stage's needs") from None

    def dependency_model(self, role: str, trainable: bool = False) -> Normalized:
        """The selected weights of the cell this one needs as ``role`` (frozen unless trainable)."""
        dep = self.store.cell(self._dep_id(role))
        if not dep.is_done():
            raise BenchError(f"cell {self.cell_id}: its {role} {dep.id} is not done; run the matrix in dependency order")
        data = self.labeled_train
        dep_config = self.dependency_config(role)
        model = build_model(dep_config.model_copy(update={"pretrained": False}), self.num_classes, data.channels, data.size)
        try:
            model.inner.load_state_dict(load_tensors(dep.model))
        except UnreadableFile as error:
            raise BenchError(f"cell {self.cell_id}: its {role} {dep.id} is done but {error}; rerun the {role}: "
                             f"rm {dep.done_marker} and run the matrix again (it rewrites model.pt from its checkpoint)") from None
        model.requires_grad_(trainable)
        return model.train(trainable)

    def artifact(self, role: str, name: str) -> object:
        """A named artifact the cell this one needs as ``role`` left (tensors and containers only)."""
        dep = self.store.cell(self._dep_id(role))
        if not dep.is_done():
            raise BenchError(f"cell {self.cell_id}: its {role} {dep.id} is not done; run the matrix in dependency order")
        try:
            return load_tensors(dep.artifacts / f"{name}.pt")
        except UnreadableFile as error:
            raise BenchError(f"cell {self.cell_id}: artifact {name!r} of its {role}: {error}") from None

    def teacher_logits(self, role: str, source: ImageSet, items: torch.Tensor) -> TeacherFn:
        """The teacher's logits for a batch.

        Without random augmentation the logits of ``items`` are computed once per (teacher,
        inputs), stored beside the teacher and shared by all its students. With augmentation
        they are computed on the very augmented batch the student sees, never reused.
        """
        device = self.runtime.torch_device
        teacher = self.dependency_model(role).to(device)
        if self.config.augment:
            def online(batch: Batch) -> torch.Tensor:
                with torch.no_grad(), torch.autocast(device.type, enabled=self.runtime.use_amp):
                    return teacher(batch.images).float()
            return online
        table = self._cached_logits(role, teacher, source, items)
        position = torch.full((len(source),), -1, dtype=torch.int64)
        position[items] = torch.arange(len(items))
        table = table.to(device)

        def cached(batch: Batch) -> torch.Tensor:
            return table[position[batch.indices.cpu()].to(device)]

        return cached

    def _cached_logits(self, role: str, teacher: nn.Module, source: ImageSet, items: torch.Tensor) -> torch.Tensor:
        from bench.engine import predict

        # Everything that changes the logits: the teacher (its cell), the inputs (dataset, size,
        # items), their transform (none: the cache serves only unaugmented students), and how
        # they were computed (precision, device type: a CPU run must not reuse AMP logits).
        r = self.runtime
        described = f"{source.name}|{len(source)}|{source.channels}|{source.size}|transform=none|amp={r.use_amp}|{r.torch_device.type}"
        key = hashlib.sha256(described.encode() + items.numpy().tobytes()).hexdigest()[:16]
        path: Path = self.store.cell(self._dep_id(role)).artifacts / f"logits-{key}.pt"
        if path.exists():
            with contextlib.suppress(UnreadableFile):  # a damaged cache is recomputed and replaced
                return load_tensors(path)
        logits = predict(teacher, source, items, self.config.batch_size, self.runtime)
        atomic_torch_save(path, logits)
        return logits
