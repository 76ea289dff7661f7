"""Data distillation's student (Radosavovic et al. 2018): plain cross-entropy on labeled ∪
pseudo-labeled images (its ``annotation`` role's artifact), with a fixed share of labeled images
in every minibatch: exactly ``round(labeled_share * batch_size)`` per batch, never on average.

An epoch is one pass over the pseudo-labeled set (its last batch filled from the start of the
same shuffled order, so every batch is full); the labeled set is cycled, continuing across
epochs. The student is re-initialised by default, as the paper found retraining better than
fine-tuning; ``init: teacher`` starts from the teacher's weights (the ablation).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from bench.data.images import JoinedImageSet
from bench.errors import BenchError
from bench.methods import method
from bench.training.interface import Batch, Training, classify
from bench.methods.annotate import PSEUDO_LABELS, pseudo_labels_problem
from bench.seeding import derived_generator

if TYPE_CHECKING:
    from bench.cell.context import CellContext


def labeled_per_batch(share: float, batch_size: int) -> int:
    """Labeled images in each batch: the share of the batch, at least one of each kind."""
    if batch_size < 2:
        raise BenchError(f"labeled_share needs batch_size >= 2 (one labeled and one pseudo-labeled image), got {batch_size}")
    return min(batch_size - 1, max(1, round(share * batch_size)))


def _cycled(items: torch.Tensor, start: int, count: int, seed: int) -> torch.Tensor:
    """``count`` items of the endless stream of permutations of ``items`` (the j-th from
    (seed, j)), from position ``start``: a function of its arguments alone, so resume is exact."""
    n = len(items)
    out, position = [], start
    while count > 0:
        j, offset = divmod(position, n)
        perm = items[torch.randperm(n, generator=derived_generator(seed, j, "labeled"))]
        take = perm[offset : offset + count]
        out.append(take)
        count -= len(take)
        position += len(take)
    return torch.cat(out) if out else items[:0]


def fixed_share_order(labeled: torch.Tensor, pseudo: torch.Tensor, batch_size: int, share: float, seed: int,
                      epoch: int) -> torch.Tensor:
    """The items of ``epoch`` in batch order: each batch of ``batch_size`` has exactly
    ``labeled_per_batch`` labeled items followed by pseudo-labeled ones."""
    k = labeled_per_batch(share, batch_size)
    m = batch_size - k
    n_batches = math.ceil(len(pseudo) / m)
    shuffled = pseudo[torch.randperm(len(pseudo), generator=derived_generator(seed, epoch, "pseudo"))]
    pseudo_part = shuffled.repeat(math.ceil(n_batches * m / len(shuffled)))[: n_batches * m].view(n_batches, m)
    labeled_part = _cycled(labeled, epoch * n_batches * k, n_batches * k, seed).view(n_batches, k)
    return torch.cat([labeled_part, pseudo_part], dim=1).flatten()


@method("data_distill", roles=("annotation",), fields=("labeled_share", "init"), required=("labeled_share",))
def data_distill(ctx: CellContext) -> Training:
    c = ctx.config
    splits = ctx.splits()
    pool, pool_items, _ = ctx.distillation_pool(ctx.dependency_config("annotation"))
    annotation = ctx.artifact("annotation", PSEUDO_LABELS, lambda a: pseudo_labels_problem(a, ctx.num_classes, pool_items))
    pool_items, pseudo_labels = annotation["items"].long(), annotation["labels"].long()  # type: ignore[index]
    if len(pool_items) == 0:
        raise BenchError(f"cell {ctx.cell_id}: its annotation {c.deps['annotation']} kept no pseudo-labels; "
                         "lower its pseudo_threshold or use pseudo_selection: quota")
    if pool is splits.source:
        source, shift = splits.source, 0
    else:
        source, shift = JoinedImageSet(splits.source, pool), len(splits.source)
    visible = torch.full((len(source),), -1, dtype=torch.int64)
    visible[splits.labeled] = splits.source.targets[splits.labeled]
    pseudo = pool_items + shift
    visible[pseudo] = pseudo_labels
    if c.init == "teacher":
        if ctx.dependency_config("teacher").arch != c.arch:
            raise BenchError(f"cell {ctx.cell_id}: init: teacher needs the teacher's architecture "
                             f"({ctx.dependency_config('teacher').arch}), not {c.arch}")
        model = ctx.dependency_model("teacher", trainable=True)
    else:
        model = ctx.new_model()

    def loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(logits, batch.targets)

    def order(epoch: int) -> torch.Tensor:
        return fixed_share_order(splits.labeled, pseudo, c.batch_size, c.labeled_share, c.seed, epoch)

    return Training(model, source, torch.cat([splits.labeled, pseudo]), classify(model, loss),
                    (splits.source, splits.labeled), visible_targets=visible, order=order)
