"""The training engine: a cell's epochs, each a pass of optimiser steps over its batches, then
its evaluation, checkpoint and metrics; resumed from the checkpoint when there is one.

``train`` reads as what it runs: prepare (model on the device, optimiser, schedule), resume,
then per epoch ``_train_epoch`` (order, views, this rank's shard of each global batch, the
method's step) and ``_record_epoch`` (evaluate, checkpoint, metrics.json), and ``_finish``
(model.pt, the selected epoch). The special cases are steps of their own: ``_big_enough``
(``Training.min_batch``), ``_stepping_items`` (ranks that step together), ``_evaluate_untrained``
(``epochs: 0``). Optimisers and schedules live in ``bench.training.optim``, checkpoints in
``bench.training.checkpoints``.

Exactness on resume: the data order and augmentation of epoch ``e`` come from generators
seeded by (seed, e), and the global RNG state is saved with every checkpoint and restored, so
a cell killed at any moment and resumed ends with the same metrics as an uninterrupted run
(on the CPU, same machine and thread count).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from bench.data.augment import augment
from bench.data.images import ImageSet
from bench.data.recipe import CropKey, crops_in_loader
from bench.data.views import random_color_distortion
from bench.matrix.config import CellConfig
from bench.progress import Position, Throttle
from bench.results.store import CellDir, atomic_torch_save, atomic_write_json
from bench.seeding import derived_generator
from bench.training import data_parallel
from bench.training.checkpoints import Progress, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from bench.training.inference import evaluate, inference_rate, layout, synchronize, to_device
from bench.training.interface import Batch, Training, ViewFn
from bench.training.optim import SCHEDULES, make_optimizer
from bench.training.runtime import Runtime


def view_generators(seed: int, epoch: int, views: int, rank: int | None = None) -> list[torch.Generator]:
    """One generator per view: view 0 keeps the stream of single-view cells (so their results
    are unchanged), view v > 0 gets its own, all recomputable from (seed, epoch) on resume. A
    rank of a data-parallel cell gets its own streams (``rank``), so its shard's images are not
    augmented like the other ranks' images at the same positions."""
    ranked = ("rank", rank) if rank is not None else ()
    return [derived_generator(seed, epoch, "augment", *((v,) if v else ()), *ranked) for v in range(views)]


def _crop_flip(config: CellConfig) -> Callable[[torch.Tensor, torch.Generator, torch.Tensor], torch.Tensor]:
    """The cell's own augmentation: ``augment``'s crop and flip on uint8, then float in [0, 1],
    then its colour distortion (SimCLR's, strength ``color_strength``) when it names ``color``."""
    # the imagenet recipe's crop and flip are made by the loader (training.source.batches' crop)
    skip = {"color", "crop", "flip"} if crops_in_loader(config.recipe, config.augment) else {"color"}
    geometric = tuple(name for name in config.augment if name not in skip)

    def view(images: torch.Tensor, generator: torch.Generator, indices: torch.Tensor) -> torch.Tensor:
        x = augment(images, geometric, generator, config.crop_padding).float().div_(255.0)
        return random_color_distortion(x, generator, config.color_strength) if "color" in config.augment else x

    return view


@dataclass
class EvalSets:
    """Where val and test accuracy are measured each epoch."""

    val: tuple[ImageSet, torch.Tensor] | None
    test: tuple[ImageSet, torch.Tensor]


@dataclass
class Outcome:
    metrics: list[dict[str, float]]
    selected: dict[str, float]
    train_seconds: float
    infer_images_per_s: float
    wall_seconds: float  # over every run of the cell, interrupted ones included (up to their last checkpoint)


def train(config: CellConfig, training: Training, evals: EvalSets, cell: CellDir, runtime: Runtime, progress: Progress) -> Outcome:
    """Run (or resume) every epoch of a cell and return its per-epoch and selected metrics."""
    run = _prepare(config, training, cell, runtime, progress)
    _resume(run)
    data_parallel.broadcast_from_first(training.modules(), run.world)
    for epoch in range(run.start_epoch, config.epochs):
        loss_sum, seen, seconds = _train_epoch(run, epoch)
        _record_epoch(run, epoch, loss_sum, seen, seconds, evals)
    if not runtime.writes:  # a rank other than 0: it trained in lockstep, rank 0 measures and writes
        return Outcome(run.metrics, run.metrics[-1] if run.metrics else {}, run.train_seconds, math.nan,
                       time.perf_counter() - run.segment_start)
    if not run.metrics:  # epochs == 0
        _evaluate_untrained(run, evals)
    return _finish(run, evals)


@dataclass
class _Run:
    """A cell's training in this process: what it trains with, and what it has measured so far
    (restored from the checkpoint when it resumes)."""

    config: CellConfig
    training: Training
    cell: CellDir
    runtime: Runtime
    progress: Progress
    model: nn.Module
    parameters: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    targets: torch.Tensor  # the labels the loss may see, indexed like the source
    view: ViewFn
    metrics: list[dict[str, float]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] | None = None
    start_epoch: int = 0
    train_seconds: float = 0.0
    wall_before: float = 0.0  # wall time of the runs before this one (up to their last checkpoint)
    segment_start: float = field(default_factory=time.perf_counter)
    rate: float = math.nan  # images/s of the last test pass of this run: the cell's inference rate
    warned_single: bool = False

    @property
    def world(self) -> int:
        return self.runtime.world_size

    @property
    def rank(self) -> int:
        return self.runtime.rank


def _prepare(config: CellConfig, training: Training, cell: CellDir, runtime: Runtime, progress: Progress) -> _Run:
    """The model on the device in the runtime's layout, the optimiser, schedule and loss scaler."""
    device = runtime.torch_device
    model = training.model.to(device)
    for module in training.extra.values():
        module.to(device)
    if runtime.use_channels_last:
        model = model.to(memory_format=torch.channels_last)
    if runtime.compile:
        model.compile()  # in place: the state dict keeps its keys
    parameters = [p for module in training.modules() for p in module.parameters() if p.requires_grad]
    optimizer = make_optimizer(config, parameters)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, SCHEDULES[config.schedule](config))
    scaler = torch.amp.GradScaler(device.type, enabled=runtime.scales_loss and device.type == "cuda")
    targets = training.visible_targets if training.visible_targets is not None else training.source.targets
    data_parallel.check_batch(config.batch_size, runtime.world_size)
    return _Run(config, training, cell, runtime, progress, model, parameters, optimizer, scheduler, scaler,
                targets, training.augment or _crop_flip(config))


def _resume(run: _Run) -> None:
    """Carry on from the cell's checkpoint, if it has one: weights, optimiser, schedule, scaler,
    metrics so far and the RNG states, so the epochs left run as they would have."""
    state = load_checkpoint(run.cell, run.progress, run.model.inner.state_dict(), run.config.epochs)
    if state is None:
        return
    run.model.inner.load_state_dict(state["model"])
    for name, module in run.training.extra.items():
        module.load_state_dict(state["extra"][name])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if state["scaler"]:  # a disabled scaler (CPU, no AMP) saves {}: resuming with AMP starts a fresh one
        run.scaler.load_state_dict(state["scaler"])
    run.metrics, run.best_state, run.train_seconds = state["metrics"], state["best"], state["train_seconds"]
    run.wall_before = state["wall_seconds"]
    set_rng_state(state["rng"])
    run.start_epoch = state["epoch"] + 1
    run.progress(f"  resuming from epoch {run.start_epoch}/{run.config.epochs}")


def _train_epoch(run: _Run, epoch: int) -> tuple[float, float, float]:
    """One pass over the epoch's global batches, one optimiser step each: the loss summed over
    its images, the images and the seconds, summed over ranks."""
    config, training, runtime = run.config, run.training, run.runtime
    training.train_mode()
    order = _epoch_order(config, training, epoch)
    generators = view_generators(config.seed, epoch, training.views, run.rank if run.world > 1 else None)
    global_sizes = data_parallel.global_batch_sizes(len(order), config.batch_size)
    shard = data_parallel.shard_order(order, config.batch_size, run.rank, run.world)
    local = training.source.batches(shard, config.batch_size // run.world, runtime.workers, _epoch_crop(config, training, epoch, shard))
    synchronize(runtime)
    meter = _EpochMeter(run, epoch, len(global_sizes))
    for step, global_items in enumerate(global_sizes):
        run.optimizer.zero_grad(set_to_none=True)
        got = _big_enough(run, next(local, None), step, epoch)  # None: this rank has no images in this step
        stepping = _stepping_items(run, got, global_items)
        if stepping == 0:  # no rank has enough images: every rank skips the step alike
            continue
        if got is not None:
            loss = _forward_backward(run, got, generators, stepping, step)
            if loss is None:
                continue
            meter.add(loss, len(got[2]))
        data_parallel.average_gradients(run.parameters, run.world)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        meter.show(step)
    synchronize(runtime)
    seconds = time.perf_counter() - meter.start
    loss_sum, seen = data_parallel.sum_over_ranks(run.world, meter.loss_sum, meter.seen)
    return loss_sum, seen, seconds


def _epoch_order(config: CellConfig, training: Training, epoch: int) -> torch.Tensor:
    """The epoch's items in batch order: the method's, or a permutation from (seed, epoch)."""
    if training.order is not None:
        return training.order(epoch)
    return training.indices[torch.randperm(len(training.indices), generator=derived_generator(config.seed, epoch, "order"))]


def _epoch_crop(config: CellConfig, training: Training, epoch: int, shard: torch.Tensor) -> Any:
    """The crops the loader cuts this epoch: given ones (a view bank's stored views), the
    recipe's random-resized ones from (seed, epoch), or none (the views are made on the device)."""
    if training.crops is not None:
        return training.crops(epoch, shard)
    if crops_in_loader(config.recipe, config.augment) and training.augment is None:
        return CropKey(config.seed, epoch, "flip" in config.augment)
    return None


def _big_enough(run: _Run, got: Any, step: int, epoch: int) -> Any:
    """This rank's batch, or None when it has fewer images than the method's step needs
    (``Training.min_batch``): it is left out of every epoch, said once."""
    if got is None or len(got[2]) >= run.training.min_batch:
        return got
    if epoch == run.start_epoch:
        run.progress(f"  batch {step + 1} of {len(got[2])} image(s) left out of each epoch "
                     f"(the method's step needs {run.training.min_batch})")
    return None


def _stepping_items(run: _Run, got: Any, global_items: int) -> int:
    """The images of the global batch that take part in its step (0: no step). One process
    skips a missing batch; ranks step together, the ranks without enough images adding zeros."""
    if got is None and run.world == 1:
        return 0
    return data_parallel.usable_items(global_items, run.world, run.training.min_batch)


def _forward_backward(run: _Run, got: Any, generators: list[torch.Generator], stepping: int, step: int) -> float | None:
    """The method's step on this rank's batch and its backward pass (the loss weighted by the
    rank's share of the global batch): the batch's mean loss, or None when the step is left out."""
    images, _, idx = got
    runtime = run.runtime
    x = to_device(images, runtime)
    views = tuple(layout(run.view(x, generator, idx), runtime) for generator in generators)
    batch = Batch(views, run.targets[idx].to(runtime.torch_device, non_blocking=True), idx)
    try:
        with runtime.autocast():
            loss = run.training.step(batch)
    except ValueError as error:
        if not _one_image_for_batch_statistics(error, len(idx), run.world):
            raise
        if not run.warned_single:
            run.warned_single = True
            run.progress(f"  batch {step + 1} of 1 image left out of each epoch (the model's batch "
                         "statistics need 2 images)")
        return None
    weighted = loss if run.world == 1 else loss * data_parallel.share_weight(len(idx), stepping, run.world)
    run.scaler.scale(weighted).backward()
    return loss.item()


class _EpochMeter:
    """An epoch's training loss and images so far, shown as it goes: a live display's position
    at every step, a log line every ``progress_seconds``."""

    def __init__(self, run: _Run, epoch: int, steps: int) -> None:
        self.run, self.epoch, self.steps = run, epoch, steps
        self.loss_sum, self.seen = 0.0, 0
        self.log_line = Throttle(run.runtime.progress_seconds)
        self.on_batch = getattr(run.progress, "batch", None)
        self.start = time.perf_counter()

    def add(self, loss: float, images: int) -> None:
        self.loss_sum += loss * images
        self.seen += images

    def show(self, step: int) -> None:
        epochs = self.run.config.epochs
        if self.on_batch is not None:
            self.on_batch(Position(self.epoch + 1, epochs, step + 1, self.steps,
                                   self.seen / max(time.perf_counter() - self.start, 1e-9)))
        if self.log_line.ready():
            so_far = self.seen / (time.perf_counter() - self.start)
            self.run.progress(f"  epoch {self.epoch + 1}/{epochs} batch {step + 1}/{self.steps} "
                              f"loss {self.loss_sum / max(self.seen, 1):.4f} {so_far:.0f} img/s")


def _record_epoch(run: _Run, epoch: int, loss_sum: float, seen: float, seconds: float, evals: EvalSets) -> None:
    """The epoch's row (evaluated every ``eval_every`` epochs and at the last, by rank 0 only),
    then, on rank 0, the reported epoch's weights, the checkpoint and metrics.json."""
    config, runtime = run.config, run.runtime
    run.train_seconds += seconds
    lr = run.optimizer.param_groups[0]["lr"]
    run.scheduler.step()
    last = epoch + 1 == config.epochs
    measured = runtime.writes and (last or (epoch + 1) % config.eval_every == 0)  # other ranks only train
    row, run.rate = _epoch_metrics(run.model, run.training, evals, config, runtime, final=last) if measured else (dict(_NOT_MEASURED), math.nan)
    row.update(epoch=epoch + 1, train_loss=loss_sum / max(seen, 1), lr=lr, train_images_per_s=seen / max(seconds, 1e-9), epoch_seconds=seconds)
    run.metrics.append(row)
    if not runtime.writes:
        return
    if config.metric == "best_val" and select_epoch(run.metrics, config.metric) is row:  # the weights of the reported epoch
        run.best_state = {k: v.detach().cpu().clone() for k, v in run.model.inner.state_dict().items()}
    save_checkpoint(run.cell, {
        "epoch": epoch, "model": run.model.inner.state_dict(), "optimizer": run.optimizer.state_dict(),
        "extra": {name: module.state_dict() for name, module in run.training.extra.items()},
        "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(), "metrics": run.metrics,
        "best": run.best_state, "train_seconds": run.train_seconds, "rng": rng_state(),
        "wall_seconds": run.wall_before + time.perf_counter() - run.segment_start,
    })
    atomic_write_json(run.cell.metrics, run.metrics)
    run.progress("  " + describe_epoch(row, config.epochs))


def _evaluate_untrained(run: _Run, evals: EvalSets) -> None:
    """A cell of ``epochs: 0`` reports its model as it is, as epoch 0."""
    row, run.rate = _epoch_metrics(run.model, run.training, evals, run.config, run.runtime)
    row.update(epoch=0, train_loss=math.nan, lr=0.0, train_images_per_s=math.nan, epoch_seconds=0.0)
    run.metrics.append(row)


def _finish(run: _Run, evals: EvalSets) -> Outcome:
    """Write the reported weights as model.pt (and metrics.json when no epoch ran here), leave
    the model holding them, and time inference if no test pass was timed."""
    config, model = run.config, run.model
    # The checkpoint is the source of truth: a kill between writing it and metrics.json leaves the
    # file one epoch behind, and a resume with no epoch left to run must still bring it up to date
    # (when the last epoch ran in this process, the loop just wrote it).
    if run.start_epoch >= config.epochs:
        atomic_write_json(run.cell.metrics, run.metrics)
    final_state = run.best_state if run.best_state is not None else model.inner.state_dict()
    atomic_torch_save(run.cell.model, final_state)
    selected = select_epoch(run.metrics, config.metric)
    if run.best_state is not None:
        model.inner.load_state_dict(run.best_state)
    test_set, test_items = evals.test
    # the final epoch's test pass was timed (speed does not depend on which epoch's weights);
    # a resumed cell with no epoch left, or a method evaluating itself, times a pass of its own
    infer = run.rate if math.isfinite(run.rate) else inference_rate(model, test_set, test_items, config.batch_size, run.runtime)
    return Outcome(run.metrics, selected, run.train_seconds, infer, run.wall_before + time.perf_counter() - run.segment_start)


def _one_image_for_batch_statistics(error: ValueError, images: int, world: int) -> bool:
    """A one-image batch that a BatchNorm layer on 1x1 maps (MobileNetV3 at 32 px, a BatchNorm1d
    head) cannot normalise: torch refuses it before any gradient exists, so the step is left out.
    Only such batches, which would otherwise end the cell, are skipped: a batch that trains
    today trains the same, so no result changes. One process only: ranks must step together
    (a data-parallel method declares ``Training.min_batch``)."""
    return images == 1 and world == 1 and "Expected more than 1 value per channel" in str(error)


def train_eval_items(where: tuple[ImageSet, torch.Tensor] | None, config: CellConfig) -> tuple[ImageSet, torch.Tensor] | None:
    """Where ``train_acc`` is measured: the method's training items, or a fixed subset of
    ``train_eval_items`` of them (drawn with the split seed; the same subset every epoch), so an
    ImageNet cell does not evaluate its whole training set each epoch."""
    limit = config.train_eval_items
    if where is None or limit is None or limit >= len(where[1]):
        return where
    source, items = where
    chosen = torch.randperm(len(items), generator=derived_generator(config.effective_split_seed, "train_eval"))[:limit]
    return source, torch.sort(items[chosen]).values


def _epoch_metrics(model: nn.Module, training: Training, evals: EvalSets, config: CellConfig, runtime: Runtime,
                   final: bool = True) -> tuple[dict[str, float], float]:
    """The epoch's row, and the images/s of its pass over the test set (NaN without one): the
    cell's inference rate, so the final epoch need not run the test set once more to time it."""
    if training.evaluate is not None:  # the method's own (SSL: kNN accuracy on the embeddings)
        return {**_NOT_MEASURED, **training.evaluate(model, final)}, math.nan
    row: dict[str, float] = {}
    outputs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    rate = math.nan
    named = {"train": train_eval_items(training.train_eval, config), "val": evals.val, "test": evals.test}
    for name, where in named.items():
        if where is None:
            row[f"{name}_acc"], row[f"{name}_loss"] = math.nan, math.nan
            continue
        result, items, logits = evaluate(model, where[0], where[1], config.batch_size, runtime)
        row[f"{name}_acc"], row[f"{name}_loss"] = result["acc"], result["loss"]
        outputs[name] = (items, logits)
        if name == "test" and len(items) == len(where[1]):  # every test image timed, as inference_rate would
            rate = result["images_per_s"]
    if training.more_metrics is not None:
        row.update(training.more_metrics(model, outputs))
    return row, rate


_NOT_MEASURED = {f"{split}_{kind}": math.nan for split in ("train", "val", "test") for kind in ("acc", "loss")}


def select_epoch(metrics: list[dict[str, float]], rule: str) -> dict[str, float]:
    """The reported epoch: the last one, or the best on validation (never selected on test)."""
    if rule == "best_val":
        return max(metrics, key=lambda m: (m["val_acc"], -m["epoch"]))
    return metrics[-1]


def describe_epoch(row: dict[str, float], epochs: int) -> str:
    parts = [f"epoch {int(row['epoch'])}/{epochs}", f"loss {row['train_loss']:.4f}"]
    for name in ("train", "val", "test"):
        if not math.isnan(row[f"{name}_acc"]):
            parts.append(f"{name} {row[f'{name}_acc']:.4f}")
    parts.append(f"{row['train_images_per_s']:.0f} img/s")
    return " ".join(parts)
