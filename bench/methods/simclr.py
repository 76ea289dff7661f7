"""SimCLR pretraining (Chen et al. 2020; nguyen2021's first stage): two augmented views of every
unlabeled image through an encoder and a projection head, NT-Xent between them.

The images are the ``unlabeled`` pool when set, else the train split with its labels unused.
Each view applies ``views`` (nguyen2021 Table 1 ablates crop, colour, grayscale, blur; flip as
SimCLR adds it) drawn from its own generator. ``model.pt`` is the encoder (a backbone without a
classifier) for ``linear_probe`` and frozen-backbone students; the projection head is
checkpointed and left as the artifact ``projection``. Each epoch is evaluated as users of
lightly and solo-learn expect: weighted kNN accuracy (``knn_k``, ``knn_temperature``) of the
labeled split's embeddings on validation and test (as ``val_acc`` / ``test_acc``), and after the
last epoch a logistic-regression probe on the same embeddings (``probe_test_acc``); the
labeled split is the memory, so ``label_fraction`` bounds its cost.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from bench.data.views import simclr_view
from bench.training.inference import embeddings
from bench.matrix.config import POOL_FIELDS
from bench.methods import method
from bench.training.interface import Batch, Training
from bench.training.contrastive import nt_xent, projection_head
from bench.training.ssl_eval import knn_accuracy, linear_probe_accuracy

if TYPE_CHECKING:
    from bench.cell.context import CellContext
    from bench.data.images import ImageSet


@method("simclr", fields=(*POOL_FIELDS, "temperature", "views", "crop_scale", "projection", "knn_k", "knn_temperature"),
        encoder=True)
def simclr(ctx: CellContext) -> Training:
    c = ctx.config
    splits = ctx.splits()
    if c.unlabeled:
        source, items = ctx.unlabeled_pool()
    else:
        source, items = splits.source, splits.train
    encoder = ctx.new_encoder()
    head = projection_head(encoder.embedding_size, version=int(c.projection[1:]))

    def step(batch: Batch) -> torch.Tensor:
        first, second = (head(encoder.embed(view)) for view in batch.views)
        return nt_xent(first, second, c.temperature)

    def view(images: torch.Tensor, generator: torch.Generator, indices: torch.Tensor) -> torch.Tensor:
        return simclr_view(images.float().div_(255.0), generator, ops=c.views, strength=c.color_strength,
                           scale=(c.crop_scale, 1.0))

    labeled = (splits.source, splits.labeled)
    val = (splits.source, splits.val) if len(splits.val) else None
    test = (splits.test_source, splits.test)
    hidden = torch.full_like(source.targets, -1)
    return Training(encoder, source, items, step, None, visible_targets=hidden, views=2, augment=view,
                    extra={"projection": head}, artifacts={"projection": head.state_dict},
                    evaluate=knn_evaluation(ctx, labeled, val, test), min_batch=_fewest_images(head))


def _fewest_images(head: nn.Module) -> int:
    """2 for a head with BatchNorm1d (v2), which fails on one image in train mode; 1 otherwise: a
    v1 cell's one-image batch (loss 0, no negative) still steps, as it always has, so its results
    and id stay as they were."""
    return 2 if any(isinstance(m, nn.BatchNorm1d) for m in head.modules()) else 1


def knn_evaluation(ctx: CellContext, memory: tuple[ImageSet, torch.Tensor], val: tuple[ImageSet, torch.Tensor] | None,
                   test: tuple[ImageSet, torch.Tensor]) -> Callable[[nn.Module, bool], dict[str, float]]:
    """Per-epoch SSL evaluation: kNN accuracy of the embeddings (labeled split as memory) on the
    validation and test splits, and a linear probe's test accuracy on the same embeddings."""
    c = ctx.config

    def evaluate(model: nn.Module, final: bool) -> dict[str, float]:
        def embed(where: tuple[ImageSet, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            source, items = where
            return embeddings(model, source, items, c.batch_size, ctx.runtime), source.targets[items]

        bank, labels = embed(memory)
        row: dict[str, float] = {}
        for name, where in (("val", val), ("test", test)):
            if where is not None:
                features, targets = embed(where)
                row[f"{name}_acc"] = knn_accuracy(bank, labels, features, targets, k=c.knn_k, temperature=c.knn_temperature,
                                                  num_classes=ctx.num_classes)
                if name == "test" and final:
                    row["probe_test_acc"] = linear_probe_accuracy(bank, labels, features, targets)
        return row

    return evaluate
