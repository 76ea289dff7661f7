"""What a matrix will cost before a GPU hour is spent (``bench plan --cost``, and after ``--smoke``).

Per cell, from the plan alone: the images it trains on and evaluates (epochs x items, from the
datasets' nominal sizes in ``bench.data.sizes``), the teacher forwards it needs (caches and
view banks counted once, as ``bench.matrix.plan_cost`` counts them), its model's forward FLOPs and
parameters (the architecture built on torch's meta device: no memory, no weights), and from
those: GPU-hours, disk (checkpoints while it runs; model.pt, caches, banks and annotations that
stay) and host memory (datasets held in memory, model and optimiser state; activations are not
counted). After a rehearsal the same work is priced at the rates the rehearsal measured.

GPU time is FLOPs-based until a GPU is lent and per-architecture rates are measured: a training
image costs three forwards, and the GPU does ``GPU_FLOPS`` (:data:`ASSUMPTION` says so in the
output). Small models on small images are overhead-bound, so their hours are a lower bound.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from bench.matrix.config import CellConfig
from bench.data.sizes import SIZES, NominalSize
from bench.matrix.names import requirement
from bench.matrix.plan import Cell
from bench.matrix.plan_cost import teacher_passes

GPU_FLOPS = 4.9e13
TRAIN_FORWARDS = 3
MAX_TRAIN_RATE, MAX_INFER_RATE = 10_000.0, 30_000.0
ASSUMPTION = ("GPU-hours are FLOPs-based: an A100 with AMP at 49 TFLOP/s effective (ResNet-50 at 224 px trains "
              "~2,000 img/s, infers 3x faster), a training image = 3 forwards, and no model faster than 10,000 "
              "training or 30,000 inference images/s (launch- and loader-bound); decoding streamed JPEGs is not "
              "counted (a CPU core decodes and crops ~360 ImageNet-sized images/s: give cells the workers to match)")
OPTIMIZER_SLOTS = {"sgd": 1, "adamw": 2, "lars": 1}
STREAM_SIDE = 224  # streamed images are decoded to image_size, else to this


@dataclass
class Items:
    """A cell's index sets, in images (nominal sizes)."""

    labeled: float
    unlabeled: float
    val: float
    test: float
    few: float
    pool: float

    @property
    def train(self) -> float:
        return self.labeled + self.unlabeled


def _size(name: str | None) -> NominalSize | None:
    return SIZES.get(name) if name else None


def items_of(c: CellConfig) -> Items | None:
    """The cell's splits as its protocol, fractions and limits make them, or None for a dataset of unknown size."""
    data = _size(c.dataset)
    if data is None:
        return None
    share = (c.task_classes / data.classes) if c.task_classes and data.classes else 1.0
    if c.protocol == "resplit_4_1_1":
        whole = (data.train + data.test) * share
        train, val, test = whole * 4 / 6, whole / 6, whole / 6
    else:
        train, val, test = data.train * share * (1 - c.val_fraction), data.train * share * c.val_fraction, data.test * share
    labeled = train * c.label_fraction
    classes = c.task_classes or data.classes
    few = labeled if c.n_per_class in (None, "all") else min(labeled, c.n_per_class * classes)
    pool_size = _size(c.unlabeled)
    pool = (train - labeled) if c.unlabeled is None else (pool_size.train if pool_size else math.nan)
    if c.unlabeled_limit is not None:
        pool = min(pool, c.unlabeled_limit)
    return Items(labeled, train - labeled, val, test, few, pool)


def _annotate_transforms(c: CellConfig) -> int:
    return (1 + len(c.annotate_scales) + len(c.annotate_crops)) * (2 if c.annotate_flip else 1)


TRAINING_ITEMS: dict[str, Callable[[CellConfig, Items], float]] = {
    "supervised": lambda c, s: s.labeled,
    "linear_probe": lambda c, s: s.labeled,
    "kd": lambda c, s: s.train,
    "simclr": lambda c, s: s.train,
    "blind": lambda c, s: s.pool,
    "finetune": lambda c, s: s.few,
    # a fixed labeled share per batch: an epoch is the pseudo-labeled part (quota kept) and its labeled share
    "data_distill": lambda c, s: s.pool * c.pseudo_keep / (1 - (c.labeled_share or 0.5)),
    "annotate": lambda c, s: 0.0,
}
"""Images one epoch of a method trains on (a method missing here counts its labeled items)."""


def _model_figures(c: CellConfig, classes: int, channels: int, side: int) -> tuple[float, float]:
    """(forward FLOPs per image, parameters) of the cell's architecture, built on the meta device."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from bench.models.zoo import create_backbone, create_model

    with torch.device("meta"):
        if c.head is None and classes:
            model = create_model(c.arch, num_classes=classes, in_chans=channels, image_size=side)
        else:
            model, _ = create_backbone(c.arch, channels, side)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.eval()(torch.zeros(1, channels, side, side, device="meta"))
    return float(counter.get_total_flops()), float(sum(p.numel() for p in model.parameters()))


_FIGURES: dict[tuple[Any, ...], tuple[float, float]] = {}


def model_figures(c: CellConfig) -> tuple[float, float]:
    """FLOPs and parameters of a cell's model, NaN when the architecture cannot be built here."""
    data = _size(c.dataset)
    side = c.image_size or (data.side if data and data.in_memory else STREAM_SIDE)
    channels, classes = (data.channels, c.task_classes or data.classes) if data else (3, 1000)
    key = (c.arch, c.head is None, classes, channels, side)
    if key not in _FIGURES:
        try:
            _FIGURES[key] = _model_figures(c, classes, channels, side)
        except Exception:  # an architecture timm cannot build on the meta device: unknown, not a failure of plan
            _FIGURES[key] = (math.nan, math.nan)
    return _FIGURES[key]


@dataclass
class CellWork:
    """What one cell will do and hold."""

    cell: Cell
    train_images: float      # images through a training step, all epochs
    eval_images: float       # images through the cell's model without gradient (evaluation, annotation)
    teacher_images: float    # teacher forwards (caches and banks once, by the first student needing them)
    flops: float             # forward FLOPs per image of the cell's model
    teacher_flops: float
    disk_running: float      # bytes while it runs (checkpoint and its predecessor)
    disk_kept: float         # bytes that stay (model.pt, caches and banks it causes, annotations)
    host_memory: float       # bytes: datasets in memory, model, gradients, optimiser state

    @property
    def gpu_seconds(self) -> float:
        return self.seconds(MAX_TRAIN_RATE, MAX_INFER_RATE)

    def seconds(self, most_train: float = math.inf, most_infer: float = math.inf) -> float:
        """At GPU_FLOPS, and no faster than the given images/s (default: FLOPs alone decide)."""
        def part(images: float, flops: float, most: float) -> float:
            return images * max(flops / GPU_FLOPS, 1 / most) if images else 0.0

        return (part(self.train_images, TRAIN_FORWARDS * self.flops, most_train)
                + part(self.eval_images, self.flops, most_infer)
                + part(self.teacher_images, self.teacher_flops, most_infer))

    def seconds_at(self, train_rate: float, infer_rate: float) -> float:
        """The cell's time at measured rates (images/s; the teacher's forwards at the cell's inference
        rate, or at 3x its training rate where it measured none, as an annotation)."""
        if not infer_rate > 0:
            infer_rate = TRAIN_FORWARDS * train_rate
        time = 0.0
        for images, rate in ((self.train_images, train_rate), (self.eval_images + self.teacher_images, infer_rate)):
            if images:
                time += images / rate if rate > 0 else math.nan
        return time


def _held_in_memory(name: str | None, splits: int) -> float:
    data = _size(name)
    if data is None or not data.in_memory:
        return 0.0
    # in-memory sets keep their native size (resized batch by batch to image_size), uint8
    return (data.train + (data.test if splits == 2 else 0)) * data.channels * data.side * data.side


def estimate(cells: list[Cell], keep_checkpoints: bool = False) -> list[CellWork]:
    """Every cell's work, disk and memory (NaN where a dataset or architecture is unknown here)."""
    passes: dict[str, int] = {}
    teacher_passes(cells, passes)
    by_id = {cell.id: cell for cell in cells}
    works = []
    for cell in cells:
        c = cell.config
        items = items_of(c)
        flops, params = model_figures(c)
        needs = requirement(c.method)
        trains = needs is None or needs.trains
        teacher = by_id.get(c.deps.get("teacher", ""))
        teacher_flops, teacher_params = model_figures(teacher.config) if teacher else (0.0, 0.0)
        if items is None:
            train = evals = teacher_images = math.nan
            kept_extra = 0.0
        elif not trains:  # annotate: the teacher over the pool, once per transform; its pseudo-labels stay
            train, evals = 0.0, 0.0
            teacher_images = items.pool * _annotate_transforms(c)
            kept_extra = items.pool * (8 + 8 + 4)  # items, labels, confidences
        else:
            per_epoch = TRAINING_ITEMS.get(c.method, lambda c, s: s.labeled)(c, items)
            train = c.epochs * per_epoch
            passes_over = c.epochs // c.eval_every + (1 if c.epochs % c.eval_every else 0) or 1
            evals = (min(per_epoch, c.train_eval_items or per_epoch) + items.val + items.test) * passes_over
            teacher_images = passes.get(cell.id, 0) * per_epoch
            kept_extra = _teacher_targets_kept(c, passes.get(cell.id, 0), per_epoch)
        slots = OPTIMIZER_SLOTS.get(c.optimizer, 1)
        state = params * 4 * (1 + slots)
        works.append(CellWork(
            cell, train, evals, teacher_images, flops, teacher_flops,
            disk_running=(2 * state if trains else 0.0) + (params * 4 if trains else 0.0),
            disk_kept=(params * 4 if trains else 0.0) + (2 * state if keep_checkpoints and trains else 0.0) + kept_extra,
            host_memory=_held_in_memory(c.dataset, 2) + _held_in_memory(c.unlabeled, 1)
            + (params * 4 * (2 + slots) if trains else 0.0) + teacher_params * 4,
        ))
    return works


def work_units(cells: list[Cell]) -> dict[str, float]:
    """Each cell's share of a run's work (its FLOPs, in seconds at GPU_FLOPS; the median where
    unknown), for ETAs: on a CPU every model is compute-bound, so no GPU launch floor applies."""
    seconds = {w.cell.id: w.seconds() for w in estimate(cells)}
    known = sorted(s for s in seconds.values() if math.isfinite(s) and s > 0)
    typical = known[len(known) // 2] if known else 1.0
    return {cell_id: s if math.isfinite(s) and s > 0 else typical for cell_id, s in seconds.items()}


def _teacher_targets_kept(c: CellConfig, passes: int, items: float) -> float:
    """Bytes of the logits cache or view bank a student causes beside its teacher (once per key:
    ``passes`` is 0 for the students that share one)."""
    data = _size(c.dataset)
    classes = c.task_classes or (data.classes if data else math.nan)
    if not passes:
        return 0.0
    if c.augment and c.teacher_targets == "bank":
        from bench.cell.bank_views import bank_spec
        from bench.cell.view_bank import bank_bytes

        return bank_bytes(items, c.bank_views, classes, c.bank_precision, c.bank_top_k, bank_spec(c).boxes)
    if not c.augment:
        return items * classes * 4  # the logits cache
    return 0.0


BANK_COLUMNS = ("built by", "teacher", "images x views", "views", "stored per view", "size")


def bank_rows(cells: list[Cell]) -> list[tuple[Any, ...]]:
    """Each view bank the plan builds (by the first student needing it) and its size on disk
    (``view_bank.bank_bytes``), before it is built."""
    from bench.cell.bank_views import bank_spec

    passes: dict[str, int] = {}
    teacher_passes(cells, passes)
    rows = []
    for cell in cells:
        c, items = cell.config, items_of(cell.config)
        if c.teacher_targets != "bank" or not c.augment or not passes.get(cell.id):
            continue
        per_epoch = TRAINING_ITEMS.get(c.method, lambda c, s: s.labeled)(c, items) if items else math.nan
        views = "random-resized crops" if bank_spec(c).boxes else "pad-crop"
        stored = "all logits" if c.bank_top_k is None else f"top-{c.bank_top_k} logits"
        rows.append((cell.id, c.deps.get("teacher", "?"), f"{_human(per_epoch)} x {c.bank_views}", views,
                     f"{stored}, {c.bank_precision}", _human(_teacher_targets_kept(c, passes[cell.id], per_epoch), "B")))
    return rows


COLUMNS = ("stage", "cells", "train images", "teacher forwards", "GPU-hours", "disk while running",
           "disk kept", "host memory / cell")


def _human(value: float, unit: str = "") -> str:
    if math.isnan(value):
        return "?"
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {suffix}{unit}".rstrip()
    return f"{value:.3g} {unit}".rstrip()


def _hours(seconds: list[float]) -> str:
    """Summed hours; ``+`` when some cells' time is unknown (not counted), ``?`` when none is known."""
    known = [s for s in seconds if math.isfinite(s)]
    if not known:
        return "?"
    return f"{sum(known) / 3600:.3g}" + ("+" if len(known) < len(seconds) else "")


def stage_rows(works: list[CellWork], seconds: Callable[[CellWork], float] | None = None) -> list[tuple[Any, ...]]:
    """One row per stage and a total: sums of images and hours, disk summed, memory the largest cell's.
    ``seconds``: a cell's time (measured rates); default its GPU-seconds."""
    time_of = seconds or (lambda w: w.gpu_seconds)
    stages: dict[str, list[CellWork]] = {}
    for work in works:
        stages.setdefault(work.cell.stage, []).append(work)
    groups = list(stages.items()) + ([("all", works)] if len(stages) > 1 else [])
    rows = []
    for stage, group in groups:
        rows.append((stage, len(group), _human(sum(w.train_images for w in group)),
                     _human(sum(w.teacher_images for w in group)), _hours([time_of(w) for w in group]),
                     _human(max(w.disk_running for w in group), "B"),  # cells run one at a time per job
                     _human(sum(w.disk_kept for w in group), "B"), _human(max(w.host_memory for w in group), "B")))
    return rows
