"""What a method can ask for about its cell: data splits, the unlabeled pool, models, teachers.

``CellContext`` is the one object a method receives; it composes the cell's parts, one job
each: its data and splits (``bench.cell.data``), its network (``bench.cell.networks``), its
parents' models and artifacts (``bench.cell.parents``) and its teacher targets
(``bench.cell.teacher_targets``). Everything is loaded lazily and once, so a method only pays
for what it uses.
"""
from __future__ import annotations

from typing import Callable

import torch

from bench.cell.data import CellData
from bench.cell.networks import build_model
from bench.cell.parents import Parents
from bench.cell.teacher_targets import Teachers
from bench.console import Echo, echo
from bench.data.images import ImageSet
from bench.data.splits import Splits
from bench.matrix.config import CellConfig
from bench.models.zoo import Normalized
from bench.results.store import Store
from bench.training.interface import TeacherFn, TeacherTargets
from bench.training.runtime import Runtime


class CellContext:
    """One cell's view of its data and dependencies."""

    def __init__(self, config: CellConfig, cell_id: str, store: Store, runtime: Runtime, progress: Echo = echo) -> None:
        self.config = config
        self.cell_id = cell_id
        self.store = store
        self.runtime = runtime
        self.data = CellData(config, store, runtime)
        self.parents = Parents(config, cell_id, store, runtime, self.data)
        self.teachers = Teachers(config, runtime, self.parents, progress)

    @property
    def progress(self) -> Echo:
        """Where long preparations (a view bank's build, a recomputed cache) say what they do."""
        return self.teachers.progress

    @progress.setter
    def progress(self, progress: Echo) -> None:
        self.teachers.progress = progress

    # ---------------------------------------------------------------- data and splits

    @property
    def labeled_train(self) -> ImageSet:
        return self.data.labeled_train

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    def splits(self) -> Splits:
        return self.data.splits

    def unlabeled_pool(self, config: CellConfig | None = None) -> tuple[ImageSet, torch.Tensor]:
        """The out-of-distribution pool and the items of it a cell uses (``CellData.unlabeled_pool``)."""
        return self.data.unlabeled_pool(config)

    def distillation_pool(self, config: CellConfig | None = None) -> tuple[ImageSet, torch.Tensor, bool]:
        """The pool data distillation labels and whether it is in-distribution (``CellData.distillation_pool``)."""
        return self.data.distillation_pool(config)

    # ---------------------------------------------------------------- the cell's own network

    def new_model(self) -> Normalized:
        data = self.labeled_train
        return build_model(self.config, self.num_classes, data.channels, data.size)

    def new_encoder(self) -> Normalized:
        """The cell's architecture without a classifier: its forward is the pooled embedding."""
        data = self.labeled_train
        return build_model(self.config, 0, data.channels, data.size)

    # ---------------------------------------------------------------- parents and their artifacts

    def dependency_config(self, role: str) -> CellConfig:
        return self.parents.config_of(role)

    def dependency_classes(self, role: str) -> int:
        """The outputs of the model of the cell this one needs as ``role`` (0: an encoder's embedding)."""
        return self.parents.classes(role)

    def dependency_model(self, role: str, trainable: bool = False) -> Normalized:
        """The selected weights of the cell this one needs as ``role`` (frozen unless trainable)."""
        return self.parents.model(role, trainable)

    def frozen_model(self, role: str) -> Normalized:
        """``role``'s model, frozen and on the device, loaded once per cell."""
        return self.parents.frozen_model(role)

    def artifact(self, role: str, name: str, problem: Callable[[object], str | None]) -> object:
        """A named artifact the cell this one needs as ``role`` left, checked by ``problem`` before use."""
        return self.parents.artifact(role, name, problem)

    # ---------------------------------------------------------------- teacher targets

    def teacher_targets(self, role: str, source: ImageSet, items: torch.Tensor) -> TeacherTargets:
        """The teacher's logits for a batch, and the student's view of it when they go together
        (``Teachers.targets``: a view bank's replayed views, or ``teacher_logits``)."""
        return self.teachers.targets(role, source, items)

    def teacher_logits(self, role: str, source: ImageSet, items: torch.Tensor) -> TeacherFn:
        """The teacher's logits for a batch: cached beside the teacher for plain images, online on
        the student's own batch with augmentation."""
        return self.teachers.logits(role, source, items)

    def parent_logits(self, role: str, source: ImageSet, items: torch.Tensor) -> torch.Tensor:
        """A frozen parent's logits on the plain images of ``items``, cached beside the parent."""
        return self.teachers.parent_logits(role, source, items)
