"""Data distillation's annotate stage (Radosavovic et al. 2018): a teacher, in eval mode, labels
the unlabeled pool with the mean of its softmaxes over several deterministic transforms
(``bench.data.multi_transform``), the ensemble's argmax is a hard pseudo-label, and only
confident ones are kept: a confidence threshold, or a per-class quota that keeps the labeled
set's class prior (the paper tunes its threshold so that an unlabeled image gets as many
instances on average as a labeled one).

Its own cell, so every student of one teacher shares one annotation; it trains nothing (a
``Computation``) and leaves the artifact ``pseudo_labels`` (per kept pool item: index, label,
confidence; and the transforms' names). The pool is the rest of the labeled train split when
``unlabeled`` is unset (in-distribution, so pseudo-label accuracy is measured against the
hidden labels, overall and per class), else that dataset's train split (out of distribution,
menghani2019-style). The pass over the pool checkpoints every few hundred batches, so a killed
cell resumes where it was.
"""
from __future__ import annotations

import hashlib
import math
import time
from typing import TYPE_CHECKING, Any, Callable

import torch

from bench.results.artifact_checks import fields_problem, items_digest, labels_problem, tensor_problem
from bench.matrix.config import POOL_FIELDS, CellConfig
from bench.data.images import ImageSet
from bench.data.multi_transform import NamedTransform, transforms_of
from bench.training.inference import as_float, predict, to_device
from bench.methods import method
from bench.training.interface import Computation
from bench.results.store import UnreadableFile, atomic_torch_save, load_tensors

if TYPE_CHECKING:
    from bench.cell.context import CellContext

PSEUDO_LABELS = "pseudo_labels"
CHUNK_BATCHES = 200  # batches between two saves of the partial annotation


@torch.no_grad()
def ensemble_probabilities(model: torch.nn.Module, transforms: list[NamedTransform], x: torch.Tensor) -> torch.Tensor:
    """The mean over ``transforms`` of the model's softmax on the float batch ``x`` (float32)."""
    return torch.stack([model(t.apply(x)).float().softmax(1) for t in transforms]).mean(0)


def select(labels: torch.Tensor, confidence: torch.Tensor, config: CellConfig, prior: torch.Tensor) -> torch.Tensor:
    """Positions of the kept pseudo-labels, sorted: confidence at least ``pseudo_threshold``, or
    the ``pseudo_keep`` quota split over classes as ``prior`` (the most confident of each class)."""
    if config.pseudo_selection == "threshold":
        return torch.nonzero(confidence >= config.pseudo_threshold).flatten()
    total = round(config.pseudo_keep * len(labels))
    kept = []
    for cls, share in enumerate(prior.tolist()):
        members = torch.nonzero(labels == cls).flatten()
        order = torch.sort(confidence[members], descending=True, stable=True).indices
        kept.append(members[order[: round(total * share)]])
    return torch.sort(torch.cat(kept)).values if kept else torch.empty(0, dtype=torch.int64)


def pseudo_labels_problem(artifact: object, classes: int, pool: torch.Tensor) -> str | None:
    """What differs between a ``pseudo_labels`` artifact and what a student of ``classes`` classes
    on the pool ``pool`` (its item list) needs, or None: kept items, labels and confidences of one
    length, labels inside the classes, items inside the pool, and (when recorded) the same class
    count and pool (the digest of its item list, in order)."""
    if not isinstance(artifact, dict) or not {"items", "labels"} <= set(artifact):
        return "not pseudo-labels annotate wrote (no items and labels)"
    items, labels = artifact["items"], artifact["labels"]
    integer = (torch.int64, torch.int32)
    problem = tensor_problem("items", items, (None,), integer)
    if problem is None:
        problem = tensor_problem("labels", labels, (len(items),), integer)
    if problem is None and "confidence" in artifact:
        problem = tensor_problem("confidence", artifact["confidence"], (len(items),), (torch.float32,))
    if problem is None:
        recorded = {k: v for k, v in {"classes": classes, "pool": items_digest(pool)}.items() if k in artifact}
        problem = fields_problem(artifact, recorded)
    if problem is None:
        problem = labels_problem("labels", labels, classes)
    if problem is None and not bool(torch.isin(items, pool).all()):
        outside = items[~torch.isin(items, pool)]
        problem = f"items hold {len(outside)} index(es) outside the pool of {len(pool)} items (e.g. {int(outside[0])})"
    return problem


def _pass_key(teacher_id: str, transforms: list[NamedTransform], items: torch.Tensor) -> str:
    described = "|".join([teacher_id, *(t.name for t in transforms)])
    return hashlib.sha256(described.encode() + items.numpy().tobytes()).hexdigest()[:16]


def _partial_problem(state: Any, key: str, n: int) -> str | None:
    """What differs between a saved partial annotation and this pass over ``n`` items (None: it fits)."""
    problem = fields_problem(state, {"key": key})
    if problem is None:
        done = state.get("done")
        if not isinstance(done, int) or not 0 <= done <= n:
            return f"done {str(done)[:20]}, expected a count of images from 0 to {n}"
        problem = tensor_problem("labels", state.get("labels"), (n,), (torch.int64,)) \
            or tensor_problem("confidence", state.get("confidence"), (n,), (torch.float32,))
    return problem


def label_pool(ctx: CellContext, model: torch.nn.Module, transforms: list[NamedTransform], source: ImageSet,
               items: torch.Tensor, progress: Callable[[str], None]) -> tuple[torch.Tensor, torch.Tensor]:
    """(argmax label, ensemble confidence) of every item, resumed from the cell's checkpoint."""
    cell, runtime, batch_size = ctx.store.cell(ctx.cell_id), ctx.runtime, ctx.runtime.inference_batch(ctx.config.batch_size)
    key = _pass_key(ctx.config.deps["teacher"], transforms, items)
    labels = torch.full((len(items),), -1, dtype=torch.int64)
    confidence = torch.zeros(len(items), dtype=torch.float32)
    done = 0
    if cell.checkpoint.exists():
        try:
            state = load_tensors(cell.checkpoint)
        except UnreadableFile as error:
            progress(f"  {error}; annotating from the start")
            state = None
        problem = None if state is None else _partial_problem(state, key, len(items))
        if state is not None and problem is None:
            done, labels, confidence = int(state["done"]), state["labels"], state["confidence"]
            progress(f"  resuming the annotation at image {done}/{len(items)}")
        elif problem is not None:
            progress(f"  {cell.checkpoint}: {problem}; annotating from the start")
    model.eval().to(runtime.torch_device)
    start, last_print = time.perf_counter(), time.monotonic()
    chunk = CHUNK_BATCHES * batch_size
    while done < len(items):
        part = items[done : done + chunk]
        offset = done
        for images, _, idx in source.batches(part, batch_size, runtime.workers):
            x = as_float(to_device(images, runtime), runtime)
            with runtime.autocast():
                probs = ensemble_probabilities(model, transforms, x).cpu()
            best, label = probs.max(1)
            labels[offset : offset + len(idx)], confidence[offset : offset + len(idx)] = label, best
            offset += len(idx)
            if time.monotonic() - last_print > runtime.progress_seconds:
                last_print = time.monotonic()
                rate = (offset - done) / max(time.perf_counter() - start, 1e-9)
                progress(f"  annotating {offset}/{len(items)} images x {len(transforms)} transforms, {rate:.0f} img/s")
        done = offset
        start = time.perf_counter()
        atomic_torch_save(cell.checkpoint, {"key": key, "done": done, "labels": labels, "confidence": confidence})
    return labels, confidence


def _accuracy(hits: torch.Tensor) -> float:
    return hits.float().mean().item() if len(hits) else math.nan


@method("annotate", roles=("teacher",), trains=False,
        fields=(*POOL_FIELDS, "annotate_flip", "annotate_scales", "annotate_crops", "annotate_crop_fraction",
                "pseudo_selection", "pseudo_threshold", "pseudo_keep"))
def annotate(ctx: CellContext) -> Computation:
    teacher = ctx.frozen_model("teacher")
    transforms = transforms_of(ctx.config)

    def compute(progress: Callable[[str], None]) -> tuple[dict[str, Any], dict[str, Any]]:
        splits = ctx.splits()
        source, items, in_distribution = ctx.distillation_pool()
        labels, confidence = label_pool(ctx, teacher, transforms, source, items, progress)
        classes = ctx.num_classes
        prior = torch.bincount(splits.source.targets[splits.labeled], minlength=classes).float()
        kept = select(labels, confidence, ctx.config, prior / prior.sum())
        metrics: dict[str, Any] = {
            "transforms": [t.name for t in transforms],
            "pool_size": len(items), "pseudo_kept": len(kept), "coverage": len(kept) / max(len(items), 1),
            "mean_confidence": confidence[kept].mean().item() if len(kept) else math.nan,
            "pseudo_acc": math.nan,
        }
        per_class: dict[str, dict[str, float]] = {}
        truth = source.targets[items[kept]]
        for cls in range(classes):
            mine = labels[kept] == cls
            per_class[str(cls)] = {"kept": int(mine.sum())}
            if in_distribution:
                per_class[str(cls)]["acc"] = _accuracy(truth[mine] == cls)
        if in_distribution:
            metrics["pseudo_acc"] = _accuracy(truth == labels[kept])
        metrics["pseudo_per_class"] = per_class
        # the ensemble's own accuracy on the test split: what the transforms add to the teacher
        test = predict(teacher, splits.test_source, splits.test, ctx.config.batch_size, ctx.runtime,
                       forward=lambda x: ensemble_probabilities(teacher, transforms, x))
        metrics["test_acc"] = _accuracy(test.argmax(1) == splits.test_source.targets[splits.test])
        artifact = {"items": items[kept], "labels": labels[kept], "confidence": confidence[kept],
                    "transforms": [t.name for t in transforms], "classes": classes, "pool": items_digest(items)}
        return metrics, {PSEUDO_LABELS: artifact}

    return Computation(teacher, compute)
