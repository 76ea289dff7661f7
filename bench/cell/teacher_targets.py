"""What a student gets of its teacher: logits for a batch (cached beside the teacher for plain
images, online for augmented ones), or views replayed from the teacher's view bank with their
stored logits; and a parent's logits on a fixed set (``test_agreement``'s test set).

Every cache lives beside the parent it was computed from, is shared by all its dependants and
is checked before use: a damaged, stale or planted one is recomputed and replaced.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from bench.cell.bank_views import bank_spec
from bench.cell.parents import Parents
from bench.cell.view_bank import BankedTeacher, bank_path, load_or_build
from bench.console import Echo
from bench.data.images import ImageSet
from bench.matrix.config import CellConfig
from bench.results.artifact_checks import fields_problem, items_digest, tensor_problem
from bench.results.store import UnreadableFile, atomic_torch_save, load_tensors
from bench.training.inference import forward_in_batches, item_positions, outputs_key, predict
from bench.training.interface import Batch, TeacherFn, TeacherTargets
from bench.training.runtime import Runtime


class Teachers:
    """The teacher targets of one cell, from its ``parents``."""

    def __init__(self, config: CellConfig, runtime: Runtime, parents: Parents, progress: Echo) -> None:
        self.config = config
        self.runtime = runtime
        self.parents = parents
        self.progress = progress  # for long preparations (a view bank's build, a recomputed cache)

    def targets(self, role: str, source: ImageSet, items: torch.Tensor) -> TeacherTargets:
        """The teacher's logits for a batch, and the student's view of it when they go together:
        with ``teacher_targets: bank`` and augmentation, views replayed from the teacher's view
        bank with their stored logits (random-resized ones cut by the loader from the stored
        boxes: ``crops``); otherwise ``logits`` and the cell's own views."""
        c = self.config
        if c.teacher_targets != "bank" or not c.augment:
            return TeacherTargets(self.logits(role, source, items))
        spec = bank_spec(c)
        path = bank_path(self.parents.folder(role).artifacts, source, items, spec, self.runtime)
        bank = load_or_build(self.parents.frozen_model(role), source, items, spec, self.runtime, c.batch_size, path, self.progress)
        banked = BankedTeacher(bank, len(source), spec, self.runtime.torch_device, c.seed)
        return TeacherTargets(banked.targets, banked.view, banked.crops if spec.boxes else None)

    def logits(self, role: str, source: ImageSet, items: torch.Tensor) -> TeacherFn:
        """The teacher's logits for a batch.

        Without random augmentation the logits of ``items`` are computed once per (teacher,
        inputs), stored beside the teacher and shared by all its students. With augmentation
        they are computed on the very augmented batch the student sees, never reused.
        """
        device = self.runtime.torch_device
        teacher = self.parents.frozen_model(role)
        if self.config.augment:
            def online(batch: Batch) -> torch.Tensor:
                return forward_in_batches(teacher, batch.images, self.runtime).float()
            return online
        table = self.cached_logits(role, teacher, source, items).to(device)
        position = item_positions(items, len(source))

        def cached(batch: Batch) -> torch.Tensor:
            return table[position[batch.indices.cpu()].to(device)]

        return cached

    def parent_logits(self, role: str, source: ImageSet, items: torch.Tensor) -> torch.Tensor:
        """A frozen parent's logits on the plain images of ``items`` (``test_agreement``'s test set):
        computed once per (parent, inputs), stored beside the parent and shared by all its dependants,
        as the logits cache is (a 10,000-image test set through menghani_cnn is ~4 s of each student here)."""
        return self.cached_logits(role, self.parents.frozen_model(role), source, items)

    def cached_logits(self, role: str, teacher: nn.Module, source: ImageSet, items: torch.Tensor) -> torch.Tensor:
        # The transform is none: the cache serves only unaugmented students.
        key = outputs_key(source, items, "transform=none", self.runtime)
        path: Path = self.parents.folder(role).artifacts / f"logits-{key}.pt"
        classes = self.parents.classes(role)
        expected = {"key": key, "items": items_digest(items), "classes": classes}
        if path.exists():  # checked before use: a damaged, stale or planted cache is recomputed and replaced
            try:
                stored = load_tensors(path)
                problem = fields_problem(stored, expected) or tensor_problem(
                    "logits", stored.get("logits"), (len(items), classes or None), (torch.float32,))
            except UnreadableFile as error:
                problem = str(error).removeprefix(f"{path}: ")
            if problem is None:
                return stored["logits"]
            self.progress(f"  {path}: {problem}; recomputing the {role}'s logits")
        logits = predict(teacher, source, items, self.config.batch_size, self.runtime)
        atomic_torch_save(path, {**expected, "logits": logits})
        return logits
