"""khose2021 knowledge distillation: KL on the teacher's soft labels over labeled ∪ unlabeled.

Self-distillation when the student's architecture is the teacher's, compression when smaller.
Labels of the unlabeled part are hidden from the loss (target -1) but used to report train_acc
over the whole training set, as the paper evaluates the student on it. With ``head`` the student
is a backbone (its ``backbone`` role's, pretrained, or fresh) with new dense layers, the backbone
frozen with ``frozen_backbone`` (nguyen2021 Table 2). Every epoch also reports
``test_agreement``: how often the student's prediction is the teacher's (nguyen2021's Table 2
accuracy may be this).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from bench.training.inference import predict
from bench.matrix.config import TEACHER_TARGET_FIELDS
from bench.methods import method
from bench.training.interface import Training, classify
from bench.training.losses import distillation_loss
from bench.methods.transfer import with_backbone
from bench.models.zoo import Normalized

if TYPE_CHECKING:
    from bench.cell.context import CellContext


@method("kd", roles=("teacher",), fields=(*TEACHER_TARGET_FIELDS, "temperature", "alpha", "frozen_backbone"),
        transfer_roles=("backbone",), distills=True)
def kd(ctx: CellContext) -> Training:
    splits = ctx.splits()
    items = splits.train
    hidden = splits.source.targets.clone()
    hidden[splits.unlabeled] = -1
    targets = ctx.teacher_targets("teacher", splits.source, items)
    loss = distillation_loss(targets.logits, ctx.config.temperature, ctx.config.alpha)
    model, frozen = student_model(ctx)
    return Training(model, splits.source, items, classify(model, loss), (splits.source, items), visible_targets=hidden,
                    augment=targets.view, crops=targets.crops, frozen=frozen, more_metrics=agreement(ctx, "teacher"))


def student_model(ctx: CellContext) -> tuple[Normalized, tuple[nn.Module, ...]]:
    """A fresh student, or with ``head`` one on a (``backbone`` role's) backbone, frozen with
    ``frozen_backbone``; and what stays frozen."""
    if ctx.config.head is None:
        return ctx.new_model(), ()
    return with_backbone(ctx, ctx.config.frozen_backbone, role="backbone")


def agreement(ctx: CellContext, role: str) -> Callable[[nn.Module, dict[str, tuple[torch.Tensor, torch.Tensor]]], dict[str, float]]:
    """``test_agreement``: the fraction of test images on which model and ``role`` predict alike
    (``role``'s test predictions come from its logits cache: one pass per teacher, not per student)."""
    splits = ctx.splits()
    source, items = splits.test_source, splits.test
    cached: list[torch.Tensor] = []

    def measure(model: nn.Module, outputs: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        if not cached:
            cached.append(ctx.parent_logits(role, source, items).argmax(1))
        evaluated, logits = outputs.get("test", (None, None))
        if evaluated is None or not torch.equal(evaluated, items):  # the epoch's test pass is not of these items
            logits = predict(model, source, items, ctx.config.batch_size, ctx.runtime)
        return {"test_agreement": (logits.argmax(1) == cached[0]).float().mean().item()}

    return measure
