"""menghani2019 fine-tuning: continue a blind-distilled student by distilling from its teacher
on ``n_per_class`` labeled samples per class (use a lower lr with decay, as the paper does)."""
from __future__ import annotations

from bench.errors import BenchError
from bench.methods import METHODS, Training
from bench.methods.distill import distillation_loss


@METHODS.register("finetune")
def finetune(ctx) -> Training:
    if ctx.config.n_per_class is None:
        raise BenchError(f"cell {ctx.cell_id}: method 'finetune' needs n_per_class (an integer or 'all')")
    splits = ctx.splits()
    few = splits.few
    teacher = ctx.teacher_logits("teacher", splits.source, few)
    loss = distillation_loss(teacher, ctx.config.temperature, ctx.config.alpha)
    return Training(ctx.dependency_model("student", trainable=True), splits.source, few, loss, (splits.source, few))
