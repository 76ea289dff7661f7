"""The training engine: optimiser, schedule, epochs, evaluation, checkpoints and resume.

Exactness on resume: the data order and augmentation of epoch ``e`` come from generators
seeded by (seed, e), and the global RNG state is saved with every checkpoint and restored, so
a cell killed at any moment and resumed ends with the same metrics as an uninterrupted run
(on the CPU, same machine and thread count).
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from bench.training import data_parallel
from bench.results.artifact_checks import state_dict_problem
from bench.matrix.config import CellConfig
from bench.data.augment import augment
from bench.data.images import ImageSet
from bench.data.recipe import CropKey, crops_in_loader
from bench.data.views import random_color_distortion
from bench.errors import BenchError
from bench.training.inference import evaluate, inference_rate, layout, synchronize, to_device
from bench.training.interface import Batch, Training
from bench.progress import Position, Throttle
from bench.training.runtime import Runtime
from bench.seeding import derived_generator
from bench.results.store import (
    CellDir,
    UnreadableFile,
    atomic_torch_save,
    atomic_write_json,
    load_tensors,
)

Progress = Callable[[str], None]


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


def _lars(params, c: CellConfig) -> torch.optim.Optimizer:
    from timm.optim import Lars  # SimCLR's optimiser; timm's, not ours

    return Lars(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)


OPTIMIZERS: dict[str, Callable[[Any, CellConfig], torch.optim.Optimizer]] = {
    "sgd": lambda params, c: torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay),
    "adamw": lambda params, c: torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay),
    "lars": _lars,
}


def make_optimizer(config: CellConfig, params) -> torch.optim.Optimizer:
    return OPTIMIZERS[config.optimizer](params, config)


def _warmup_cosine(c: CellConfig) -> Callable[[int], float]:
    """Linear warm-up over ``warmup_epochs``, then cosine decay to 0 (SimCLR's schedule, per epoch)."""
    def factor(e: int) -> float:
        if e < c.warmup_epochs:
            return (e + 1) / c.warmup_epochs
        return 0.5 * (1 + math.cos(math.pi * (e - c.warmup_epochs) / max(1, c.epochs - c.warmup_epochs)))
    return factor


SCHEDULES: dict[str, Callable[[CellConfig], Callable[[int], float]]] = {
    "constant": lambda c: lambda e: 1.0,
    "cosine": lambda c: lambda e: 0.5 * (1 + math.cos(math.pi * e / max(1, c.epochs))),
    "step": lambda c: lambda e: c.step_gamma ** (e // max(1, c.epochs // 3)),
    "warmup_cosine": _warmup_cosine,
}


def _rng_state() -> dict[str, Any]:
    """Global RNG states as tensors, numbers and lists only, so the checkpoint loads with
    ``weights_only=True`` (numpy's key array becomes a tensor, Python's state a list)."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(mt), gauss],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(cell: CellDir, progress: Progress, model: Mapping[str, torch.Tensor] | None = None,
                    epochs: int | None = None) -> dict[str, Any] | None:
    """The latest readable checkpoint of a cell, or None when it has none.

    Loaded with ``weights_only=True``: a results folder is shared, and a planted pickle must not
    run as whoever types ``bench run`` next. An unreadable ``checkpoint.pt`` (truncated by a
    failing disk, or not ours) falls back to ``checkpoint.prev.pt``, the epoch before; when
    neither loads, one line names the file and how to restart the cell.
    """
    problems: list[str] = []
    for path in (cell.checkpoint, cell.previous_checkpoint):
        if not path.exists():
            continue
        try:
            state = load_tensors(path)
        except UnreadableFile as error:
            problems.append(str(error).removeprefix(f"{path.parent}/"))
            continue
        if not isinstance(state, dict) or not {"epoch", "model", "optimizer", "rng"} <= set(state):
            problems.append(f"{path.name}: not a bench checkpoint")
            continue
        problem = _checkpoint_problem(state, model, epochs)  # checked before use: another cell's, or damaged
        if problem:
            problems.append(f"{path.name}: {problem}")
            continue
        if problems:
            progress(f"  {problems[0]}; resuming from {path.name} (epoch {state['epoch'] + 1})")
        return state
    if problems:
        raise BenchError(f"cell {cell.id}: {'; '.join(problems)}; delete {cell.checkpoint} and "
                         f"{cell.previous_checkpoint.name} to restart the cell from scratch")
    return None


def _checkpoint_problem(state: dict[str, Any], model: Mapping[str, torch.Tensor] | None, epochs: int | None) -> str | None:
    """What differs between a checkpoint and the cell resuming from it (its model's state dict and
    epochs), or None."""
    epoch = state["epoch"]
    if not isinstance(epoch, int) or epoch < 0 or (epochs is not None and epoch >= epochs):
        return f"epoch {str(epoch)[:20]}, expected 0 to {epochs - 1 if epochs is not None else 'the last'}"
    return None if model is None else state_dict_problem(model, state["model"])


def save_checkpoint(cell: CellDir, state: dict[str, Any]) -> None:
    """Keep the previous epoch's checkpoint as a fallback, then write the new one atomically."""
    atomic_torch_save(cell.checkpoint, state, previous=cell.previous_checkpoint)


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
    view = training.augment or _crop_flip(config)
    data_parallel.check_batch(config.batch_size, runtime.world_size)
    metrics: list[dict[str, float]] = []
    best_state: dict[str, torch.Tensor] | None = None
    start_epoch = 0
    train_seconds = wall_before = 0.0
    segment_start = time.perf_counter()
    state = load_checkpoint(cell, progress, model.inner.state_dict(), config.epochs)
    if state is not None:
        model.inner.load_state_dict(state["model"])
        for name, module in training.extra.items():
            module.load_state_dict(state["extra"][name])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:  # a disabled scaler (CPU, no AMP) saves {}: resuming with AMP starts a fresh one
            scaler.load_state_dict(state["scaler"])
        metrics, best_state, train_seconds = state["metrics"], state["best"], state["train_seconds"]
        wall_before = state["wall_seconds"]
        _set_rng_state(state["rng"])
        start_epoch = state["epoch"] + 1
        progress(f"  resuming from epoch {start_epoch}/{config.epochs}")

    world, rank = runtime.world_size, runtime.rank
    data_parallel.broadcast_from_first(training.modules(), world)
    rate = math.nan  # images/s of the last test pass of this segment: the cell's inference rate
    on_batch = getattr(progress, "batch", None)
    warned_single = False
    for epoch in range(start_epoch, config.epochs):
        training.train_mode()
        order = training.order(epoch) if training.order is not None else \
            training.indices[torch.randperm(len(training.indices), generator=derived_generator(config.seed, epoch, "order"))]
        generators = view_generators(config.seed, epoch, training.views, rank if world > 1 else None)
        loss_sum, seen, log_line = 0.0, 0, Throttle(runtime.progress_seconds)
        global_sizes = data_parallel.global_batch_sizes(len(order), config.batch_size)
        shard = data_parallel.shard_order(order, config.batch_size, rank, world)
        if training.crops is not None:  # given crops (a view bank's stored views)
            crop = training.crops(epoch, shard)
        elif crops_in_loader(config.recipe, config.augment) and training.augment is None:
            crop = CropKey(config.seed, epoch, "flip" in config.augment)
        else:
            crop = None
        local = training.source.batches(shard, config.batch_size // world, runtime.workers, crop)
        synchronize(runtime)
        epoch_start = time.perf_counter()
        for step, global_items in enumerate(global_sizes):
            optimizer.zero_grad(set_to_none=True)
            got = next(local, None)  # None: this rank's shard of the last batch is empty
            if got is not None and len(got[2]) < training.min_batch:  # too few images for the method's step
                if epoch == start_epoch:
                    progress(f"  batch {step + 1} of {len(got[2])} image(s) left out of each epoch "
                             f"(the method's step needs {training.min_batch})")
                got = None
            if got is None and world == 1:
                continue
            global_items = data_parallel.usable_items(global_items, world, training.min_batch)
            if global_items == 0:  # no rank has enough images: every rank skips the step alike
                continue
            if got is not None:
                images, _, idx = got
                x = to_device(images, runtime)
                views = tuple(layout(view(x, generator, idx), runtime) for generator in generators)
                batch = Batch(views, targets[idx].to(device, non_blocking=True), idx)
                try:
                    with runtime.autocast():
                        loss = training.step(batch)
                except ValueError as error:
                    if not _one_image_for_batch_statistics(error, len(idx), world):
                        raise
                    if not warned_single:
                        warned_single = True
                        progress(f"  batch {step + 1} of 1 image left out of each epoch (the model's batch "
                                 "statistics need 2 images)")
                    continue
                weighted = loss if world == 1 else loss * data_parallel.share_weight(len(idx), global_items, world)
                scaler.scale(weighted).backward()
                loss_sum += loss.item() * len(idx)
                seen += len(idx)
            data_parallel.average_gradients(parameters, world)
            scaler.step(optimizer)
            scaler.update()
            if on_batch is not None:  # a live display: where the cell is, at every step
                on_batch(Position(epoch + 1, config.epochs, step + 1, len(global_sizes),
                                  seen / max(time.perf_counter() - epoch_start, 1e-9)))
            if log_line.ready():
                so_far = seen / (time.perf_counter() - epoch_start)
                progress(f"  epoch {epoch + 1}/{config.epochs} batch {step + 1}/{len(global_sizes)} loss {loss_sum / max(seen, 1):.4f} {so_far:.0f} img/s")
        synchronize(runtime)
        seconds = time.perf_counter() - epoch_start
        loss_sum, seen = data_parallel.sum_over_ranks(world, loss_sum, seen)
        train_seconds += seconds
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        last = epoch + 1 == config.epochs
        measured = runtime.writes and (last or (epoch + 1) % config.eval_every == 0)  # other ranks only train
        row, rate = _epoch_metrics(model, training, evals, config, runtime, final=last) if measured else (dict(_NOT_MEASURED), math.nan)
        row.update(epoch=epoch + 1, train_loss=loss_sum / max(seen, 1), lr=lr, train_images_per_s=seen / max(seconds, 1e-9), epoch_seconds=seconds)
        metrics.append(row)
        if not runtime.writes:
            continue
        if config.metric == "best_val" and select_epoch(metrics, config.metric) is row:  # the weights of the reported epoch
            best_state = {k: v.detach().cpu().clone() for k, v in model.inner.state_dict().items()}
        save_checkpoint(cell, {
            "epoch": epoch, "model": model.inner.state_dict(), "optimizer": optimizer.state_dict(),
            "extra": {name: module.state_dict() for name, module in training.extra.items()},
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "metrics": metrics,
            "best": best_state, "train_seconds": train_seconds, "rng": _rng_state(),
            "wall_seconds": wall_before + time.perf_counter() - segment_start,
        })
        atomic_write_json(cell.metrics, metrics)
        progress("  " + describe_epoch(row, config.epochs))

    if not runtime.writes:
        return Outcome(metrics, metrics[-1] if metrics else {}, train_seconds, math.nan, time.perf_counter() - segment_start)
    if not metrics:  # epochs == 0: evaluate the model as it is
        row, rate = _epoch_metrics(model, training, evals, config, runtime)
        row.update(epoch=0, train_loss=math.nan, lr=0.0, train_images_per_s=math.nan, epoch_seconds=0.0)
        metrics.append(row)
    # The checkpoint is the source of truth: a kill between writing it and metrics.json leaves the
    # file one epoch behind, and a resume with no epoch left to run must still bring it up to date
    # (when the last epoch ran in this process, the loop just wrote it).
    if start_epoch >= config.epochs:
        atomic_write_json(cell.metrics, metrics)
    final_state = best_state if best_state is not None else model.inner.state_dict()
    atomic_torch_save(cell.model, final_state)
    selected = select_epoch(metrics, config.metric)
    if best_state is not None:
        model.inner.load_state_dict(best_state)
    test_set, test_items = evals.test
    # the final epoch's test pass was timed (speed does not depend on which epoch's weights);
    # a resumed cell with no epoch left, or a method evaluating itself, times a pass of its own
    infer = rate if math.isfinite(rate) else inference_rate(model, test_set, test_items, config.batch_size, runtime)
    return Outcome(metrics, selected, train_seconds, infer, wall_before + time.perf_counter() - segment_start)


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
