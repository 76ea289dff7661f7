"""khose2021 knowledge distillation: KL on the teacher's soft labels over labeled ∪ unlabeled.

Self-distillation when the student's architecture is the teacher's, compression when smaller.
Labels of the unlabeled part are hidden from the loss (target -1) but used to report train_acc
over the whole training set, as the paper evaluates the student on it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from bench.methods import Training, classify, method
from bench.methods.distill import distillation_loss

if TYPE_CHECKING:
    from bench.context import CellContext


@method("kd", roles=("teacher",))
def kd(ctx: CellContext) -> Training:
    splits = ctx.splits()
    items = splits.train
    hidden = splits.source.targets.clone()
    hidden[splits.unlabeled] = -1
    teacher = ctx.teacher_logits("teacher", splits.source, items)
    loss = distillation_loss(teacher, ctx.config.temperature, ctx.config.alpha)
    model = ctx.new_model()
    return Training(model, splits.source, items, classify(model, loss), (splits.source, items), visible_targets=hidden)
