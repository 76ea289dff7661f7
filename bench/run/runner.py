"""Run one cell: build its context, let its method describe the training, train, record.

Safe to kill at any moment: the config is written first, checkpoints every epoch, the result
next, and the DONE marker last. A cell without DONE resumes from its checkpoint.
"""
from __future__ import annotations

import time
from typing import Any

from pydantic import ValidationError

from bench.matrix.config import CellConfig, safe_name
from bench.matrix.config import cell_id as cell_id_of
from bench.cell.context import CellContext
from bench.console import echo
from bench.training.engine import EvalSets, Progress, describe_epoch, train
from bench.errors import BenchError
from bench.methods import METHODS
from bench.training.interface import Computation, Training
from bench.training.runtime import Runtime
from bench.results.store import Store, atomic_torch_save, atomic_write_json, read_json
from bench.training.costs import model_costs, peak_memory, reset_peak

RESULT_METRICS = ("train_acc", "val_acc", "test_acc", "train_loss", "val_loss", "test_loss", "epoch")
EPOCH_ONLY = ("lr", "train_images_per_s", "epoch_seconds")  # a method's own metrics (probe_test_acc, test_agreement) go to the result too


def prepare_cell(store: Store, cell_id: str, config: CellConfig) -> None:
    """Write the config (once; a config under the same id that hashes differently is an error).

    An existing config is compared by what the id hashes, so one written before a field was added
    (which lacks it) is still the same cell.
    """
    cell = store.cell(cell_id)
    if cell.config.exists():
        stored = read_json(cell.config)
        try:
            same = cell_id_of(CellConfig.model_validate(stored)) == cell_id_of(config)
        except ValidationError:
            same = False
        if not same:
            raise BenchError(f"{cell.config}: differs from the planned config of cell {cell_id}; move the folder aside to rerun it")
        return
    atomic_write_json(cell.config, config.model_dump(mode="json"))


def run_cell(store: Store, cell_id: str, config: CellConfig, runtime: Runtime, progress: Progress = echo) -> dict[str, Any]:
    """Train one cell to completion (resuming if a checkpoint exists) and mark it done."""
    cell = store.cell(cell_id)
    if cell.is_done():
        return read_json(cell.result)
    if not runtime.writes:
        return _follow(CellContext(config, cell_id, store, runtime, progress), progress)
    with cell.lock(wait=True, echo=progress):  # another process running it: wait, then find it done
        if cell.is_done():
            return read_json(cell.result)
        for leftover in cell.path.rglob(".*.tmp"):  # from a write cut short by a kill; never read
            leftover.unlink(missing_ok=True)
        prepare_cell(store, cell_id, config)
        started = time.perf_counter()
        reset_peak(runtime)
        ctx = CellContext(config, cell_id, store, runtime, progress)
        work = METHODS.get(config.method)(ctx)
        run = _computed if isinstance(work, Computation) else _trained
        result, artifacts, summary = run(ctx, work, progress, started)
        result.update(
            **model_costs(work.model.inner, ctx.labeled_train.channels, ctx.labeled_train.size),
            **peak_memory(runtime),
            **runtime.describe(),
        )
        for name, value in artifacts.items():  # before DONE: a done cell has all its artifacts
            atomic_torch_save(cell.artifacts / f"{safe_name(name)}.pt", value)
        atomic_write_json(cell.result, result)
        cell.mark_done()
        if isinstance(work, Computation) or not runtime.keep_checkpoints:
            # model.pt and the result hold what dependants and reports read; a checkpoint is the
            # optimiser's state too (0.27 GB a ResNet-50 cell, 2.7 GB a VGG16 one, twice with .prev)
            cell.checkpoint.unlink(missing_ok=True)
            cell.previous_checkpoint.unlink(missing_ok=True)
        progress(f"  done: {summary}")
        return result


def _follow(ctx: CellContext, progress: Progress) -> dict[str, Any]:
    """A rank other than 0 of a data-parallel cell: train in lockstep with rank 0 and write
    nothing (rank 0 writes the checkpoints, the result and DONE). A cell that trains nothing is
    rank 0's alone."""
    work = METHODS.get(ctx.config.method)(ctx)
    if isinstance(work, Training):
        train(ctx.config, work, _eval_sets(ctx), ctx.store.cell(ctx.cell_id), ctx.runtime, progress)
    return {}


def _eval_sets(ctx: CellContext) -> EvalSets:
    splits = ctx.splits()
    has_val = len(splits.val) > 0  # best_val without one is refused when the matrix is planned
    return EvalSets((splits.source, splits.val) if has_val else None, (splits.test_source, splits.test))


def _trained(ctx: CellContext, training: Training, progress: Progress, started: float) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Train the cell (``bench.training.engine``): its result fields, artifacts and a one-line summary."""
    config = ctx.config
    evals = _eval_sets(ctx)
    started_training = time.perf_counter()
    outcome = train(config, training, evals, ctx.store.cell(ctx.cell_id), ctx.runtime, progress)
    result: dict[str, Any] = {("selected_epoch" if k == "epoch" else k): outcome.selected[k] for k in RESULT_METRICS}
    result.update({k: v for k, v in outcome.selected.items() if k not in RESULT_METRICS and k not in EPOCH_ONLY})
    result.update(
        cell_id=ctx.cell_id,
        selection=config.metric,
        epochs_run=len(outcome.metrics),
        wall_seconds=outcome.wall_seconds + (started_training - started),
        train_seconds=outcome.train_seconds,
        train_images_per_s=_steady_rate(outcome.metrics),
        infer_images_per_s=outcome.infer_images_per_s,
    )
    artifacts = {name: produce() for name, produce in training.artifacts.items()}
    rate = outcome.selected | {"train_images_per_s": result["train_images_per_s"]}
    return result, artifacts, f"{describe_epoch(rate, config.epochs)} ({config.metric})"


def _computed(ctx: CellContext, computation: Computation, progress: Progress, started: float) -> tuple[dict[str, Any], dict[str, Any], str]:
    """A cell that trains nothing: its method's metrics and artifacts, and their summary."""
    metrics, artifacts = computation.compute(progress)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
    return {**metrics, "cell_id": ctx.cell_id, "epochs_run": 0, "wall_seconds": time.perf_counter() - started}, artifacts, shown


def _steady_rate(metrics: list[dict[str, float]]) -> float:
    """Training images/s with the first epoch (warm-up) left out when there are several."""
    rates = [m["train_images_per_s"] for m in metrics if m["epoch"] > 0]
    steady = rates[1:] if len(rates) > 1 else rates
    return sum(steady) / len(steady) if steady else float("nan")
