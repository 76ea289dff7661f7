"""menghani2019 fine-tuning: continue a blind-distilled student by distilling from its teacher
on ``n_per_class`` labeled samples per class (use a lower lr with decay, as the paper does)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from bench.matrix.config import TEACHER_TARGET_FIELDS
from bench.methods import method
from bench.training.interface import Training, classify
from bench.training.losses import distillation_loss

if TYPE_CHECKING:
    from bench.cell.context import CellContext


@method("finetune", roles=("student", "teacher"), fields=(*TEACHER_TARGET_FIELDS, "n_per_class", "temperature", "alpha"),
        required=("n_per_class",), distills=True)
def finetune(ctx: CellContext) -> Training:
    splits = ctx.splits()
    few = splits.few
    targets = ctx.teacher_targets("teacher", splits.source, few)
    loss = distillation_loss(targets.logits, ctx.config.temperature, ctx.config.alpha)
    model = ctx.dependency_model("student", trainable=True)
    return Training(model, splits.source, few, classify(model, loss), (splits.source, few), augment=targets.view, crops=targets.crops)
