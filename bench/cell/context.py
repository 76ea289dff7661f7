"""What a method can ask for about its cell: data splits, the unlabeled pool, models, teachers.

Everything is loaded lazily and once, so a method only pays for what it uses.
"""
from __future__ import annotations

from functools import cached_property
from typing import Callable
from pathlib import Path

import torch
from torch import nn

from bench.results.artifact_checks import fields_problem, items_digest, state_dict_problem, tensor_problem
from bench.matrix.config import CellConfig
from bench.data.datasets import load_dataset, with_recipe
from bench.data.images import ImageSet, TensorImageSet
from bench.data.splits import Splits, make_splits
from bench.errors import BenchError
from bench.training.inference import forward_in_batches, item_positions, outputs_key, predict
from bench.console import Echo, echo
from bench.training.interface import Batch
from bench.training.interface import TeacherFn, TeacherTargets
from bench.training.contrastive import dense_head
from bench.models.zoo import Normalized, WithHead, create_backbone, create_model, normalization
from bench.training.runtime import Runtime
from bench.matrix.names import requirement
from bench.matrix.smoke import cut as smoke_cut
from bench.results.store import CellDir, Store, UnreadableFile, atomic_torch_save, load_tensors, read_json
from bench.cell.bank_views import bank_spec
from bench.cell.view_bank import BankedTeacher, bank_path, load_or_build


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


def build_model(config: CellConfig, num_classes: int, in_chans: int, image_size: int) -> Normalized:
    """The cell's network, initialised from its seed: the architecture as a classifier; with
    ``head``, its backbone and a new dense head; with ``num_classes`` 0, the backbone alone (an
    encoder, as a SimCLR cell trains). ``encoder_file`` loads the backbone's weights."""
    torch.manual_seed(config.seed)
    if config.head is None and num_classes and config.encoder_file is None:
        inner = create_model(config.arch, num_classes=num_classes, in_chans=in_chans, image_size=image_size, pretrained=config.pretrained)
    else:
        backbone, size = create_backbone(config.arch, in_chans, image_size, config.pretrained)
        if config.encoder_file is not None:
            load_backbone(backbone, Path(config.encoder_file).expanduser())
        inner = backbone if config.head is None else WithHead(backbone, dense_head(size, config.head, num_classes), size)
    mean, std = normalization(config.arch, in_chans)
    return Normalized(inner, mean, std)


def load_backbone(backbone: nn.Module, path: Path) -> None:
    """Backbone weights from a state dict file (``weights_only``), a classifier's keys ignored."""
    try:
        state = load_tensors(path)
    except UnreadableFile as error:
        raise BenchError(f"encoder_file: {error}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise BenchError(f"encoder_file {path}: not a state dict")
    missing, _ = backbone.load_state_dict(state, strict=False)
    if missing:
        raise BenchError(f"encoder_file {path}: {len(missing)} backbone weights missing (e.g. {missing[0]}); "
                         "is it a converted release of this architecture?")


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


class CellContext:
    """One cell's view of its data and dependencies."""

    def __init__(self, config: CellConfig, cell_id: str, store: Store, runtime: Runtime, progress: Echo = echo) -> None:
        self.config = config
        self.cell_id = cell_id
        self.store = store
        self.runtime = runtime
        self.progress = progress  # for long preparations (a view bank's build)

    def _load(self, name: str, split: str) -> ImageSet:
        data = load_dataset(name, split, root=self.runtime.data_root, image_size=self.config.image_size)
        # on a GPU an image folder's batches are decoded there (nvjpeg, batched); on the CPU in the loader's workers
        gpu = self.runtime.device if self.runtime.device.startswith("cuda") else None
        return with_recipe(data, self.config.recipe, decode_device=gpu)

    @cached_property
    def labeled_train(self) -> ImageSet:
        return self._load(self.config.dataset, "train")

    @property
    def num_classes(self) -> int:
        return self.config.task_classes or self.labeled_train.num_classes

    def splits(self) -> Splits:
        return self._splits

    @cached_property
    def _splits(self) -> Splits:
        c = self.config
        test = self._load(c.dataset, "test")
        splits = make_splits(self.labeled_train, test, self.store.root / "splits", c.dataset, c.protocol,
                             c.val_fraction, c.label_fraction, c.n_per_class, c.effective_split_seed)
        splits = splits if c.task_classes is None else _first_classes(splits, c.task_classes)
        return splits if c.smoke_batches is None else _rehearsed(splits, c)

    def unlabeled_pool(self, config: CellConfig | None = None) -> tuple[ImageSet, torch.Tensor]:
        """The out-of-distribution pool and the items of it a cell uses (``unlabeled_limit``, drawn
        with the cell's seed): this cell's, or that of ``config`` (a dependency's, the same data)."""
        c = config or self.config
        assert c.unlabeled is not None
        pool = match_channels(self._load(c.unlabeled, "train"), self.labeled_train.channels)
        return pool, _limited(torch.arange(len(pool)), c)

    def distillation_pool(self, config: CellConfig | None = None) -> tuple[ImageSet, torch.Tensor, bool]:
        """The pool data distillation labels, and whether it is in-distribution: the rest of the
        labeled train split (its labels hidden) when ``unlabeled`` is unset, else that dataset's
        train split as ``unlabeled_pool``. ``config``: the annotate cell's, when a student asks."""
        c = config or self.config
        if c.unlabeled is None:
            splits = self.splits()
            return splits.source, _limited(splits.unlabeled, c), True
        pool, items = self.unlabeled_pool(c)
        return pool, items, c.unlabeled == c.dataset

    def new_model(self) -> Normalized:
        data = self.labeled_train
        return build_model(self.config, self.num_classes, data.channels, data.size)

    def new_encoder(self) -> Normalized:
        """The cell's architecture without a classifier: its forward is the pooled embedding."""
        data = self.labeled_train
        return build_model(self.config, 0, data.channels, data.size)

    def dependency_config(self, role: str) -> CellConfig:
        dep_id = self._dep_id(role)
        return CellConfig.model_validate(read_json(self.store.cell(dep_id).config))

    def _dep_id(self, role: str) -> str:
        try:
            return self.config.deps[role]
        except KeyError:
            raise BenchError(f"cell {self.cell_id}: method {self.config.method!r} needs a {role!r} dependency; add it to the stage's needs") from None

    def _done_dependency(self, role: str) -> CellDir:
        """The folder of the cell this one needs as ``role``, which must be done."""
        dep = self.store.cell(self._dep_id(role))
        if not dep.is_done():
            raise BenchError(f"cell {self.cell_id}: its {role} {dep.id} is not done; run the matrix in dependency order")
        return dep

    def dependency_classes(self, role: str) -> int:
        """The outputs of the model of the cell this one needs as ``role`` (0: an encoder's embedding)."""
        dep_config = self.dependency_config(role)
        needs = requirement(dep_config.method)
        if needs is not None and needs.encoder:
            return 0  # its model.pt is a backbone without a classifier
        if dep_config.dataset == self.config.dataset and dep_config.task_classes == self.config.task_classes:
            return self.num_classes
        return dep_config.task_classes or self._load(dep_config.dataset, "train").num_classes

    def dependency_model(self, role: str, trainable: bool = False) -> Normalized:
        """The selected weights of the cell this one needs as ``role`` (frozen unless trainable)."""
        dep = self._done_dependency(role)
        data = self.labeled_train
        dep_config = self.dependency_config(role)
        rebuilt = dep_config.model_copy(update={"pretrained": False, "encoder_file": None})
        model = build_model(rebuilt, self.dependency_classes(role), data.channels, data.size)
        rerun = (f"rerun the {role}: rm {dep.done_marker} and run the matrix again (it trains again, or rewrites model.pt "
                 f"from its checkpoint if it was run with --keep-checkpoints)")
        try:
            weights = load_tensors(dep.model)
        except UnreadableFile as error:
            raise BenchError(f"cell {self.cell_id}: its {role} {dep.id} is done but {error}; {rerun}") from None
        problem = state_dict_problem(model.inner.state_dict(), weights)
        if problem:
            raise BenchError(f"{dep.model}: {problem}, not the {dep_config.arch} its config names; {rerun}")
        model.inner.load_state_dict(weights)
        model.requires_grad_(trainable)
        return model.train(trainable)

    @cached_property
    def _frozen_models(self) -> dict[str, Normalized]:
        return {}

    def frozen_model(self, role: str) -> Normalized:
        """``role``'s model, frozen and on the device, loaded once per cell: its logits and its
        agreement with the student read the same instance."""
        if role not in self._frozen_models:
            self._frozen_models[role] = self.dependency_model(role).to(self.runtime.torch_device)
        return self._frozen_models[role]

    def artifact(self, role: str, name: str, problem: Callable[[object], str | None]) -> object:
        """A named artifact the cell this one needs as ``role`` left (tensors and containers only),
        checked before use: ``problem(artifact)`` says what differs from what this cell needs (None:
        it fits). Its producer is done and cannot be asked again, so a mismatch is a one-line
        error naming the file, never an IndexError mid-cell or a student trained on wrong labels."""
        dep = self._done_dependency(role)
        path = dep.artifacts / f"{name}.pt"
        rerun = f"rerun the {role}: rm {dep.done_marker} and run the matrix again"
        try:
            value = load_tensors(path)
        except UnreadableFile as error:
            raise BenchError(f"cell {self.cell_id}: artifact {name!r} of its {role}: {error}; {rerun}") from None
        differs = problem(value)
        if differs:
            raise BenchError(f"{path}: {differs}, not what cell {self.cell_id} needs of its {role} {dep.id}; {rerun}")
        return value

    def teacher_targets(self, role: str, source: ImageSet, items: torch.Tensor) -> TeacherTargets:
        """The teacher's logits for a batch, and the student's view of it when they go together:
        with ``teacher_targets: bank`` and augmentation, views replayed from the teacher's view
        bank with their stored logits (random-resized ones cut by the loader from the stored
        boxes: ``crops``); otherwise ``teacher_logits`` and the cell's own views."""
        c = self.config
        if c.teacher_targets != "bank" or not c.augment:
            return TeacherTargets(self.teacher_logits(role, source, items))
        spec = bank_spec(c)
        path = bank_path(self.store.cell(self._dep_id(role)).artifacts, source, items, spec, self.runtime)
        bank = load_or_build(self.frozen_model(role), source, items, spec, self.runtime, c.batch_size, path, self.progress)
        banked = BankedTeacher(bank, len(source), spec, self.runtime.torch_device, c.seed)
        return TeacherTargets(banked.targets, banked.view, banked.crops if spec.boxes else None)

    def teacher_logits(self, role: str, source: ImageSet, items: torch.Tensor) -> TeacherFn:
        """The teacher's logits for a batch.

        Without random augmentation the logits of ``items`` are computed once per (teacher,
        inputs), stored beside the teacher and shared by all its students. With augmentation
        they are computed on the very augmented batch the student sees, never reused.
        """
        device = self.runtime.torch_device
        teacher = self.frozen_model(role)
        if self.config.augment:
            def online(batch: Batch) -> torch.Tensor:
                return forward_in_batches(teacher, batch.images, self.runtime).float()
            return online
        table = self._cached_logits(role, teacher, source, items).to(device)
        position = item_positions(items, len(source))

        def cached(batch: Batch) -> torch.Tensor:
            return table[position[batch.indices.cpu()].to(device)]

        return cached

    def parent_logits(self, role: str, source: ImageSet, items: torch.Tensor) -> torch.Tensor:
        """A frozen parent's logits on the plain images of ``items`` (``test_agreement``'s test set):
        computed once per (parent, inputs), stored beside the parent and shared by all its dependants,
        as the logits cache is (a 10,000-image test set through menghani_cnn is ~4 s of each student here)."""
        return self._cached_logits(role, self.frozen_model(role), source, items)

    def _cached_logits(self, role: str, teacher: nn.Module, source: ImageSet, items: torch.Tensor) -> torch.Tensor:
        # The transform is none: the cache serves only unaugmented students.
        key = outputs_key(source, items, "transform=none", self.runtime)
        path: Path = self.store.cell(self._dep_id(role)).artifacts / f"logits-{key}.pt"
        classes = self.dependency_classes(role)
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
